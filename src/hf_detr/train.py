"""Training with accelerate: one loop for one CPU, one GPU, many GPUs and many machines.

    hf-detr train --dataset synthetic --output_dir runs/shapes --num_train_epochs 50 ...         # one device
    accelerate launch --multi_gpu --num_processes 8 -m hf_detr.train --output_dir runs/shapes ...  # DDP

From Python: ``train(TrainConfig(output_dir=..., ...))``, optionally with a ready ``datasets.DatasetDict`` and model.

What the loop does, in order: builds the data (a Hub-COCO `DatasetDict`: the synthetic shapes set or
:func:`.data.load_detection_dataset`), the model (a config folder, a trained folder or `HfDetrConfig` keyword
arguments, the class head replaced when the labels differ) and AdamW with a backbone and a transformer parameter group;
then trains with gradient accumulation and clipping, the step (DETR's lr drop) or cosine schedule, mixed precision
(the matcher and the losses stay float32), logs the loss, evaluates COCO mAP over every image exactly once, saves
resumable states and finally the model and image processor folder that `pipeline("object-detection")` loads.

Equivalence with one big batch: the set criterion divides each process's loss by the number of boxes averaged over
processes, and DDP averages the gradients, so N processes step exactly as one process on the whole batch would.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import math
import re
import shutil
import sys
import time
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import datasets
import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, is_tensorboard_available, set_seed
from torch import nn
from tqdm.auto import tqdm
from transformers import EvalPrediction

from .collate import DetectionCollator, DetectionDataset, derived_seed
from .configuration_hf_detr import HfDetrConfig
from .data import id2label as dataset_id2label
from .data import load_detection_dataset
from .image_processing_hf_detr import HfDetrImageProcessor
from .matcher import NonFiniteOutputError
from .metrics import make_compute_metrics
from .modelcard import model_card
from .modeling_hf_detr import HfDetrForObjectDetection
from .synthetic import make_synthetic_dataset
from .transforms import (
    DETR_CROP_RESIZE_SCALES,
    DETR_CROP_SIZE,
    DETR_EVAL_SIZE,
    DETR_MAX_SIZE,
    DETR_TRAIN_SCALES,
    make_eval_transform,
    make_train_transform,
)

logger = logging.getLogger(__name__)

__all__ = [
    "Augment",
    "TrainConfig",
    "TrainResult",
    "TrainingDivergedError",
    "add_arguments",
    "build_model",
    "config_from_args",
    "default_max_size",
    "evaluate",
    "latest_checkpoint",
    "lr_factor",
    "scaled_detr_transforms",
    "train",
]

# training augmentation: DETR's recipe, horizontal flips only, or the evaluation resize alone
Augment = Literal["detr", "flip", "none"]

_STATE_FILE = "trainer_state.json"  # written last into a checkpoint: its presence marks the checkpoint complete
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


@dataclass
class TrainConfig:
    """Everything `train` needs; every field is also a `hf-detr train --<field>` option."""

    output_dir: str = field(metadata={"help": "where the model folder, logs and checkpoints/ go"})
    # model
    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "a hub_configs/ folder (config only: random init), a trained model folder or a Hub id"},
    )
    model_kwargs: dict | None = field(
        default=None,
        metadata={"help": 'HfDetrConfig overrides, JSON on the command line: \'{"backbone": "resnet18"}\''},
    )
    # data
    dataset: str = field(
        default="synthetic",
        metadata={"help": "'synthetic' (generated shapes), or a Hub id, save_to_disk folder or COCO folder"},
    )
    train_split: str = "train"
    eval_split: str | None = field(default="validation", metadata={"help": "'none' to skip evaluation"})
    synthetic_train_size: int = 1000
    synthetic_eval_size: int = 200
    synthetic_image_size: int = 128
    image_size: int | None = field(
        default=None,
        metadata={
            "help": "shorter side for evaluation and the largest training scale; DETR's multi-scale recipe is scaled "
            "to it (default: the image processor's, 800)"
        },
    )
    max_size: int | None = field(default=None, metadata={"help": "longer side cap (default: image_size * 1333/800)"})
    augment: Augment = field(
        default="detr",
        metadata={
            "help": "training augmentation: DETR's flip / multi-scale / crop recipe, horizontal flips only (better "
            "for a short training from scratch, see docs/RECIPE.md), or none"
        },
    )
    # how long
    num_train_epochs: int | None = None
    max_steps: int | None = field(default=None, metadata={"help": "optimizer steps; overrides num_train_epochs"})
    time_budget: float | None = field(
        default=None,
        metadata={
            "help": "seconds: stop cleanly (state saved) once exceeded; without epochs or max_steps the lr schedule "
            "spans this budget"
        },
    )
    # optimization
    per_device_train_batch_size: int = 4
    per_device_eval_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-4
    backbone_learning_rate: float = field(default=1e-5, metadata={"help": "0 freezes the backbone"})
    weight_decay: float = 1e-4
    max_grad_norm: float = field(default=0.1, metadata={"help": "gradient clipping (DETR: 0.1); 0 disables"})
    lr_scheduler: Literal["step", "cosine", "constant"] = "step"
    lr_drop: float = field(
        default=2 / 3, metadata={"help": "fraction of training after which 'step' divides the lr by 10"}
    )
    warmup_steps: int = 0
    mixed_precision: Literal["no", "fp16", "bf16"] | None = field(
        default=None, metadata={"help": "default: accelerate's launch configuration"}
    )
    seed: int = 42
    cpu: bool = field(default=False, metadata={"help": "train on the CPU even if a GPU is available"})
    dataloader_num_workers: int = 0
    # logging and checkpoints
    logging_steps: int = 10
    eval_steps: int | None = field(
        default=None,
        metadata={"help": "evaluate every N optimizer steps (default: after every epoch); also at the end"},
    )
    save_steps: int = field(
        default=500, metadata={"help": "save a resumable state every N steps and at the end; 0: never"}
    )
    save_total_limit: int | None = field(default=2, metadata={"help": "keep only the latest N states"})
    resume: str | None = field(
        default=None,
        metadata={
            "help": "continue from the latest state in output_dir/checkpoints (--resume) or from a given one",
            "nargs": "?",
            "const": "latest",
        },
    )
    report_to: str = field(
        default="auto",
        metadata={"help": "accelerate tracker ('tensorboard', 'wandb', ...); auto: tensorboard if installed"},
    )
    disable_tqdm: bool = False
    push_to_hub: bool = False
    hub_model_id: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.model_kwargs, str):
            try:
                self.model_kwargs = _json_object(self.model_kwargs)
            except argparse.ArgumentTypeError as error:
                raise ValueError(f"TrainConfig.model_kwargs: {error}") from None
        if self.eval_split in ("", "none", "None"):
            self.eval_split = None

        def fail(name: str, fix: str) -> None:
            raise ValueError(f"TrainConfig.{name}={getattr(self, name)!r} is invalid: {fix}")

        for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps",
                     "logging_steps", "synthetic_train_size", "synthetic_image_size"):  # fmt: skip
            if getattr(self, name) < 1:
                fail(name, "it must be at least 1")
        for name in ("num_train_epochs", "max_steps", "eval_steps", "image_size", "max_size", "save_total_limit"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                fail(name, "it must be at least 1 (or left unset)")
        for name in ("learning_rate", "backbone_learning_rate", "weight_decay", "max_grad_norm", "warmup_steps",
                     "save_steps", "synthetic_eval_size", "dataloader_num_workers"):  # fmt: skip
            if getattr(self, name) < 0:
                fail(name, "it must be non-negative")
        if self.time_budget is not None and self.time_budget <= 0:
            fail("time_budget", "give a positive number of seconds")
        if self.augment not in typing.get_args(Augment):
            fail("augment", "choose 'detr' (DETR's flip / multi-scale / crop), 'flip' or 'none'")
        if not 0 < self.lr_drop <= 1:
            fail("lr_drop", "it is a fraction of the training in (0, 1]")
        if self.num_train_epochs is None and self.max_steps is None and self.time_budget is None:
            raise ValueError("TrainConfig: say how long to train: num_train_epochs, max_steps or time_budget")
        if self.push_to_hub and not self.hub_model_id:
            fail("hub_model_id", "push_to_hub needs the repository id, e.g. 'my-user/detr-shapes'")


@dataclass
class TrainResult:
    """What `train` returns (on every process)."""

    model: HfDetrForObjectDetection  # the trained model, unwrapped from DDP
    image_processor: HfDetrImageProcessor
    global_step: int
    stop_reason: str  # "completed" or "time_budget"
    metrics: dict[str, float]  # the last evaluation ({} without an eval split)
    log_history: list[dict[str, float]]
    output_dir: str


class TrainingDivergedError(ValueError):
    """The loss or the model outputs became NaN or infinite."""


# ----------------------------------------------------------------------------------------------- command line


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not valid JSON ({error}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object like '{{\"d_model\": 128}}', got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add one `--<field>` option per `TrainConfig` field (type, default, choices and help from the dataclass)."""
    hints = typing.get_type_hints(TrainConfig)
    for spec in dataclasses.fields(TrainConfig):
        kind = hints[spec.name]
        if typing.get_origin(kind) in (typing.Union, types.UnionType):  # X | None
            kind = next(arg for arg in typing.get_args(kind) if arg is not type(None))
        options: dict[str, Any] = {"help": spec.metadata.get("help")}
        if spec.default is dataclasses.MISSING:
            options["required"] = True
        else:
            options["default"] = spec.default
        if kind is bool:
            options["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(kind) is Literal:
            options["choices"] = typing.get_args(kind)
        else:
            options["type"] = _json_object if kind is dict else kind
        options.update({key: value for key, value in spec.metadata.items() if key != "help"})
        parser.add_argument(f"--{spec.name}", **options)
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(**{spec.name: getattr(args, spec.name) for spec in dataclasses.fields(TrainConfig)})


# ------------------------------------------------------------------------------------------- data and model


def default_max_size(image_size: int) -> int:
    """DETR's longer-side cap (1333 for a shorter side of 800) scaled to `image_size`."""
    return round(DETR_MAX_SIZE * image_size / DETR_EVAL_SIZE)


def scaled_detr_transforms(
    image_size: int, max_size: int, augment: Augment = "detr"
) -> tuple[Any, Any]:
    """DETR's training augmentation and evaluation resize, with every size scaled by `image_size / 800`.

    At (800, 1333) this is the paper's recipe (scales 480-800, crops 384-600); at (128, 213) the scales are 77-128
    and the crops 61-96. `augment="flip"` keeps only the horizontal flip (images resized as for evaluation),
    `"none"` trains on the evaluation resize. Returns `(train_transform, eval_transform)`.
    """
    factor = image_size / DETR_EVAL_SIZE
    if max_size <= image_size:
        raise ValueError(f"max_size={max_size} must be larger than image_size={image_size}")
    scales = sorted({round(s * factor) for s in DETR_TRAIN_SCALES})
    crop_resize = sorted({round(s * factor) for s in DETR_CROP_RESIZE_SCALES})
    crop = (max(1, round(DETR_CROP_SIZE[0] * factor)), round(DETR_CROP_SIZE[1] * factor))
    eval_transform = make_eval_transform(image_size, max_size)
    if augment == "detr":
        train = make_train_transform(scales=scales, max_size=max_size, crop_resize_scales=crop_resize, crop_size=crop)
    elif augment == "flip":
        train = make_train_transform(scales=[image_size], max_size=max_size, crop_prob=0.0)
    elif augment == "none":
        train = eval_transform
    else:
        raise ValueError(f"augment={augment!r} is not one of {', '.join(map(repr, typing.get_args(Augment)))}")
    return train, eval_transform


def load_data(config: TrainConfig) -> datasets.DatasetDict:
    """The splits `config` asks for: generated shapes (seeded by `config.seed`) or `load_detection_dataset`."""
    if config.dataset == "synthetic":
        return make_synthetic_dataset(
            num_train=config.synthetic_train_size,
            num_validation=config.synthetic_eval_size,
            num_test=0,
            image_size=config.synthetic_image_size,
            seed=config.seed,
        )
    splits = [config.train_split] + ([config.eval_split] if config.eval_split else [])
    return load_detection_dataset(config.dataset, splits=splits)


def _set_labels(model: HfDetrForObjectDetection, id2label: Mapping[int, str]) -> None:
    """Give `model` the data set's labels; a new, randomly initialized class head unless they are its own."""
    id2label = {int(k): str(v) for k, v in id2label.items()}
    if model.config.id2label == id2label:
        return
    logger.info("labels differ from the model's %s: new class head for %s", model.config.id2label, id2label)
    for name in ("class_embed", "encoder_class_embed"):  # the second: the encoder's dense head, when trained
        old = getattr(model, name, None)
        if old is not None:
            setattr(model, name, nn.Linear(old.in_features, len(id2label) + 1).to(old.weight.device, old.weight.dtype))
    model.config.id2label = id2label
    model.config.label2id = {name: i for i, name in id2label.items()}


def build_model(
    model_name_or_path: str | None, id2label: Mapping[int, str], model_kwargs: Mapping[str, Any] | None = None
) -> tuple[HfDetrForObjectDetection, HfDetrImageProcessor]:
    """The model and image processor to train.

    `model_name_or_path` is a folder with a config but no weights (e.g. `hub_configs/detr-resnet-50`: a fresh model of
    that architecture), a folder or Hub id with weights (fine-tuning), or None (`HfDetrConfig(**model_kwargs)`).
    `model_kwargs` override config values in every case. The class head is replaced when the model's labels are not
    `id2label`.
    """
    kwargs = dict(model_kwargs or {})
    source = Path(model_name_or_path) if model_name_or_path else None
    if source is None:
        model = HfDetrForObjectDetection(HfDetrConfig(**kwargs, id2label=dict(id2label)))
    elif source.is_dir() and not any((source / name).is_file() for name in _WEIGHT_FILES):
        if not (source / "config.json").is_file():
            raise ValueError(f"model_name_or_path={str(source)!r} has neither config.json nor weights")
        model = HfDetrForObjectDetection(HfDetrConfig.from_pretrained(source, **kwargs))
    else:
        model = HfDetrForObjectDetection.from_pretrained(model_name_or_path, **kwargs)
    _set_labels(model, id2label)
    has_processor = source is not None and (not source.exists() or (source / "preprocessor_config.json").is_file())
    processor = HfDetrImageProcessor.from_pretrained(model_name_or_path) if has_processor else HfDetrImageProcessor()
    return model, processor


def _param_groups(model: HfDetrForObjectDetection, config: TrainConfig) -> list[dict[str, Any]]:
    """DETR's two groups: the backbone at its own learning rate, everything else at `learning_rate`."""
    if config.backbone_learning_rate == 0:
        model.freeze_backbone()
    backbone = {id(p) for p in model.model.backbone.parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [
        ("transformer", [p for p in trainable if id(p) not in backbone], config.learning_rate),
        ("backbone", [p for p in trainable if id(p) in backbone], config.backbone_learning_rate),
    ]
    # `base_lr`: the schedule's reference, kept in the optimizer state so a resumed run has it
    return [{"name": name, "params": params, "lr": lr, "base_lr": lr} for name, params, lr in groups if params]


class _EpochSampler(torch.utils.data.Sampler[int]):
    """A permutation of `range(size)` that depends only on `(seed, epoch)`, identical on every process (accelerate
    then gives each process its share) and reproducible after a resume."""

    def __init__(self, size: int, seed: int, shuffle: bool) -> None:
        self.size, self.seed, self.shuffle, self.epoch = size, seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.size))
        generator = torch.Generator().manual_seed(derived_seed(self.seed, self.epoch))
        return iter(torch.randperm(self.size, generator=generator).tolist())


