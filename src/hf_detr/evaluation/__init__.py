"""Evaluation: COCO metrics through pycocotools (`metrics`) and the one evaluation loop (`evaluate`)."""

from .evaluate import evaluate, evaluation_collator, evaluation_dataset, evaluation_loader, model_labels
from .metrics import (
    COCO_STAT_NAMES,
    CocoDetectionMetric,
    coco_evaluate,
    make_compute_metrics,
    pack_labels,
    unpack_labels,
)

__all__ = [
    "COCO_STAT_NAMES",
    "CocoDetectionMetric",
    "coco_evaluate",
    "evaluate",
    "evaluation_collator",
    "evaluation_dataset",
    "evaluation_loader",
    "make_compute_metrics",
    "model_labels",
    "pack_labels",
    "unpack_labels",
]
