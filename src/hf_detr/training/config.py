"""`TrainConfig`: every option of the accelerate training loop, as dataclass fields and as `hf-detr train --<field>`
options (`training.options`: transformers' HfArgumentParser). `ModelOptions`, `DataOptions` and `RecipeOptions` are
the parts the Trainer example (examples/run_object_detection.py) shares, beside transformers' `TrainingArguments`.

This module imports nothing heavy: `hf-detr --help` builds its parser from it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ..modeling.boxes import BoxPolicy
from ..modeling.errors import HfDetrInputError
from .options import (
    BoxOptions,
    CocoBackend,
    Task,
    add_options,
    coco_backend_field,
    dataset_field,
    disable_tqdm_field,
    task_field,
)

__all__ = [
    "Augment",
    "BoxPolicy",
    "CocoBackend",
    "DataOptions",
    "ModelOptions",
    "RecipeOptions",
    "TrainConfig",
    "add_arguments",
    "config_from_args",
]

# training augmentation: DETR's recipe, horizontal flips only, or none (the image processor's resize alone)
Augment = Literal["detr", "flip", "none"]

_IMAGE_SIZE_HELP = "see hf_detr.training.setup.with_image_size"


class _Checked:
    """Field checks with errors naming the class, the field and the fix; each part checks its own fields in
    `_check`, and `__post_init__` runs every part's."""

    def __post_init__(self) -> None:
        for part in reversed(type(self).__mro__):
            if "_check" in vars(part):
                vars(part)["_check"](self)

    def _fail(self, name: str, fix: str) -> None:
        raise HfDetrInputError(f"{type(self).__name__}.{name}={getattr(self, name)!r} is invalid: {fix}")

    def _at_least_one(self, *names: str, optional: bool = False) -> None:
        for name in names:
            value = getattr(self, name)
            if (value is not None or not optional) and value < 1:
                self._fail(name, "it must be at least 1" + (" (or left unset)" if optional else ""))

    def _non_negative(self, *names: str) -> None:
        for name in names:
            if getattr(self, name) < 0:
                self._fail(name, "it must be non-negative")


@dataclass(kw_only=True)
class ModelOptions(_Checked):
    """The model to start from (`hf_detr.create_model`)."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "what hf_detr.create_model takes: a preset (detr-resnet-50, demo, tiny, ...; hf-detr train applies "
            "its training settings as defaults), a hub_configs/ folder (config only: random init), a trained model "
            "folder or a Hub id, hf_detr's or transformers' DETR (default: a new model of HfDetrConfig's defaults)",
            "aliases": ("--model",),
        },
    )
    task: Task | None = task_field()
    freeze_detection: bool = field(
        default=False,
        metadata={"help": "segmentation: train the mask head only, on a trained detector (the paper's second phase)"},
    )
    model_kwargs: dict | str | None = field(
        default=None,
        metadata={
            "help": 'HfDetrConfig overrides, JSON on the command line: \'{"backbone": "resnet18"}\'; with trained '
            "weights only changes that keep every weight's shape",
            "parse": lambda text: _json_object(text),
        },
    )

    def _check(self) -> None:
        if isinstance(self.model_kwargs, str):
            try:
                self.model_kwargs = _json_object(self.model_kwargs)
            except argparse.ArgumentTypeError as error:
                raise HfDetrInputError(f"{type(self).__name__}.model_kwargs: {error}") from None
        if self.task is not None and self.task not in typing.get_args(Task):
            self._fail("task", f"choose one of {typing.get_args(Task)}")


@dataclass(kw_only=True)
class DataOptions(BoxOptions, _Checked):
    """The data set, its splits and the training images' size and augmentation."""

    dataset: str = dataset_field("synthetic")
    train_split: str = field(default="train", metadata={"help": "the split to train on"})
    eval_split: str | None = field(default="validation", metadata={"help": "'none' to skip evaluation"})
    synthetic_train_size: int = field(
        default=1000, metadata={"help": "--dataset synthetic: training images", "deprecated": ("synthetic_num_train",)}
    )
    synthetic_eval_size: int = field(
        default=200, metadata={"help": "--dataset synthetic: evaluation images", "deprecated": ("synthetic_num_eval",)}
    )
    synthetic_image_size: int = field(default=128, metadata={"help": "--dataset synthetic: image side in pixels"})
    image_size: int | None = field(
        default=None,
        metadata={
            "help": "shorter side of the saved image processor and the largest training scale (default: the starting "
            f"model's processor; {_IMAGE_SIZE_HELP})"
        },
    )
    max_size: int | None = field(
        default=None, metadata={"help": f"longer side cap (default: image_size * 1333/800; {_IMAGE_SIZE_HELP})"}
    )
    augment: Augment = field(
        default="detr",
        metadata={
            "help": "training augmentation: DETR's flip / multi-scale / crop recipe, horizontal flips only (better "
            "for a short training from scratch, see docs/RECIPE.md), or none"
        },
    )

    def _check(self) -> None:
        if self.eval_split in ("", "none", "None"):
            self.eval_split = None
        self._at_least_one("synthetic_train_size", "synthetic_image_size")
        self._at_least_one("image_size", "max_size", optional=True)
        self._non_negative("synthetic_eval_size", "box_tolerance")
        if self.augment not in typing.get_args(Augment):
            self._fail("augment", "choose 'detr' (DETR's flip / multi-scale / crop), 'flip' or 'none'")
        if self.box_policy not in typing.get_args(BoxPolicy):
            self._fail("box_policy", "choose 'clip' (clip boxes to their image, drop empty ones), 'drop' or 'error'")


