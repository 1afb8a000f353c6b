"""The options of the `hf-detr` subcommands other than `train` (whose options are `training.config.TrainConfig`), as
dataclasses read by `training.options.OptionsParser`. The fields several commands share are made once in
`training.options` (model, task, dataset, split, box policy and tolerance, batch size, threshold, NMS, COCO backend).

Renamed options keep their old spelling as a hidden alias that warns (`deprecated` in the field's metadata):
`--batch_size` -> `--per_device_eval_batch_size`, `--no_progress` -> `--disable_tqdm`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..hub.convert import ORIGINAL_BACKBONES
from ..hub.export import DTYPES
from ..modeling.configuration_hf_detr import TASKS
from ..training.options import (
    BoxOptions,
    CocoBackend,
    Task,
    coco_backend_field,
    dataset_field,
    disable_tqdm_field,
    eval_batch_size_field,
    model_argument,
    nms_threshold_field,
    split_field,
    task_field,
    threshold_field,
)

__all__ = [
    "AppOptions",
    "CheckDataOptions",
    "ConvertOptions",
    "DemoOptions",
    "EvaluateOptions",
    "ExportOptions",
    "PredictOptions",
    "TrainCommandOptions",
]

_SAVED_MODEL = "a folder or Hub id with its image processor, hf_detr's or transformers' DETR (converted on load)"


@dataclass(kw_only=True)
class ConvertOptions:
    source: str = field(
        metadata={
            "positional": True,
            "help": "the .pth file (original) or the folder / Hub repository id (transformers)",
        }
    )
    output_dir: Path = field(metadata={"positional": True, "help": "the folder to write"})
    source_format: Literal["original", "transformers"] = field(
        metadata={"help": "the checkpoint's code", "aliases": ("--from",)}
    )
    backbone: Literal[ORIGINAL_BACKBONES] = field(
        default="resnet50", metadata={"help": "original checkpoints (the weights cannot tell): the backbone"}
    )
    dilation: bool = field(
        default=False, metadata={"help": "original checkpoints: a DC5 model (trained with --dilation)"}
    )


@dataclass(kw_only=True)
class PredictOptions:
    model: str = model_argument(_SAVED_MODEL)
    paths: list[str] = field(
        metadata={
            "positional": True,
            "metavar": "PATH",
            "help": "image files, folders (their images, searched recursively, in sorted order) or video files (.mp4 "
            ".avi .mov .mkv .webm; need PyAV: pip install 'hf_detr[video]')",
        }
    )
    task: Task | None = task_field()
    threshold: float = threshold_field(0.5, "those below are not reported")
    nms_threshold: float | None = nms_threshold_field()
    out: Path | None = field(
        default=None,
        metadata={"metavar": "DIR", "help": "folder for annotated PNGs and MP4s, results.json and images.json"},
    )
    format: Literal["default", "coco"] = field(
        default="default", metadata={"help": "printed JSON: one entry per image or frame (default), or COCO results"}
    )
    per_device_eval_batch_size: int = eval_batch_size_field(1)
    tile: int | None = field(
        default=None,
        metadata={"metavar": "SIZE", "help": "cut each image or frame into SIZE x SIZE tiles, detect in each, merge"},
    )
    overlap: float = field(
        default=0.2, metadata={"help": "with --tile: the fraction of a tile that neighbours share, in [0, 1)"}
    )
    tile_iou: float = field(
        default=0.5,
        metadata={
            "help": "with --tile: a detection of one tile overlapping a better one of the same label from another "
            "tile by more than this IoU is the same object"
        },
    )
    disable_tqdm: bool = disable_tqdm_field()


@dataclass(kw_only=True)
class TrainCommandOptions:
    """What `hf-detr train` adds to `TrainConfig`."""

    diagnostics: bool = field(
        default=True,
        metadata={
            "help": "write OUTPUT_DIR/diagnostics/ (confusion matrix, per-class precision-recall, worst images of the "
            "evaluation split, as `hf-detr evaluate --out`; when matplotlib is installed); --no_diagnostics skips it"
        },
    )


@dataclass(kw_only=True)
class EvaluateOptions(BoxOptions):
    model: str = model_argument(_SAVED_MODEL)
    task: Task | None = task_field()
    dataset: str = dataset_field()
    split: str = split_field()
    per_device_eval_batch_size: int = eval_batch_size_field(8)
    threshold: float = threshold_field(0.0, "the default 0 keeps all, as COCO's protocol does")
    nms_threshold: float | None = nms_threshold_field()
    per_class: bool = field(
        default=False,
        metadata={"help": "also print AP, AP50, AR@100 and the ground-truth objects of every class"},
    )
    out: Path | None = field(
        default=None,
        metadata={
            "metavar": "DIR",
            "help": "write DIR/metrics.json (the COCO numbers and the per-class table), DIR/pr_curve.png and "
            "DIR/pr_curves_per_class.png (precision-recall from the same COCOeval run), DIR/confusion_matrix.json "
            "and .png and DIR/worst_images.png (the images with the most errors), at --iou_threshold and "
            "--score_threshold (needs matplotlib: pip install 'hf_detr[viz]')",
        },
    )
    iou_threshold: float = field(
        default=0.5, metadata={"help": "with --out: a detection matches a ground-truth box at this IoU or more"}
    )
    score_threshold: float = field(
        default=0.5,
        metadata={
            "help": "with --out: the confusion matrix and worst images count detections scoring at least this "
            "(--threshold instead filters what COCO scores)"
        },
    )
    worst: int = field(default=8, metadata={"help": "with --out: images in worst_images.png"})
    device: str | None = field(default=None, metadata={"help": "torch device (default: cuda if available, else cpu)"})
    coco_backend: CocoBackend = coco_backend_field()


@dataclass(kw_only=True)
class DemoOptions(BoxOptions):
    output_dir: Path = field(default=Path("demo_output"), metadata={"help": "the folder to write"})
    time_budget: float = field(default=600.0, metadata={"help": "training seconds"})
    seed: int = field(default=0, metadata={"help": "seeds the data, the weights and the training"})
    dataset: str | None = dataset_field(None, "train and test on its train and test splits instead of the shapes")
    task: Literal[(*TASKS, "segmentation")] = field(
        default="detection",
        metadata={
            "help": "instance / panoptic: the recipe with DETR's mask head, trained on the shapes' masks; reports mask "
            "AP and panoptic quality too (segmentation: the deprecated name of instance)"
        },
    )


@dataclass(kw_only=True)
class CheckDataOptions(BoxOptions):
    dataset: str = field(
        metadata={
            "positional": True,
            "metavar": "DATASET",
            "help": "data set folder, YOLO data.yaml, Hub dataset id or 'synthetic'",
        }
    )
    split: list[str] | None = field(
        default=None,
        metadata={
            "action": "append",
            "nargs": None,
            "help": "check only this split (repeat for several; default: all)",
        },
    )


@dataclass(kw_only=True)
class AppOptions(BoxOptions):
    model: str = model_argument(_SAVED_MODEL)
    task: Task | None = task_field()
    dataset: str | None = dataset_field(None, "the page offers its first --examples images of --split to pick from")
    split: str = split_field()
    examples: int = field(default=8, metadata={"help": "with --dataset: how many images"})
    threshold: float = threshold_field(0.5, "the slider's starting value")
    max_video_frames: int = field(default=300, metadata={"help": "longer videos are refused with a message"})
    host: str | None = field(
        default=None,
        metadata={
            "help": "address to serve on (default: $GRADIO_SERVER_NAME, else 127.0.0.1, this machine only; 0.0.0.0 "
            "for every network)"
        },
    )
    port: int | None = field(default=None, metadata={"help": "default: $GRADIO_SERVER_PORT, else 7860"})


@dataclass(kw_only=True)
class ExportOptions(BoxOptions):
    model: str | None = model_argument(
        "a model folder or Hub id (with --validate: compare with this model instead of the one the export records)",
        optional=True,
    )
    out_dir: Path | None = field(default=None, metadata={"positional": True, "help": "the folder to write"})
    task: Task | None = task_field()
    format: Literal["onnx"] = field(default="onnx", metadata={"help": "the exported file's format"})
    dtype: Literal[DTYPES] | None = field(
        default=None,
        metadata={
            "help": "fp16: float16 weights and arithmetic but for LayerNorm, softmax, the boxes' sigmoid and top-k "
            "(and the end-to-end pre- and post-processing), kept float32 (default: fp32)"
        },
    )
    end_to_end: bool = field(
        default=False, metadata={"help": "also write model_end_to_end.onnx, images in and detections out"}
    )
    max_detections: int | None = field(
        default=None,
        metadata={"help": "detections per image of the end-to-end graph (default: the model's queries, at most 100)"},
    )
    validate: Path | None = field(
        default=None, metadata={"metavar": "OUT_DIR", "help": "validate this export folder instead of exporting"}
    )
    dataset: str | None = dataset_field(None, "score COCO mAP of the graphs and the model on its --split")
    split: str = split_field()
    per_device_eval_batch_size: int = eval_batch_size_field(8)
