"""Diagnostics of an evaluation: the confusion matrix and per-image errors counted by hand, per-class precision-recall
curves against pycocotools' array and by hand, and `hf-detr evaluate --out` writing them with the pictures."""

from __future__ import annotations

import json

import datasets
import numpy as np
import PIL.Image
import pytest
import torch

from helpers import tiny_config_kwargs
from hf_detr import HfDetrConfig, HfDetrForObjectDetection, HfDetrImageProcessor
from hf_detr.apps.cli import main
from hf_detr.data import coco_detection_features
from hf_detr.evaluation import class_pr_curves, coco_evaluate, diagnose, match_image
from hf_detr.evaluation.metrics import CocoEvaluation

NAMES = {0: "cat", 1: "dog", 2: "bird"}

# Ground truth: COCO (x, y, w, h) pixels; detections: (x0, y0, x1, y1) pixels.
SCENE_REFERENCES = [
    # image 0: A cat, B dog, C a crowd region of birds
    {"boxes": [[0, 0, 10, 10], [20, 0, 10, 10], [40, 0, 20, 20]], "labels": [0, 1, 2], "iscrowd": [0, 0, 1]},
    # image 1: D dog, E bird
    {"boxes": [[0, 0, 20, 20], [50, 50, 10, 10]], "labels": [1, 2], "iscrowd": [0, 0]},
    # image 2: F cat
    {"boxes": [[0, 0, 10, 10]], "labels": [0], "iscrowd": [0]},
]
SCENE_PREDICTIONS = [
    {
        "boxes": [
            [0, 0, 10, 10],  # p0 cat on A: right
            [0, 0, 10, 9],  # p1 cat, A again (IoU 0.9 with it): a duplicate
            [20, 0, 30, 10],  # p2 cat on the dog B: wrong class
            [42, 2, 52, 12],  # p3 bird inside the crowd region (IoU 0.25 with it, but all of p3 on it)
            [70, 70, 80, 80],
        ],  # p4 dog on nothing, scoring exactly 0.3
        "labels": [0, 0, 0, 2, 1],
        "scores": [0.9, 0.8, 0.7, 0.6, 0.3],
    },
    {
        "boxes": [
            [0, 0, 20, 10],  # p0 dog, the top half of D: IoU exactly 0.5
            [100, 100, 110, 110],
        ],  # p1 bird on nothing
        "labels": [1, 2],
        "scores": [0.55, 0.95],
    },
    {"boxes": [[0, 0, 10, 10]], "labels": [0], "scores": [0.45]},  # p0 cat on F, scoring below 0.5
]


def _scene() -> CocoEvaluation:
    return coco_evaluate(SCENE_PREDICTIONS, SCENE_REFERENCES, id2label=NAMES, return_evaluation=True)


def test_confusion_matrix_counted_by_hand():
    """Rows ground truth, columns prediction, order cat, dog, bird, background."""
    diagnostics = diagnose(_scene(), iou_threshold=0.5, score_threshold=0.5)
    assert diagnostics.labels == ["cat", "dog", "bird", "background"]
    # image 0: p0 (cat, cat); p1 the duplicate (bg, cat); p2 (dog, cat); p3 on the crowd ignored; p4 below 0.5.
    # image 1: p1 first (score 0.95) matches nothing: (bg, bird); p0 at IoU 0.5 (dog, dog); E missed (bird, bg).
    # image 2: p0 below 0.5, so F is missed (cat, bg). The crowd region is never counted.
    expected = [[1, 0, 0, 1], [1, 1, 0, 0], [0, 0, 0, 1], [1, 0, 1, 0]]
    np.testing.assert_array_equal(diagnostics.matrix, expected)
    counts = [
        (m.correct, m.wrong_class, len(m.missed), len(m.false_positives), len(m.ignored), m.errors)
        for m in diagnostics.images
    ]
    assert counts == [(1, 1, 0, 1, 1, 2), (1, 0, 1, 1, 0, 2), (0, 0, 1, 0, 0, 1)]
    assert diagnostics.images[0].matched == ((0, 0), (1, 2))  # (ground truth, detection), best score first
    assert diagnostics.images[0].false_positives == (1,) and diagnostics.images[0].ignored == (3,)
    # p1 of image 0 repeats p0 (cat, IoU 0.9): a duplicate; p1 of image 1 is alone
    assert [m.duplicates for m in diagnostics.images] == [(1,), (), ()] and diagnostics.duplicates == 1

    # IoU 0.6: p0 of image 1 (IoU 0.5) no longer matches D, so (bg, dog) and (dog, bg); score 0.3: p4 of image 0
    # (exactly 0.3) is a false positive (bg, dog) and p0 of image 2 finds F (cat, cat). The crowd still absorbs p3
    # (all of it lies on the region).
    strict = diagnose(_scene(), iou_threshold=0.6, score_threshold=0.3)
    expected = [[2, 0, 0, 0], [1, 0, 0, 1], [0, 0, 0, 1], [1, 2, 1, 0]]
    np.testing.assert_array_equal(strict.matrix, expected)
    # every non-crowd ground-truth box is in exactly one cell of its row
    assert strict.matrix[:3].sum() == diagnostics.matrix[:3].sum() == 5

    written = strict.confusion_json()
    assert written["matrix"] == expected and written["labels"] == ["cat", "dog", "bird", "background"]
    assert (written["iou_threshold"], written["score_threshold"]) == (0.6, 0.3)
    assert written["category_ids"] == [0, 1, 2, None]
    # at score 0.3 p4 (dog, on nothing) is a false positive too, but no duplicate
    assert written["duplicates"] == 1 and strict.images[0].false_positives == (1, 4)


