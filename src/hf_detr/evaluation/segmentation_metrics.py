"""Segmentation metrics: COCO mask mAP through ``pycocotools`` and panoptic quality (PQ, SQ, RQ).

**Mask mAP** is the box metric's COCOeval run (:func:`~hf_detr.evaluation.coco_evaluation.run_cocoeval`) with
``iouType="segm"`` on COCO RLEs: the same 12 numbers prefixed ``segm_``, so box and mask metrics share one dict
without a collision. Crowd masks are matched as COCO does (intersection over the detection's area; detections on
them ignored). Prediction and reference masks of different sizes are an error, not a resize.

**Panoptic quality** follows the COCO panoptic definition (Kirillov et al., "Panoptic Segmentation", CVPR 2019, as
panopticapi's ``pq_compute`` implements it). Per image, pixels whose segment id is <= 0 are unlabelled (VOID: COCO's
id 0, and the 0 and -1 of ``post_process_panoptic_segmentation``); every other id must be listed in
``segments_info``. Then:

- a predicted and a ground-truth segment of the same category match when IoU > 0.5, with the prediction's VOID pixels
  (where the ground truth is unlabelled) removed from the union; IoU > 0.5 makes matches unique;
- a crowd ground-truth segment is never matched nor missed;
- an unmatched ground-truth segment is a false negative; an unmatched prediction is a false positive unless more than
  half of it lies on VOID plus the crowd regions *of its own category* (panopticapi keeps one crowd segment per
  category and image; here all of them count, the same for COCO's annotations, which merge a category's crowd);
- per category: SQ = sum of matched IoUs / TP, RQ = TP / (TP + FP / 2 + FN / 2), PQ = SQ x RQ; ``pq``, ``sq``,
  ``rq`` average them over the categories with any segment (TP + FP + FN > 0), ``*_things`` and ``*_stuff`` over the
  thing and the stuff categories of those. A value nothing defines is **-1.0**, as in the COCO box metric; per class
  ``pq_class_<name>``, ``sq_class_<name>``, ``rq_class_<name>`` (no PQ stat name contains ``_class_``).

Why not a package: ``torchmetrics.detection.PanopticQuality`` (1.9) has no crowd regions, removes the prediction's
unlabelled pixels inside a ground-truth segment from the union and excuses ground truth the prediction leaves mostly
unlabelled (COCO counts both against the prediction); panopticapi is not on PyPI (its repackaging
``panopticapi-lite`` pins numpy < 2) and reads PNG folders. The definition is small, so it is written here in numpy.

Across processes, mask predictions travel as RLEs (:func:`encode_masks`) and PQ as each image's
:class:`SegmentCounts` (:meth:`PanopticQualityMetric.count_image`).
"""

from __future__ import annotations

import dataclasses
import numbers
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import datasets
import numpy as np
import torch
from pycocotools import mask as mask_utils

from ..data.masks import encode_rles
from ..modeling.errors import HfDetrInputError, HfDetrInputTypeError
from .coco_arrays import Annotations
from .coco_evaluation import COCO_STAT_NAMES, CocoEvaluation, category_names, run_cocoeval
from .coco_inputs import check_lengths, checked_tensor, column, image_index
from .metrics import CocoMetric

__all__ = [
    "PQ_PER_CLASS_STATS",
    "PQ_STAT_NAMES",
    "SEGM_PREFIX",
    "SEGM_STAT_NAMES",
    "CocoSegmentationMetric",
    "PanopticQualityMetric",
    "SegmentCounts",
    "coco_segmentation_evaluate",
    "encode_masks",
    "panoptic_quality",
]

SEGM_PREFIX = "segm_"
SEGM_STAT_NAMES: tuple[str, ...] = tuple(SEGM_PREFIX + name for name in COCO_STAT_NAMES)

PQ_PER_CLASS_STATS: tuple[str, ...] = ("pq", "sq", "rq")
PQ_STAT_NAMES: tuple[str, ...] = tuple(
    stat + group for group in ("", "_things", "_stuff") for stat in PQ_PER_CLASS_STATS
)


# --------------------------------------------------------------------------------------------------- mask mAP


