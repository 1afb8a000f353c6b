"""COCO box mAP with ``pycocotools``: an ``evaluate`` metric and a ``compute_metrics`` factory for ``Trainer``.

Results follow ``COCOeval.summarize()``: ``map`` (AP@[.50:.95]), ``map_50``, ``map_75``, ``map_small``,
``map_medium``, ``map_large``, ``mar_1``, ``mar_10``, ``mar_100``, ``mar_small``, ``mar_medium``, ``mar_large``, and
with ``per_class=True`` also ``map_class_<name>``, ``map_50_class_<name>`` and ``mar_100_class_<name>`` per category
(AP@[.50:.95], AP@.50 and AR@100 of that class). The ``_class_`` infix keeps the keys apart: no COCO stat name
contains it, and none of the three per-class prefixes is a prefix of another, so a class named like a COCO stat
(``"50"``, ``"small"``, ``"1"``, even ``"class_small"``) cannot collide with a stat or with another class's key, and
:func:`per_class_key` / ``key.startswith(prefix)`` read them back. A value COCO cannot define (no ground truth at
all, or none in that area range / category) is **-1.0**, COCO's own convention; it stays below every real score, so
``metric_for_best_model="eval_map"`` never prefers it.

:class:`CocoEvaluation` (``coco_evaluate(..., return_evaluation=True)``, ``hf_detr.evaluation.evaluate(...,
return_evaluation=True)``) carries, from the same single COCOeval run, the metrics, a per-class table (AP, AP50,
AR@100 and the number of ground-truth objects of each class), COCOeval's precision array for precision-recall
curves and the per-image detections and ground truth it scored (for :mod:`hf_detr.evaluation.diagnostics`).

At COCO's size (val2017: 5,000 images x 100 detections) the inputs stay compact: each image's detections are
validated into numpy arrays (float32 when given so, as post-processing gives them), the run reads them as columns
(:class:`hf_detr.evaluation.coco_arrays.Annotations`) and COCOeval goes one category at a time, so no dict per
detection and no per-image record of COCOeval exists for the whole split at once. ``backend="numpy"`` replaces
COCOeval's Python loops by array code with the same arithmetic (:func:`hf_detr.evaluation.coco_arrays.evaluate_arrays`:
the same precision and recall arrays bit for bit, several times faster); pycocotools stays the default.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import datasets
import evaluate
import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval, Params
from transformers import EvalPrediction
from transformers.utils import ModelOutput

from ..modeling.boxes import check_boxes, denormalize_boxes
from ..modeling.errors import HfDetrInputError, HfDetrInputTypeError
from .coco_arrays import Annotations, evaluate_arrays, undefined_arrays

logger = logging.getLogger(__name__)

__all__ = [
    "COCO_BACKENDS",
    "COCO_STAT_NAMES",
    "PER_CLASS_STATS",
    "CocoDetectionMetric",
    "CocoEvaluation",
    "CocoMetric",
    "PostProcessInputs",
    "coco_evaluate",
    "detections_in_original_frame",
    "format_per_class_table",
    "make_compute_metrics",
    "pack_labels",
    "per_class_key",
    "per_class_rows",
    "run_cocoeval",
    "unpack_labels",
]

# Order of COCOeval.stats for iouType="bbox".
COCO_STAT_NAMES: tuple[str, ...] = (
    "map",
    "map_50",
    "map_75",
    "map_small",
    "map_medium",
    "map_large",
    "mar_1",
    "mar_10",
    "mar_100",
    "mar_small",
    "mar_medium",
    "mar_large",
)

# What computes COCOeval's numbers: pycocotools itself, or the same arithmetic on arrays (`coco_arrays`).
COCO_BACKENDS: tuple[str, ...] = ("pycocotools", "numpy")

# The per-class numbers: flat metric keys `<stat>_class_<name>` (see the module docstring) and the columns of
# `CocoEvaluation.per_class` (which also counts each class's ground-truth objects under "objects").
PER_CLASS_STATS: tuple[str, ...] = ("map", "map_50", "mar_100")


def per_class_key(stat: str, name: str) -> str:
    """The flat metric key of one class's ``stat`` (one of :data:`PER_CLASS_STATS`): ``<stat>_class_<name>``."""
    if stat not in PER_CLASS_STATS:
        raise HfDetrInputError(f"per-class stat must be one of {PER_CLASS_STATS}, got {stat!r}")
    return f"{stat}_class_{name}"


