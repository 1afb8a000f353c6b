#!/usr/bin/env python
"""Fine-tune hf_detr on a detection data set in the Hub's COCO schema with transformers' `Trainer`.

The model starts from a `hub_configs/` folder (config only: new weights, `use_pretrained_backbone=true` in
`--config_overrides` for timm's ImageNet backbone), a converted checkpoint or a fine-tuned folder; its class head is
replaced for the data set's labels. DETR's recipe is the default: AdamW at 1e-4 with the backbone at 1e-5
(`--lr_backbone 0` freezes it), weight decay 1e-4 on every parameter, gradients clipped at 0.1. COCO mAP is computed
after every epoch, and the checkpoint with the best `eval_map` is kept and saved with its image processor.

    python examples/run_object_detection.py --model_name_or_path hub_configs/detr-resnet-50 \
        --config_overrides use_pretrained_backbone=true --dataset cppe-5 --output_dir detr-cppe5 \
        --do_train --do_eval --num_train_epochs 100 --per_device_train_batch_size 8 [--push_to_hub]

    # several GPUs or machines, exactly as any Trainer script:
    accelerate launch examples/run_object_detection.py ...
    torchrun --nproc_per_node 4 examples/run_object_detection.py ...

    # a CPU smoke run on generated shapes:
    python examples/run_object_detection.py --model_name_or_path hub_configs/detr-resnet-50 --dataset synthetic \
        --synthetic_num_train 64 --synthetic_num_eval 16 \
        --config_overrides backbone=resnet18,d_model=64,encoder_layers=1,decoder_layers=1,num_queries=10 \
        --train_scales 96 112 128 --max_size 200 --crop_resize_scales 80 96 --crop_size 64 96 --eval_size 128 \
        --output_dir /tmp/detr-shapes --do_train --do_eval --num_train_epochs 2 --use_cpu

`--dataset` is a Hub dataset id, a `save_to_disk` folder or a COCO folder (see `hf_detr.data.load_detection_dataset`),
or `synthetic` for `hf_detr.synthetic.make_synthetic_dataset`. `--resume_from_checkpoint <output_dir>/checkpoint-N`
continues a run. Every `TrainingArguments` option works (`--help` lists them).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import datasets
import numpy as np
import torch
import transformers
from transformers import EvalPrediction, HfArgumentParser, Trainer, TrainerCallback, TrainingArguments, set_seed

from hf_detr import HfDetrConfig, HfDetrForObjectDetection, HfDetrImageProcessor
from hf_detr.collate import DetectionCollator, DetectionDataset
from hf_detr.data import id2label, load_detection_dataset
from hf_detr.metrics import make_compute_metrics
from hf_detr.synthetic import SPLITS as SYNTHETIC_SPLITS
from hf_detr.synthetic import make_synthetic_dataset
from hf_detr.transforms import (
    DETR_CROP_RESIZE_SCALES,
    DETR_CROP_SIZE,
    DETR_EVAL_SIZE,
    DETR_MAX_SIZE,
    DETR_TRAIN_SCALES,
    make_train_transform,
)

logger = logging.getLogger(__name__)

BACKBONE_PREFIX = "model.backbone."
# Model outputs Trainer must not gather at evaluation: compute_metrics reads only `logits` and `pred_boxes`, and the
# hidden states would hold every evaluation image's features in memory.
EVAL_IGNORE_KEYS = [
    "loss_dict", "auxiliary_outputs", "last_hidden_state", "encoder_last_hidden_state", "encoder_hidden_states",
    "encoder_attentions", "decoder_hidden_states", "decoder_attentions", "cross_attentions",
]  # fmt: skip
_WEIGHT_FILES = (
    "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json"
)
# DETR's recipe, as defaults of the TrainingArguments fields (still overridable on the command line).
TRAINING_DEFAULTS: dict[str, Any] = {
    "learning_rate": 1e-4,
    "weight_decay": 1e-4,
    "max_grad_norm": 0.1,
    "eval_strategy": "epoch",
    "save_strategy": "epoch",
    "load_best_model_at_end": True,
    "metric_for_best_model": "eval_map",
    "greater_is_better": True,
    # the collator reads `image` and `objects`, which the model's forward does not take
    "remove_unused_columns": False,
    # compute_metrics needs one (logits, pred_boxes) / label list per batch: images have different sizes
    "eval_do_concat_batches": False,
}


@dataclass
class ModelArguments:
    model_name_or_path: str = field(
        metadata={"help": "A hub_configs/ folder (config only: new weights), a converted checkpoint or a fine-tuned "
                  "folder, or a Hub model id."}  # fmt: skip
    )
    lr_backbone: float = field(
        default=1e-5, metadata={"help": "Learning rate of the backbone (DETR: 1e-5); 0 freezes the backbone."}
    )
    config_overrides: str | None = field(
        default=None,
        metadata={"help": "Config changes as 'key=value,...', e.g. 'backbone=resnet18,d_model=64,encoder_layers=1'. "
                  "With pretrained weights only changes that keep every weight's shape are allowed."},  # fmt: skip
    )
    model_revision: str | None = field(default=None, metadata={"help": "Hub revision of the model."})


@dataclass
class DataArguments:
    dataset: str = field(
        metadata={"help": "Hub dataset id, save_to_disk folder, COCO folder (annotations/instances_<split>.json), "
                  "or 'synthetic' for generated shapes."}  # fmt: skip
    )
    train_split: str = field(default="train")
    eval_split: str = field(default="validation")
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N training images."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use only the first N evaluation images."})
    synthetic_num_train: int = field(default=1000, metadata={"help": "--dataset synthetic: training images."})
    synthetic_num_eval: int = field(default=200, metadata={"help": "--dataset synthetic: evaluation images."})
    synthetic_image_size: int = field(default=128, metadata={"help": "--dataset synthetic: image side in pixels."})
    train_scales: list[int] = field(
        default_factory=lambda: list(DETR_TRAIN_SCALES),
        metadata={"help": "Training shorter-side sizes (multi-scale augmentation)."},
    )
    max_size: int = field(default=DETR_MAX_SIZE, metadata={"help": "Longest image side, training and evaluation."})
    crop_resize_scales: list[int] = field(
        default_factory=lambda: list(DETR_CROP_RESIZE_SCALES),
        metadata={"help": "Shorter-side sizes of the resize before the random crop."},
    )
    crop_size: list[int] = field(
        default_factory=lambda: list(DETR_CROP_SIZE), metadata={"help": "Random crop side range: MIN MAX."}
    )
    crop_prob: float = field(default=0.5, metadata={"help": "Probability of the resize-and-crop branch."})
    eval_size: int = field(
        default=DETR_EVAL_SIZE,
        metadata={"help": "Evaluation (and saved image processor) shorter side; the longer side is <= max_size."},
    )
    per_class_metrics: bool = field(default=False, metadata={"help": "Also log AP and AR@100 of every class."})


def build_parser() -> HfArgumentParser:
    parser = HfArgumentParser((ModelArguments, DataArguments, TrainingArguments))
    parser.set_defaults(**TRAINING_DEFAULTS)
    return parser


def parameter_groups(model: torch.nn.Module, lr_backbone: float, weight_decay: float) -> list[dict[str, Any]]:
    """Optimizer groups as in DETR: the trainable backbone parameters at ``lr_backbone``, the others at the optimizer's
    learning rate, weight decay on all of them. Empty groups are left out."""
    backbone, others = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (backbone if name.startswith(BACKBONE_PREFIX) else others).append(parameter)
    groups = [{"params": others, "weight_decay": weight_decay}]
    if backbone:
        groups.append({"params": backbone, "lr": lr_backbone, "weight_decay": weight_decay})
    return [group for group in groups if group["params"]]


def pack_labels(labels: Sequence[dict[str, torch.Tensor]]) -> torch.Tensor:
    """A batch of the image processor's label dicts as one float64 tensor `[batch, 1 + M, 7]` (M: the most objects
    of an image). Row 0 of image i is `(orig_h, orig_w, size_h, size_w, n, image_id, 0)`, rows 1..n its objects
    `(cx, cy, w, h, class, iscrowd, area)`; the rest is padding.

    Trainer gathers evaluation labels with accelerate's `gather_for_metrics`, which handles one tensor per batch:
    across processes it pads dimension 1 and drops the duplicated samples of the last batch along dimension 0. A list
    of per-image dicts breaks both: tensors of different sizes cannot be gathered, and the last batch would cut every
    tensor *inside* the dicts, losing ground-truth boxes.
    """
    most = max(len(label["class_labels"]) for label in labels)
    packed = torch.zeros(len(labels), 1 + most, 7, dtype=torch.float64, device=labels[0]["boxes"].device)
    for row, label in zip(packed, labels):
        count = len(label["class_labels"])
        header = [*label["orig_size"].tolist(), *label["size"].tolist(), count, int(label["image_id"].reshape(-1)[0])]
        row[0, :6] = torch.tensor(header, dtype=torch.float64)
        fields = [label["boxes"], label["class_labels"][:, None], label["iscrowd"][:, None], label["area"][:, None]]
        row[1 : 1 + count] = torch.cat([field.to(torch.float64) for field in fields], dim=1)
    return packed


def unpack_labels(packed: np.ndarray) -> list[dict[str, np.ndarray]]:
    """The label dicts of :func:`pack_labels`, from its `[batch, 1 + M, 7]` array (any extra padding rows ignored)."""
    labels = []
    for image in packed:
        orig_h, orig_w, size_h, size_w, count, image_id = image[0, :6]
        objects = image[1 : 1 + int(count)]
        labels.append({
            "orig_size": np.array([orig_h, orig_w], dtype=np.int64),
            "size": np.array([size_h, size_w], dtype=np.int64),
            "image_id": np.array([image_id], dtype=np.int64),
            "boxes": objects[:, :4],
            "class_labels": objects[:, 4].astype(np.int64),
            "iscrowd": objects[:, 5].astype(np.int64),
            "area": objects[:, 6],
        })  # fmt: skip
    return labels


def make_packed_compute_metrics(
    image_processor: HfDetrImageProcessor, **kwargs: Any
) -> Callable[[EvalPrediction], dict[str, float]]:
    """`hf_detr.metrics.make_compute_metrics(image_processor, **kwargs)` for labels packed by :func:`pack_labels`."""
    compute_metrics = make_compute_metrics(image_processor, **kwargs)

    def compute_packed(eval_pred: EvalPrediction) -> dict[str, float]:
        labels = [unpack_labels(np.asarray(batch)) for batch in eval_pred.label_ids]
        return compute_metrics(EvalPrediction(predictions=eval_pred.predictions, label_ids=labels))

    return compute_packed


class DetrTrainer(Trainer):
    """`Trainer` with a backbone learning rate, a separate evaluation collator (evaluation resizes with the image
    processor and keeps crowd boxes; training pads already augmented images and drops them) and evaluation labels
    packed into one tensor per batch (see :func:`pack_labels`; use :func:`make_packed_compute_metrics`)."""

    def __init__(
        self, *args: Any, lr_backbone: float, eval_data_collator: DetectionCollator | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.lr_backbone = lr_backbone
        self.eval_data_collator = eval_data_collator

    def create_optimizer(self, model: torch.nn.Module | None = None) -> torch.optim.Optimizer:
        if self.optimizer is None:
            opt_model = self.model if model is None else model
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
            groups = parameter_groups(opt_model, self.lr_backbone, self.args.weight_decay)
            self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer

    def prediction_step(
        self, model: torch.nn.Module, inputs: dict[str, Any], prediction_loss_only: bool,
        ignore_keys: list[str] | None = None,
    ) -> tuple[torch.Tensor | None, Any, torch.Tensor | None]:  # fmt: skip
        loss, predictions, labels = super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)
        return loss, predictions, None if labels is None else pack_labels(labels)

    def get_eval_dataloader(self, eval_dataset: Any = None) -> torch.utils.data.DataLoader:
        if self.eval_data_collator is None:
            return super().get_eval_dataloader(eval_dataset)
        train_collator, self.data_collator = self.data_collator, self.eval_data_collator
        try:
            return super().get_eval_dataloader(eval_dataset)
        finally:
            self.data_collator = train_collator


class _EpochSetter(TrainerCallback):
    """Gives the training set the epoch number, which draws its augmentations. (accelerate forwards the epoch to the
    dataset on one process only; with several it stops at the distributed sampler.)"""

    def __init__(self, dataset: DetectionDataset) -> None:
        self.dataset = dataset

    def on_epoch_begin(self, args: TrainingArguments, state: Any, control: Any, **kwargs: Any) -> None:
        self.dataset.set_epoch(int(state.epoch or 0))


def load_splits(data_args: DataArguments, seed: int) -> tuple[datasets.Dataset | None, datasets.Dataset | None]:
    """The training and evaluation splits (``None`` for an empty split name), cut to ``max_*_samples``."""
    wanted = [name for name in (data_args.train_split, data_args.eval_split) if name]
    if data_args.dataset == "synthetic":
        unknown = [name for name in wanted if name not in SYNTHETIC_SPLITS]
        if unknown:
            raise ValueError(f"--dataset synthetic has the splits {SYNTHETIC_SPLITS}, not {unknown}.")
        counts = {data_args.train_split: data_args.synthetic_num_train,
                  data_args.eval_split: data_args.synthetic_num_eval}  # fmt: skip
        generated = make_synthetic_dataset(
            num_train=counts.get("train", 0), num_validation=counts.get("validation", 0),
            num_test=counts.get("test", 0), image_size=data_args.synthetic_image_size, seed=seed,
        )  # fmt: skip
        loaded = {name: generated[name] for name in wanted}
    else:
        loaded = load_detection_dataset(data_args.dataset, splits=wanted)
    train = loaded.get(data_args.train_split) if data_args.train_split else None
    evaluation = loaded.get(data_args.eval_split) if data_args.eval_split else None
    if train is not None and data_args.max_train_samples is not None:
        train = train.select(range(min(data_args.max_train_samples, len(train))))
    if evaluation is not None and data_args.max_eval_samples is not None:
        evaluation = evaluation.select(range(min(data_args.max_eval_samples, len(evaluation))))
    return train, evaluation


def load_model(model_args: ModelArguments, labels: dict[int, str]) -> HfDetrForObjectDetection:
    """The starting model with a class head for ``labels``; new weights for a folder that holds only a config. The
    backbone is frozen when ``lr_backbone`` is 0, as in DETR."""
    model = _load_weights(model_args, labels)
    if model_args.lr_backbone <= 0:
        model.freeze_backbone()
    return model


def _load_weights(model_args: ModelArguments, labels: dict[int, str]) -> HfDetrForObjectDetection:
    source = model_args.model_name_or_path
    config = HfDetrConfig.from_pretrained(source, revision=model_args.model_revision)
    if model_args.config_overrides:
        try:
            config.update_from_string(model_args.config_overrides)
        except (ValueError, TypeError) as error:
            raise ValueError(f"--config_overrides {model_args.config_overrides!r}: {error}") from error
        config = HfDetrConfig.from_dict(config.to_dict())  # validates the changed values
    config.id2label = dict(labels)
    config.label2id = {name: label for label, name in labels.items()}

    if os.path.isdir(source) and not any(os.path.isfile(os.path.join(source, f)) for f in _WEIGHT_FILES):
        logger.info("%s holds no weights: building a new model from its config.", source)
        return HfDetrForObjectDetection(config)
    model, info = HfDetrForObjectDetection.from_pretrained(
        source, config=config, revision=model_args.model_revision, ignore_mismatched_sizes=True,
        output_loading_info=True,
    )  # fmt: skip
    # Only the class head may change shape (a new label set); anything else means the overrides broke the checkpoint.
    broken = sorted(
        {key for key, *_ in info["mismatched_keys"]} | set(info["missing_keys"]) | set(info["unexpected_keys"])
    )
    broken = [key for key in broken if not key.startswith("class_embed.")]
    if broken:
        raise ValueError(
            f"The weights of {source} do not fit the model built from its config with --config_overrides "
            f"{model_args.config_overrides!r}: {broken[:5]}{' ...' if len(broken) > 5 else ''} would be reinitialized. "
            "Only override options that keep the architecture (e.g. dropout, loss weights) when starting from weights."
        )
    return model


def load_image_processor(source: str, data_args: DataArguments, revision: str | None) -> HfDetrImageProcessor:
    """The model folder's image processor (a default one if it has none), resizing as the evaluation does."""
    size = {"shortest_edge": data_args.eval_size, "longest_edge": data_args.max_size}
    try:
        return HfDetrImageProcessor.from_pretrained(source, revision=revision, size=size)
    except OSError:
        logger.info("%s has no preprocessor_config.json: using HfDetrImageProcessor's defaults.", source)
        return HfDetrImageProcessor(size=size)


