"""One options schema: every command's options are dataclass fields, read by transformers' `HfArgumentParser`.

`OptionsParser` is the parser of `hf-detr`, of its subcommands (`add_options`) and of the Trainer example
(`parse_args_into_dataclasses`, with `TrainingArguments`). Every option is `--field_name`, also accepted as
`--field-name`; `--help` shows the underscore spelling only. Field metadata beyond argparse's: `positional` (an
argument without `--`), `deprecated` (old spellings, hidden, which still parse and warn with a FutureWarning naming the
new flag) and `parse` (the string-to-value function, instead of the annotation's type).

The fields several commands share are made here once (`task_field`, `dataset_field`, `BoxOptions`, ...), so that a
concept has one name, one help and one check everywhere. This module imports nothing heavy: `hf-detr --help` reads it.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import types
import typing
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal

from transformers.hf_argparser import HfArgumentParser

from ..modeling.boxes import BoxPolicy
from ..modeling.configuration_hf_detr import TASKS

__all__ = [
    "BoxOptions",
    "CocoBackend",
    "OptionsParser",
    "Task",
    "add_options",
    "box_options",
    "coco_backend_field",
    "dataset_field",
    "disable_tqdm_field",
    "eval_batch_size_field",
    "from_namespace",
    "model_argument",
    "nms_threshold_field",
    "split_field",
    "task_field",
    "threshold_field",
]

# who computes COCOeval's numbers: pycocotools, or hf_detr's arrays (the same numbers, ~10x faster at val2017's size;
# hf_detr.evaluation.metrics.COCO_BACKENDS, which a test keeps equal to this)
CocoBackend = Literal["pycocotools", "numpy"]
# what the model predicts: boxes, or boxes and masks (HfDetrForSegmentation); HfDetrConfig.task's vocabulary
Task = Literal[TASKS]

_OWN_METADATA = ("positional", "deprecated", "parse")


class OneStyleHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """`--help` lists an option under its underscore spelling (as transformers' TrainingArguments do); the dash
    spelling still parses."""

    def _format_action_invocation(self, action: argparse.Action) -> str:
        shown = [s for s in action.option_strings if not _is_dash_twin(s, action.option_strings)]
        return super()._format_action_invocation(_with_strings(action, shown))

    def _get_help_string(self, action: argparse.Action) -> str | None:
        # a help that explains its default, and a `--no_x` switch, get no second "(default: ...)"
        if "default" in (action.help or "") or isinstance(action, argparse._StoreFalseAction):
            return action.help
        return super()._get_help_string(action)


def _is_dash_twin(option: str, options: list[str]) -> bool:
    return option.startswith("--") and "-" in option[2:] and "--" + option[2:].replace("-", "_") in options


def _with_strings(action: argparse.Action, option_strings: list[str]) -> argparse.Action:
    if option_strings == action.option_strings:
        return action
    shown = copy.copy(action)
    shown.option_strings = option_strings
    return shown


class _DeprecatedAlias(argparse.Action):
    """An old spelling of an option: sets the option's value and warns with the new flag's name."""

    def __init__(self, option_strings: list[str], dest: str, new: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.new = new

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        # named after the command, not argparse's line: a FutureWarning shows by default
        message = f"{option_string} is deprecated: use {self.new}"
        warnings.warn_explicit(message, FutureWarning, filename=parser.prog, lineno=0, module=parser.prog)
        setattr(namespace, self.dest, values)


def _spellings(name: str) -> list[str]:
    """`--name_with_underscores` and, when it has any, `--name-with-underscores`."""
    return [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])


def add_options(parser: argparse.ArgumentParser, dtype: type) -> None:
    """One argument per init field of the dataclass `dtype` (HfArgumentParser's types, defaults and choices, plus the
    metadata of this module's docstring)."""
    hints = typing.get_type_hints(dtype)
    for spec in dataclasses.fields(dtype):
        if not spec.init:
            continue
        own = {key: spec.metadata[key] for key in _OWN_METADATA if key in spec.metadata}
        if own.get("positional"):
            _add_positional(parser, spec, hints[spec.name])
            continue
        plain = copy.copy(spec)
        plain.metadata = types.MappingProxyType({k: v for k, v in spec.metadata.items() if k not in _OWN_METADATA})
        plain.type = hints[spec.name]
        HfArgumentParser._parse_dataclass_field(parser, plain)
        action = next(a for a in parser._actions if f"--{spec.name}" in a.option_strings)
        if "parse" in own:
            action.type = own["parse"]
        if "nargs" in spec.metadata:  # the field's own, over HfArgumentParser's "+" for lists
            action.nargs = spec.metadata["nargs"]
        switch_off = next((a for a in parser._actions if f"--no_{spec.name}" in a.option_strings), None)
        if switch_off is not None:  # HfArgumentParser repeats the field's help on it
            switch_off.help = f"the same as --{spec.name} false"
        for old in own.get("deprecated", ()):
            parser.add_argument(
                *_spellings(old),
                dest=spec.name,
                action=_DeprecatedAlias,
                new=f"--{spec.name}",
                default=argparse.SUPPRESS,
                help=argparse.SUPPRESS,
                type=action.type,
                nargs=action.nargs,
                const=action.const,
                choices=action.choices,
                metavar=action.metavar,
            )


def _add_positional(parser: argparse.ArgumentParser, spec: dataclasses.Field, kind: Any) -> None:
    options = {key: value for key, value in spec.metadata.items() if key not in _OWN_METADATA}
    if typing.get_origin(kind) in (typing.Union, types.UnionType):  # X | None
        kind = next(arg for arg in typing.get_args(kind) if arg is not type(None))
    if typing.get_origin(kind) is list:
        kind = typing.get_args(kind)[0]
        options.setdefault("nargs", "+")
    if spec.default is not dataclasses.MISSING:
        options.setdefault("nargs", "?")
        options["default"] = spec.default
    parser.add_argument(spec.name, type=kind, **options)


class OptionsParser(HfArgumentParser):
    """`HfArgumentParser` with this module's additions (`add_options`) and one help style; its subparsers are
    `OptionsParser`s too."""

    def __init__(self, dataclass_types: Any = None, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", OneStyleHelpFormatter)
        super().__init__(dataclass_types, **kwargs)

    def _add_dataclass_arguments(self, dtype: type) -> None:
        add_options(
            self.add_argument_group(dtype._argument_group_name) if hasattr(dtype, "_argument_group_name") else self,
            dtype,
        )

    def add_dataclass(self, dtype: type) -> None:
        """Add `dtype`'s options; `parse_args_into_dataclasses` then also returns an instance of it."""
        self.dataclass_types.append(dtype)
        self._add_dataclass_arguments(dtype)


def from_namespace(dtype: type, args: argparse.Namespace) -> Any:
    """The `dtype` of parsed arguments (its init fields; other attributes of `args` are ignored)."""
    return dtype(**{spec.name: getattr(args, spec.name) for spec in dataclasses.fields(dtype) if spec.init})


# ------------------------------------------------------------------------------------------- shared fields

_MISSING: Any = dataclasses.MISSING


def task_field() -> Any:
    return field(
        default=None,
        metadata={
            "help": "what the model predicts (default: the model's own): detection (boxes; a segmentation checkpoint's "
            "detector), or instance / panoptic (boxes and masks: HfDetrForSegmentation); HfDetrConfig.task"
        },
    )


def model_argument(help: str, optional: bool = False) -> Any:
    """MODEL, what `hf_detr.create_model` takes: a preset, a folder or a Hub id, hf_detr's or transformers' DETR."""
    return field(
        default=None if optional else _MISSING, metadata={"positional": True, "help": help, "metavar": "MODEL"}
    )


def dataset_field(default: Any = _MISSING, help: str = "") -> Any:
    return field(
        default=default,
        metadata={
            "help": "a data set: 'synthetic' (generated shapes), a Hub id, a save_to_disk folder, or a COCO, YOLO or "
            "Pascal VOC folder (hf_detr.data.load_data)" + (f"; {help}" if help else "")
        },
    )


def split_field(default: str | None = "validation", help: str = "the split of --dataset") -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(kw_only=True)
class BoxOptions:
    """What the loader does with boxes reaching outside their image (hf_detr.data.box_policy explains both)."""

    box_policy: BoxPolicy = field(
        default="clip",
        metadata={"help": "boxes reaching outside their image: clip, drop or error (hf_detr.data.box_policy)"},
    )
    box_tolerance: float = field(
        default=1.0,
        metadata={"help": "pixels a box may reach outside its image and count as inside (hf_detr.data.box_policy)"},
    )


def eval_batch_size_field(default: int = 8) -> Any:
    return field(
        default=default,
        metadata={
            "help": "images per forward pass when evaluating or predicting",
            "deprecated": ("batch_size",),
        },
    )


def threshold_field(default: float, help: str) -> Any:
    return field(default=default, metadata={"help": f"minimum score of a detection kept: {help}"})


def nms_threshold_field() -> Any:
    return field(
        default=None,
        metadata={
            "help": "class-wise non-maximum suppression of the detections at this IoU, a fallback for under-trained "
            "checkpoints that give an object several queries (post_process_object_detection's nms_threshold; "
            "default: none, as DETR)"
        },
    )


def coco_backend_field() -> Any:
    return field(
        default="pycocotools",
        metadata={
            "help": "computes the COCO numbers: pycocotools, or numpy (hf_detr's own arrays: pycocotools' numbers bit "
            "for bit, about 10x faster on val2017's 5,000 images)"
        },
    )


def disable_tqdm_field() -> Any:
    return field(
        default=False,
        metadata={"help": "no progress bar", "deprecated": ("no_progress",)},
    )


def box_options(options: Any) -> dict[str, Any]:
    """The loader's keywords of `options`' `BoxOptions`."""
    return {"box_policy": options.box_policy, "box_tolerance": options.box_tolerance}