def test_the_crowd_rule_and_class_agnostic_matching():
    reference = {"boxes": [[0, 0, 10, 10], [40, 0, 20, 20]], "labels": [0, 2], "iscrowd": [0, 1]}
    # a higher-scoring dog takes the cat's box before the cat detection, which then is a false positive
    prediction = {
        "boxes": [[0, 0, 10, 10], [0, 0, 10, 10], [30, 0, 50, 20]],
        "labels": [1, 0, 2],
        "scores": [0.9, 0.8, 0.7],
    }
    match = match_image(prediction, reference, iou_threshold=0.5, score_threshold=0.5)
    assert match.matched == ((0, 0),) and match.wrong_class == 1 and match.false_positives == (1,)
    # half of the last detection lies on the crowd region: ignored at 0.5, a false positive at 0.6
    assert match.ignored == (2,)
    assert match_image(prediction, reference, iou_threshold=0.6, score_threshold=0.5).false_positives == (1, 2)
    assert match.missed == ()  # a crowd region is never missed


def test_a_duplicate_is_a_false_positive_repeating_a_better_detection_of_its_class():
    reference = {"boxes": [[0, 0, 10, 10]], "labels": [0], "iscrowd": [0]}
    boxes = [[0, 0, 10, 10], [0, 0, 10, 8], [0, 0, 10, 6], [0, 0, 10, 8], [30, 30, 40, 40]]
    # IoU with the first: 0.8, 0.6 (below 0.7, even though it overlaps the second at 0.75), 0.8 but a dog
    prediction = {"boxes": boxes, "labels": [0, 0, 0, 1, 0], "scores": [0.9, 0.8, 0.7, 0.6, 0.5]}
    match = match_image(prediction, reference, iou_threshold=0.5, score_threshold=0.5)
    assert match.false_positives == (1, 2, 3, 4)
    # the third repeats the second (IoU 0.75): a duplicate of a duplicate is still one
    assert match.duplicates == (1, 2)
    # ranked by score, not by list position: the best detection is never the duplicate
    reversed_scores = {**prediction, "scores": [0.5, 0.9, 0.4, 0.6, 0.8]}
    assert match_image(reversed_scores, reference, iou_threshold=0.5, score_threshold=0.3).duplicates == (0, 2)


def test_worst_images_are_ranked_by_errors_then_fewer_correct():
    box, far = [0, 0, 10, 10], [50, 50, 60, 60]
    cases = [  # (ground-truth boxes and labels, detection boxes and labels): the expected counts in the comment
        (([box], [0]), ([box, far], [0, 0])),  # 0: 1 false positive, 1 correct
        (([box, [50, 50, 10, 10]], [0, 1]), ([], [])),  # 1: 2 missed
        (([], []), ([], [])),  # 2: nothing
        (([box, [50, 50, 10, 10]], [0, 1]), ([box], [0])),  # 3: 1 missed, 1 correct
        (([box], [0]), ([box], [2])),  # 4: 1 wrong class, 0 correct
        (([box, [20, 0, 10, 10]], [0, 0]), ([box, [20, 0, 30, 10], far], [0, 0, 1])),  # 5: 1 false positive, 2 correct
    ]
    references = [{"boxes": gt, "labels": labels} for (gt, labels), _ in cases]
    predictions = [{"boxes": boxes, "labels": labels, "scores": [0.9] * len(labels)} for _, (boxes, labels) in cases]
    diagnostics = diagnose(coco_evaluate(predictions, references, return_evaluation=True))
    assert [m.errors for m in diagnostics.images] == [1, 2, 0, 1, 1, 1]
    assert [m.index for m in diagnostics.worst(len(cases))] == [1, 4, 0, 3, 5, 2]
    assert [m.index for m in diagnostics.worst(3)] == [1, 4, 0]