def _loader(dataset: DetectionDataset, batch_size: int, collator: DetectionCollator, config: TrainConfig,
            shuffle: bool) -> torch.utils.data.DataLoader:  # fmt: skip
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=_EpochSampler(len(dataset), config.seed, shuffle),
        collate_fn=collator,
        num_workers=config.dataloader_num_workers,
        # its own generator: creating an iterator then draws worker seeds from it, not from the global RNG whose
        # state the checkpoints restore
        generator=torch.Generator().manual_seed(config.seed),
    )


# ------------------------------------------------------------------------------------------------- schedule


def lr_factor(progress: float, step: int, config: TrainConfig) -> float:
    """Multiplier of the base learning rates at optimizer step `step` (0-based), `progress` in [0, 1] of training.

    `step`: 1 before `lr_drop`, 0.1 after (DETR's StepLR); `cosine`: 0.5 (1 + cos(pi progress)); `constant`: 1.
    A linear warmup over the first `warmup_steps` multiplies any of them.
    """
    if config.lr_scheduler == "step":
        factor = 0.1 if progress >= config.lr_drop else 1.0
    elif config.lr_scheduler == "cosine":
        factor = 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    else:
        factor = 1.0
    if step < config.warmup_steps:
        factor *= (step + 1) / config.warmup_steps
    return factor


