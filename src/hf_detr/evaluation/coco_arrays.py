"""COCOeval's inputs as columns, and COCOeval's matching and accumulation over them in numpy.

:class:`Annotations` holds one side of an evaluation (ground truth or detections) as arrays, one row per object, so a
split's detections cost a few arrays rather than a dict per detection; :meth:`Annotations.records` gives
pycocotools the dicts it reads, a category at a time.

:func:`evaluate_arrays` is the ``backend="numpy"`` of :func:`hf_detr.evaluation.metrics.coco_evaluate`: pycocotools'
``COCOeval.evaluate`` + ``accumulate`` (pycocotools 2.0) done on arrays, with pycocotools' own IoU function
(``pycocotools.mask.iou``, per image and category, on boxes or RLEs). It gives COCOeval's ``precision`` and
``recall`` arrays bit for bit (``tests/test_coco_arrays.py``), in a fraction
of the time: COCOeval loops in Python over every image x category x area range (1.6 M times for COCO val2017), the
arrays here over the rank of a detection within its image and category. The rules it follows, from COCOeval:

- per image and category, detections are sorted by score (stable) and the first ``maxDets[-1]`` kept;
- at each IoU threshold, each detection in that order takes, among the ground truth not yet taken (crowd regions
  can be taken again), the one of highest IoU >= the threshold (the last of equal IoUs), looking first at the
  ground truth that counts in the area range (not crowd, area inside), then, only if none qualifies, at the
  ignored ones; a detection on an ignored object, or unmatched with its area outside the range, is ignored;
- per category, area range and max detections, the detections of all images sorted by score (stable, image order
  breaking ties) give the precision-recall curve, interpolated at the 101 recall points.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.cocoeval import Params

__all__ = ["Annotations", "evaluate_arrays", "undefined_arrays"]

# The most values one block of image-category pairs puts in one array of the matching (per pair: its IoUs, detections x
# ground truth; its outcomes, area ranges x thresholds x detections; one rank's candidates, area ranges x thresholds x
# ground truth), to bound memory.
_MATCH_BLOCK = 1 << 22


@dataclass
class Annotations:
    """One side of a COCOeval run, one row per object in image order: ``image`` 0-based (COCOeval's id minus 1),
    ``score`` for detections only, and ``boxes`` ``[N, 4]`` COCO (x, y, w, h) float64 for ``iouType="bbox"`` or
    ``masks`` (RLE dicts) for ``"segm"``."""

    image: np.ndarray
    category: np.ndarray
    iscrowd: np.ndarray
    area: np.ndarray
    score: np.ndarray | None = None
    boxes: np.ndarray | None = None
    masks: list[dict[str, Any]] | None = None

    def __len__(self) -> int:
        return len(self.image)

    def regions(self, rows: np.ndarray) -> np.ndarray | list[dict[str, Any]]:
        """As ``pycocotools.mask.iou`` takes them."""
        return self.boxes[rows] if self.boxes is not None else [self.masks[row] for row in rows]

    def records(self, rows: np.ndarray) -> list[dict[str, Any]]:
        """pycocotools' dicts, ids ``rows + 1`` (COCOeval's arrays of matched ids take 0 for "unmatched") and image
        ids ``image + 1``."""
        columns = {
            "id": (rows + 1).tolist(),
            "image_id": (self.image[rows] + 1).tolist(),
            "category_id": self.category[rows].tolist(),
            "iscrowd": self.iscrowd[rows].tolist(),
            "area": self.area[rows].tolist(),
        }
        if self.score is not None:
            columns["score"] = self.score[rows].tolist()
        if self.boxes is not None:
            columns["bbox"] = self.boxes[rows].tolist()
        else:
            columns["segmentation"] = [self.masks[row] for row in rows]
        names = list(columns)
        return [dict(zip(names, values)) for values in zip(*columns.values())]


def undefined_arrays(params: Params, num_categories: int) -> tuple[np.ndarray, np.ndarray]:
    """COCOeval's ``precision`` ``[T, R, K, A, M]`` and ``recall`` ``[T, K, A, M]``, all -1 (undefined)."""
    shape = (len(params.iouThrs), len(params.recThrs), num_categories, len(params.areaRng), len(params.maxDets))
    return -np.ones(shape), -np.ones(shape[:1] + shape[2:])


