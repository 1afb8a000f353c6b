"""hf_detr.evaluation.metrics: COCO mAP equals pycocotools run directly; compute_metrics maps predictions to the
original frame."""

from __future__ import annotations

import contextlib
import io

import evaluate
import numpy as np
import PIL.Image
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from transformers import DetrImageProcessor, EvalPrediction, Trainer, TrainingArguments

from hf_detr.data.transforms import to_coco_annotations
from hf_detr.evaluation.duplicates import duplicate_measure
from hf_detr.evaluation.metrics import (
    COCO_STAT_NAMES,
    PER_CLASS_STATS,
    CocoDetectionMetric,
    CocoEvaluation,
    coco_evaluate,
    make_compute_metrics,
    per_class_key,
)
from hf_detr.modeling import HfDetrImageProcessor, HfDetrObjectDetectionOutput

NUM_CLASSES = 3


def random_scene(seed: int = 0, num_images: int = 8):
    """Random ground truth (COCO x, y, w, h; some crowd) and detections (x0, y0, x1, y1): near matches of the
    ground truth, some with the wrong class, plus false positives (also of a class never in the ground truth).
    Image 3 has no ground truth, image 5 no detections."""
    rng = np.random.default_rng(seed)
    predictions, references = [], []
    for image in range(num_images):
        height, width = rng.integers(100, 500, size=2)
        num_gt = 0 if image == 3 else int(rng.integers(1, 7))
        wh = rng.uniform(5, 0.6 * min(height, width), size=(num_gt, 2))  # spans small, medium and large
        xy = rng.uniform(0, 1, size=(num_gt, 2)) * ([width, height] - wh)
        boxes = np.concatenate([xy, wh], axis=1)
        labels = rng.integers(0, NUM_CLASSES, num_gt)
        iscrowd = (rng.uniform(size=num_gt) < 0.15).astype(int)
        area = wh.prod(1) * rng.uniform(0.5, 1, num_gt)  # a mask covers part of its box
        references.append(
            {
                "boxes": boxes.tolist(),
                "labels": labels.tolist(),
                "iscrowd": iscrowd.tolist(),
                "area": area.tolist(),
                "image_id": 1000 + image,
            }
        )
        det_boxes, det_labels = [], []
        if image != 5:
            for box, label in zip(boxes, labels):
                if rng.uniform() < 0.8:
                    x, y, w, h = box + rng.normal(0, 0.12, 4) * np.r_[box[2:], box[2:]]
                    det_boxes.append([x, y, x + abs(w), y + abs(h)])
                    det_labels.append(label if rng.uniform() < 0.85 else rng.integers(0, NUM_CLASSES))
            for _ in range(rng.integers(0, 4)):
                x0, y0 = rng.uniform(0, [width - 10, height - 10])
                det_boxes.append([x0, y0, x0 + rng.uniform(5, width - x0), y0 + rng.uniform(5, height - y0)])
                det_labels.append(rng.choice([0, 1, 2, 5]))
        predictions.append(
            {
                "boxes": np.reshape(det_boxes, (-1, 4)).tolist(),
                "labels": [int(c) for c in det_labels],
                "scores": rng.uniform(0.05, 1, len(det_boxes)).tolist(),
            }
        )
    return predictions, references