@dataclass
class CocoEvaluation:
    """Everything one COCOeval run gives: the metrics, a per-class table and the arrays for precision-recall curves.

    Attributes:
        metrics: the flat ``{name: float}`` dict of :func:`coco_evaluate` (per-class keys only with ``per_class``).
        per_class: ``{class name: {"map", "map_50", "mar_100", "objects"}}`` for every category, in category order:
            AP@[.50:.95], AP@.50 and AR@100 at area "all" (-1.0 for a class without ground truth) and the number of
            its non-crowd ground-truth objects (the ones recall counts).
        precision: COCOeval's ``eval["precision"]``, shape ``[T, R, K, A, M]`` (IoU thresholds, recall points,
            categories in the order of ``class_names``, area ranges all/small/medium/large, max detections 1/10/100);
            -1 where a category has no ground truth. ``None`` when there was nothing to evaluate.
        iou_thresholds: the ``T`` IoU thresholds (0.50, 0.55, ..., 0.95).
        recall_thresholds: the ``R`` = 101 recall points (0, 0.01, ..., 1).
        class_names: the name of each category of the ``K`` axis.
        category_ids: the label (category id) of each category of the ``K`` axis.
        predictions: the detections COCOeval scored, per image in the evaluation's order: ``{"scores": [N],
            "labels": [N], "boxes": [N][4]}``, boxes absolute (x0, y0, x1, y1) pixels (the input format of
            :func:`coco_evaluate`, as lists), for diagnostics without a second model pass.
        references: the ground truth of each image, ``{"boxes": [M][4], "labels", "iscrowd", "area"}``, boxes COCO
            (x, y, w, h) pixels in the same frame.
    """

    metrics: dict[str, float]
    per_class: dict[str, dict[str, float]]
    precision: np.ndarray | None = None
    iou_thresholds: np.ndarray | None = None
    recall_thresholds: np.ndarray | None = None
    class_names: list[str] = field(default_factory=list)
    category_ids: list[int] = field(default_factory=list)
    # not in the repr: one entry per image
    predictions: list[dict[str, list]] = field(default_factory=list, repr=False)
    references: list[dict[str, list]] = field(default_factory=list, repr=False)

    def precision_curves(self, iou: float = 0.5) -> np.ndarray:
        """Precision at each recall point at IoU threshold ``iou``, area "all", 100 detections: ``[K, R]`` (rows
        of -1 for classes without ground truth)."""
        if self.precision is None:
            raise HfDetrInputError("no precision array: the evaluation had no images")
        matches = np.flatnonzero(np.isclose(self.iou_thresholds, iou))
        if len(matches) == 0:
            raise HfDetrInputError(f"IoU {iou} is not one of COCO's thresholds {self.iou_thresholds.tolist()}")
        return self.precision[matches[0], :, :, 0, -1].T

    def rounded(self, digits: int = 4) -> CocoEvaluation:
        """A copy with the metrics and the per-class numbers rounded (the arrays as they are)."""
        per_class = {
            name: {k: (v if k == "objects" else round(v, digits)) for k, v in row.items()}
            for name, row in self.per_class.items()
        }
        metrics = {name: round(value, digits) for name, value in self.metrics.items()}
        return dataclasses.replace(self, metrics=metrics, per_class=per_class)


def _mean_defined(values: np.ndarray) -> float:
    """COCO's average: the mean of the entries > -1, or -1.0 when there is none."""
    defined = values[values > -1]
    return float(defined.mean()) if defined.size else -1.0


def per_class_rows(coco_eval: COCOeval, names: Sequence[str], objects: Sequence[int]) -> dict[str, dict[str, float]]:
    """``{name: {"map", "map_50", "mar_100", "objects"}}`` from an accumulated ``COCOeval``: for each category
    ``k`` of ``coco_eval.params.catIds`` (named ``names[k]``, with ``objects[k]`` ground-truth objects), AP over
    IoU 0.50:0.95, AP at IoU 0.50 and AR@100, at area "all" and 100 detections: the slices ``summarize()`` averages
    over categories for ``map``, ``map_50`` and ``mar_100``."""
    # precision: (iou, recall, category, area, max_dets); recall: (iou, category, area, max_dets).
    precision, recall = coco_eval.eval["precision"], coco_eval.eval["recall"]
    at_50 = int(np.flatnonzero(np.isclose(coco_eval.params.iouThrs, 0.5))[0])
    if len(set(names)) != len(names):
        repeated = sorted({name for name in names if list(names).count(name) > 1})
        raise HfDetrInputError(f"per-class results need one name per category; {repeated} name several categories")
    return {
        name: {
            "map": _mean_defined(precision[:, :, k, 0, -1]),
            "map_50": _mean_defined(precision[at_50, :, k, 0, -1]),
            "mar_100": _mean_defined(recall[:, k, 0, -1]),
            "objects": int(count),
        }
        for k, (name, count) in enumerate(zip(names, objects))
    }


def format_per_class_table(per_class: Mapping[str, Mapping[str, float]]) -> str:
    """:attr:`CocoEvaluation.per_class` as a text table: class, AP, AP50, AR@100, ground-truth objects."""
    width = max(12, *(len(name) + 2 for name in per_class)) if per_class else 12
    lines = [f"{'class':<{width}}{'AP':>8}{'AP50':>8}{'AR@100':>8}{'objects':>9}"]
    lines += [
        f"{name:<{width}}{row['map']:>8.4f}{row['map_50']:>8.4f}{row['mar_100']:>8.4f}{row['objects']:>9d}"
        for name, row in per_class.items()
    ]
    return "\n".join(lines)