# ----------------------------------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate(
    model: nn.Module,
    image_processor: HfDetrImageProcessor,
    dataloader: torch.utils.data.DataLoader,
    accelerator: Accelerator,
    id2label: Mapping[int, str] | None = None,
    per_class: bool = False,
) -> dict[str, float]:
    """COCO mAP (see `metrics.make_compute_metrics`) of `model` over an accelerate-prepared `dataloader` of
    `DetectionCollator` batches. Every process predicts its share; `gather_for_metrics` collects one entry per image,
    dropping the duplicates accelerate pads the last uneven batch with, so each image is scored exactly once.
    The main process scores; every process returns the same dict.
    """
    was_training = model.training
    model.eval()
    images: list[tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]] = []
    for batch in dataloader:
        outputs = model(pixel_values=batch["pixel_values"], pixel_mask=batch["pixel_mask"])
        logits, boxes = outputs.logits.float().cpu().numpy(), outputs.pred_boxes.float().cpu().numpy()
        labels = [{key: value.cpu().numpy() for key, value in label.items()} for label in batch["labels"]]
        images += accelerator.gather_for_metrics(list(zip(logits, boxes, labels)), use_gather_object=True)
    model.train(was_training)
    metrics = None
    if accelerator.is_main_process:
        compute_metrics = make_compute_metrics(image_processor, id2label=id2label, per_class=per_class)
        logits, boxes, labels = zip(*images)
        prediction = EvalPrediction(predictions=[(np.stack(logits), np.stack(boxes))], label_ids=[list(labels)])
        metrics = compute_metrics(prediction)
    return broadcast_object_list([metrics])[0]


