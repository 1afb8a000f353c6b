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
import torch
from torchvision.ops import box_convert, box_iou

from ..modeling.errors import HfDetrInputError
from .coco_inputs import prediction_arrays, reference_arrays

__all__ = ["DUPLICATE_IOU", "DUPLICATE_STAT_NAMES", "DuplicateCounts", "count_duplicates", "duplicate_measure"]

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


def count_duplicates(
    prediction: Mapping[str, np.ndarray],
    reference: Mapping[str, np.ndarray],
    threshold: float = 0.5,
    iou: float = DUPLICATE_IOU,
) -> DuplicateCounts:
    """One image's, from the arrays of :func:`.coco_inputs.prediction_arrays` and ``reference_arrays``."""
    scores = torch.as_tensor(prediction["scores"], dtype=torch.float64)
    order = torch.argsort(scores, descending=True, stable=True)
    order = order[scores[order] >= threshold]
    boxes = torch.as_tensor(prediction["boxes"], dtype=torch.float64)[order]
    labels = torch.as_tensor(prediction["labels"])[order]
    same_class = labels[:, None] == labels[None, :]
    # detection i overlaps a higher-ranked j < i of its class
    overlaps = (box_iou(boxes, boxes) >= iou) & same_class
    duplicates = int(overlaps.tril(diagonal=-1).any(dim=1).sum())

    crowd = torch.as_tensor(reference["iscrowd"]).bool()
    truth = box_convert(torch.as_tensor(reference["boxes"], dtype=torch.float64)[~crowd], "xywh", "xyxy")
    truth_labels = torch.as_tensor(reference["labels"])[~crowd]
    covering = (box_iou(truth, boxes) >= iou) & (truth_labels[:, None] == labels[None, :])
    return DuplicateCounts(len(order), duplicates, len(truth), int((covering.sum(dim=1) > 1).sum()))


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