def _rank_in_group(keys: np.ndarray) -> np.ndarray:
    """For sorted ``keys``, each row's position among the rows of the same key."""
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]]) if len(keys) else np.zeros(0, dtype=np.int64)
    sizes = np.diff(np.r_[starts, len(keys)])
    return np.arange(len(keys)) - np.repeat(starts, sizes)


def _outside(area: np.ndarray, area_ranges: np.ndarray) -> np.ndarray:
    """``[A, N]``: whether each area lies outside each ``[low, high]`` range (COCOeval's test, bounds inclusive)."""
    return (area[None, :] < area_ranges[:, :1]) | (area[None, :] > area_ranges[:, 1:])


def _match(
    ious: np.ndarray, counts: np.ndarray, ignored: np.ndarray, crowd: np.ndarray, thresholds: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """COCOeval's greedy matching of ``n`` image-category pairs with ``G`` ground-truth objects each.

    ``ious`` ``[n, D, G]`` (detections in score order, rows past a pair's ``counts`` unused), ``ignored`` ``[A, n, G]``
    (per area range), ``crowd`` ``[n, G]``. Returns ``matched`` and ``on_ignored`` ``[A, n, T, D]``: whether each
    detection is matched at each threshold, and whether to an ignored object."""
    areas, pairs, depth, width = len(ignored), *ious.shape
    matched = np.zeros((areas, pairs, len(thresholds), depth), dtype=bool)
    on_ignored = np.zeros_like(matched)
    taken = np.zeros((areas, pairs, len(thresholds), width), dtype=bool)
    order = np.argsort(-counts, kind="stable")  # pairs with a detection at rank r are a prefix of `order`
    ious, counts, ignored, crowd = ious[order], counts[order], ignored[:, order], crowd[order]
    reach = (counts[None, :] > np.arange(depth)[:, None]).sum(1)  # pairs with a detection at each rank
    for rank in range(depth):
        n = reach[rank]
        row = ious[:n, rank][None, :, None, :]  # [1, n, 1, G]
        free = ~taken[:, :n] | crowd[None, :n, None, :]
        candidates = free & (row >= thresholds[None, None, :, None])
        choices = []
        for side in (~ignored[:, :n, None, :], ignored[:, :n, None, :]):
            allowed = candidates & side
            values = np.where(allowed, row, -1.0)[..., ::-1]
            choices.append((allowed.any(-1), width - 1 - values.argmax(-1)))  # the last of the highest IoUs
        (counted, first), (any_ignored, second) = choices
        found = counted | any_ignored
        chosen = np.where(counted, first, second)
        matched[:, :n, :, rank] = found
        on_ignored[:, :n, :, rank] = found & ~counted
        a, p, t = np.nonzero(found)
        taken[a, p, t, chosen[a, p, t]] = True
    restore = np.empty_like(order)
    restore[order] = np.arange(len(order))
    return matched[:, restore], on_ignored[:, restore]


def evaluate_arrays(
    ground_truth: Annotations, detections: Annotations, categories: list[int], iou_type: str
) -> tuple[np.ndarray, np.ndarray]:
    """COCOeval's ``eval["precision"]`` and ``eval["recall"]`` with pycocotools' default parameters; ``categories``
    (the ``K`` axis) sorted, holding every category of the annotations."""
    params = Params(iouType=iou_type)
    thresholds, recall_points = params.iouThrs, params.recThrs
    area_ranges, max_dets = np.asarray(params.areaRng, dtype=np.float64), sorted(params.maxDets)
    precision, recall = undefined_arrays(params, len(categories))
    num_t, _, num_k, num_a, _ = precision.shape
    sorted_categories = np.asarray(categories, dtype=np.int64)

    # detections by image, category, score (stable: ties keep their input order, as COCOeval's mergesort does)
    dt_category = np.searchsorted(sorted_categories, detections.category)
    order = np.lexsort((-detections.score, dt_category, detections.image))
    dt_pair = detections.image[order] * num_k + dt_category[order]
    rank = _rank_in_group(dt_pair)
    kept = rank < max_dets[-1]
    dt_rows, dt_pair, rank = order[kept], dt_pair[kept], rank[kept]
    # ground truth by image and category, in input order within them
    gt_category = np.searchsorted(sorted_categories, ground_truth.category)
    gt_rows = np.lexsort((gt_category, ground_truth.image))
    gt_pair = ground_truth.image[gt_rows] * num_k + gt_category[gt_rows]
    gt_ignored = ground_truth.iscrowd[gt_rows].astype(bool)[None, :] | _outside(ground_truth.area[gt_rows], area_ranges)

    # each detection's outcome at each area range and threshold; only pairs with ground truth can match
    matched = np.zeros((num_a, num_t, len(dt_rows)), dtype=bool)
    on_ignored = np.zeros_like(matched)
    pairs, dt_start, dt_count = np.unique(dt_pair, return_index=True, return_counts=True)
    gt_keys, gt_start, gt_count = np.unique(gt_pair, return_index=True, return_counts=True)
    both = np.isin(pairs, gt_keys)
    pairs, dt_start, dt_count = pairs[both], dt_start[both], dt_count[both]
    where = np.searchsorted(gt_keys, pairs)
    gt_start, gt_count = gt_start[where], gt_count[where]
    for width in np.unique(gt_count):
        group = np.flatnonzero(gt_count == width)
        depth_of = dt_count[group]
        # blocks of pairs sorted by detection count, so padding to a block's deepest pair stays small
        group = group[np.argsort(depth_of, kind="stable")]
        most = int(depth_of.max())
        block = max(1, _MATCH_BLOCK // max(most * int(width), num_a * num_t * max(most, int(width))))
        for start in range(0, len(group), block):
            chunk = group[start : start + block]
            depth = int(dt_count[chunk].max())
            ious = np.full((len(chunk), depth, width), -1.0)
            gt_index = gt_start[chunk, None] + np.arange(width)  # [n, G] positions in the sorted ground truth
            for i, p in enumerate(chunk):
                found = slice(dt_start[p], dt_start[p] + dt_count[p])
                truth = gt_rows[gt_index[i]]
                ious[i, : dt_count[p]] = mask_utils.iou(
                    detections.regions(dt_rows[found]), ground_truth.regions(truth), ground_truth.iscrowd[truth]
                )
            crowd = ground_truth.iscrowd[gt_rows[gt_index]].astype(bool)
            hits, ignored_hits = _match(ious, dt_count[chunk], gt_ignored[:, gt_index], crowd, thresholds)
            # [A, n, T, D] back to each detection's column
            columns = dt_start[chunk, None] + np.arange(depth)
            valid = np.arange(depth)[None, :] < dt_count[chunk, None]
            matched[:, :, columns[valid]] = hits.transpose(0, 2, 1, 3)[:, :, valid]
            on_ignored[:, :, columns[valid]] = ignored_hits.transpose(0, 2, 1, 3)[:, :, valid]
    ignored = on_ignored | (~matched & _outside(detections.area[dt_rows], area_ranges)[:, None, :])
    # COCOeval's npig: per area range and category, the ground truth that recall counts
    counted_gt = [np.bincount(gt_category[gt_rows][~ignore], minlength=num_k) for ignore in gt_ignored]

    by_category = np.argsort(dt_pair % num_k, kind="stable")  # within a category: image order, then rank
    bounds = np.searchsorted(dt_pair[by_category] % num_k, np.arange(num_k + 1))
    for k in range(num_k):
        rows = by_category[bounds[k] : bounds[k + 1]]
        for m, max_det in enumerate(max_dets):
            top = rows[rank[rows] < max_det]
            ranked = top[np.argsort(-detections.score[dt_rows[top]], kind="mergesort")]
            counted = ~ignored[:, :, ranked]
            tp = np.cumsum(matched[:, :, ranked] & counted, axis=-1).astype(float)
            fp = np.cumsum(~matched[:, :, ranked] & counted, axis=-1).astype(float)
            for a in range(num_a):
                objects = int(counted_gt[a][k])
                if objects == 0:
                    continue  # COCOeval leaves -1
                if not len(ranked):
                    recall[:, k, a, m], precision[:, :, k, a, m] = 0.0, 0.0
                    continue
                rc = tp[a] / objects
                pr = tp[a] / (fp[a] + tp[a] + np.spacing(1))
                recall[:, k, a, m] = rc[:, -1]
                pr = np.maximum.accumulate(pr[:, ::-1], axis=-1)[:, ::-1]  # precision made monotone
                for t in range(num_t):
                    # precision at each recall point; 0 past the highest recall reached
                    at = np.searchsorted(rc[t], recall_points, side="left")
                    precision[t, :, k, a, m] = np.where(at < len(ranked), pr[t][np.minimum(at, len(ranked) - 1)], 0.0)
    return precision, recall