@dataclass(kw_only=True)
class RecipeOptions(_Checked):
    """DETR's training settings that transformers' TrainingArguments do not have."""

    backbone_learning_rate: float = field(default=1e-5, metadata={"help": "0 freezes the backbone"})
    early_stopping_patience: int | None = field(
        default=None,
        metadata={
            "help": "stop when metric_for_best_model has not improved for N consecutive evaluations (needs an "
            "eval split)"
        },
    )
    one_to_one_finish: float = field(
        default=0.0,
        metadata={
            "help": "the last fraction of training trains only the queries inference uses: a one-to-many group "
            "(one_to_many_repeats) and extra query groups stop, and the duplicate boxes they teach are unlearned "
            "(docs/RECIPE.md); 0: off"
        },
    )

    def _check(self) -> None:
        self._non_negative("backbone_learning_rate")
        if not 0 <= self.one_to_one_finish < 1:
            self._fail("one_to_one_finish", "it is a fraction of the training in [0, 1)")
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            self._fail("early_stopping_patience", "give at least 1 evaluation (or leave it unset: no early stopping)")


@dataclass(kw_only=True)
class TrainConfig(RecipeOptions, DataOptions, ModelOptions):
    """Everything `train` needs; every field is also a `hf-detr train --<field>` option."""

    output_dir: str = field(metadata={"help": "where the model folder, logs and checkpoints/ go"})
    shuffle: bool = field(
        default=True,
        metadata={
            "help": "shuffle the training images every epoch (streamed: within the shuffle buffer); "
            "--no_shuffle keeps the data set's order"
        },
    )
    streaming: bool = field(
        default=False,
        metadata={
            "help": "train from a stream of train_split (a datasets.IterableDataset: nothing is loaded or copied "
            "first), cut into batches shared among the processes, shuffled with a buffer, resumable mid-epoch; the "
            "eval split is loaded in full. Bound the run with max_steps or time_budget (num_train_epochs needs the "
            "number of images, which only some streams record)"
        },
    )
    shuffle_buffer_size: int = field(
        default=1000,
        metadata={"help": "--streaming: how many examples the shuffle mixes (kept in memory, images undecoded)"},
    )
    # how long
    num_train_epochs: int | None = field(default=None, metadata={"help": "passes over train_split"})
    max_steps: int | None = field(default=None, metadata={"help": "optimizer steps; overrides num_train_epochs"})
    time_budget: float | None = field(
        default=None,
        metadata={
            "help": "seconds: stop cleanly (state saved) once exceeded; without epochs or max_steps the lr schedule "
            "spans this budget"
        },
    )
    # optimization
    per_device_train_batch_size: int = field(default=4, metadata={"help": "training images per step and process"})
    per_device_eval_batch_size: int = field(
        default=8, metadata={"help": "evaluation images per forward pass and process"}
    )
    gradient_accumulation_steps: int = field(
        default=1, metadata={"help": "steps whose gradients one optimizer step sums"}
    )
    learning_rate: float = field(default=1e-4, metadata={"help": "AdamW's, for all but the backbone"})
    weight_decay: float = field(default=1e-4, metadata={"help": "AdamW's decoupled weight decay"})
    max_grad_norm: float = field(default=0.1, metadata={"help": "gradient clipping (DETR: 0.1); 0 disables"})
    lr_scheduler: Literal["step", "cosine", "constant"] = field(
        default="step", metadata={"help": "step: DETR's one drop by 10 at lr_drop; cosine: to 0 at the end"}
    )
    lr_drop: float = field(
        default=2 / 3, metadata={"help": "fraction of training after which 'step' divides the lr by 10"}
    )
    warmup_steps: int = field(default=0, metadata={"help": "optimizer steps of linear warm-up from 0"})
    ema_decay: float | None = field(
        default=None,
        metadata={
            "help": "keep an exponential moving average of the weights, ema = D * ema + (1 - D) * weights after every "
            "optimizer step (e.g. 0.999 for fine-tuning; default: off); evaluation during training and the saved "
            "model use the averaged weights, checkpoints hold the average so --resume continues it. BatchNorm "
            "running statistics are not averaged: the averaged model uses the live model's (averaging them breaks "
            "training from scratch, docs/RECIPE.md)"
        },
    )
    mixed_precision: Literal["no", "fp16", "bf16"] | None = field(
        default=None, metadata={"help": "default: accelerate's launch configuration"}
    )
    seed: int = field(default=42, metadata={"help": "seeds the weights, the augmentation and the order"})
    cpu: bool = field(default=False, metadata={"help": "train on the CPU even if a GPU is available"})
    coco_backend: CocoBackend = coco_backend_field()
    dataloader_num_workers: int | None = field(
        default=None,
        metadata={
            "help": "processes decoding and augmenting the training images, per training process (default: min(8, "
            "CPUs / processes on the machine) on a GPU, 0 on the CPU, see training.setup.dataloader_workers); "
            "results do not depend on it"
        },
    )
    # logging and checkpoints
    logging_steps: int = field(default=10, metadata={"help": "log the losses every N optimizer steps"})
    eval_steps: int | None = field(
        default=None,
        metadata={"help": "evaluate every N optimizer steps (default: after every epoch); also at the end"},
    )
    metric_for_best_model: str = field(
        default="map",
        metadata={
            "help": "the evaluation metric early stopping watches, greater is better: map, map_50, mar_100, "
            "map_class_<name>, ..."
        },
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
    disable_tqdm: bool = disable_tqdm_field()
    push_to_hub: bool = field(default=False, metadata={"help": "push the trained model to hub_model_id"})
    hub_model_id: str | None = field(default=None, metadata={"help": "the Hub repository, e.g. my-user/detr-shapes"})

    def _check(self) -> None:
        self._at_least_one(
            "per_device_train_batch_size",
            "per_device_eval_batch_size",
            "gradient_accumulation_steps",
            "logging_steps",
            "shuffle_buffer_size",
        )
        self._at_least_one("num_train_epochs", "max_steps", "eval_steps", "save_total_limit", optional=True)
        self._non_negative("learning_rate", "weight_decay", "max_grad_norm", "warmup_steps", "save_steps")
        if self.dataloader_num_workers is not None and self.dataloader_num_workers < 0:
            self._fail("dataloader_num_workers", "it must be non-negative (or left unset: chosen from the machine)")
        if self.time_budget is not None and self.time_budget <= 0:
            self._fail("time_budget", "give a positive number of seconds")
        if self.coco_backend not in typing.get_args(CocoBackend):
            self._fail("coco_backend", f"choose one of {typing.get_args(CocoBackend)}")
        if not 0 < self.lr_drop <= 1:
            self._fail("lr_drop", "it is a fraction of the training in (0, 1]")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            self._fail("ema_decay", "the decay is in (0, 1), e.g. 0.999 (or leave it unset: no averaging)")
        if self.early_stopping_patience is not None and self.eval_split is None:
            self._fail("early_stopping_patience", "early stopping watches the evaluation: give an eval_split")
        if self.num_train_epochs is None and self.max_steps is None and self.time_budget is None:
            raise HfDetrInputError("TrainConfig: say how long to train: num_train_epochs, max_steps or time_budget")
        if self.push_to_hub and not self.hub_model_id:
            self._fail("hub_model_id", "push_to_hub needs the repository id, e.g. 'my-user/detr-shapes'")


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not valid JSON ({error}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object like '{{\"d_model\": 128}}', got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add one `--<field>` option per `TrainConfig` field (`training.options.add_options`), with defaults marked so
    that `config_from_args` tells them from values typed."""
    add_options(parser, TrainConfig)
    fields = {spec.name for spec in dataclasses.fields(TrainConfig)}
    for action in parser._actions:
        if action.dest in fields and action.default is not argparse.SUPPRESS and not action.required:
            action.default = _Default(action.default)
    return parser


class _Default:
    """An option's default as `add_arguments` sets it: shown as the value in `--help`, replaced by a preset's
    training setting in `config_from_args`."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __str__(self) -> str:
        return str(self.value)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The `TrainConfig` of parsed `add_arguments` options: the options given, then the training settings of a preset
    named by `--model` (e.g. the demo's learning rates), then `TrainConfig`'s defaults."""
    values = {spec.name: getattr(args, spec.name) for spec in dataclasses.fields(TrainConfig)}
    preset_training: Mapping[str, Any] = {}
    model = values["model_name_or_path"]
    model = model.value if isinstance(model, _Default) else model
    if model is not None:
        from .. import presets  # imports the model code: only once the command runs

        if model in presets.list_presets():
            preset_training = presets.get(model).training
    for name, value in values.items():
        if isinstance(value, _Default):
            values[name] = preset_training.get(name, value.value)
    return TrainConfig(**values)