def _as_tensor(value: Any, where: str, field: str, dtype: torch.dtype, trailing: tuple[int, ...] = ()) -> torch.Tensor:
    """``value`` as a ``dtype`` tensor of shape (N, *trailing), or a ValueError naming ``where``/``field``."""
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu()
    else:
        try:
            array = np.asarray(value)
        except ValueError as err:  # ragged nested lists
            raise HfDetrInputError(f"{where}: `{field}` is not a regular array: {err}.") from None
        if array.dtype.kind not in "biuf":
            raise HfDetrInputError(f"{where}: `{field}` must be numeric, got {value!r}.")
        tensor = torch.as_tensor(array)
    if not dtype.is_floating_point and tensor.is_floating_point() and (tensor != tensor.round()).any():
        raise HfDetrInputError(f"{where}: `{field}` must hold integers, got {value!r}.")
    tensor = tensor.to(dtype)
    if tensor.numel() == 0:
        tensor = tensor.reshape((0, *trailing))
    if tensor.ndim != 1 + len(trailing) or tuple(tensor.shape[1:]) != trailing:
        shape = "(N, " + ", ".join(map(str, trailing)) + ")" if trailing else "(N,)"
        raise HfDetrInputError(f"{where}: `{field}` must have shape {shape}, got {tuple(tensor.shape)}.")
    if dtype.is_floating_point and not torch.isfinite(tensor).all():
        raise HfDetrInputError(f"{where}: `{field}` contains NaN or inf.")
    return tensor


def _check_lengths(where: str, fields: Mapping[str, torch.Tensor]) -> None:
    lengths = {name: len(t) for name, t in fields.items()}
    if len(set(lengths.values())) > 1:
        raise HfDetrInputError(f"{where}: per-box fields must have the same length, got {lengths}.")


def _compact(values: torch.Tensor, source: Any) -> np.ndarray:
    """Validated float64 ``values`` as a numpy array in the precision of ``source``, the caller's input: float32 when
    that was single or half precision (exact, since the values came from it; what post-processing gives, and half the
    memory of a split's detections in float64), float64 otherwise."""
    if isinstance(source, torch.Tensor):
        narrow = source.dtype in (torch.float32, torch.float16, torch.bfloat16)
    else:
        narrow = isinstance(source, np.ndarray) and source.dtype.kind == "f" and source.dtype.itemsize <= 4
    return values.numpy().astype(np.float32 if narrow else np.float64, copy=False)


def _prediction_arrays(prediction: Mapping[str, Any], where: str) -> dict[str, np.ndarray]:
    """One image's detections as arrays: ``scores`` (N,), ``labels`` (N,) int64, ``boxes`` (N, 4) absolute
    (x0, y0, x1, y1); scores and boxes in float32 when given so, float64 otherwise."""
    if not isinstance(prediction, Mapping):
        raise HfDetrInputTypeError(
            f"{where} must be a dict with `scores`, `labels`, `boxes`, got {type(prediction).__name__}."
        )
    missing = [key for key in ("scores", "labels", "boxes") if key not in prediction]
    if missing:
        raise HfDetrInputError(
            f"{where} is missing {missing}; expected `scores`, `labels`, `boxes` (x0, y0, x1, y1 pixels)."
        )
    fields = {
        "scores": _as_tensor(prediction["scores"], where, "scores", torch.float64),
        "labels": _as_tensor(prediction["labels"], where, "labels", torch.int64),
        "boxes": check_boxes(prediction["boxes"], lambda j: f"{where}: `boxes[{j}]`", "xyxy"),
    }
    _check_lengths(where, fields)
    return {
        "scores": _compact(fields["scores"], prediction["scores"]),
        "labels": fields["labels"].numpy(),
        "boxes": _compact(fields["boxes"], prediction["boxes"]),
    }


def _reference_arrays(reference: Mapping[str, Any], where: str) -> dict[str, np.ndarray]:
    """One image's ground truth as arrays: ``boxes`` (N, 4) COCO (x, y, w, h) pixels, ``labels`` or ``class_labels``
    (N,), optional ``iscrowd`` (N,) (default 0) and ``area`` (N,) (default w * h). Other keys are ignored."""
    if not isinstance(reference, Mapping):
        raise HfDetrInputTypeError(f"{where} must be a dict with `boxes` and `labels`, got {type(reference).__name__}.")
    label_key = "labels" if "labels" in reference else "class_labels"
    if "boxes" not in reference or label_key not in reference:
        raise HfDetrInputError(f"{where} needs `boxes` (COCO x, y, w, h pixels) and `labels` (or `class_labels`).")
    boxes = check_boxes(reference["boxes"], lambda j: f"{where}: `boxes[{j}]`", "xywh")
    fields = {
        "boxes": boxes,
        "labels": _as_tensor(reference[label_key], where, label_key, torch.int64),
        "iscrowd": _as_tensor(reference.get("iscrowd", torch.zeros(len(boxes))), where, "iscrowd", torch.int64),
        "area": _as_tensor(reference.get("area", boxes[:, 2] * boxes[:, 3]), where, "area", torch.float64),
    }
    _check_lengths(where, fields)
    return {name: t.numpy() for name, t in fields.items()}


def _listed(fields: Mapping[str, Any]) -> dict[str, Any]:
    """``fields`` with its arrays as lists (what ``evaluate.Metric`` stores and ``CocoEvaluation`` carries)."""
    return {name: value.tolist() if isinstance(value, np.ndarray) else value for name, value in fields.items()}