def encode_masks(masks: Any, where: str = "masks") -> list[dict[str, Any]]:
    """Binary masks ``[N, H, W]`` (bool or 0/1) as COCO RLEs ``{"size": [H, W], "counts": str}``, the form
    predictions and references are stored and gathered in."""
    if isinstance(masks, torch.Tensor):
        masks = masks.detach().cpu().numpy()
    array = np.asarray(masks)
    if array.size == 0 and array.ndim < 3:  # [] or an empty array: no masks
        return []
    if array.ndim != 3:
        raise HfDetrInputError(f"{where} must have shape (N, H, W), got {array.shape}.")
    if array.dtype.kind not in "biuf" or (array.dtype != bool and not np.isin(array, (0, 1)).all()):
        raise HfDetrInputError(
            f"{where} must be binary (bool or 0/1), got dtype {array.dtype}; threshold mask probabilities first "
            "(e.g. `masks > 0.5`)."
        )
    return encode_rles(array)


def _rles(masks: Any, where: str) -> list[dict[str, Any]]:
    """From binary masks ``[N, H, W]`` or RLE dicts (compressed counts, str or bytes; or COCO's uncompressed run
    lengths, as crowd annotations have)."""
    if not (isinstance(masks, (list, tuple)) and masks and isinstance(masks[0], Mapping)):
        return encode_masks(masks, f"{where}: `masks`")
    rles = []
    for j, rle in enumerate(masks):
        if not isinstance(rle, Mapping) or "size" not in rle or "counts" not in rle:
            raise HfDetrInputError(f"{where}: `masks[{j}]` must be an RLE dict with `size` (H, W) and `counts`.")
        size, counts = rle["size"], rle["counts"]
        if (
            type(rle) is dict
            and type(counts) is str
            and type(size) is list
            and len(size) == 2
            and type(size[0]) is type(size[1]) is int
            and min(size) >= 0
        ):
            rles.append(rle)  # the form kept already (encode_masks'): not copied, a split holds hundreds of thousands
            continue
        size = [int(s) for s in size]
        if len(size) != 2 or min(size) < 0:
            raise HfDetrInputError(f"{where}: `masks[{j}]['size']` must be (H, W), got {rle['size']!r}.")
        if isinstance(counts, (list, tuple)):  # uncompressed run lengths
            counts = mask_utils.frPyObjects({"size": size, "counts": list(counts)}, *size)["counts"]
        if isinstance(counts, bytes):
            counts = counts.decode("ascii")
        if not isinstance(counts, str):
            raise HfDetrInputError(f"{where}: `masks[{j}]['counts']` must be str, bytes or a list of run lengths.")
        rles.append({"size": size, "counts": counts})
    return rles


def _normalize_mask_prediction(prediction: Mapping[str, Any], where: str) -> dict[str, Any]:
    if not isinstance(prediction, Mapping):
        raise HfDetrInputTypeError(
            f"{where} must be a dict with `scores`, `labels`, `masks`, got {type(prediction).__name__}."
        )
    missing = [key for key in ("scores", "labels", "masks") if key not in prediction]
    if missing:
        raise HfDetrInputError(f"{where} is missing {missing}; expected `scores`, `labels`, `masks` (N, H, W) binary.")
    fields = {
        "scores": checked_tensor(prediction["scores"], where, "scores", torch.float64).numpy(),
        "labels": checked_tensor(prediction["labels"], where, "labels", torch.int64).numpy(),
        "masks": _rles(prediction["masks"], where),
    }
    check_lengths(where, fields)
    return fields


def _normalize_mask_reference(reference: Mapping[str, Any], where: str) -> dict[str, Any]:
    if not isinstance(reference, Mapping):
        raise HfDetrInputTypeError(f"{where} must be a dict with `masks` and `labels`, got {type(reference).__name__}.")
    label_key = "labels" if "labels" in reference else "class_labels"
    if "masks" not in reference or label_key not in reference:
        raise HfDetrInputError(f"{where} needs `masks` ((M, H, W) binary) and `labels` (or `class_labels`).")
    masks = _rles(reference["masks"], where)
    crowd = reference.get("iscrowd", np.zeros(len(masks), dtype=np.int64))
    fields = {
        "masks": masks,
        "labels": checked_tensor(reference[label_key], where, label_key, torch.int64).numpy(),
        "iscrowd": checked_tensor(crowd, where, "iscrowd", torch.int64).numpy(),
    }
    check_lengths(where, fields)
    return fields


