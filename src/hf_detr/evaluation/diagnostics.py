"""Where a detector goes wrong: a confusion matrix over the classes and "background", per-image error counts for a
gallery of the worst images, and per-class precision-recall curves, from one evaluation (no second model pass).

`diagnose(evaluation, iou_threshold, score_threshold)` reads the detections and ground truth a
:class:`~hf_detr.evaluation.coco_evaluation.CocoEvaluation` carries (``evaluate(..., return_evaluation=True)``) and
matches them per image with this rule (the usual detection confusion-matrix rule, as in ultralytics):

1. Detections scoring below ``score_threshold`` are dropped; the rest are taken best score first (ties: the order
   of the image's detection list).
2. Each detection takes the not yet matched, non-crowd ground-truth box of highest IoU
   (``torchvision.ops.box_iou``; ties: the first box), **whatever the two classes**, if that IoU is at least
   ``iou_threshold``: the pair counts at (ground-truth class, detected class), the diagonal when the classes agree.
   Each ground-truth box is matched at most once, so a second detection of a matched box is a false positive.
3. A detection matching no box is ignored when it lies on a crowd region (its intersection with the region over its
   own area is at least ``iou_threshold``: COCOeval's crowd rule), else it is a false positive, counted at
   (background, detected class).
4. Every non-crowd ground-truth box left unmatched is missed, counted at (its class, background). Crowd regions are
   never counted.
5. A false positive overlapping a higher-scored detection of its class at IoU >= 0.7 is also a **duplicate**
   (`hf_detr.evaluation.duplicates`' rule): DETR should have given the object one query, and NMS would remove it.

The matrix's rows are the ground truth, its columns the predictions, both the evaluation's classes in category
order and then "background"; the (background, background) cell is always 0. An image's errors are its missed boxes,
false positives and wrong-class matches (each a box the detector got wrong); `Diagnostics.worst` ranks images by
them. Nothing here imports matplotlib: the pictures are in `hf_detr.apps.visualize`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torchvision.ops import box_convert, box_iou

from ..modeling.boxes import check_boxes
from ..modeling.errors import HfDetrInputError
from .coco_evaluation import CocoEvaluation
from .duplicates import repeats_a_better_one

__all__ = ["BACKGROUND", "ClassCurve", "Diagnostics", "ImageMatch", "class_pr_curves", "diagnose", "match_image"]

BACKGROUND = "background"


@dataclass(frozen=True)
class ImageMatch:
    """One image's detections (score >= the threshold) matched to its ground truth; indices are positions in the
    image's detection and ground-truth lists, ``index`` the image's in the evaluation.

    Attributes:
        matched: ``(ground-truth index, detection index)`` pairs at IoU >= the threshold, whatever their classes.
        ignored: detections on a crowd region (neither right nor wrong, as in COCO).
        duplicates: the false positives that repeat a higher-scored detection of their class (rule 5).
    """

    index: int
    matched: tuple[tuple[int, int], ...]
    wrong_class: int
    missed: tuple[int, ...]
    false_positives: tuple[int, ...]
    ignored: tuple[int, ...]
    duplicates: tuple[int, ...] = ()

    @property
    def correct(self) -> int:
        return len(self.matched) - self.wrong_class

    @property
    def errors(self) -> int:
        """Boxes the detector got wrong: missed + false positives + wrong-class matches."""
        return len(self.missed) + len(self.false_positives) + self.wrong_class


def _checked_threshold(value: float, name: str, low_open: bool) -> float:
    value = float(value)
    if not (0.0 < value <= 1.0 if low_open else 0.0 <= value <= 1.0):
        interval = "(0, 1]" if low_open else "[0, 1]"
        raise HfDetrInputError(f"{name} must be in {interval}, got {value}")
    return value


def match_image(
    prediction: Mapping[str, Any],
    reference: Mapping[str, Any],
    *,
    iou_threshold: float = 0.5,
    score_threshold: float = 0.5,
    index: int = 0,
) -> ImageMatch:
    """By the rule of the module docstring. ``prediction``: ``{"scores", "labels", "boxes"}``, boxes (x0, y0, x1, y1)
    pixels; ``reference``: ``{"boxes", "labels", "iscrowd"}``, boxes COCO (x, y, w, h) in the same frame (entries of
    ``CocoEvaluation.predictions`` and ``.references``). The entry check; :func:`diagnose` matches arrays checked
    when the evaluation was made."""
    iou_threshold = _checked_threshold(iou_threshold, "iou_threshold", low_open=True)
    score_threshold = _checked_threshold(score_threshold, "score_threshold", low_open=False)
    check_boxes(prediction["boxes"], lambda j: f"image {index}: detection boxes[{j}]", "xyxy")
    check_boxes(reference["boxes"], lambda j: f"image {index}: ground-truth boxes[{j}]")
    scores, pred_labels, pred_boxes, gt_boxes, gt_labels, crowd = columns = _tensors(prediction, reference)
    if not len(scores) == len(pred_labels) == len(pred_boxes) or not len(gt_boxes) == len(gt_labels) == len(crowd):
        raise HfDetrInputError(
            f"image {index}: per-box fields differ in length (detections: {len(scores)} scores, "
            f"{len(pred_labels)} labels, {len(pred_boxes)} boxes; ground truth: {len(gt_boxes)} boxes, "
            f"{len(gt_labels)} labels, {len(crowd)} iscrowd)"
        )
    return _match(*columns, iou_threshold, score_threshold, index)


def _tensors(prediction: Mapping[str, Any], reference: Mapping[str, Any]) -> tuple[torch.Tensor, ...]:
    """scores, labels, xyxy boxes of the detections; xyxy boxes, labels, crowd flags of the ground truth."""
    gt_boxes = torch.as_tensor(reference["boxes"], dtype=torch.float64).reshape(-1, 4)
    return (
        torch.as_tensor(prediction["scores"], dtype=torch.float64).reshape(-1),
        torch.as_tensor(prediction["labels"], dtype=torch.int64).reshape(-1),
        torch.as_tensor(prediction["boxes"], dtype=torch.float64).reshape(-1, 4),
        box_convert(gt_boxes, "xywh", "xyxy"),
        torch.as_tensor(reference["labels"], dtype=torch.int64).reshape(-1),
        torch.as_tensor(reference.get("iscrowd", [0] * len(gt_boxes)), dtype=torch.bool).reshape(-1),
    )


def _match(
    scores: torch.Tensor,
    pred_labels: torch.Tensor,
    pred_boxes: torch.Tensor,
    gt_boxes: torch.Tensor,
    gt_labels: torch.Tensor,
    crowd: torch.Tensor,
    iou_threshold: float,
    score_threshold: float,
    index: int,
) -> ImageMatch:
    kept = torch.nonzero(scores >= score_threshold).flatten()
    order = kept[torch.sort(scores[kept], descending=True, stable=True).indices].tolist()
    normal, crowd_ids = torch.nonzero(~crowd).flatten(), torch.nonzero(crowd).flatten()
    # zero-area boxes give 0 / 0: no overlap rather than NaN (which argmax would pick)
    iou = torch.nan_to_num(box_iou(pred_boxes, gt_boxes[normal]), nan=0.0)
    crowd_boxes = gt_boxes[crowd_ids]
    corners_low = torch.maximum(pred_boxes[:, None, :2], crowd_boxes[None, :, :2])
    corners_high = torch.minimum(pred_boxes[:, None, 2:], crowd_boxes[None, :, 2:])
    intersection = (corners_high - corners_low).clamp(min=0).prod(dim=-1)
    # COCOeval's crowd overlap: intersection over the detection's own area
    on_crowd = torch.nan_to_num(intersection / (pred_boxes[:, 2:] - pred_boxes[:, :2]).prod(dim=-1)[:, None], nan=0.0)

    taken = torch.zeros(len(normal), dtype=torch.bool)
    matched, false_positives, ignored = [], [], []
    for p in order:
        candidates = iou[p].masked_fill(taken, -1.0)
        if len(candidates) and candidates.max() >= iou_threshold:
            g = int(candidates.argmax())  # the first of equal IoUs
            taken[g] = True
            matched.append((int(normal[g]), p))
        elif len(crowd_ids) and on_crowd[p].max() >= iou_threshold:
            ignored.append(p)
        else:
            false_positives.append(p)
    wrong = sum(int(gt_labels[g] != pred_labels[p]) for g, p in matched)
    missed = tuple(int(g) for g in normal[~taken])
    repeats = repeats_a_better_one(pred_boxes[order].numpy(), pred_labels[order].numpy())
    repeating = {p for p, repeat in zip(order, repeats) if repeat}
    duplicates = tuple(p for p in false_positives if p in repeating)
    return ImageMatch(index, tuple(matched), wrong, missed, tuple(false_positives), tuple(ignored), duplicates)


@dataclass(frozen=True)
class Diagnostics:
    """One evaluation's confusion matrix and per-image matches at one pair of thresholds. ``matrix``: ``[K + 1,
    K + 1]`` int64 counts, rows ground truth, columns prediction, index ``K`` background."""

    class_names: list[str]
    category_ids: list[int]
    matrix: np.ndarray
    images: list[ImageMatch]
    iou_threshold: float
    score_threshold: float

    @property
    def labels(self) -> list[str]:
        """The matrix's rows and columns."""
        return [*self.class_names, BACKGROUND]

    def worst(self, count: int = 8) -> list[ImageMatch]:
        """The ``count`` images with the most errors; ties go to fewer correct matches, then to the earlier image."""
        if count < 1:
            raise HfDetrInputError(f"count must be at least 1, got {count}")
        return sorted(self.images, key=lambda image: (-image.errors, image.correct, image.index))[:count]

    @property
    def duplicates(self) -> int:
        return sum(len(image.duplicates) for image in self.images)

    def confusion_json(self) -> dict[str, Any]:
        return {
            "labels": self.labels,
            "category_ids": [*self.category_ids, None],
            "rows": "ground truth",
            "columns": "prediction",
            "matrix": self.matrix.tolist(),
            "iou_threshold": self.iou_threshold,
            "score_threshold": self.score_threshold,
            "duplicates": self.duplicates,
        }