# ----------------------------------------------------------------------------------------------- checkpoints


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The complete checkpoint (`checkpoints/step_<n>` with its trainer state) of the highest step, if any."""
    steps = []
    for folder in Path(output_dir, "checkpoints").glob("step_*"):
        match = re.fullmatch(r"step_(\d+)", folder.name)
        if match and (folder / _STATE_FILE).is_file():
            steps.append((int(match.group(1)), folder))
    return max(steps)[1] if steps else None


@dataclass
class _Progress:
    """The loop's position, saved in every checkpoint next to accelerate's state."""

    global_step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0  # batches of `epoch` already trained on
    elapsed: float = 0.0  # seconds of training before this session
    log_history: list = field(default_factory=list)


def _save_checkpoint(accelerator: Accelerator, progress: _Progress, config: TrainConfig) -> None:
    folder = Path(config.output_dir, "checkpoints", f"step_{progress.global_step}")
    accelerator.save_state(str(folder))  # model, optimizer, grad scaler and every process's RNG states
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (folder / _STATE_FILE).write_text(json.dumps(dataclasses.asdict(progress), indent=1))
        complete = sorted(Path(config.output_dir, "checkpoints").glob("step_*"), key=lambda p: int(p.name[5:]))
        if config.save_total_limit:
            for old in complete[: -config.save_total_limit]:
                shutil.rmtree(old)
    accelerator.wait_for_everyone()


# ----------------------------------------------------------------------------------------------- the loop


def _trackers(report_to: str) -> list[str] | None:
    if report_to == "auto":
        return ["tensorboard"] if is_tensorboard_available() else None
    return None if report_to == "none" else [report_to]


def _log_line(entry: Mapping[str, float]) -> str:
    parts = [f"step {entry['step']}", f"epoch {entry['epoch']:.2f}"]
    parts += [f"{key} {value:.4g}" for key, value in entry.items() if key not in ("step", "epoch", "elapsed")]
    return " | ".join(parts) + f" | {entry['elapsed']:.0f} s"


def _resume_point(config: TrainConfig) -> Path | None:
    """The checkpoint to resume from, if any; refuses to start over in a folder that holds a run's checkpoints."""
    output_dir = Path(config.output_dir)
    if config.resume == "latest":
        found = latest_checkpoint(output_dir)
        if found is None:
            logger.warning("--resume: no checkpoint in %s/checkpoints, starting from scratch", output_dir)
        return found
    if config.resume:
        if not Path(config.resume, _STATE_FILE).is_file():
            raise ValueError(f"resume={config.resume!r} is not a complete checkpoint folder (no {_STATE_FILE})")
        return Path(config.resume)
    if latest_checkpoint(output_dir) is not None:
        raise ValueError(
            f"{output_dir} already holds checkpoints: pass --resume to continue that run or choose another output_dir"
        )
    return None