def _areas(rles: list[dict[str, Any]]) -> np.ndarray:
    """255 at a time: `mask.area` sizes an internal uint8 array by the number of RLEs, which numpy 2 refuses past
    255."""
    return np.concatenate([np.zeros(0), *(mask_utils.area(rles[i : i + 255]) for i in range(0, len(rles), 255))])


def _run_segm_cocoeval(
    preds: Sequence[Mapping[str, Any]],
    refs: Sequence[Mapping[str, Any]],
    per_class: bool,
    id2label: Mapping[int, str] | None,
    return_evaluation: bool = False,
    backend: str = "pycocotools",
) -> CocoEvaluation:
    """:func:`coco_segmentation_evaluate`'s unchecked core, on normalized inputs (the evaluation carries no inputs,
    whatever ``return_evaluation``: diagnostics read boxes)."""
    image_sizes = []
    for image, (pred, ref) in enumerate(zip(preds, refs)):
        sizes = {tuple(rle["size"]) for rle in [*pred["masks"], *ref["masks"]]}
        if len(sizes) > 1:
            raise HfDetrInputError(
                f"image {image}: masks of different sizes {sorted(sizes)}; predictions and references must be "
                "in the same (H, W) frame (post-process the predictions to the references' size)."
            )
        image_sizes.append(sizes.pop() if sizes else (0, 0))  # (0, 0): no masks, nothing reads the size
    truth = [rle for ref in refs for rle in ref["masks"]]
    found = [rle for pred in preds for rle in pred["masks"]]
    ground_truth = Annotations(
        image=image_index([len(r["masks"]) for r in refs]),
        category=column([r["labels"] for r in refs], np.int64),
        iscrowd=column([r["iscrowd"] for r in refs], np.int64),
        area=_areas(truth),
        masks=truth,
    )
    detections = Annotations(
        image=image_index([len(pred["masks"]) for pred in preds]),
        category=column([p["labels"] for p in preds], np.int64),
        iscrowd=np.zeros(len(found), dtype=np.int64),
        area=_areas(found),
        score=column([p["scores"] for p in preds], np.float64),
        masks=found,
    )
    evaluation = run_cocoeval(len(refs), ground_truth, detections, "segm", per_class, id2label, image_sizes, backend)
    return dataclasses.replace(evaluation, metrics={SEGM_PREFIX + k: v for k, v in evaluation.metrics.items()})


def coco_segmentation_evaluate(
    predictions: Sequence[Mapping[str, Any]],
    references: Sequence[Mapping[str, Any]],
    per_class: bool = False,
    id2label: Mapping[int, str] | None = None,
    return_evaluation: bool = False,
    backend: str = "pycocotools",
) -> dict[str, float] | CocoEvaluation:
    """COCO mask mAP of ``predictions[i]`` against ``references[i]``: :data:`SEGM_STAT_NAMES` (and with
    ``per_class`` the ``segm_`` per-class keys); the options as for :func:`hf_detr.evaluation.metrics.coco_evaluate`.

    Args:
        predictions: per image ``{"scores": (N,), "labels": (N,), "masks": (N, H, W)}``, masks binary (or N RLE dicts,
            :func:`encode_masks`) in the references' frame.
        references: per image ``{"masks": (M, H, W), "labels" | "class_labels": (M,), "iscrowd"?: (M,)}``.
    """
    if len(predictions) != len(references):
        raise HfDetrInputError(
            f"Got {len(predictions)} predictions but {len(references)} references; need one per image."
        )
    preds = [_normalize_mask_prediction(p, f"predictions[{i}]") for i, p in enumerate(predictions)]
    refs = [_normalize_mask_reference(r, f"references[{i}]") for i, r in enumerate(references)]
    evaluation = _run_segm_cocoeval(preds, refs, per_class, id2label, backend=backend)
    return evaluation if return_evaluation else evaluation.metrics


_RLES = datasets.List({"size": datasets.List(datasets.Value("int64"), length=2), "counts": datasets.Value("string")})


