"""One COCO evaluation, the one path of box and mask mAP (`run_cocoeval`), and what it gives: the metrics, the
per-class table (`per_class_rows`, `format_per_class_table`) and the arrays for precision-recall curves
(`CocoEvaluation`). The metric names and the per-class keys are explained in :mod:`hf_detr.evaluation.metrics`."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval, Params

from ..modeling.errors import HfDetrInputError
from .coco_arrays import Annotations, evaluate_arrays, undefined_arrays

logger = logging.getLogger(__name__)

__all__ = [
    "COCO_BACKENDS",
    "COCO_STAT_NAMES",
    "PER_CLASS_STATS",
    "CocoEvaluation",
    "category_names",
    "format_per_class_table",
    "per_class_key",
    "per_class_rows",
    "run_cocoeval",
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

# The per-class numbers: flat metric keys `<stat>_class_<name>` (see the docstring of `metrics`) and the columns of
# `CocoEvaluation.per_class` (which also counts each class's ground-truth objects under "objects").
PER_CLASS_STATS: tuple[str, ...] = ("map", "map_50", "mar_100")


def per_class_key(stat: str, name: str) -> str:
    """``<stat>_class_<name>``."""
    if stat not in PER_CLASS_STATS:
        raise HfDetrInputError(f"per-class stat must be one of {PER_CLASS_STATS}, got {stat!r}")
    return f"{stat}_class_{name}"


@dataclass
class CocoEvaluation:
    """Everything one COCOeval run gives.

    Attributes:
        per_class: ``{class name: {"map", "map_50", "mar_100", "objects"}}`` in category order: AP@[.50:.95], AP@.50
            and AR@100 at area "all" (-1.0 without ground truth) and the non-crowd objects (the ones recall counts).
        precision: COCOeval's ``eval["precision"]`` ``[T, R, K, A, M]`` (IoU thresholds, 101 recall points,
            categories of ``class_names``, areas all/small/medium/large, max detections 1/10/100); -1 where a category
            has no ground truth; ``None`` when there was nothing to evaluate.
        predictions, references: what COCOeval scored, per image in the evaluation's order, in :func:`coco_evaluate`'s
            formats as lists (checked), for diagnostics without a second model pass.
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
        """``[K, R]`` at area "all", 100 detections; rows of -1 for classes without ground truth."""
        if self.precision is None:
            raise HfDetrInputError("no precision array: the evaluation had no images")
        matches = np.flatnonzero(np.isclose(self.iou_thresholds, iou))
        if len(matches) == 0:
            raise HfDetrInputError(f"IoU {iou} is not one of COCO's thresholds {self.iou_thresholds.tolist()}")
        return self.precision[matches[0], :, :, 0, -1].T

    def rounded(self, digits: int = 4) -> CocoEvaluation:
        """The arrays as they are."""
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
    """From an accumulated ``COCOeval``, per category of ``params.catIds``: the slices ``summarize()`` averages over
    categories for ``map``, ``map_50`` and ``mar_100`` (area "all", 100 detections)."""
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
    """:attr:`CocoEvaluation.per_class` as a text table."""
    width = max(12, *(len(name) + 2 for name in per_class)) if per_class else 12
    lines = [f"{'class':<{width}}{'AP':>8}{'AP50':>8}{'AR@100':>8}{'objects':>9}"]
    lines += [
        f"{name:<{width}}{row['map']:>8.4f}{row['map_50']:>8.4f}{row['mar_100']:>8.4f}{row['objects']:>9d}"
        for name, row in per_class.items()
    ]
    return "\n".join(lines)


def _coco_from(images: list[dict], categories: list[int], annotations: list[dict]) -> COCO:
    coco = COCO()
    coco.dataset = {"images": images, "categories": [{"id": c} for c in categories], "annotations": annotations}
    with contextlib.redirect_stdout(io.StringIO()):  # createIndex prints progress
        coco.createIndex()
    return coco


def category_names(categories: Sequence[int], label_name: Mapping[int, str]) -> list[str]:
    """The integer label when unnamed; a name several categories share gets each one's label appended,
    ``"<name> (id <label>)"``, so per-class results stay one per category."""
    names = [label_name.get(c, str(c)) for c in categories]
    return [f"{name} (id {c})" if names.count(name) > 1 else name for name, c in zip(names, categories)]


def _rows_by_category(annotations: Annotations, categories: Sequence[int]) -> list[np.ndarray]:
    """``categories``: sorted, holding every category of ``annotations``."""
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
    """The one path of box (``iou_type="bbox"``) and mask (``"segm"``) mAP, on images ``0 .. num_images - 1``.
    ``image_sizes`` (height, width) are read for masks. ``predictions`` / ``references`` are left to the caller."""
    if backend not in COCO_BACKENDS:
        raise HfDetrInputError(f"backend must be one of {COCO_BACKENDS}, got {backend!r}")
    categories = sorted(
        set(ground_truth.category.tolist()) | set(detections.category.tolist()) | {int(k) for k in (id2label or {})}
    )
    label_name = {int(k): str(v) for k, v in (id2label or {}).items()}
    class_names = category_names(categories, label_name)
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