def _column(values: Sequence[Any], dtype: type, trailing: tuple[int, ...] = ()) -> np.ndarray:
    """Per-image arrays (or lists) concatenated into one ``dtype`` array of shape (N, *trailing)."""
    empty = np.zeros((0, *trailing), dtype=dtype)
    return np.concatenate([empty, *(np.asarray(v, dtype=dtype).reshape(-1, *trailing) for v in values)])


def _image_index(counts: Sequence[int]) -> np.ndarray:
    """Each object's image index, from the number of objects of each image."""
    return np.repeat(np.arange(len(counts), dtype=np.int64), np.asarray(counts, dtype=np.int64))


def _box_annotations(
    preds: Sequence[Mapping[str, Any]], refs: Sequence[Mapping[str, Any]]
) -> tuple[Annotations, Annotations]:
    """The ground truth and the detections of normalized inputs as COCOeval's columns (boxes (x, y, w, h) float64,
    a detection's area its box's)."""
    ground_truth = Annotations(
        image=_image_index([len(r["labels"]) for r in refs]),
        category=_column([r["labels"] for r in refs], np.int64),
        iscrowd=_column([r["iscrowd"] for r in refs], np.int64),
        area=_column([r["area"] for r in refs], np.float64),
        boxes=_column([r["boxes"] for r in refs], np.float64, (4,)),
    )
    corners = _column([p["boxes"] for p in preds], np.float64, (4,))
    size = corners[:, 2:] - corners[:, :2]
    detections = Annotations(
        image=_image_index([len(pred["labels"]) for pred in preds]),
        category=_column([p["labels"] for p in preds], np.int64),
        iscrowd=np.zeros(len(corners), dtype=np.int64),
        area=size[:, 0] * size[:, 1],
        score=_column([p["scores"] for p in preds], np.float64),
        boxes=np.concatenate([corners[:, :2], size], axis=1),
    )
    return ground_truth, detections


def _coco_from(images: list[dict], categories: list[int], annotations: list[dict]) -> COCO:
    coco = COCO()
    coco.dataset = {"images": images, "categories": [{"id": c} for c in categories], "annotations": annotations}
    with contextlib.redirect_stdout(io.StringIO()):  # createIndex prints progress
        coco.createIndex()
    return coco


def _class_names(categories: Sequence[int], label_name: Mapping[int, str]) -> list[str]:
    """The name of each category (its integer label when unnamed); a name several categories share gets each one's
    label appended, ``"<name> (id <label>)"``, so per-class results stay one per category."""
    names = [label_name.get(c, str(c)) for c in categories]
    return [f"{name} (id {c})" if names.count(name) > 1 else name for name, c in zip(names, categories)]


def coco_evaluate(
    predictions: Sequence[Mapping[str, Any]],
    references: Sequence[Mapping[str, Any]],
    per_class: bool = False,
    id2label: Mapping[int, str] | None = None,
    return_evaluation: bool = False,
    backend: str = "pycocotools",
) -> dict[str, float] | CocoEvaluation:
    """COCO bbox evaluation of ``predictions[i]`` against ``references[i]`` (images are matched by position).

    Args:
        predictions: per image ``{"scores": (N,), "labels": (N,), "boxes": (N, 4)}``, boxes absolute
            (x0, y0, x1, y1) pixels, as ``post_process_object_detection`` returns.
        references: per image ``{"boxes": (M, 4), "labels" | "class_labels": (M,), "iscrowd"?: (M,),
            "area"?: (M,)}``, boxes COCO (x, y, w, h) pixels in the same frame as the predictions.
        per_class: also return ``map_class_<name>``, ``map_50_class_<name>`` and ``mar_100_class_<name>`` for
            every category (:func:`per_class_key`).
        id2label: names for the per-class results (the integer label otherwise); its ids also join the category
            list.
        return_evaluation: return a :class:`CocoEvaluation` (the metrics, the per-class table and COCOeval's
            precision array, all from this one run) instead of the metrics dict.
        backend: "pycocotools" (``COCOeval`` itself) or "numpy" (the same numbers, bit for bit, several times
            faster on large sets: :mod:`hf_detr.evaluation.coco_arrays`).

    Returns:
        ``{name: float}`` for :data:`COCO_STAT_NAMES` (and per-class keys); -1.0 where COCO cannot define a value.
    """
    if len(predictions) != len(references):
        raise HfDetrInputError(
            f"Got {len(predictions)} predictions but {len(references)} references; need one per image."
        )
    preds = [_prediction_arrays(p, f"predictions[{i}]") for i, p in enumerate(predictions)]
    refs = [_reference_arrays(r, f"references[{i}]") for i, r in enumerate(references)]
    evaluation = _evaluate_boxes(preds, refs, per_class, id2label, return_evaluation, backend)
    return evaluation if return_evaluation else evaluation.metrics