class CocoSegmentationMetric(CocoMetric):
    """COCO mask mAP as an ``evaluate.Metric``, the mask twin of ``CocoDetectionMetric``: the inputs of
    :func:`coco_segmentation_evaluate`, stored as RLEs.

    Example::

        metric = CocoSegmentationMetric()
        metric.add_batch(predictions=[{"masks": masks > 0.5, "scores": scores, "labels": labels}], references=refs)
        metrics = {**box_metrics, **metric.compute()}  # "map", ... and "segm_map", ...
    """

    normalize_prediction = staticmethod(_normalize_mask_prediction)
    normalize_reference = staticmethod(_normalize_mask_reference)
    run = staticmethod(_run_segm_cocoeval)
    description = "COCO mask mAP/mAR computed with pycocotools COCOeval (iouType='segm')."
    inputs = staticmethod(coco_segmentation_evaluate)
    prediction_fields = {"masks": _RLES}
    reference_fields = {"masks": _RLES}


# ------------------------------------------------------------------------------------------- panoptic quality


@dataclass
class SegmentCounts:
    """PQ's counts for one category; ``iou`` sums the IoUs of the ``tp`` matched pairs. Images add up."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    iou: float = 0.0

    def __add__(self, other: SegmentCounts) -> SegmentCounts:
        return SegmentCounts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, self.iou + other.iou)


def _category_set(values: Collection[int], name: str) -> set[int]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Collection):
        raise HfDetrInputTypeError(f"`{name}` must be a collection of integer category ids, got {values!r}.")
    bad = [v for v in values if not isinstance(v, numbers.Integral) or isinstance(v, bool)]
    if bad:
        raise HfDetrInputTypeError(f"`{name}` must hold integer category ids, got {bad}.")
    return {int(v) for v in values}


def _panoptic_segments(panoptic: Mapping[str, Any], where: str, categories: set[int]) -> tuple[np.ndarray, dict]:
    """The segment ids ``[H, W]`` (int64) and ``{id: (category, crowd)}`` of the listed segments."""
    if not isinstance(panoptic, Mapping) or "segmentation" not in panoptic or "segments_info" not in panoptic:
        raise HfDetrInputError(f"{where} must be a dict with `segmentation` ([H, W] segment ids) and `segments_info`.")
    ids = panoptic["segmentation"]
    ids = np.asarray(ids.detach().cpu() if isinstance(ids, torch.Tensor) else ids)
    if ids.ndim != 2 or ids.dtype.kind not in "biuf" or (ids.dtype.kind == "f" and (ids != np.round(ids)).any()):
        raise HfDetrInputError(f"{where}: `segmentation` must be an integer [H, W] map, got {ids.dtype} {ids.shape}.")
    segments: dict[int, tuple[int, bool]] = {}
    for j, info in enumerate(panoptic["segments_info"]):
        field = f"{where}: `segments_info[{j}]`"
        label_key = "label_id" if isinstance(info, Mapping) and "label_id" in info else "category_id"
        if not isinstance(info, Mapping) or "id" not in info or label_key not in info:
            raise HfDetrInputError(f"{field} needs `id` and `label_id` (or `category_id`), got {info!r}.")
        segment_id, label = int(info["id"]), int(info[label_key])
        if segment_id <= 0:
            raise HfDetrInputError(f"{field}: `id` must be > 0 (ids <= 0 mark unlabelled pixels), got {segment_id}.")
        if label not in categories:
            raise HfDetrInputError(
                f"{field}: category {label} is neither in `things` nor in `stuff` ({sorted(categories)}); add it to "
                "the one it belongs to."
            )
        segment = (label, bool(info.get("iscrowd", 0)))
        # transformers lists a fused stuff segment once per query it merges: the same id, the same category
        if segments.setdefault(segment_id, segment) != segment:
            raise HfDetrInputError(
                f"{field}: segment {segment_id} is listed twice, as {segments[segment_id]} and {segment}."
            )
    return ids.astype(np.int64, copy=False), segments


def _indices(ids: np.ndarray, segments: Mapping[int, Any], where: str) -> tuple[np.ndarray, np.ndarray]:
    """Each pixel's index in ``keys = sorted(segments)`` plus one (0: unlabelled), and ``keys``."""
    keys = np.array(sorted(segments), dtype=np.int64)
    labelled = ids > 0
    top = int(ids.max(initial=0))
    if top <= ids.size:  # small ids (post-processing's, the evaluation's references'): a lookup table, one pass
        table = np.zeros(top + 1, dtype=np.int64)
        present = keys[keys <= top]
        table[present] = np.searchsorted(keys, present) + 1
        index = table[np.where(labelled, ids, 0)]
    else:  # large ids (COCO's PNG ids reach 2^24): a sorted search
        position = np.searchsorted(keys, ids[labelled])
        found = keys[np.minimum(position, len(keys) - 1)] == ids[labelled] if len(keys) else False
        index = np.zeros(ids.shape, dtype=np.int64)
        index[labelled] = np.where(found, position + 1, 0)
    unlisted = labelled & (index == 0)
    if unlisted.any():
        raise HfDetrInputError(
            f"{where}: segment ids {np.unique(ids[unlisted]).tolist()} are in `segmentation` but not in "
            "`segments_info` (use ids <= 0 for unlabelled pixels)."
        )
    return index, keys