def test_per_class_precision_recall_curves_by_hand_and_against_pycocotools():
    """One class with 2 objects and 3 detections: found (0.9), a false positive (0.8), found (0.7). Precision is 1
    up to recall 1/2, then 2/3 up to recall 1 (COCO interpolates with the best precision at any higher recall)."""
    reference = {"boxes": [[0, 0, 10, 10], [20, 0, 10, 10]], "labels": [0, 0]}
    prediction = {
        "boxes": [[0, 0, 10, 10], [60, 60, 70, 70], [20, 0, 30, 10]],
        "labels": [0, 0, 0],
        "scores": [0.9, 0.8, 0.7],
    }
    evaluation = coco_evaluate([prediction], [reference], id2label={0: "cat", 1: "dog"}, return_evaluation=True)
    cat, dog = class_pr_curves(evaluation)
    recall = np.linspace(0, 1, 101)
    np.testing.assert_allclose(cat.recall, recall)
    np.testing.assert_allclose(cat.precision, np.where(recall <= 0.5 + 1e-9, 1.0, 2 / 3))
    assert cat.precision[[50, 100]] == pytest.approx([1.0, 2 / 3])  # at recall 0.5 and 1.0
    assert cat.ap == pytest.approx((51 + 50 * 2 / 3) / 101) == pytest.approx(evaluation.per_class["cat"]["map_50"])
    assert (cat.name, cat.objects) == ("cat", 2)
    np.testing.assert_array_equal(cat.precision, evaluation.precision[0, :, 0, 0, -1])  # IoU 0.5, all, 100
    assert (dog.name, dog.objects, dog.precision, dog.ap) == ("dog", 0, None, -1.0)  # no ground truth


def test_bad_input_is_named():
    with pytest.raises(ValueError, match=r"iou_threshold must be in \(0, 1\], got 0.0"):
        diagnose(_scene(), iou_threshold=0.0)
    with pytest.raises(ValueError, match=r"score_threshold must be in \[0, 1\], got 1.5"):
        diagnose(_scene(), score_threshold=1.5)
    bare = _scene()
    bare.predictions, bare.references = [], []
    with pytest.raises(ValueError, match="carries no per-image detections"):
        diagnose(bare)
    with pytest.raises(ValueError, match="count must be at least 1"):
        diagnose(_scene()).worst(0)
    with pytest.raises(ValueError, match=r"image 4: detection boxes\[0\]"):
        match_image({"boxes": [[0, 0, 1]], "labels": [0], "scores": [1.0]}, SCENE_REFERENCES[0], index=4)


# --- hf-detr evaluate --out ------------------------------------------------------------------------------------

LABELS = ["a", "b", "c"]
SIZES = [(64, 96), (96, 64), (80, 80), (64, 64)]


def _split() -> datasets.Dataset:
    """Images with a central box (the crafted model's box) of class i % 3 and a small box elsewhere; the last one
    also holds a crowd region."""
    rng = np.random.default_rng(1)
    rows = []
    for i, (height, width) in enumerate(SIZES):
        boxes = [[width / 4, height / 4, width / 2, height / 2], [2.0, 2.0, width / 6, height / 6]]
        categories, crowd = [i % 3, (i + 1) % 3], [0, 0]
        if i == len(SIZES) - 1:
            boxes, categories, crowd = boxes + [[width / 2, 0.0, width / 2, height / 4]], categories + [0], crowd + [1]
        pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        rows.append(
            {
                "image": PIL.Image.fromarray(pixels),
                "image_id": 10 + i,
                "width": width,
                "height": height,
                "objects": {
                    "id": list(range(len(boxes))),
                    "area": [w * h for *_, w, h in boxes],
                    "bbox": boxes,
                    "category": categories,
                    "iscrowd": crowd,
                },
            }
        )
    columns = {key: [row[key] for row in rows] for key in rows[0]}
    return datasets.Dataset.from_dict(columns, features=coco_detection_features(LABELS))