def pycocotools_directly(predictions, references, category: int | None = None) -> np.ndarray:
    """COCOeval.stats the textbook way: a ground-truth COCO, loadRes on the detections, evaluate, accumulate,
    summarize."""
    gt = COCO()
    gt.dataset = {
        "images": [{"id": r["image_id"]} for r in references],
        "annotations": [],
        "categories": [{"id": c} for c in (0, 1, 2, 5)],
    }
    annotations = gt.dataset["annotations"]
    for ref in references:
        for box, label, crowd, area in zip(ref["boxes"], ref["labels"], ref["iscrowd"], ref["area"]):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": ref["image_id"],
                    "bbox": box,
                    "category_id": label,
                    "iscrowd": crowd,
                    "area": area,
                }
            )
    detections = [
        {"image_id": ref["image_id"], "category_id": label, "score": score, "bbox": [x0, y0, x1 - x0, y1 - y0]}
        for pred, ref in zip(predictions, references)
        for (x0, y0, x1, y1), label, score in zip(pred["boxes"], pred["labels"], pred["scores"])
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        coco_eval = COCOeval(gt, gt.loadRes(detections), iouType="bbox")
        if category is not None:
            coco_eval.params.catIds = [category]
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval.stats


def test_metric_equals_pycocotools_run_directly(capsys):
    predictions, references = random_scene()
    metric = CocoDetectionMetric()
    assert isinstance(metric, evaluate.Metric)
    metric.add_batch(predictions=predictions[:5], references=references[:5])
    metric.add_batch(predictions=predictions[5:], references=references[5:])
    id2label = {0: "cat", 1: "dog", 2: "bird", 5: "fish"}
    results = metric.compute(per_class=True, id2label=id2label)

    expected = pycocotools_directly(predictions, references)
    np.testing.assert_allclose([results[name] for name in COCO_STAT_NAMES], expected, rtol=0, atol=1e-12)
    assert 0.1 < results["map"] < 0.9 and 0.1 < results["map_50"] < 1.0  # a scene that tests something
    for category, name in id2label.items():
        stats = pycocotools_directly(predictions, references, category=category)
        assert results[f"map_class_{name}"] == pytest.approx(stats[0], abs=1e-12), name
        assert results[f"map_50_class_{name}"] == pytest.approx(stats[1], abs=1e-12), name
        assert results[f"mar_100_class_{name}"] == pytest.approx(stats[8], abs=1e-12), name
    assert results["map_class_fish"] == -1.0  # no ground truth of that class
    assert len({results[f"map_class_{name}"] for name in ("cat", "dog", "bird")}) == 3
    assert capsys.readouterr().out == "", "pycocotools output must not reach stdout"


def test_single_examples_and_compute_with_inputs_match_batches():
    predictions, references = random_scene(seed=1, num_images=4)
    metric = CocoDetectionMetric()
    for prediction, reference in zip(predictions, references):
        metric.add(prediction=prediction, reference=reference)
    one_by_one = metric.compute()
    direct = CocoDetectionMetric().compute(predictions=predictions, references=references)
    assert one_by_one == direct == coco_evaluate(predictions, references)
    assert set(direct) == set(COCO_STAT_NAMES)  # per-class keys only when asked


def perfect_predictions(references):
    """Each non-crowd ground-truth box, as (x0, y0, x1, y1) tensors with score 1."""
    predictions = []
    for ref in references:
        keep = np.asarray(ref["iscrowd"], dtype=bool) == 0
        boxes = torch.tensor(ref["boxes"], dtype=torch.float64).reshape(-1, 4)[torch.from_numpy(keep)]
        predictions.append(
            {
                "boxes": torch.cat([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], 1),
                "labels": torch.tensor(ref["labels"])[torch.from_numpy(keep)],
                "scores": torch.ones(int(keep.sum())),
            }
        )
    return predictions


def test_perfect_predictions_give_one_and_missing_ones_zero():
    _, references = random_scene(seed=2)
    perfect = coco_evaluate(perfect_predictions(references), references, per_class=True)
    assert perfect["map"] == perfect["map_50"] == perfect["map_75"] == perfect["mar_100"] == 1.0
    assert perfect["map_small"] == perfect["map_medium"] == 1.0
    assert perfect["map_large"] == -1.0  # this scene's only large object is a crowd region: nothing to find
    assert all(perfect[per_class_key(stat, c)] == 1.0 for c in range(NUM_CLASSES) for stat in PER_CLASS_STATS)

    none = coco_evaluate([{"boxes": np.zeros((0, 4)), "labels": [], "scores": []}] * len(references), references)
    assert none["map"] == none["map_50"] == none["mar_100"] == none["map_small"] == 0.0

    shifted = perfect_predictions(references)
    for pred in shifted:  # moved by far more than their size: no overlap with anything
        pred["boxes"] = pred["boxes"] + 10_000
    wrong_class = perfect_predictions(references)
    for pred in wrong_class:
        pred["labels"] = (pred["labels"] + 1) % NUM_CLASSES
    for misses in (shifted, wrong_class):
        results = coco_evaluate(misses, references)
        assert results["map"] == results["map_50"] == results["mar_100"] == 0.0


def test_without_ground_truth_every_metric_is_minus_one():
    predictions, references = random_scene(seed=3, num_images=3)
    empty_refs = [{"boxes": [], "labels": []} for _ in references]
    results = coco_evaluate(predictions, empty_refs, per_class=True)
    assert results["map"] == results["map_50"] == results["mar_100"] == results["map_class_1"] == -1.0
    assert set(results.values()) == {-1.0}
    assert set(coco_evaluate([], []).values()) == {-1.0}
    assert set(coco_evaluate([], []).keys()) == set(COCO_STAT_NAMES)


def test_classes_named_like_coco_stats_do_not_clash_with_them():
    """Per-class keys carry a `_class_` infix: classes named "50", "small", "1", ... leave `map_50`, `map_small`,
    `mar_1`, ... alone, and every class keeps its own keys."""
    predictions, references = random_scene(seed=4)
    names = {0: "50", 1: "small", 2: "1", 5: "100", 6: "75", 7: "large", 8: "class_small"}
    plain = coco_evaluate(predictions, references)
    results = coco_evaluate(predictions, references, per_class=True, id2label=names)
    assert {name: results[name] for name in COCO_STAT_NAMES} == plain  # no COCO stat overwritten
    per_class = {key for key in results if key not in COCO_STAT_NAMES}
    assert per_class == {per_class_key(stat, name) for name in names.values() for stat in PER_CLASS_STATS}
    assert len(results) == len(COCO_STAT_NAMES) + len(PER_CLASS_STATS) * len(names)  # nothing merged
    evaluation = coco_evaluate(predictions, references, per_class=True, id2label=names, return_evaluation=True)
    for name, row in evaluation.per_class.items():
        assert {stat: row[stat] for stat in PER_CLASS_STATS} == {
            stat: results[per_class_key(stat, name)] for stat in PER_CLASS_STATS
        }
    assert results[per_class_key("map", "small")] == pytest.approx(pycocotools_directly(predictions, references, 1)[0])


def test_per_class_table_by_hand():
    """One image; class "exact" found exactly (score 1), class "half" has 2 objects of which one is found (0.9)
    after a false positive (0.95), class "missed" is never detected, "absent" has no ground truth.
    For "half" the precision is 0 then 1/2 at recall 0 then 1/2; COCO interpolates precision as the best at any
    higher recall, so 51 of its 101 recall points (0, 0.01, ..., 0.50) have precision 1/2 and the rest 0:
    AP = 25.5 / 101 at every IoU threshold (the match is exact), AR@100 = 1/2."""
    reference = {
        "boxes": [[10, 10, 20, 20], [40, 10, 20, 20], [70, 10, 20, 20], [10, 60, 20, 20], [50, 50, 40, 40]],
        "labels": [0, 1, 1, 2, 0],
        "iscrowd": [0, 0, 0, 0, 1],
    }  # the last: a crowd region of "exact"
    prediction = {
        "boxes": [[10, 10, 30, 30], [40, 10, 60, 30], [0, 100, 5, 105]],
        "labels": [0, 1, 1],
        "scores": [1.0, 0.9, 0.95],
    }
    names = {0: "exact", 1: "half", 2: "missed", 3: "absent"}
    evaluation = coco_evaluate([prediction], [reference], id2label=names, return_evaluation=True)
    half = 25.5 / 101
    expected = {
        "exact": {"map": 1.0, "map_50": 1.0, "mar_100": 1.0, "objects": 1},  # the crowd region is not an object
        "half": {"map": half, "map_50": half, "mar_100": 0.5, "objects": 2},
        "missed": {"map": 0.0, "map_50": 0.0, "mar_100": 0.0, "objects": 1},
        "absent": {"map": -1.0, "map_50": -1.0, "mar_100": -1.0, "objects": 0},
    }
    assert list(evaluation.per_class) == list(expected)
    for name, row in expected.items():
        assert evaluation.per_class[name] == pytest.approx(row, abs=1e-12), name
    # COCO's map_50 is the mean over the classes with ground truth
    assert evaluation.metrics["map_50"] == pytest.approx((1.0 + half + 0.0) / 3)
    assert set(evaluation.metrics) == set(COCO_STAT_NAMES)  # flat per-class keys only with per_class=True


def test_precision_arrays_for_pr_curves():
    predictions, references = random_scene(seed=5)
    evaluation = coco_evaluate(
        predictions, references, id2label={0: "a", 1: "b", 2: "c", 5: "d"}, return_evaluation=True
    )
    assert evaluation.class_names == ["a", "b", "c", "d"] and evaluation.category_ids == [0, 1, 2, 5]
    # [IoU thresholds, recall points, classes, areas all/small/medium/large, max detections 1/10/100]
    assert evaluation.precision.shape == (10, 101, 4, 4, 3)
    np.testing.assert_allclose(evaluation.iou_thresholds, np.linspace(0.5, 0.95, 10))
    np.testing.assert_allclose(evaluation.recall_thresholds, np.linspace(0, 1, 101))
    for iou, name in ((0.5, "map_50"), (0.75, "map_75")):
        curves = evaluation.precision_curves(iou)
        assert curves.shape == (4, 101)
        assert (curves[3] == -1).all()  # "d" has no ground truth
        # the mean over recall points and classes of the curves is COCO's AP at that IoU: what the plot's legend says
        assert curves[:3].mean() == pytest.approx(evaluation.metrics[name], abs=1e-12)
    per_class_ap50 = [evaluation.per_class[name]["map_50"] for name in "abc"]
    assert evaluation.precision_curves(0.5)[:3].mean(axis=1) == pytest.approx(per_class_ap50, abs=1e-12)
    empty = coco_evaluate([], [], return_evaluation=True)
    assert empty.precision is None and set(empty.metrics.values()) == {-1.0}


@pytest.mark.parametrize(
    ("prediction", "reference", "error", "message"),
    [
        (
            {"boxes": [1, 2, 3, 4], "labels": [0], "scores": [0.5]},
            None,
            ValueError,
            r"predictions\[1\]: `boxes\[0\]` = 1 is not 4 numbers",
        ),
        (
            {"boxes": [[1, 2, 3, 4]], "labels": [0, 1], "scores": [0.5]},
            None,
            ValueError,
            r"predictions\[1\]: per-box fields must have the same length",
        ),
        (
            {"boxes": [[5, 2, 3, 4]], "labels": [0], "scores": [0.5]},
            None,
            ValueError,
            r"predictions\[1\]: `boxes\[0\]` = .* negative width or height; boxes are corners \[x0, y0, x1, y1\]",
        ),
        ({"boxes": [[1, 2, 3, 4]], "labels": [0]}, None, ValueError, r"predictions\[1\] is missing \['scores'\]"),
        ({"boxes": [[1, 2, 3, float("nan")]], "labels": [0], "scores": [0.5]}, None, ValueError, "NaN"),
        ([[1, 2, 3, 4]], None, TypeError, r"predictions\[1\] must be a dict"),
        (None, {"boxes": [[1, 2, 3, 4]]}, ValueError, r"references\[1\] needs `boxes`.*`labels`"),
        (
            None,
            {"boxes": [[1, 2, -3, 4]], "labels": [0]},
            ValueError,
            r"references\[1\]: `boxes\[0\]` = .* negative width or height",
        ),
        (None, {"boxes": [[1, 2, 3, 4]], "labels": ["cat"]}, ValueError, r"references\[1\]: `labels` must be numeric"),
        (None, {"boxes": [[1, 2, 3, 4]], "labels": [0.5]}, ValueError, r"references\[1\]: `labels` must hold integers"),
    ],
)
def test_bad_inputs_name_the_image_and_field(prediction, reference, error, message):
    good_prediction = {"boxes": [[1, 2, 3, 4]], "labels": [0], "scores": [0.5]}
    good_reference = {"boxes": [[1, 2, 3, 4]], "labels": [0]}
    with pytest.raises(error, match=message):
        CocoDetectionMetric().add_batch(
            predictions=[good_prediction, prediction or good_prediction],
            references=[good_reference, reference or good_reference],
        )


# --- compute_metrics for Trainer ---------------------------------------------------------------------------------

# Per image: original (h, w), resized (h, w), pixel boxes (x, y, w, h), classes, crowd flags. Non-square images so a
# swapped height/width shows up; areas chosen so the size bins only come out right in the original frame.
IMAGES = [
    ((300, 400), (75, 100), [[30, 40, 150, 120], [300, 200, 20, 30]], [0, 1], [0, 0]),  # large, small
    ((200, 120), (50, 30), [[10, 100, 40, 50], [0, 0, 120, 60]], [2, 0], [0, 1]),  # medium, crowd
    ((160, 90), (40, 22), [], [], []),  # no objects
    ((90, 160), (45, 80), [[100, 5, 25, 30], [0, 60, 10, 10]], [1, 1], [0, 0]),  # two of a class
]


def processor_labels(images=IMAGES):
    """The image processor's label dicts: boxes normalised (cx, cy, w, h), area in the resized frame."""
    labels = []
    for image_id, ((orig_h, orig_w), (size_h, size_w), boxes, classes, crowd) in enumerate(images):
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        cxcywh = np.concatenate([boxes[:, :2] + boxes[:, 2:] / 2, boxes[:, 2:]], 1)
        labels.append(
            {
                "boxes": (cxcywh / [orig_w, orig_h, orig_w, orig_h]).astype(np.float32),
                "class_labels": np.asarray(classes, dtype=np.int64),
                "iscrowd": np.asarray(crowd, dtype=np.int64),
                "area": (boxes[:, 2] * boxes[:, 3] * (size_h * size_w) / (orig_h * orig_w)).astype(np.float32),
                "orig_size": np.asarray([orig_h, orig_w]),
                "size": np.asarray([size_h, size_w]),
                "image_id": np.asarray([image_id]),
            }
        )
    return labels


def perfect_outputs(labels, num_queries: int = 5, generator=None):
    """logits (B, Q, C + 1) and pred_boxes (B, Q, 4) that find every non-crowd object; other queries say no-object."""
    logits = torch.zeros(len(labels), num_queries, NUM_CLASSES + 1)
    logits[..., -1] = 10.0
    pred_boxes = torch.rand(len(labels), num_queries, 4, generator=generator) * 0.5 + 0.25
    for b, label in enumerate(labels):
        real = np.flatnonzero(np.asarray(label["iscrowd"]) == 0)
        logits[b, : len(real), -1] = 0.0
        logits[b, torch.arange(len(real)), torch.as_tensor(np.asarray(label["class_labels"])[real])] = 10.0
        pred_boxes[b, : len(real)] = torch.as_tensor(np.asarray(label["boxes"])[real])
    return logits, pred_boxes


def trainer_predictions(logits, pred_boxes):
    """One batch as Trainer passes it: the non-loss output fields in order (loss_dict, logits, pred_boxes, aux)."""
    return ({"loss_ce": np.float32(0.1)}, logits.numpy(), pred_boxes.numpy(), [{"logits": logits.numpy()}])


@pytest.fixture(params=["hf_detr", "transformers"])
def image_processor(request):
    # transformers' DETR processor post-processes the same way: a reference for the conversion to pixels.
    return HfDetrImageProcessor() if request.param == "hf_detr" else DetrImageProcessor()


def test_compute_metrics_gives_one_for_perfect_logits(image_processor):
    labels = processor_labels()
    batches = [labels[:2], labels[2:]]
    predictions = [trainer_predictions(*perfect_outputs(batch)) for batch in batches]
    compute_metrics = make_compute_metrics(image_processor, id2label={0: "a", 1: "b", 2: "c"}, per_class=True)
    results = compute_metrics(EvalPrediction(predictions=predictions, label_ids=batches))
    for name in (
        "map",
        "map_50",
        "map_75",
        "mar_100",
        "map_small",
        "map_medium",
        "map_large",
        "map_class_a",
        "map_50_class_c",
    ):
        assert results[name] == 1.0, name
    evaluate_all = make_compute_metrics(
        image_processor, id2label={0: "a", 1: "b", 2: "c"}, per_class=True, return_evaluation=True
    )
    evaluation = evaluate_all(EvalPrediction(predictions=predictions, label_ids=batches))
    assert isinstance(evaluation, CocoEvaluation) and evaluation.metrics == results
    assert {name: row["map"] for name, row in evaluation.per_class.items()} == {"a": 1.0, "b": 1.0, "c": 1.0}


def test_compute_metrics_on_labels_made_by_the_image_processor():
    examples = [
        {
            "image": PIL.Image.new("RGB", (orig_w, orig_h)),
            "image_id": i,
            "objects": {"bbox": boxes, "category": classes, "iscrowd": crowd, "area": [w * h for _, _, w, h in boxes]},
        }
        for i, ((orig_h, orig_w), _, boxes, classes, crowd) in enumerate(IMAGES)
    ]
    # keep_crowd: COCO's evaluation needs crowd regions to ignore the detections that land on them
    processor = HfDetrImageProcessor(size={"shortest_edge": 64, "longest_edge": 100}, keep_crowd=True)
    encoded = processor(
        images=[e["image"] for e in examples],
        annotations=[to_coco_annotations(e) for e in examples],
        return_tensors="pt",
    )
    labels = [{key: value.numpy() for key, value in label.items()} for label in encoded["labels"]]
    assert [label["size"].tolist() for label in labels] != [label["orig_size"].tolist() for label in labels]
    results = make_compute_metrics(processor)(
        EvalPrediction(predictions=[trainer_predictions(*perfect_outputs(labels))], label_ids=[labels])
    )
    assert results["map"] == results["map_small"] == results["map_medium"] == results["map_large"] == 1.0


def test_compute_metrics_matches_coco_evaluate_on_hand_converted_boxes(image_processor):
    generator = torch.Generator().manual_seed(4)
    labels = processor_labels()
    logits, pred_boxes = perfect_outputs(labels, generator=generator)
    logits = logits + 4 * torch.randn(logits.shape, generator=generator)
    pred_boxes = (pred_boxes + 0.03 * torch.randn(pred_boxes.shape, generator=generator)).clamp(0.01, 0.99)
    threshold = 0.3
    results = make_compute_metrics(image_processor, threshold=threshold)(
        EvalPrediction(predictions=[trainer_predictions(logits, pred_boxes)], label_ids=[labels])
    )

    predictions, references = [], []
    for b, ((orig_h, orig_w), _, boxes, classes, crowd) in enumerate(IMAGES):
        scores, classes_pred = logits[b].softmax(-1)[:, :-1].max(-1)
        cx, cy, w, h = pred_boxes[b].unbind(-1)
        x0, y0, x1, y1 = (cx - w / 2) * orig_w, (cy - h / 2) * orig_h, (cx + w / 2) * orig_w, (cy + h / 2) * orig_h
        xyxy = torch.stack([x0, y0, x1, y1], -1)
        keep = scores > threshold
        predictions.append({"boxes": xyxy[keep], "labels": classes_pred[keep], "scores": scores[keep]})
        references.append(
            {"boxes": boxes, "labels": classes, "iscrowd": crowd, "area": [bw * bh for _, _, bw, bh in boxes]}
        )
    # COCO's numbers, and the duplicate measure of the same detections
    expected = {**coco_evaluate(predictions, references), **duplicate_measure(predictions, references)}
    assert results == {name: pytest.approx(value, abs=1e-4) for name, value in expected.items()}
    assert 0.05 < results["map"] < 0.95 and sum(len(p["scores"]) for p in predictions) > len(IMAGES)


def test_compute_metrics_errors_point_to_the_setting(image_processor):
    compute_metrics = make_compute_metrics(image_processor)
    labels = processor_labels()
    logits, pred_boxes = perfect_outputs(labels)
    with pytest.raises(ValueError, match="eval_do_concat_batches=False"):  # concatenated predictions
        compute_metrics(EvalPrediction(predictions=(logits.numpy(), pred_boxes.numpy()), label_ids=labels[0]))
    with pytest.raises(ValueError, match=r"predictions\[0\] has no \(logits, pred_boxes\)"):
        compute_metrics(EvalPrediction(predictions=[({"loss_ce": 0.1}, logits.numpy())], label_ids=[labels]))
    broken = [dict(label) for label in labels]
    del broken[1]["orig_size"]
    with pytest.raises(ValueError, match=r"label_ids\[0\]\[1\] is missing \['orig_size'\]"):
        compute_metrics(EvalPrediction(predictions=[trainer_predictions(logits, pred_boxes)], label_ids=[broken]))
    # what gather_for_metrics leaves of a last batch with remainder 1: every label tensor cut to its first row
    truncated = [{key: value[:1] for key, value in labels[0].items()}]
    with pytest.raises(ValueError, match=r"label_ids\[0\]\[0\]: `orig_size` must be \(h, w\), got \[300.0\].*last"):
        last_batch = [trainer_predictions(logits[:1], pred_boxes[:1])]
        compute_metrics(EvalPrediction(predictions=last_batch, label_ids=[truncated]))


class LabelEchoDetector(torch.nn.Module):
    """Returns the output fields of HfDetrForObjectDetection with perfect detections read off the labels."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))

    def forward(self, pixel_values: torch.Tensor, labels: list[dict] | None = None) -> HfDetrObjectDetectionOutput:
        logits, pred_boxes = perfect_outputs([{k: v.numpy() for k, v in label.items()} for label in labels])
        return HfDetrObjectDetectionOutput(
            loss=self.weight + 1.0,
            loss_dict={"loss_ce": self.weight + 0.5},
            logits=logits,
            pred_boxes=pred_boxes,
            auxiliary_outputs=[{"logits": logits, "pred_boxes": pred_boxes}],
            last_hidden_state=torch.zeros(len(labels), logits.shape[1], 8),
        )


def test_compute_metrics_inside_trainer_evaluate(image_processor, tmp_path):
    # 4 images in batches of 2: a last batch with a remainder would have its label tensors truncated by
    # accelerate's gather_for_metrics (see make_compute_metrics).
    examples = [
        {"pixel_values": torch.zeros(3, 8, 8), "labels": {k: torch.as_tensor(v) for k, v in label.items()}}
        for label in processor_labels()
    ]
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_eval_batch_size=2,
        eval_do_concat_batches=False,
        remove_unused_columns=False,
        report_to="none",
        use_cpu=True,
    )
    trainer = Trainer(
        model=LabelEchoDetector(),
        args=args,
        eval_dataset=examples,
        data_collator=lambda batch: {
            "pixel_values": torch.stack([e["pixel_values"] for e in batch]),
            "labels": [e["labels"] for e in batch],
        },
        compute_metrics=make_compute_metrics(image_processor),
    )
    results = trainer.evaluate()
    assert results["eval_map"] == results["eval_map_large"] == results["eval_mar_100"] == 1.0
