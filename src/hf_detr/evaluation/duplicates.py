"""Duplicate detections: DETR's one-to-one matching should leave one confident box per object, and an under-trained
detector leaves several (facebookresearch/detr #9). COCO AP hides them (a duplicate costs precision only above the
recall it adds), so they are counted on their own.

Per image, among the detections scoring at least `threshold`, ranked by score (ties by their order):

- a **duplicate** is a detection whose box overlaps a higher-ranked detection of the same class at IoU >= `iou`;
- a **duplicated object** is a non-crowd ground-truth object with more than one of them of its class at IoU >= `iou`.

`duplicate_rate` is duplicates over confident detections and `duplicated_objects` duplicated objects over objects,
both summed over the data set first (-1.0 where nothing defines them, as the COCO metrics do).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..modeling.errors import HfDetrInputError
from .coco_inputs import prediction_arrays, reference_arrays

__all__ = [
    "DUPLICATE_IOU",
    "DUPLICATE_STAT_NAMES",
    "DuplicateCounts",
    "count_duplicates",
    "duplicate_measure",
    "repeats_a_better_one",
]

DUPLICATE_IOU = 0.7
DUPLICATE_STAT_NAMES = ("duplicate_rate", "duplicated_objects")


@dataclass
class DuplicateCounts:
    """Counts of one image or, added up, of a data set."""

    detections: int = 0  # scoring at least the threshold
    duplicates: int = 0
    objects: int = 0  # non-crowd ground truth
    duplicated_objects: int = 0

    def __add__(self, other: DuplicateCounts) -> DuplicateCounts:
        return DuplicateCounts(*(a + b for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(other))))

    def metrics(self) -> dict[str, float]:
        return {
            "duplicate_rate": self.duplicates / self.detections if self.detections else -1.0,
            "duplicated_objects": self.duplicated_objects / self.objects if self.objects else -1.0,
        }


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of (x0, y0, x1, y1) boxes `[n, 4]` and `[m, 4]`; 0 where both are empty. In numpy: an image has
    a handful of confident boxes, and torch's per-call cost made 5,000 images take seconds."""
    low = np.maximum(a[:, None, :2], b[None, :, :2])
    high = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(high - low, 0, None), axis=2)
    union = np.prod(a[:, 2:] - a[:, :2], 1)[:, None] + np.prod(b[:, 2:] - b[:, :2], 1)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def repeats_a_better_one(boxes: np.ndarray, labels: np.ndarray, iou: float = DUPLICATE_IOU) -> np.ndarray:
    """For detections ranked best first (x0, y0, x1, y1 boxes `[n, 4]`, labels `[n]`): whether each overlaps a
    higher-ranked one of its class at IoU >= `iou`, the rule that makes it a duplicate."""
    overlaps = (_iou(boxes, boxes) >= iou) & (labels[:, None] == labels[None, :])
    return np.tril(overlaps, k=-1).any(axis=1)


def count_duplicates(
    prediction: Mapping[str, np.ndarray],
    reference: Mapping[str, np.ndarray],
    threshold: float = 0.5,
    iou: float = DUPLICATE_IOU,
) -> DuplicateCounts:
    """The counts of one image: `prediction` and `reference` as :func:`.coco_inputs.prediction_arrays` and
    :func:`.coco_inputs.reference_arrays` give them (boxes x0, y0, x1, y1 and COCO x, y, w, h pixels)."""
    scores = np.asarray(prediction["scores"], dtype=np.float64)
    order = np.argsort(-scores, kind="stable")
    order = order[scores[order] >= threshold]
    boxes = np.asarray(prediction["boxes"], dtype=np.float64).reshape(-1, 4)[order]
    labels = np.asarray(prediction["labels"]).reshape(-1)[order]
    duplicates = int(repeats_a_better_one(boxes, labels, iou).sum())

    crowd = np.asarray(reference["iscrowd"]).reshape(-1).astype(bool)
    truth = np.asarray(reference["boxes"], dtype=np.float64).reshape(-1, 4)[~crowd]
    truth = np.concatenate([truth[:, :2], truth[:, :2] + truth[:, 2:]], axis=1)  # COCO (x, y, w, h) to corners
    truth_labels = np.asarray(reference["labels"]).reshape(-1)[~crowd]
    covering = (_iou(truth, boxes) >= iou) & (truth_labels[:, None] == labels[None, :])
    return DuplicateCounts(len(order), duplicates, len(truth), int((covering.sum(axis=1) > 1).sum()))


def duplicate_measure(
    predictions: Sequence[Mapping[str, Any]],
    references: Sequence[Mapping[str, Any]],
    threshold: float = 0.5,
    iou: float = DUPLICATE_IOU,
) -> dict[str, float]:
    """Inputs in the formats of :func:`hf_detr.evaluation.coco_evaluate`, checked as it checks them."""
    if len(predictions) != len(references):
        raise HfDetrInputError(
            f"Got {len(predictions)} predictions but {len(references)} references; need one per image."
        )
    if not 0.0 < iou <= 1.0:
        raise HfDetrInputError(f"iou must be in (0, 1], got {iou}")
    total = DuplicateCounts()
    for i, (prediction, reference) in enumerate(zip(predictions, references)):
        total += count_duplicates(
            prediction_arrays(prediction, f"predictions[{i}]"),
            reference_arrays(reference, f"references[{i}]"),
            threshold,
            iou,
        )
    return total.metrics()
