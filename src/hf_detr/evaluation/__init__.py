"""Evaluation: COCO metrics through pycocotools (`metrics`; or `backend="numpy"`, the same numbers from arrays:
`coco_arrays`), the one evaluation loop (`evaluate`) and where a model goes wrong (`diagnostics`: confusion matrix,
per-image errors, per-class precision-recall curves); mask mAP and panoptic quality (`segmentation_metrics`)."""

from .diagnostics import ClassCurve, Diagnostics, ImageMatch, class_pr_curves, diagnose, match_image
from .evaluate import evaluate, evaluation_collator, evaluation_dataset, evaluation_loader, model_labels
from .metrics import (
    COCO_BACKENDS,
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
from .segmentation_metrics import (
    PQ_STAT_NAMES,
    SEGM_STAT_NAMES,
    CocoSegmentationMetric,
    PanopticQualityMetric,
    SegmentCounts,
    coco_segmentation_evaluate,
    encode_masks,
    panoptic_quality,
)

__all__ = [
    "COCO_BACKENDS",
    "COCO_STAT_NAMES",
    "PER_CLASS_STATS",
    "PQ_STAT_NAMES",
    "SEGM_STAT_NAMES",
    "CocoDetectionMetric",
    "CocoSegmentationMetric",
    "ClassCurve",
    "CocoEvaluation",
    "Diagnostics",
    "ImageMatch",
    "PanopticQualityMetric",
    "SegmentCounts",
    "class_pr_curves",
    "coco_evaluate",
    "coco_segmentation_evaluate",
    "diagnose",
    "encode_masks",
    "evaluate",
    "evaluation_collator",
    "evaluation_dataset",
    "evaluation_loader",
    "format_per_class_table",
    "make_compute_metrics",
    "match_image",
    "model_labels",
    "pack_labels",
    "panoptic_quality",
    "per_class_key",
    "per_class_rows",
    "unpack_labels",
]