def diagnose(evaluation: CocoEvaluation, *, iou_threshold: float = 0.5, score_threshold: float = 0.5) -> Diagnostics:
    """``evaluation``: of ``evaluate`` or ``coco_evaluate`` with ``return_evaluation=True``."""
    if len(evaluation.predictions) != len(evaluation.references):
        raise HfDetrInputError(
            f"the evaluation has {len(evaluation.predictions)} detection lists but "
            f"{len(evaluation.references)} ground-truth lists; they must be one per image"
        )
    if not evaluation.references and evaluation.precision is not None:
        raise HfDetrInputError(
            "the evaluation carries no per-image detections: make it with evaluate(..., "
            "return_evaluation=True) or coco_evaluate(..., return_evaluation=True)"
        )
    iou_threshold = _checked_threshold(iou_threshold, "iou_threshold", low_open=True)
    score_threshold = _checked_threshold(score_threshold, "score_threshold", low_open=False)
    position = {label: k for k, label in enumerate(evaluation.category_ids)}
    background = len(position)
    matrix = np.zeros((background + 1, background + 1), dtype=np.int64)
    images = []
    for index, (prediction, reference) in enumerate(zip(evaluation.predictions, evaluation.references)):
        gt_labels, pred_labels = reference["labels"], prediction["labels"]
        unknown = {int(x) for x in [*gt_labels, *pred_labels]} - set(position)
        if unknown:
            raise HfDetrInputError(
                f"image {index} has labels {sorted(unknown)} that are not categories of the evaluation "
                f"({evaluation.category_ids})"
            )
        # checked when the evaluation was made (`coco_inputs`)
        image = _match(*_tensors(prediction, reference), iou_threshold, score_threshold, index)
        for g, p in image.matched:
            matrix[position[int(gt_labels[g])], position[int(pred_labels[p])]] += 1
        for g in image.missed:
            matrix[position[int(gt_labels[g])], background] += 1
        for p in image.false_positives:
            matrix[background, position[int(pred_labels[p])]] += 1
        images.append(image)
    return Diagnostics(
        list(evaluation.class_names), list(evaluation.category_ids), matrix, images, iou_threshold, score_threshold
    )


@dataclass(frozen=True)
class ClassCurve:
    """One class's precision-recall curve from COCOeval's array (area "all", 100 detections). ``objects``: its
    non-crowd ground truth; ``precision``: interpolated at COCO's 101 ``recall`` points, ``None`` without ground
    truth; ``ap``: its mean (the per-class AP50 at IoU 0.5), -1.0 without ground truth."""

    name: str
    objects: int
    recall: np.ndarray
    precision: np.ndarray | None
    ap: float


def class_pr_curves(evaluation: CocoEvaluation, iou: float = 0.5) -> list[ClassCurve]:
    """In category order; ``iou`` one of COCO's 0.50, 0.55, ..., 0.95."""
    curves = evaluation.precision_curves(iou)
    result = []
    for name, row in zip(evaluation.class_names, curves):
        defined = bool((row > -1).all())
        result.append(
            ClassCurve(
                name,
                int(evaluation.per_class[name]["objects"]),
                evaluation.recall_thresholds,
                row if defined else None,
                float(row.mean()) if defined else -1.0,
            )
        )
    return result
