"""hf_detr.evaluation.segmentation_metrics: mask mAP equals pycocotools run by hand (and the box metric on filled
boxes); PQ / SQ / RQ equal hand-computed values and a loop-by-loop reference of COCO's panoptic definition."""

from __future__ import annotations

import contextlib
import io
import pickle

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from hf_detr.evaluation.metrics import coco_evaluate
from hf_detr.evaluation.segmentation_metrics import (
    PQ_STAT_NAMES,
    SEGM_STAT_NAMES,
    CocoSegmentationMetric,
    PanopticQualityMetric,
    coco_segmentation_evaluate,
    encode_masks,
    panoptic_quality,
)

# ------------------------------------------------------------------------------------------------- mask mAP


def blob(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A random non-rectangular mask: a rectangle with a random corner cut out and some pixels dropped."""
    mask = np.zeros((height, width), dtype=bool)
    h, w = rng.integers(3, int(0.8 * height)), rng.integers(3, int(0.8 * width))
    y, x = rng.integers(0, height - h), rng.integers(0, width - w)
    mask[y : y + h, x : x + w] = True
    mask[y : y + h // 2, x : x + w // 2] = False
    mask &= rng.uniform(size=mask.shape) > 0.1
    mask[y + h - 1, x + w - 1] = True  # never empty
    return mask


def mask_scene(seed: int = 1, num_images: int = 4):
    """Ground-truth masks (some crowd) and detections: shifted, thinned copies (some of the wrong class) and false
    positives (also of class 3, never in the ground truth). Image 2 has no ground truth, image 3 no detections."""
    rng = np.random.default_rng(seed)
    predictions, references = [], []
    for image in range(num_images):
        height, width = rng.integers(40, 90, size=2)
        num_gt = 0 if image == 2 else int(rng.integers(1, 5))
        gt = np.array([blob(rng, height, width) for _ in range(num_gt)], dtype=bool).reshape(num_gt, height, width)
        labels = rng.integers(0, 3, num_gt)
        iscrowd = (np.arange(num_gt) == 1).astype(int)  # the second object of each image is a crowd region
        references.append({"masks": gt, "labels": labels, "iscrowd": iscrowd})
        det_masks, det_labels = [], []
        if image != 3:
            for mask, label in zip(gt, labels):
                shifted = np.roll(mask, int(rng.integers(-1, 2)), axis=int(rng.integers(0, 2)))
                det_masks.append(shifted & (rng.uniform(size=mask.shape) > 0.15))  # shifted, some pixels lost
                det_labels.append(label if rng.uniform() < 0.8 else rng.integers(0, 3))
            for _ in range(2):
                det_masks.append(blob(rng, height, width))
                det_labels.append(rng.choice([0, 1, 3]))
        det_masks = np.array(det_masks, dtype=bool).reshape(-1, height, width)
        predictions.append(
            {
                "masks": det_masks,
                "labels": np.array(det_labels, dtype=np.int64),
                "scores": rng.uniform(0.05, 1, len(det_masks)),
            }
        )
    return predictions, references


def pycocotools_segm_by_hand(predictions, references) -> np.ndarray:
    """COCOeval(iouType="segm").stats the textbook way: RLEs from pycocotools.mask.encode, loadRes, evaluate."""
    gt = COCO()
    images = [
        {"id": i, "height": r["masks"].shape[1], "width": r["masks"].shape[2]}
        for i, r in enumerate(references, start=1)
    ]
    annotations = []
    for image_id, ref in enumerate(references, start=1):
        for mask, label, crowd in zip(ref["masks"], ref["labels"], ref["iscrowd"]):
            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "segmentation": rle,
                    "category_id": int(label),
                    "iscrowd": int(crowd),
                    "area": float(mask_utils.area(rle)),
                }
            )
    gt.dataset = {"images": images, "annotations": annotations, "categories": [{"id": c} for c in (0, 1, 2, 3)]}
    detections = [
        {
            "image_id": image_id,
            "category_id": int(label),
            "score": float(score),
            "segmentation": mask_utils.encode(np.asfortranarray(mask.astype(np.uint8))),
        }
        for image_id, pred in enumerate(predictions, start=1)
        for mask, label, score in zip(pred["masks"], pred["labels"], pred["scores"])
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        coco_eval = COCOeval(gt, gt.loadRes(detections), iouType="segm")
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval.stats


def test_mask_map_equals_pycocotools_run_by_hand():
    predictions, references = mask_scene()
    expected = pycocotools_segm_by_hand(predictions, references)
    assert 0.05 < expected[0] < 0.95 and (expected > -1).sum() >= 8  # a scene with something to get right and wrong

    metrics = coco_segmentation_evaluate(predictions, references)
    assert list(metrics) == list(SEGM_STAT_NAMES)
    np.testing.assert_allclose([metrics[name] for name in SEGM_STAT_NAMES], expected, rtol=0, atol=1e-12)

    # the metric, fed in two batches, predictions of the second as RLEs (what processes would gather)
    metric = CocoSegmentationMetric(keep_in_memory=True)
    metric.add_batch(predictions=predictions[:2], references=references[:2])
    for pred, ref in zip(predictions[2:], references[2:]):
        metric.add(prediction={**pred, "masks": encode_masks(torch.as_tensor(pred["masks"]))}, reference=ref)
    assert metric.compute() == metrics


def box_scene(seed: int = 4, num_images: int = 6):
    """Integer boxes (x0, y0, x1, y1) spanning small, medium and large, some crowd, and noisy integer detections."""
    rng = np.random.default_rng(seed)
    scenes = []
    for _ in range(num_images):
        height, width = rng.integers(60, 200, size=2)
        boxes = []
        for _ in range(int(rng.integers(1, 5))):
            w, h = rng.integers(3, int(0.9 * width)), rng.integers(3, int(0.9 * height))
            x0, y0 = rng.integers(0, width - w), rng.integers(0, height - h)
            boxes.append([x0, y0, x0 + w, y0 + h])
        labels = rng.integers(0, 2, len(boxes))
        iscrowd = (rng.uniform(size=len(boxes)) < 0.2).astype(int)
        dets = []
        for x0, y0, x1, y1 in boxes:
            dx0, dy0, dx1, dy1 = rng.integers(-4, 5, 4)
            dx0, dy0 = np.clip([x0 + dx0, y0 + dy0], 0, [x1 - 2, y1 - 2])
            dets.append([dx0, dy0, int(np.clip(x1 + dx1, dx0 + 1, width)), int(np.clip(y1 + dy1, dy0 + 1, height))])
        det_labels = np.where(rng.uniform(size=len(dets)) < 0.8, labels, 1 - labels)
        scenes.append(
            (
                (height, width),
                np.array(boxes),
                labels,
                iscrowd,
                np.array(dets),
                det_labels,
                rng.uniform(0.1, 1, len(dets)),
            )
        )
    return scenes


def filled(boxes: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    masks = np.zeros((len(boxes), *size), dtype=bool)
    for mask, (x0, y0, x1, y1) in zip(masks, boxes):
        mask[y0:y1, x0:x1] = True
    return masks


def test_masks_of_filled_boxes_give_the_box_metric_numbers():
    """A filled integer box has the box's area and the same intersections, so COCO's box IoU and mask IoU agree
    (crowd too: intersection over the detection's area) and all 12 numbers (and the per-class ones) must be equal."""
    box_predictions, box_references, mask_predictions, mask_references = [], [], [], []
    for size, boxes, labels, iscrowd, dets, det_labels, scores in box_scene():
        xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
        box_references.append({"boxes": xywh, "labels": labels, "iscrowd": iscrowd})
        box_predictions.append({"boxes": dets, "labels": det_labels, "scores": scores})
        mask_references.append({"masks": filled(boxes, size), "labels": labels, "iscrowd": iscrowd})
        mask_predictions.append({"masks": filled(dets, size), "labels": det_labels, "scores": scores})
    box = coco_evaluate(box_predictions, box_references, per_class=True, id2label={0: "a", 1: "b"})
    segm = coco_segmentation_evaluate(mask_predictions, mask_references, per_class=True, id2label={0: "a", 1: "b"})
    assert 0.1 < box["map"] < 0.9 and box["map_small"] > -1 and box["map_large"] > -1
    assert segm == pytest.approx({f"segm_{name}": value for name, value in box.items()}, abs=1e-12)


def test_mask_map_per_class_keys_live_beside_the_box_and_pq_keys():
    """One dict holds box, mask and PQ metrics: no key of one is a key of another, even with classes named like
    stats."""
    names = {0: "map", 1: "segm", 2: "pq", 3: "things"}
    predictions, references = mask_scene()
    segm = coco_segmentation_evaluate(predictions, references, per_class=True, id2label=names)
    box = coco_evaluate(
        [{"boxes": [[0, 0, 2, 2]], "labels": [0], "scores": [1.0]}],
        [{"boxes": [[0, 0, 2, 2]], "labels": [0]}],
        per_class=True,
        id2label=names,
    )
    pq = panoptic_quality(*one_segment_scene(), things={0, 1, 2}, stuff={3}, per_class=True, id2label=names)
    assert len(segm) == 12 + 3 * 4 and len(box) == 12 + 3 * 4 and len(pq) == 9 + 3 * 4
    assert not (set(segm) & set(box)) and not (set(segm) & set(pq)) and not (set(box) & set(pq))


@pytest.mark.parametrize(
    "prediction, reference, error, message",
    [
        ({"masks": np.ones((4, 4), bool), "scores": [1.0], "labels": [0]}, None, ValueError, "shape (N, H, W)"),
        ({"masks": np.full((1, 4, 4), 0.7), "scores": [1.0], "labels": [0]}, None, ValueError, "masks > 0.5"),
        ({"masks": np.ones((2, 4, 4), bool), "scores": [1.0], "labels": [0]}, None, ValueError, "same length"),
        ({"masks": np.ones((1, 4, 4), bool), "labels": [0]}, None, ValueError, "missing ['scores']"),
        ({"masks": [{"size": [4, 4]}], "scores": [1.0], "labels": [0]}, None, ValueError, "`masks[0]` must be an RLE"),
        ({"masks": np.ones((1, 4, 5), bool), "scores": [1.0], "labels": [0]}, None, ValueError, "different sizes"),
        (None, {"masks": np.ones((1, 4, 4), bool)}, ValueError, "`labels` (or `class_labels`)"),
        (None, {"masks": np.ones((1, 4, 4), bool), "labels": [0], "iscrowd": [0, 1]}, ValueError, "same length"),
        ([1, 2], None, TypeError, "predictions[0] must be a dict"),
    ],
)
def test_bad_mask_inputs_name_the_image_and_field(prediction, reference, error, message):
    good_prediction = {"masks": np.ones((1, 4, 4), bool), "scores": [1.0], "labels": [0]}
    good_reference = {"masks": np.ones((1, 4, 4), bool), "labels": [0]}
    with pytest.raises(error) as info:
        coco_segmentation_evaluate([prediction or good_prediction], [reference or good_reference])
    assert message in str(info.value)
    assert "predictions[0]" in str(info.value) or "references[0]" in str(info.value) or "image 0" in str(info.value)


# ------------------------------------------------------------------------------------------- panoptic quality

CAT, DOG, SKY, BIRD = 1, 2, 3, 4  # things: cat, dog, bird (never present); stuff: sky
NAMES = {CAT: "cat", DOG: "dog", SKY: "sky", BIRD: "bird"}


def grid(*rows: str) -> np.ndarray:
    """An 8x8 segment-id map, one digit per pixel (0: unlabelled / VOID)."""
    return np.array([[int(c) for c in row] for row in rows], dtype=np.int64)


def hand_scene():
    # Image A, ground truth: 1 cat (8 px), 2 dog (10 px), 3 cat (4 px), 4 sky (24 px), 5 a cat crowd region (8 px),
    # 0 VOID (rows 2-3 cols 5-7, row 4 cols 4-7: 10 px).
    gt_a = grid("11115555", "11115555", "22222000", "22222000", "33330000", "44444444", "44444444", "44444444")
    # Prediction:
    #   1 cat = gt 1 exactly: IoU 1 -> TP cat.
    #   2 dog: 6 px inside gt 2 + 1 px on VOID (row 2 col 5): union = 7 - 1 (VOID) + 10 - 6 = 10, IoU 6/10 = 0.6
    #     -> TP dog (without removing VOID: 6/11).
    #   6 cat: 6 px all inside the cat crowd region -> ignored (not FP).
    #   7 dog: 2 px inside the *cat* crowd region -> a crowd absorbs only its own category: FP dog.
    #   8 cat: 4 px all on VOID -> ignored.
    #   9 dog: row 4 cols 0-5: 4 px on gt 3 (a cat: no match), 2 px VOID = 2/6 <= 1/2 -> FP dog; gt 3 -> FN cat.
    #   4 sky: 18 px inside gt 4 (24 px); the other 6 px of gt 4 are unlabelled in the prediction and still count:
    #     IoU 18/24 = 0.75 -> TP sky.
    pred_a = grid("11117666", "11117666", "22200288", "22200088", "99999900", "44000000", "44444444", "44444444")
    # Image B: gt 1 cat (16 px), 2 sky (48 px). Prediction 3 cat = the cat's left half: IoU 8/16 = 0.5, not > 0.5
    # -> FN cat and FP cat; 4 sky covers the rest (56 px): IoU 48/56 = 6/7 -> TP sky.
    gt_b = grid(*["11112222"] * 4, *["22222222"] * 4)
    pred_b = grid(*["33444444"] * 4, *["44444444"] * 4)
    references = [
        {
            "segmentation": gt_a,
            "segments_info": [
                {"id": 1, "category_id": CAT},
                {"id": 2, "category_id": DOG},
                {"id": 3, "category_id": CAT},
                {"id": 4, "category_id": SKY},
                {"id": 5, "category_id": CAT, "iscrowd": 1},
            ],
        },
        {
            "segmentation": torch.as_tensor(gt_b),
            "segments_info": [{"id": 1, "category_id": CAT, "iscrowd": 0}, {"id": 2, "category_id": SKY}],
        },
    ]
    predictions = [
        {
            "segmentation": torch.as_tensor(pred_a, dtype=torch.int32),
            "segments_info": [
                {"id": 1, "label_id": CAT},
                {"id": 2, "label_id": DOG},
                {"id": 4, "label_id": SKY},
                {"id": 6, "label_id": CAT},
                {"id": 7, "label_id": DOG},
                {"id": 8, "label_id": CAT},
                {"id": 9, "label_id": DOG, "score": 0.3, "was_fused": False},
            ],
        },
        # sky fused from two queries, as transformers lists it: the same id twice
        {
            "segmentation": pred_b,
            "segments_info": [{"id": 3, "label_id": CAT}, {"id": 4, "label_id": SKY}, {"id": 4, "label_id": SKY}],
        },
    ]
    return predictions, references


# Totals: cat TP 1 (IoU 1), FP 1, FN 2: SQ 1, RQ 1 / (1 + 0.5 + 1) = 0.4, PQ 0.4.
#         dog TP 1 (IoU 0.6), FP 2, FN 0: SQ 0.6, RQ 1 / (1 + 1) = 0.5, PQ 0.3.
#         sky TP 2 (IoU 0.75 + 6/7): SQ = RQ x SQ = PQ = (0.75 + 6/7) / 2 = 0.803571..., RQ 1.
#         bird: no segment, undefined (-1) and left out of the averages.
SKY_SQ = (0.75 + 6 / 7) / 2
HAND_PQ = {
    "pq": (0.4 + 0.3 + SKY_SQ) / 3,
    "sq": (1 + 0.6 + SKY_SQ) / 3,
    "rq": (0.4 + 0.5 + 1) / 3,
    "pq_things": (0.4 + 0.3) / 2,
    "sq_things": (1 + 0.6) / 2,
    "rq_things": (0.4 + 0.5) / 2,
    "pq_stuff": SKY_SQ,
    "sq_stuff": SKY_SQ,
    "rq_stuff": 1.0,
    "pq_class_cat": 0.4,
    "sq_class_cat": 1.0,
    "rq_class_cat": 0.4,
    "pq_class_dog": 0.3,
    "sq_class_dog": 0.6,
    "rq_class_dog": 0.5,
    "pq_class_sky": SKY_SQ,
    "sq_class_sky": SKY_SQ,
    "rq_class_sky": 1.0,
    "pq_class_bird": -1.0,
    "sq_class_bird": -1.0,
    "rq_class_bird": -1.0,
}


def test_pq_sq_rq_equal_hand_computed_values():
    predictions, references = hand_scene()
    metrics = panoptic_quality(
        predictions, references, things={CAT, DOG, BIRD}, stuff={SKY}, per_class=True, id2label=NAMES
    )
    assert metrics == pytest.approx(HAND_PQ, abs=1e-12)
    assert list(metrics)[:9] == list(PQ_STAT_NAMES)
    counts = PanopticQualityMetric({CAT, DOG, BIRD}, {SKY}).count_image(predictions[0], references[0])
    assert {c: (n.tp, n.fp, n.fn, round(n.iou, 12)) for c, n in counts.items()} == {
        CAT: (1, 0, 1, 1.0),
        DOG: (1, 2, 0, 0.6),
        SKY: (1, 0, 0, 0.75),
    }


def test_counts_gathered_from_processes_give_the_same_numbers():
    """Two "processes" count their images; the pickled counts (what gather_object sends) added on a third metric give
    the numbers of one metric that saw every image."""
    predictions, references = hand_scene()
    things, stuff = {CAT, DOG, BIRD}, {SKY}
    process_0, process_1, gathered = (PanopticQualityMetric(things, stuff) for _ in range(3))
    sent = [process_0.count_image(predictions[0], references[0]), process_1.count_image(predictions[1], references[1])]
    gathered.add_counts(pickle.loads(pickle.dumps(sent)))
    single = PanopticQualityMetric(things, stuff)
    single.add(prediction=predictions[0], reference=references[0])
    single.add_batch(predictions=predictions[1:], references=references[1:])
    assert gathered.compute(per_class=True, id2label=NAMES) == single.compute(per_class=True, id2label=NAMES)
    assert single.compute(per_class=True, id2label=NAMES) == pytest.approx(HAND_PQ, abs=1e-12)


def one_segment_scene():
    gt = np.zeros((4, 4), dtype=np.int64)
    gt[:2] = 1
    return [{"segmentation": gt, "segments_info": [{"id": 1, "label_id": 0}]}], [
        {"segmentation": gt, "segments_info": [{"id": 1, "category_id": 0}]}
    ]


def test_no_prediction_misses_everything_and_no_segment_is_undefined():
    # transformers' map for an image without kept queries: a float map of -1 and no segments
    gt = grid(*["11112222"] * 8)
    reference = {"segmentation": gt, "segments_info": [{"id": 1, "category_id": CAT}, {"id": 2, "category_id": SKY}]}
    nothing = {"segmentation": torch.zeros(8, 8) - 1, "segments_info": []}
    metrics = panoptic_quality([nothing], [reference], things={CAT}, stuff={SKY})
    assert metrics == dict.fromkeys(PQ_STAT_NAMES, 0.0)  # two false negatives: defined, and zero
    empty = {"segmentation": np.zeros((8, 8), dtype=np.int64), "segments_info": []}
    assert panoptic_quality([empty], [empty], things={CAT}, stuff={SKY}) == dict.fromkeys(PQ_STAT_NAMES, -1.0)


def reference_pq(predictions, references, things, stuff):
    """COCO's panoptic quality written out segment pair by segment pair, one boolean mask per segment."""
    stats = {c: [0, 0, 0, 0.0] for c in things | stuff}  # tp, fp, fn, iou sum
    for pred, ref in zip(predictions, references):
        p_map, g_map = np.asarray(pred["segmentation"]), np.asarray(ref["segmentation"])
        p_segs = {s["id"]: s["label_id"] for s in pred["segments_info"]}
        g_segs = {s["id"]: (s["category_id"], s.get("iscrowd", 0)) for s in ref["segments_info"]}
        void = g_map <= 0
        matched_p, matched_g = set(), set()
        for p, p_cat in p_segs.items():
            for g, (g_cat, crowd) in g_segs.items():
                if p_cat != g_cat or crowd:
                    continue
                inter = np.sum((p_map == p) & (g_map == g))
                union = np.sum(((p_map == p) & ~void) | (g_map == g))
                if inter / union > 0.5:
                    stats[p_cat][0] += 1
                    stats[p_cat][3] += inter / union
                    matched_p.add(p)
                    matched_g.add(g)
        for g, (g_cat, crowd) in g_segs.items():
            if g not in matched_g and not crowd:
                stats[g_cat][2] += 1
        for p, p_cat in p_segs.items():
            crowd = np.isin(g_map, [g for g, (c, is_crowd) in g_segs.items() if is_crowd and c == p_cat])
            if p not in matched_p and np.sum((p_map == p) & (void | crowd)) / np.sum(p_map == p) <= 0.5:
                stats[p_cat][1] += 1
    quality = {}
    for c, (tp, fp, fn, iou) in stats.items():
        if tp + fp + fn:
            sq, rq = (iou / tp if tp else 0.0), tp / (tp + fp / 2 + fn / 2)
            quality[c] = (sq * rq, sq, rq)
    out = {}
    for group, cats in (("", things | stuff), ("_things", things), ("_stuff", stuff)):
        values = [quality[c] for c in cats if c in quality]
        out.update({s + group: float(np.mean([v[i] for v in values])) for i, s in enumerate(("pq", "sq", "rq"))})
    return out


def random_panoptic(rng: np.random.Generator, size: int = 16):
    """A random ground-truth map (rectangles painted over a stuff background, VOID holes, some crowd) and a
    prediction made from it by shifting, relabelling, dropping and adding segments."""
    gt = np.full((size, size), 1, dtype=np.int64)  # segment 1: the stuff background
    g_info = [{"id": 1, "category_id": 10}]
    for segment_id in range(2, int(rng.integers(3, 8))):
        h, w = rng.integers(2, 8, size=2)
        y, x = rng.integers(0, size - h), rng.integers(0, size - w)
        gt[y : y + h, x : x + w] = segment_id
        g_info.append({"id": segment_id, "category_id": int(rng.integers(0, 3)), "iscrowd": int(rng.uniform() < 0.2)})
    gt[rng.uniform(size=gt.shape) < 0.05] = 0
    present = set(np.unique(gt).tolist())
    g_info = [s for s in g_info if s["id"] in present]
    shift = rng.integers(-1, 2, size=2)
    pred = np.roll(gt, tuple(shift), axis=(0, 1)) * 10  # ids 10, 20, ...
    pred[rng.uniform(size=pred.shape) < 0.05] = 0
    p_info = []
    for s in g_info:
        if rng.uniform() < 0.15:  # dropped: its pixels become unlabelled
            pred[pred == s["id"] * 10] = 0
        else:
            label = s["category_id"] if rng.uniform() < 0.8 else int(rng.integers(0, 3))
            p_info.append({"id": s["id"] * 10, "label_id": label})
    h, w = rng.integers(2, 6, size=2)
    y, x = rng.integers(0, size - h), rng.integers(0, size - w)
    pred[y : y + h, x : x + w] = 7  # an extra segment
    p_info.append({"id": 7, "label_id": int(rng.integers(0, 3))})
    present = set(np.unique(pred).tolist())
    p_info = [s for s in p_info if s["id"] in present]
    return {"segmentation": pred, "segments_info": p_info}, {"segmentation": gt, "segments_info": g_info}


def test_pq_matches_a_loop_by_loop_reference_on_random_maps():
    rng = np.random.default_rng(0)
    predictions, references = zip(*(random_panoptic(rng) for _ in range(30)))
    things, stuff = {0, 1, 2}, {10}
    metrics = panoptic_quality(predictions, references, things=things, stuff=stuff)
    assert metrics == pytest.approx(reference_pq(predictions, references, things, stuff), abs=1e-12)
    assert 0.2 < metrics["pq"] < 0.9 and 0 < metrics["rq_things"] < 1


@pytest.mark.parametrize(
    "prediction, reference, message",
    [
        (
            {"segmentation": grid(*["12"] * 2), "segments_info": [{"id": 1, "label_id": CAT}]},
            None,
            "segment ids [2] are in `segmentation` but not in `segments_info`",
        ),
        (
            {
                "segmentation": grid(*["11"] * 2),
                "segments_info": [{"id": 1, "label_id": CAT}, {"id": 3, "label_id": DOG}],
            },
            None,
            "segments [3] are listed but have no pixel",
        ),
        (
            {"segmentation": grid(*["11"] * 2), "segments_info": [{"id": 1, "label_id": 9}]},
            None,
            "category 9 is neither in `things` nor in `stuff`",
        ),
        (
            {
                "segmentation": grid(*["11"] * 2),
                "segments_info": [{"id": 1, "label_id": CAT}, {"id": 1, "label_id": DOG}],
            },
            None,
            "segment 1 is listed twice",
        ),
        ({"segmentation": grid(*["111"] * 2), "segments_info": [{"id": 1, "label_id": CAT}]}, None, "differ in size"),
        ({"segmentation": grid(*["11"] * 2), "segments_info": [{"label_id": CAT}]}, None, "needs `id`"),
        ({"segmentation": np.full((2, 2), 0.5), "segments_info": []}, None, "integer [H, W] map"),
        (None, {"segmentation": grid(*["00"] * 2), "segments_info": [{"id": 0, "category_id": CAT}]}, "must be > 0"),
    ],
)
def test_bad_panoptic_inputs_name_the_image_and_field(prediction, reference, message):
    good = {"segmentation": grid(*["11"] * 2), "segments_info": [{"id": 1, "label_id": CAT, "category_id": CAT}]}
    with pytest.raises(ValueError) as info:
        panoptic_quality([prediction or good], [reference or good], things={CAT, DOG})
    assert message in str(info.value) and "image 0" in str(info.value)


def test_things_and_stuff_must_be_disjoint_integer_ids():
    with pytest.raises(ValueError, match=r"share categories \[1\]"):
        PanopticQualityMetric(things={1, 2}, stuff={1})
    with pytest.raises(ValueError, match="both empty"):
        PanopticQualityMetric(things=())
    with pytest.raises(TypeError, match="`things` must hold integer category ids"):
        PanopticQualityMetric(things={"cat"})