def _image_counts(
    prediction: tuple[np.ndarray, dict], reference: tuple[np.ndarray, dict], where: str
) -> dict[int, SegmentCounts]:
    """Per category it has segments of."""
    (pred_ids, pred_segments), (gt_ids, gt_segments) = prediction, reference
    if pred_ids.shape != gt_ids.shape:
        raise HfDetrInputError(
            f"{where}: prediction map {pred_ids.shape} and reference map {gt_ids.shape} differ in size; post-process "
            "the prediction to the reference's size."
        )
    pred_index, pred_keys = _indices(pred_ids, pred_segments, f"{where} prediction")
    gt_index, gt_keys = _indices(gt_ids, gt_segments, f"{where} reference")
    # intersection[g, p]: pixels of ground-truth segment g and predicted segment p; row and column 0 are VOID
    width = len(pred_keys) + 1
    intersection = np.bincount((gt_index * width + pred_index).ravel(), minlength=(len(gt_keys) + 1) * width)
    intersection = intersection.reshape(len(gt_keys) + 1, width)
    pred_area, gt_area = intersection.sum(0), intersection.sum(1)
    for side, keys, area in (("prediction", pred_keys, pred_area), ("reference", gt_keys, gt_area)):
        if (area[1:] == 0).any():
            raise HfDetrInputError(
                f"{where} {side}: segments {keys[area[1:] == 0].tolist()} are listed but have no pixel."
            )
    pred_category = np.array([pred_segments[k][0] for k in pred_keys], dtype=np.int64)
    gt_category = np.array([gt_segments[k][0] for k in gt_keys], dtype=np.int64)
    gt_crowd = np.array([gt_segments[k][1] for k in gt_keys], dtype=bool)

    pairs = intersection[1:, 1:]
    union = pred_area[None, 1:] - intersection[0, None, 1:] + gt_area[1:, None] - pairs  # >= gt area > 0
    iou = pairs / union
    matched = (iou > 0.5) & (gt_category[:, None] == pred_category[None, :]) & ~gt_crowd[:, None]

    counts: dict[int, SegmentCounts] = defaultdict(SegmentCounts)
    for g, p in zip(*np.nonzero(matched)):
        counts[int(gt_category[g])].tp += 1
        counts[int(gt_category[g])].iou += float(iou[g, p])
    for g in np.flatnonzero(~matched.any(1) & ~gt_crowd):
        counts[int(gt_category[g])].fn += 1
    for p in np.flatnonzero(~matched.any(0)):
        same_crowd = gt_crowd & (gt_category == pred_category[p])
        ignored = intersection[0, p + 1] + pairs[same_crowd, p].sum()
        if ignored / pred_area[p + 1] <= 0.5:
            counts[int(pred_category[p])].fp += 1
    return dict(counts)