def _setup_logging(training_args: TrainingArguments) -> None:
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        datefmt="%m/%d/%Y %H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    level = training_args.get_process_log_level()
    logger.setLevel(level)
    datasets.utils.logging.set_verbosity(level)
    transformers.utils.logging.set_verbosity(level)


def main(args: Sequence[str] | None = None) -> dict[str, float]:
    """Run the script with command-line ``args`` (default: ``sys.argv``); returns the train and eval metrics."""
    model_args, data_args, training_args = build_parser().parse_args_into_dataclasses(args=args)
    _setup_logging(training_args)
    if len(data_args.crop_size) != 2:
        raise ValueError(f"--crop_size takes two numbers, MIN MAX; got {data_args.crop_size}.")
    if training_args.remove_unused_columns:
        raise ValueError("--remove_unused_columns must be false: the collator reads the `image` and `objects` columns.")
    set_seed(training_args.seed)

    train_split, eval_split = load_splits(data_args, training_args.seed)
    if training_args.do_train and train_split is None:
        raise ValueError(f"--do_train needs a training split; --train_split is {data_args.train_split!r}.")
    needs_eval = training_args.do_eval or training_args.eval_strategy != "no"
    if needs_eval and eval_split is None:
        raise ValueError(
            f"Evaluation (--do_eval or --eval_strategy {training_args.eval_strategy}) needs --eval_split; "
            "pass --eval_strategy no without one."
        )
    labels = id2label(train_split if train_split is not None else eval_split)
    model = load_model(model_args, labels)
    image_processor = load_image_processor(model_args.model_name_or_path, data_args, model_args.model_revision)

    train_dataset = eval_dataset = None
    if train_split is not None:
        transform = make_train_transform(
            scales=data_args.train_scales, max_size=data_args.max_size,
            crop_resize_scales=data_args.crop_resize_scales, crop_size=tuple(data_args.crop_size),
            crop_prob=data_args.crop_prob,
        )  # fmt: skip
        train_dataset = DetectionDataset(train_split, transform, seed=training_args.seed)
    if eval_split is not None:
        eval_dataset = DetectionDataset(eval_split)

    trainer = DetrTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=DetectionCollator(image_processor),
        eval_data_collator=DetectionCollator(image_processor, do_resize=True, keep_crowd=True),
        processing_class=image_processor,
        compute_metrics=make_packed_compute_metrics(
            image_processor, id2label=labels, per_class=data_args.per_class_metrics
        ),
        lr_backbone=model_args.lr_backbone,
        callbacks=[_EpochSetter(train_dataset)] if train_dataset is not None else None,
    )

    metrics: dict[str, float] = {}
    if training_args.do_train:
        result = trainer.train(
            resume_from_checkpoint=training_args.resume_from_checkpoint, ignore_keys_for_eval=EVAL_IGNORE_KEYS
        )
        trainer.save_model()  # with load_best_model_at_end: the best checkpoint, with the image processor
        trainer.log_metrics("train", result.metrics)
        trainer.save_metrics("train", result.metrics)
        trainer.save_state()
        metrics.update(result.metrics)
    if training_args.do_eval:
        eval_metrics = trainer.evaluate(ignore_keys=EVAL_IGNORE_KEYS)
        trainer.log_metrics("eval", eval_metrics)
        trainer.save_metrics("eval", eval_metrics)
        metrics.update(eval_metrics)
    if training_args.push_to_hub:
        trainer.push_to_hub(
            finetuned_from=model_args.model_name_or_path, dataset=data_args.dataset,
            tags=["object-detection", "vision", "hf_detr"],
        )  # fmt: skip
    return metrics


if __name__ == "__main__":
    main()