def _evaluate_boxes(
    preds: Sequence[Mapping[str, Any]],
    refs: Sequence[Mapping[str, Any]],
    per_class: bool,
    id2label: Mapping[int, str] | None,
    return_evaluation: bool = False,
    backend: str = "pycocotools",
) -> CocoEvaluation:
    """:func:`coco_evaluate` on inputs already passed through ``_prediction_arrays`` / ``_reference_arrays`` (or
    their lists); with ``return_evaluation`` the evaluation carries them, as lists."""
    ground_truth, detections = _box_annotations(preds, refs)
    evaluation = run_cocoeval(len(refs), ground_truth, detections, "bbox", per_class, id2label, backend=backend)
    if not return_evaluation:
        return evaluation
    return dataclasses.replace(
        evaluation, predictions=[_listed(p) for p in preds], references=[_listed(r) for r in refs]
    )


def _rows_by_category(annotations: Annotations, categories: Sequence[int]) -> list[np.ndarray]:
    """The rows of each of ``categories`` (sorted, holding every category of ``annotations``), in input order."""
    order = np.argsort(annotations.category, kind="stable")
    bounds = np.searchsorted(annotations.category[order], [*categories, np.iinfo(np.int64).max])
    return [order[start:end] for start, end in zip(bounds[:-1], bounds[1:])]


def _pycocotools_arrays(
    num_images: int,
    ground_truth: Annotations,
    detections: Annotations,
    categories: list[int],
    iou_type: str,
    image_sizes: Sequence[tuple[int, int]] | None,
) -> tuple[np.ndarray, np.ndarray]:
    """COCOeval's ``precision`` and ``recall`` arrays, from one COCOeval run per category: a category's numbers
    depend on its own annotations only, and COCOeval keeps a dict per image, category and area range (2 GiB for all
    of COCO val2017's categories at once), so one category's at a time bounds the memory at no cost in time."""
    images = [{"id": i + 1} for i in range(num_images)]
    for image, (height, width) in zip(images, image_sizes or ()):
        image.update(height=height, width=width)
    precision, recall = undefined_arrays(Params(iouType=iou_type), len(categories))
    truth, found = _rows_by_category(ground_truth, categories), _rows_by_category(detections, categories)
    for k, category in enumerate(categories):
        truth_k, found_k = ground_truth.records(truth[k]), detections.records(found[k])
        coco_eval = COCOeval(_coco_from(images, [category], truth_k), _coco_from(images, [category], found_k), iou_type)
        with contextlib.redirect_stdout(io.StringIO()):
            coco_eval.evaluate()
            coco_eval.accumulate()
        precision[:, :, k], recall[:, k] = coco_eval.eval["precision"][:, :, 0], coco_eval.eval["recall"][:, 0]
    return precision, recall


def run_cocoeval(
    num_images: int,
    ground_truth: Annotations,
    detections: Annotations,
    iou_type: str,
    per_class: bool = False,
    id2label: Mapping[int, str] | None = None,
    image_sizes: Sequence[tuple[int, int]] | None = None,
    backend: str = "pycocotools",
) -> CocoEvaluation:
    """One COCO evaluation, the one path of box (``iou_type="bbox"``) and mask (``"segm"``) mAP.

    ``ground_truth`` and ``detections``: :class:`Annotations` of images ``0 .. num_images - 1`` (boxes for "bbox",
    RLEs for "segm"; detections with scores). ``image_sizes``: each image's (height, width), which COCOeval reads for
    masks. ``backend``: "pycocotools" (``COCOeval``, one category at a time) or "numpy"
    (:func:`hf_detr.evaluation.coco_arrays.evaluate_arrays`, the same arrays); ``COCOeval.summarize`` gives the
    numbers of both. Returns the :data:`COCO_STAT_NAMES` metrics (and per-class keys with ``per_class``), the
    per-class table and the precision array; ``predictions`` / ``references`` are left to the caller.
    """
    if backend not in COCO_BACKENDS:
        raise HfDetrInputError(f"backend must be one of {COCO_BACKENDS}, got {backend!r}")
    categories = sorted(
        set(ground_truth.category.tolist()) | set(detections.category.tolist()) | {int(k) for k in (id2label or {})}
    )
    label_name = {int(k): str(v) for k, v in (id2label or {}).items()}
    class_names = _class_names(categories, label_name)
    counted, counts = np.unique(ground_truth.category[ground_truth.iscrowd == 0], return_counts=True)
    objects = [dict(zip(counted.tolist(), counts.tolist())).get(c, 0) for c in categories]

    def with_per_class_keys(metrics: dict[str, float], rows: dict[str, dict[str, float]]) -> dict[str, float]:
        if per_class:
            metrics.update(
                {per_class_key(stat, name): row[stat] for name, row in rows.items() for stat in PER_CLASS_STATS}
            )
        return metrics

    if not num_images:
        logger.warning("COCO evaluation got no images; every metric is -1.")
        rows = {name: {**dict.fromkeys(PER_CLASS_STATS, -1.0), "objects": 0} for name in class_names}
        return CocoEvaluation(
            with_per_class_keys(dict.fromkeys(COCO_STAT_NAMES, -1.0), rows),
            rows,
            class_names=class_names,
            category_ids=categories,
        )

    if backend == "numpy":
        precision, recall = evaluate_arrays(ground_truth, detections, categories, iou_type)
    else:
        precision, recall = _pycocotools_arrays(num_images, ground_truth, detections, categories, iou_type, image_sizes)
    # summarize() reads only the parameters and these two arrays
    coco_eval = COCOeval(iouType=iou_type)
    coco_eval.params.imgIds, coco_eval.params.catIds = list(range(1, num_images + 1)), categories
    coco_eval.eval = {"precision": precision, "recall": recall}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        coco_eval.summarize()
    logger.debug("pycocotools output:\n%s", printed.getvalue())
    metrics = {name: float(value) for name, value in zip(COCO_STAT_NAMES, coco_eval.stats)}
    rows = per_class_rows(coco_eval, class_names, objects)
    return CocoEvaluation(
        metrics=with_per_class_keys(metrics, rows),
        per_class=rows,
        precision=precision,
        iou_thresholds=np.asarray(coco_eval.params.iouThrs),
        recall_thresholds=np.asarray(coco_eval.params.recThrs),
        class_names=class_names,
        category_ids=categories,
    )