@pytest.fixture(scope="module")
def model_and_data(tmp_path_factory) -> tuple[str, str]:
    """A tiny model whose queries all predict the central box (cx, cy, w, h) = (0.5, 0.5, 0.5, 0.5) with classes
    and scores that vary by query, saved with its processor, and the data set of `_split`."""
    torch.manual_seed(0)
    config = HfDetrConfig(
        **tiny_config_kwargs(
            d_model=32, decoder_layers=1, encoder_ffn_dim=64, decoder_ffn_dim=64, id2label=dict(enumerate(LABELS))
        )
    )
    model = HfDetrForObjectDetection(config)
    with torch.no_grad():
        model.bbox_embed.layers[-1].weight.zero_()
        model.bbox_embed.layers[-1].bias.zero_()  # sigmoid(0) = 0.5
        model.class_embed.weight.mul_(20)  # spread the class scores
    folder = tmp_path_factory.mktemp("model")
    model.save_pretrained(folder)
    HfDetrImageProcessor(size={"shortest_edge": 64, "longest_edge": 96}).save_pretrained(folder)
    data = tmp_path_factory.mktemp("data")
    datasets.DatasetDict({"validation": _split()}).save_to_disk(str(data))
    return str(folder), str(data)


def _direct_evaluation(model_dir: str) -> CocoEvaluation:
    """The model's detections in each image's pixel frame, scored by coco_evaluate without `evaluate`'s loop."""
    model = HfDetrForObjectDetection.from_pretrained(model_dir).eval()
    processor = HfDetrImageProcessor.from_pretrained(model_dir)
    split = _split()
    with torch.no_grad():
        outputs = model(**processor(images=list(split["image"]), return_tensors="pt"))
    predictions = processor.post_process_object_detection(outputs, threshold=0.0, target_sizes=SIZES)
    references = [
        {"boxes": o["bbox"], "labels": o["category"], "iscrowd": o["iscrowd"], "area": o["area"]}
        for o in list(split["objects"])
    ]
    return coco_evaluate(predictions, references, id2label=dict(enumerate(LABELS)), return_evaluation=True)


def test_evaluate_out_writes_the_diagnostics(model_and_data, tmp_path, capsys):
    model_dir, data_dir = model_and_data
    out = tmp_path / "report"
    status = main(
        [
            "evaluate",
            model_dir,
            "--dataset",
            data_dir,
            "--per_device_eval_batch_size",
            "3",
            "--out",
            str(out),
            "--iou_threshold",
            "0.4",
            "--score-threshold",
            "0.3",
            "--worst",
            "3",
        ]
    )
    printed = capsys.readouterr()
    assert status == 0, printed.err

    # the same matrix as the model's own detections give, matched outside `evaluate`
    expected = diagnose(_direct_evaluation(model_dir), iou_threshold=0.4, score_threshold=0.3)
    written = json.loads((out / "confusion_matrix.json").read_text())
    assert written["labels"] == [*LABELS, "background"]
    assert (written["iou_threshold"], written["score_threshold"]) == (0.4, 0.3)
    assert written["matrix"] == expected.matrix.tolist()
    matrix = np.array(written["matrix"])
    # each class row holds its non-crowd objects (a: images 0, 2, 3; b: 0, 1, 3; c: 1, 2)
    assert matrix[:3].sum(axis=1).tolist() == [3, 3, 2]
    assert matrix[3].sum() > 0 and matrix[:3, :3].trace() > 0  # the crafted model both finds and invents boxes
    worst = ", ".join(f"{m.index} ({m.errors})" for m in expected.worst(3))
    assert f"score >= 0.3: {worst}" in printed.out

    for name, size in (
        ("confusion_matrix.png", None),
        ("pr_curves_per_class.png", (520, 540)),
        ("worst_images.png", None),
        ("pr_curve.png", (700, 560)),
    ):
        picture = PIL.Image.open(out / name).convert("RGB")
        if size is not None:  # the per-class grid: 2 x 2 panels of 2.6 x 2.35 inches (+ 0.7 of title) for 3 classes
            assert picture.size == size, name
        assert (np.asarray(picture).reshape(-1, 3) != 255).any(axis=1).mean() > 0.03, name  # not a blank page
    # 3 images, ground truth and detections side by side, two images per row: 4 tiles wide, 2 rows
    gallery = PIL.Image.open(out / "worst_images.png")
    assert gallery.width > 4 * 384 and gallery.height > 2 * 384 and gallery.width > gallery.height


def test_evaluate_names_bad_diagnostics_options(model_and_data, tmp_path, capsys):
    model_dir, data_dir = model_and_data
    for option, value, message in (
        ("--iou_threshold", "0", "--iou_threshold must be in (0, 1]"),
        ("--score-threshold", "-0.1", "--score_threshold must be in [0, 1]"),
        ("--worst", "0", "--worst must be at least 1"),
    ):
        status = main(["evaluate", model_dir, "--dataset", data_dir, "--out", str(tmp_path), option, value])
        assert status == 1 and message in capsys.readouterr().err