class _Loop:
    """The state of one training session and the steps of the loop; `train` sets it up and runs it."""

    def __init__(self, config: TrainConfig, accelerator: Accelerator, model: nn.Module, optimizer: Any,
                 image_processor: HfDetrImageProcessor, train_set: DetectionDataset, train_loader: Any,
                 eval_loader: Any, id2label: dict[int, str], progress: _Progress) -> None:  # fmt: skip
        self.config, self.accelerator, self.model, self.optimizer = config, accelerator, model, optimizer
        self.image_processor, self.id2label, self.progress = image_processor, id2label, progress
        self.train_set, self.train_loader, self.eval_loader = train_set, train_loader, eval_loader
        self.batches_per_epoch = len(train_loader)
        steps_per_epoch = math.ceil(self.batches_per_epoch / config.gradient_accumulation_steps)
        epochs_steps = steps_per_epoch * config.num_train_epochs if config.num_train_epochs else None
        self.total_steps = config.max_steps or epochs_steps  # None: the time budget alone says when to stop
        self.log_file = Path(config.output_dir, "train_log.jsonl")
        self.start = time.monotonic() - progress.elapsed
        self.elapsed = progress.elapsed  # the main process's clock, shared with every process at each batch
        self.window = torch.zeros(4, device=accelerator.device)  # loss, loss_ce, loss_bbox, loss_giou since last log
        self.window_steps = 0
        self.metrics: dict[str, float] = {}
        self.last_evaluated = -1
        self.bar = tqdm(
            total=self.total_steps or config.time_budget, unit="step" if self.total_steps else "s",
            initial=progress.global_step if self.total_steps else int(progress.elapsed), dynamic_ncols=True,
            disable=config.disable_tqdm or not accelerator.is_local_main_process,
        )  # fmt: skip
        images = config.per_device_train_batch_size * accelerator.num_processes * config.gradient_accumulation_steps
        accelerator.print(
            f"training on {accelerator.num_processes} process(es) ({accelerator.device}, mixed precision "
            f"{accelerator.mixed_precision}): {len(train_set)} images, {steps_per_epoch} steps per epoch of {images} "
            "images, " + (f"{self.total_steps} steps" if self.total_steps else f"{config.time_budget:g} s")
        )

    @property
    def epoch(self) -> float:
        return self.progress.epoch + self.progress.batches_in_epoch / self.batches_per_epoch

    def run(self) -> str:
        """Train until the step count or the time budget is reached; returns "completed" or "time_budget"."""
        progress, config = self.progress, self.config
        last_saved = progress.global_step if progress.global_step else -1  # a resumed session starts at a checkpoint
        stop_reason = None
        self.model.train()
        while stop_reason is None:
            if progress.batches_in_epoch >= self.batches_per_epoch:
                progress.epoch, progress.batches_in_epoch = progress.epoch + 1, 0
            self.train_set.set_epoch(progress.epoch)
            self.train_loader.set_epoch(progress.epoch)
            skip = progress.batches_in_epoch  # after a resume: the batches of this epoch already trained on
            batches = self.accelerator.skip_first_batches(self.train_loader, skip) if skip else self.train_loader
            for batch_index, batch in enumerate(batches, start=skip):
                if not self._accumulate(batch, batch_index):
                    continue
                self._optimizer_step()
                step = progress.global_step
                if self.total_steps and step >= self.total_steps:
                    stop_reason = "completed"
                elif config.time_budget and self.elapsed >= config.time_budget:
                    stop_reason = "time_budget"
                if step % config.logging_steps == 0 or stop_reason:
                    self._log_losses()
                if self.eval_loader is not None and config.eval_steps and step % config.eval_steps == 0:
                    self.evaluate()
                if config.save_steps and step % config.save_steps == 0:
                    _save_checkpoint(self.accelerator, progress, config)
                    last_saved = step
                if stop_reason:
                    break
            else:  # the epoch ended
                if self.eval_loader is not None and not config.eval_steps:
                    self.evaluate()
        self.bar.close()
        if self.eval_loader is not None and self.last_evaluated != progress.global_step:
            self.evaluate()
        if config.save_steps and last_saved != progress.global_step:
            _save_checkpoint(self.accelerator, progress, config)
        return stop_reason

    def _accumulate(self, batch: dict[str, Any], batch_index: int) -> bool:
        """Forward and backward one batch; True when it completes an accumulation group (time to step).

        Groups of `gradient_accumulation_steps` batches restart with every epoch, the last one possibly shorter;
        each batch's loss is divided by the size of its group. Only the last batch of a group synchronizes gradients.
        """
        accumulation = self.config.gradient_accumulation_steps
        group_start = batch_index - batch_index % accumulation
        group_size = min(accumulation, self.batches_per_epoch - group_start)
        sync = batch_index == group_start + group_size - 1
        with contextlib.nullcontext() if sync else self.accelerator.no_sync(self.model):
            outputs = self._forward(batch, f"step {self.progress.global_step + 1} (epoch {self.progress.epoch}, "
                                           f"batch {batch_index})")  # fmt: skip
            self.accelerator.backward(outputs.loss / group_size)
        terms = [outputs.loss, *(outputs.loss_dict[key] for key in ("loss_ce", "loss_bbox", "loss_giou"))]
        self.window += torch.stack(terms).detach().float() / group_size
        self.progress.batches_in_epoch = batch_index + 1
        return sync

    def _forward(self, batch: dict[str, Any], where: str) -> Any:
        """The model's forward pass with the loss; a failure on any process stops every process.

        One small all-reduce per batch tells every process whether one of them failed (so none waits forever in the
        next collective) and shares the main process's clock (so all take the same lr and stopping decisions).
        """
        accelerator, failure, outputs = self.accelerator, None, None
        try:
            outputs = self.model(**batch)
            if not torch.isfinite(outputs.loss):
                failure = TrainingDivergedError(
                    f"training diverged at {where}: the loss is {outputs.loss.item()}. Lower the learning rate (now "
                    f"{self.config.learning_rate}), keep gradient clipping on (max_grad_norm=0.1) or train in "
                    "bf16/float32 instead of fp16."
                )
        except NonFiniteOutputError as error:
            failure = TrainingDivergedError(f"training diverged at {where}: {error}")
        except (ValueError, TypeError) as error:  # bad labels or inputs: name the batch
            failure = type(error)(f"{where}: {error}")
        clock = time.monotonic() - self.start if accelerator.is_main_process else 0.0
        status = torch.tensor([float(failure is not None), clock], dtype=torch.float64, device=accelerator.device)
        status = accelerator.reduce(status, "sum")
        self.elapsed = float(status[1])
        if failure is not None:
            raise failure
        if status[0] > 0:
            raise TrainingDivergedError(f"{where}: another process failed (see its error); stopping")
        return outputs

    def _optimizer_step(self) -> None:
        config, progress = self.config, self.progress
        fraction = progress.global_step / self.total_steps if self.total_steps else self.elapsed / config.time_budget
        factor = lr_factor(fraction, progress.global_step, config)
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor
        if config.max_grad_norm > 0:
            self.accelerator.clip_grad_norm_(self.model.parameters(), config.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        progress.global_step += 1
        progress.elapsed = self.elapsed
        self.window_steps += 1
        self.bar.update(1 if self.total_steps else max(0, int(self.elapsed) - self.bar.n))

    def _log_losses(self) -> None:
        """Log the losses averaged over the steps since the last log and over processes."""
        mean = self.accelerator.reduce(self.window, "mean") / self.window_steps
        entry = {"step": self.progress.global_step, "epoch": self.epoch}
        entry.update(zip(("loss", "loss_ce", "loss_bbox", "loss_giou"), mean.tolist()))
        entry.update({f"lr_{group['name']}": group["lr"] for group in self.optimizer.param_groups})
        self._record(entry)
        self.bar.set_postfix(loss=f"{entry['loss']:.3f}")
        self.window.zero_()
        self.window_steps = 0

    def evaluate(self) -> None:
        self.metrics = evaluate(self.model, self.image_processor, self.eval_loader, self.accelerator, self.id2label)
        self.last_evaluated = self.progress.global_step
        self._record({"step": self.progress.global_step, "epoch": self.epoch,
                      **{f"eval_{name}": value for name, value in self.metrics.items()}})  # fmt: skip

    def _record(self, entry: dict[str, float]) -> None:
        """Into the history (saved with checkpoints), the trackers, train_log.jsonl and above the progress bar."""
        entry["elapsed"] = self.elapsed
        self.progress.log_history.append(entry)
        self.accelerator.log(entry, step=self.progress.global_step)
        if self.accelerator.is_main_process:
            with self.log_file.open("a") as stream:
                stream.write(json.dumps(entry) + "\n")
            self.bar.write(_log_line(entry))


def train(
    config: TrainConfig,
    dataset: datasets.DatasetDict | None = None,
    model: HfDetrForObjectDetection | None = None,
    image_processor: HfDetrImageProcessor | None = None,
) -> TrainResult:
    """Train (or fine-tune) a DETR as `config` says; see the module docstring. Run it under `accelerate launch` for
    several processes. `dataset` (Hub COCO schema, with `config.train_split` and `config.eval_split`), `model` and
    `image_processor` replace what `config` would build."""
    output_dir = Path(config.output_dir)
    accelerator = Accelerator(
        cpu=config.cpu, mixed_precision=config.mixed_precision, log_with=_trackers(config.report_to),
        project_dir=str(output_dir),
    )  # fmt: skip
    resume_from = _resume_point(config)
    set_seed(config.seed)

    data = dataset if dataset is not None else load_data(config)
    for split in (config.train_split, config.eval_split):
        if split is not None and split not in data:
            raise ValueError(f"the data set has no split {split!r}; its splits are {list(data)}")
    if len(data[config.train_split]) == 0:
        raise ValueError(f"split {config.train_split!r} is empty")
    id2label = dataset_id2label(data[config.train_split])
    if model is None:
        model, built_processor = build_model(config.model_name_or_path, id2label, config.model_kwargs)
        image_processor = image_processor or built_processor
    else:
        _set_labels(model, id2label)
        image_processor = image_processor or HfDetrImageProcessor()
    image_size = config.image_size or getattr(image_processor.size, "shortest_edge", None) or DETR_EVAL_SIZE
    max_size = config.max_size or default_max_size(image_size)
    train_transform, eval_transform = scaled_detr_transforms(image_size, max_size, config.augment)
    # the saved processor resizes inference images as evaluation did
    image_processor.size = {"shortest_edge": image_size, "longest_edge": max_size}

    train_set = DetectionDataset(data[config.train_split], train_transform, seed=config.seed)
    train_loader = _loader(train_set, config.per_device_train_batch_size, DetectionCollator(image_processor),
                           config, shuffle=True)  # fmt: skip
    eval_loader = None
    if config.eval_split is not None and len(data[config.eval_split]) > 0:
        eval_set = DetectionDataset(data[config.eval_split], eval_transform)
        eval_loader = _loader(eval_set, config.per_device_eval_batch_size,
                              DetectionCollator(image_processor, keep_crowd=True), config, shuffle=False)  # fmt: skip
        eval_loader = accelerator.prepare(eval_loader)
    optimizer = torch.optim.AdamW(_param_groups(model, config), weight_decay=config.weight_decay)
    model, optimizer, train_loader = accelerator.prepare(model, optimizer, train_loader)

    progress = _Progress()
    if resume_from is not None:
        accelerator.load_state(str(resume_from))  # weights, optimizer, scaler and this process's RNG states
        progress = _Progress(**json.loads((resume_from / _STATE_FILE).read_text()))
        accelerator.print(f"resumed from {resume_from} at step {progress.global_step}")
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        # the log restarts from the checkpoint's history, dropping what a killed session wrote after it
        Path(output_dir, "train_log.jsonl").write_text("".join(json.dumps(e) + "\n" for e in progress.log_history))
        accelerator.init_trackers(
            "hf_detr", config={k: v for k, v in dataclasses.asdict(config).items() if isinstance(v, (int, float, str))}
        )
    loop = _Loop(config, accelerator, model, optimizer, image_processor, train_set, train_loader, eval_loader,
                 id2label, progress)  # fmt: skip
    stop_reason = loop.run()

    trained = accelerator.unwrap_model(model)
    trained.to_plain_detr()  # training-only options (Group DETR queries, trainable BatchNorm) become plain DETR
    state_dict = accelerator.get_state_dict(model)
    if accelerator.is_main_process:
        trained.save_pretrained(output_dir, state_dict=state_dict)
        image_processor.save_pretrained(output_dir)
        source = f"Trained with `hf_detr.train` for {progress.global_step} steps on `{config.dataset}`."
        model_card(trained.config, str(output_dir), source=source).save(output_dir / "README.md")
        (output_dir / "eval_results.json").write_text(json.dumps(loop.metrics, indent=1))
        if config.push_to_hub:
            trained.push_to_hub(config.hub_model_id)
            image_processor.push_to_hub(config.hub_model_id)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return TrainResult(
        model=trained, image_processor=image_processor, global_step=progress.global_step, stop_reason=stop_reason,
        metrics=loop.metrics, log_history=progress.log_history, output_dir=str(output_dir),
    )  # fmt: skip


if __name__ == "__main__":  # `python -m hf_detr.train ...` is `hf-detr train ...`, e.g. under `accelerate launch -m`
    from hf_detr.cli import main

    sys.exit(main(["train", *sys.argv[1:]]))