_BOXES = datasets.Sequence(datasets.Sequence(datasets.Value("float64"), length=4))


class CocoMetric(evaluate.Metric):
    """An ``evaluate.Metric`` over one COCOeval run: inputs validated and normalised as they arrive (errors name the
    offending image), scored at ``compute``. Subclasses name the three steps (boxes, masks)."""

    normalize_prediction: ClassVar[Callable[[Mapping, str], dict]]
    normalize_reference: ClassVar[Callable[[Mapping, str], dict]]
    # (predictions, references, per_class, id2label, return_evaluation, backend)
    run: ClassVar[Callable[..., CocoEvaluation]]
    # what `_info` describes: one line, the function whose docstring gives the inputs, the stored location fields
    description: ClassVar[str]
    inputs: ClassVar[Callable[..., Any]]
    prediction_fields: ClassVar[dict[str, Any]]
    reference_fields: ClassVar[dict[str, Any]]

    def _info(self) -> evaluate.MetricInfo:
        ids = datasets.Sequence(datasets.Value("int64"))
        return evaluate.MetricInfo(
            description=self.description,
            citation="Lin et al., Microsoft COCO: Common Objects in Context, ECCV 2014.",
            inputs_description=type(self).inputs.__doc__,
            features=datasets.Features(
                {
                    "predictions": {
                        "scores": datasets.Sequence(datasets.Value("float64")),
                        "labels": ids,
                        **self.prediction_fields,
                    },
                    "references": {**self.reference_fields, "labels": ids, "iscrowd": ids},
                }
            ),
        )

    def add_batch(
        self,
        *,
        predictions: Sequence[Mapping] | None = None,
        references: Sequence[Mapping] | None = None,
        **kwargs: Any,
    ) -> None:
        """Validate and store a batch: a list of per-image predictions and a list of per-image references.
        (``evaluate`` appends the input description to this docstring.)"""
        if predictions is not None:
            predictions = [
                _listed(type(self).normalize_prediction(p, f"predictions[{i}]")) for i, p in enumerate(predictions)
            ]
        if references is not None:
            references = [
                _listed(type(self).normalize_reference(r, f"references[{i}]")) for i, r in enumerate(references)
            ]
        super().add_batch(predictions=predictions, references=references, **kwargs)

    def add(self, *, prediction: Mapping | None = None, reference: Mapping | None = None, **kwargs: Any) -> None:
        """Validate and store one image's prediction and reference."""
        if prediction is not None:
            prediction = _listed(type(self).normalize_prediction(prediction, "prediction"))
        if reference is not None:
            reference = _listed(type(self).normalize_reference(reference, "reference"))
        super().add(prediction=prediction, reference=reference, **kwargs)

    def _compute(
        self,
        predictions: list[dict],
        references: list[dict],
        per_class: bool = False,
        id2label: Mapping[int, str] | None = None,
        return_evaluation: bool = False,
        backend: str = "pycocotools",
    ) -> dict[str, float] | CocoEvaluation:
        evaluation = type(self).run(predictions, references, per_class, id2label, return_evaluation, backend)
        return evaluation if return_evaluation else evaluation.metrics


class CocoDetectionMetric(CocoMetric):
    """COCO bbox mAP as an ``evaluate.Metric`` (constructed directly: no Hub download).

    ``add_batch(predictions=[...], references=[...])`` / ``add(prediction=..., reference=...)`` take the formats of
    :func:`coco_evaluate`; ``compute(per_class=False, id2label=None, backend="pycocotools")`` returns its dict.
    Inputs are validated and normalised as they arrive, so errors name the offending image, and extra reference keys
    (``image_id``, ``orig_size``, ...) are accepted and ignored. ``compute(..., return_evaluation=True)`` returns the
    :class:`CocoEvaluation` instead of the dict.

    Example::

        metric = CocoDetectionMetric()
        metric.add_batch(predictions=processor.post_process_object_detection(outputs, 0.0, sizes), references=refs)
        metric.compute(per_class=True, id2label=model.config.id2label)["map"]
    """

    normalize_prediction = staticmethod(_prediction_arrays)
    normalize_reference = staticmethod(_reference_arrays)
    run = staticmethod(_evaluate_boxes)
    description = "COCO box mAP/mAR computed with pycocotools COCOeval."
    inputs = staticmethod(coco_evaluate)
    prediction_fields = {"boxes": _BOXES}
    reference_fields = {"boxes": _BOXES, "area": datasets.Sequence(datasets.Value("float64"))}


