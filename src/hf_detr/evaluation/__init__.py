"""Evaluation: COCO metrics through pycocotools (`metrics`) and the one evaluation loop (`evaluate`)."""

from .evaluate import evaluate, evaluation_collator, evaluation_dataset, evaluation_loader, model_labels
from .metrics import (
    COCO_STAT_NAMES,
    PER_CLASS_STATS,
    CocoDetectionMetric,
    CocoEvaluation,
    coco_evaluate,
    format_per_class_table,
    make_compute_metrics,
    pack_labels,
    per_class_key,
    per_class_rows,
    unpack_labels,
)

__all__ = [
    "COCO_STAT_NAMES",
    "PER_CLASS_STATS",
    "CocoDetectionMetric",
    "CocoEvaluation",
    "coco_evaluate",
    "evaluate",
    "evaluation_collator",
    "evaluation_dataset",
    "evaluation_loader",
    "format_per_class_table",
    "make_compute_metrics",
    "model_labels",
    "pack_labels",
    "per_class_key",
    "per_class_rows",
    "unpack_labels",
]