class PanopticQualityMetric:
    """PQ, SQ and RQ accumulated over images; ``things`` and ``stuff`` are the category ids of each kind (disjoint;
    from COCO's categories: ``[c["id"] for c in categories if c["isthing"]]`` and the rest).

    Predictions and references are per image ``{"segmentation": [H, W] segment ids, "segments_info": [{"id",
    "label_id" | "category_id", "iscrowd"?}]}``, the output of ``post_process_panoptic_segmentation`` and COCO's
    panoptic annotations (``rgb2id`` of the PNG, ``segments_info`` of the JSON), in the same frame. ``iscrowd`` is read
    from the references only. Each image is reduced to its :class:`SegmentCounts` as it is added.

    Example (several processes: each counts its images, the gathered counts are added everywhere)::

        metric = PanopticQualityMetric(things={1, 2}, stuff={3})
        for batch in loader:
            counts = [metric.count_image(p, r) for p, r in zip(panoptic_maps, references)]
            metric.add_counts(accelerator.gather_for_metrics(counts, use_gather_object=True))
        metric.compute(per_class=True, id2label=id2label)["pq"]
    """

    def __init__(self, things: Collection[int], stuff: Collection[int] = ()) -> None:
        self.things, self.stuff = _category_set(things, "things"), _category_set(stuff, "stuff")
        if self.things & self.stuff:
            raise HfDetrInputError(f"`things` and `stuff` share categories {sorted(self.things & self.stuff)}.")
        if not self.things | self.stuff:
            raise HfDetrInputError("`things` and `stuff` are both empty; give the category ids of each kind.")
        self.counts: list[dict[int, SegmentCounts]] = []

    def count_image(
        self, prediction: Mapping[str, Any], reference: Mapping[str, Any], where: str = "image"
    ) -> dict[int, SegmentCounts]:
        """Not added: :meth:`add_counts` adds them."""
        categories = self.things | self.stuff
        return _image_counts(
            _panoptic_segments(prediction, f"{where}: prediction", categories),
            _panoptic_segments(reference, f"{where}: reference", categories),
            where,
        )

    def add_counts(self, counts: Iterable[Mapping[int, SegmentCounts]]) -> None:
        self.counts += [dict(image) for image in counts]

    def add_batch(self, *, predictions: Sequence[Mapping[str, Any]], references: Sequence[Mapping[str, Any]]) -> None:
        if len(predictions) != len(references):
            raise HfDetrInputError(
                f"Got {len(predictions)} predictions but {len(references)} references; need one per image."
            )
        first = len(self.counts)  # errors name the image by its position among all added
        self.add_counts(
            self.count_image(p, r, f"image {first + i}") for i, (p, r) in enumerate(zip(predictions, references))
        )

    def add(self, *, prediction: Mapping[str, Any], reference: Mapping[str, Any]) -> None:
        self.add_batch(predictions=[prediction], references=[reference])

    def compute(self, per_class: bool = False, id2label: Mapping[int, str] | None = None) -> dict[str, float]:
        """:data:`PQ_STAT_NAMES` (and with ``per_class`` ``pq_class_<name>``, ... for every category), over all
        images added; -1.0 where no image has a segment of the categories averaged."""
        totals: dict[int, SegmentCounts] = defaultdict(SegmentCounts)
        for image in self.counts:
            for category, counts in image.items():
                totals[category] += counts
        quality = {}  # category -> (pq, sq, rq), for categories with any segment
        for category, c in totals.items():
            if c.tp + c.fp + c.fn:
                sq = c.iou / c.tp if c.tp else 0.0
                rq = c.tp / (c.tp + 0.5 * c.fp + 0.5 * c.fn)
                quality[category] = (sq * rq, sq, rq)
        metrics = {}
        for group, categories in (("", self.things | self.stuff), ("_things", self.things), ("_stuff", self.stuff)):
            values = np.array([quality[c] for c in categories if c in quality]).reshape(-1, 3)
            means = values.mean(0).tolist() if len(values) else [-1.0] * 3
            metrics.update({stat + group: float(m) for stat, m in zip(PQ_PER_CLASS_STATS, means)})
        if per_class:
            categories = sorted(self.things | self.stuff)
            names = category_names(categories, {int(k): str(v) for k, v in (id2label or {}).items()})
            for category, name in zip(categories, names):
                values = quality.get(category, (-1.0, -1.0, -1.0))
                metrics.update({f"{stat}_class_{name}": float(v) for stat, v in zip(PQ_PER_CLASS_STATS, values)})
        return metrics


def panoptic_quality(
    predictions: Sequence[Mapping[str, Any]],
    references: Sequence[Mapping[str, Any]],
    things: Collection[int],
    stuff: Collection[int] = (),
    per_class: bool = False,
    id2label: Mapping[int, str] | None = None,
) -> dict[str, float]:
    """:class:`PanopticQualityMetric` in one call."""
    metric = PanopticQualityMetric(things, stuff)
    metric.add_batch(predictions=predictions, references=references)
    return metric.compute(per_class=per_class, id2label=id2label)