@dataclass
class PostProcessInputs(ModelOutput):
    """What the image processor's post-processing reads of a model's outputs, rebuilt from stored predictions:
    `logits` with `pred_boxes` (detection) or `pred_masks` (segmentation)."""

    logits: torch.Tensor | None = None
    pred_boxes: torch.Tensor | None = None
    pred_masks: torch.Tensor | None = None


def _logits_and_boxes(batch_predictions: Any, batch_index: int) -> tuple[np.ndarray, np.ndarray]:
    """Pick ``logits`` (B, Q, C + 1) and ``pred_boxes`` (B, Q, 4) from one batch of ``EvalPrediction.predictions``.

    Trainer passes the model output's non-``loss`` fields in order, e.g. ``(loss_dict, logits, pred_boxes,
    auxiliary_outputs, ...)``; dicts and lists come before or after the two arrays, so they are the first two arrays.
    """
    items = batch_predictions if isinstance(batch_predictions, (tuple, list)) else (batch_predictions,)
    arrays = [x for x in items if isinstance(x, (np.ndarray, torch.Tensor))]
    if len(arrays) < 2:
        raise HfDetrInputError(
            f"EvalPrediction.predictions[{batch_index}] has no (logits, pred_boxes) arrays. Pass a list of per-batch "
            "tuples: set TrainingArguments(eval_do_concat_batches=False) and keep `logits`/`pred_boxes` out of "
            "`keys_to_ignore_at_inference`."
        )
    logits, boxes = (np.asarray(a) for a in arrays[:2])
    if logits.ndim != 3 or boxes.ndim != 3 or boxes.shape[-1] != 4 or logits.shape[:2] != boxes.shape[:2]:
        raise HfDetrInputError(
            f"EvalPrediction.predictions[{batch_index}]: expected logits (B, Q, C + 1) and pred_boxes (B, Q, 4), got "
            f"shapes {logits.shape} and {boxes.shape}. Did you set TrainingArguments(eval_do_concat_batches=False)?"
        )
    return logits, boxes


def _height_width(label: Mapping[str, Any], key: str, where: str) -> tuple[float, float]:
    size = _as_tensor(label[key], where, key, torch.float64)
    if size.shape != (2,):
        raise HfDetrInputError(
            f"{where}: `{key}` must be (h, w), got {size.tolist()}. If this is the last evaluation batch, "
            "accelerate's gather_for_metrics cut every label tensor to the batch's remainder: make the eval set size "
            "a multiple of per_device_eval_batch_size * world size (see make_compute_metrics)."
        )
    height, width = size.tolist()
    return height, width


def _reference_from_label(label: Mapping[str, Any], where: str) -> dict[str, Any]:
    """A processor label dict (normalised cx, cy, w, h boxes) as a reference in the original image's pixel frame."""
    missing = [key for key in ("boxes", "class_labels", "orig_size") if key not in label]
    if missing:
        raise HfDetrInputError(f"{where} is missing {missing}; expected the image processor's label dict.")
    orig_h, orig_w = _height_width(label, "orig_size", where)
    boxes = check_boxes(label["boxes"], lambda j: f"{where}: `boxes[{j}]`", "cxcywh")
    boxes = denormalize_boxes(boxes, "xywh", (orig_h, orig_w))
    reference = {"boxes": boxes, "labels": label["class_labels"], "iscrowd": label.get("iscrowd", np.zeros(len(boxes)))}
    if "area" in label:
        # The processor scales `area` to the resized image; bring it back to the original frame.
        if "size" not in label:
            raise HfDetrInputError(f"{where} has `area` but no `size` (the resized (h, w) the area refers to).")
        size_h, size_w = _height_width(label, "size", where)
        area = _as_tensor(label["area"], where, "area", torch.float64)
        reference["area"] = area * (orig_h * orig_w) / (size_h * size_w)
    return reference


def detections_in_original_frame(
    image_processor: Any,
    logits: Any,
    pred_boxes: Any,
    labels: Sequence[Mapping[str, Any]],
    threshold: float,
    where: str = "labels",
) -> list[dict[str, np.ndarray]]:
    """A batch's detections (``image_processor.post_process_object_detection`` of ``logits`` (B, Q, C + 1) and
    ``pred_boxes`` (B, Q, 4) at ``threshold``), each image's in the original pixel frame of its processor label dict
    (``orig_size``), as numpy arrays: the compact form an evaluation keeps of each image until it scores them all."""
    sizes = [_height_width(label, "orig_size", f"{where}[{i}]") for i, label in enumerate(labels)]
    outputs = PostProcessInputs(logits=torch.as_tensor(logits), pred_boxes=torch.as_tensor(pred_boxes))
    found = image_processor.post_process_object_detection(outputs, threshold, target_sizes=torch.tensor(sizes))
    return [{key: value.cpu().numpy() for key, value in image.items()} for image in found]


def _are_detections(batch_predictions: Any) -> bool:
    """Whether a batch of ``EvalPrediction.predictions`` is already post-processed: one detection dict per image."""
    return isinstance(batch_predictions, list) and all(
        isinstance(image, Mapping) and "scores" in image for image in batch_predictions
    )


def make_compute_metrics(
    image_processor: Any,
    id2label: Mapping[int, str] | None = None,
    threshold: float = 0.0,
    per_class: bool = False,
    return_evaluation: bool = False,
    backend: str = "pycocotools",
) -> Callable[[EvalPrediction], dict[str, float]]:
    """``compute_metrics`` for ``Trainer(..., args=TrainingArguments(eval_do_concat_batches=False, ...))``.

    ``EvalPrediction.predictions`` is a list over batches of the model outputs (``logits`` (B, Q, C + 1) and
    ``pred_boxes`` (B, Q, 4), normalised cx, cy, w, h); ``label_ids`` a list over batches of the processor's label
    dicts (``boxes`` (M, 4) normalised cx, cy, w, h, ``class_labels``, ``orig_size`` (h, w), ``size``, ``area``,
    ``iscrowd``). Detections go to each image's original pixel frame through
    ``image_processor.post_process_object_detection(outputs, threshold, target_sizes=orig_sizes)``; the labels are
    scaled to the same frame. A batch of predictions may also be a list of such detections already, one
    ``{"scores", "labels", "boxes"}`` dict per image (:func:`detections_in_original_frame`, what
    ``hf_detr.evaluation.evaluate`` keeps): they are scored as they are. Each batch is reduced to compact arrays at
    once, so only the model outputs of the batch at hand are ever expanded. Returns :func:`coco_evaluate`'s dict
    (with ``backend``) rounded to 4 decimals (with ``return_evaluation=True``, for callers other than ``Trainer``:
    the rounded :class:`CocoEvaluation` of the same run, e.g. for the per-class table and precision-recall curves).
    For COCO's numbers the eval labels must keep crowd regions (``HfDetrImageProcessor(keep_crowd=True)``):
    detections on them are then ignored rather than counted as false positives.

    A batch of ``label_ids`` may also be the ``[batch, 1 + M, 7]`` array of :func:`pack_labels`, which is what
    :class:`hf_detr.training.DetrTrainer` hands over: with a list of dicts, accelerate's ``gather_for_metrics``
    (transformers 5.x) cuts *every tensor inside* the last uneven batch's dicts to the batch's remainder, silently
    dropping ground-truth objects (a cut ``orig_size`` raises here; the lost boxes cannot be detected).
    """
    if backend not in COCO_BACKENDS:
        raise HfDetrInputError(f"backend must be one of {COCO_BACKENDS}, got {backend!r}")

    def compute_metrics(eval_pred: EvalPrediction) -> dict[str, float]:
        predictions, labels = eval_pred.predictions, eval_pred.label_ids
        if not isinstance(labels, (list, tuple)) or len(predictions) != len(labels):
            raise HfDetrInputError(
                "compute_metrics needs per-batch predictions and labels: set "
                "TrainingArguments(eval_do_concat_batches=False)."
            )
        preds, refs = [], []
        for batch_index, (batch_predictions, batch_labels) in enumerate(zip(predictions, labels)):
            if isinstance(batch_labels, (np.ndarray, torch.Tensor)):
                batch_labels = unpack_labels(np.asarray(batch_labels))
            where = f"label_ids[{batch_index}]"
            outputs = None if _are_detections(batch_predictions) else _logits_and_boxes(batch_predictions, batch_index)
            count = len(batch_predictions) if outputs is None else len(outputs[0])
            if len(batch_labels) != count:
                raise HfDetrInputError(f"Batch {batch_index}: {count} predictions but {len(batch_labels)} label dicts.")
            references = [_reference_from_label(label, f"{where}[{i}]") for i, label in enumerate(batch_labels)]
            detections = (
                batch_predictions
                if outputs is None
                else detections_in_original_frame(image_processor, *outputs, batch_labels, threshold, where)
            )
            preds += [_prediction_arrays(d, f"predictions[{batch_index}][{i}]") for i, d in enumerate(detections)]
            refs += [_reference_arrays(r, f"{where}[{i}]") for i, r in enumerate(references)]
        evaluation = _evaluate_boxes(preds, refs, per_class, id2label, return_evaluation, backend).rounded(4)
        return evaluation if return_evaluation else evaluation.metrics

    return compute_metrics


def pack_labels(labels: Sequence[Mapping[str, torch.Tensor]]) -> torch.Tensor:
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
        labels.append(
            {
                "orig_size": np.array([orig_h, orig_w], dtype=np.int64),
                "size": np.array([size_h, size_w], dtype=np.int64),
                "image_id": np.array([image_id], dtype=np.int64),
                "boxes": objects[:, :4],
                "class_labels": objects[:, 4].astype(np.int64),
                "iscrowd": objects[:, 5].astype(np.int64),
                "area": objects[:, 6],
            }
        )
    return labels
