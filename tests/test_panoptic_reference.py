"""Panoptic quality with stuff classes against a hand count and against hotcoco's `pq_compute` (panopticapi's
protocol, signature and return shape) on the same COCO panoptic files: PNGs of segment ids and their json."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from hf_detr import HfDetrSegmentationOutput
from hf_detr.data import id2label
from hf_detr.evaluation.segmentation_metrics import panoptic_quality

THINGS = {1: "circle", 2: "square"}
STUFF = {3: "sky", 4: "grass"}
CATEGORIES = [
    {"id": i, "name": name, "supercategory": "shape" if i in THINGS else "scene", "isthing": int(i in THINGS)}
    for i, name in {**THINGS, **STUFF}.items()
]


def _segments(ids: np.ndarray, categories: dict[int, int], crowd: set[int] = frozenset()) -> list[dict]:
    """The segments_info of the segments with pixels (a segment drawn over entirely is not listed)."""
    listed = []
    for segment_id, category in sorted(categories.items()):
        ys, xs = np.nonzero(ids == segment_id)
        if len(ys):
            box = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
            listed.append(
                {
                    "id": segment_id,
                    "category_id": category,
                    "iscrowd": int(segment_id in crowd),
                    "bbox": box,
                    "area": len(ys),
                }
            )
    return listed


def test_pq_with_stuff_equals_a_hand_count():
    # 10 x 10: sky (3) over rows 0-4, grass (4) over rows 5-9, a square (2) on the grass at rows 6-8, cols 1-3
    truth = np.full((10, 10), 2)
    truth[:5] = 1
    truth[6:9, 1:4] = 3
    # the prediction: sky one row too low (rows 0-5), the square exact, a false circle (1) in the sky's corner
    predicted = np.full((10, 10), 2)
    predicted[:6] = 1
    predicted[6:9, 1:4] = 3
    predicted[:2, 8:] = 4
    metrics = panoptic_quality(
        [{"segmentation": predicted, "segments_info": _segments(predicted, {1: 3, 2: 4, 3: 2, 4: 1})}],
        [{"segmentation": truth, "segments_info": _segments(truth, {1: 3, 2: 4, 3: 2})}],
        things=THINGS,
        stuff=STUFF,
    )
    sky = 46 / 60  # 50 true and 56 predicted pixels (60 less the circle's 4), 46 shared
    grass = 31 / 41  # 41 true pixels (50 less the square's 9), the 31 predicted all inside them
    # circle: 1 false positive, PQ = SQ = RQ = 0; square: IoU 1, all 1; sky and grass: matched, RQ 1
    expected = {
        "pq": (0 + 1 + sky + grass) / 4,
        "sq": (0 + 1 + sky + grass) / 4,
        "rq": (0 + 1 + 1 + 1) / 4,
        "pq_things": 0.5,
        "sq_things": 0.5,
        "rq_things": 0.5,
        "pq_stuff": (sky + grass) / 2,
        "sq_stuff": (sky + grass) / 2,
        "rq_stuff": 1.0,
    }
    assert metrics == pytest.approx(expected, abs=1e-12)


def _scene(rng: np.random.Generator, height: int, width: int, truth: np.ndarray | None = None):
    """A segment-id map: sky over a horizon, grass under it, an unlabelled row between, shapes on top. Given
    `truth`'s scene parameters (a prediction), the horizon and shapes move a few pixels, shapes drop out, change
    class or appear, and some pixels stay unlabelled."""
    horizon = int(rng.integers(height // 3, 2 * height // 3)) if truth is None else truth["horizon"]
    shapes = []
    if truth is None:
        for _ in range(int(rng.integers(1, 5))):
            h, w = (int(v) for v in rng.integers(6, 18, size=2))
            shapes.append(
                [int(rng.integers(0, height - h)), int(rng.integers(0, width - w)), h, w, int(rng.integers(1, 3))]
            )
        crowd = {3} if rng.random() < 0.4 else set()  # at most one crowd segment, as COCO has one per category
    else:
        horizon += int(rng.integers(-3, 4))
        for y, x, h, w, category in truth["shapes"]:
            if rng.random() < 0.15:
                continue  # missed
            dy, dx, dh, dw = (int(v) for v in rng.integers(-3, 4, size=4))
            category = 3 - category if rng.random() < 0.1 else category
            shapes.append([max(0, y + dy), max(0, x + dx), max(2, h + dh), max(2, w + dw), category])
        if rng.random() < 0.5:  # a false detection
            shapes.append(
                [int(rng.integers(0, height - 8)), int(rng.integers(0, width - 8)), 8, 8, int(rng.integers(1, 3))]
            )
        crowd = set()
    ids = np.zeros((height, width), np.int64)
    ids[:horizon] = 1
    ids[horizon + 1 :] = 2  # the horizon row stays unlabelled (VOID)
    categories = {1: 3, 2: 4}
    for k, (y, x, h, w, category) in enumerate(shapes):
        ids[y : y + h, x : x + w] = 3 + k
        categories[3 + k] = category
    if truth is not None:
        ids[rng.random((height, width)) < 0.02] = 0  # scattered unlabelled predicted pixels
    params = {"horizon": horizon, "shapes": shapes}
    return ids, _segments(ids, categories, crowd), params


def _write_png(ids: np.ndarray, path) -> None:
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 256**2], axis=-1).astype(np.uint8)
    Image.fromarray(rgb).save(path)


def test_pq_with_stuff_equals_pq_compute_on_the_same_files(tmp_path):
    from hotcoco.panoptic import pq_compute

    rng = np.random.default_rng(0)
    images, truth_entries, predicted_entries, references, predictions = [], [], [], [], []
    for folder in ("truth", "predicted"):
        (tmp_path / folder).mkdir()
    for image_id in range(1, 13):
        height, width = (int(v) for v in rng.integers(40, 72, size=2))
        truth, truth_segments, params = _scene(rng, height, width)
        predicted, predicted_segments, _ = _scene(rng, height, width, truth=params)
        name = f"{image_id:04d}.png"
        _write_png(truth, tmp_path / "truth" / name)
        _write_png(predicted, tmp_path / "predicted" / name)
        images.append({"id": image_id, "file_name": f"{image_id:04d}.jpg", "height": height, "width": width})
        truth_entries.append({"image_id": image_id, "file_name": name, "segments_info": truth_segments})
        predicted_entries.append({"image_id": image_id, "file_name": name, "segments_info": predicted_segments})
        references.append({"segmentation": truth, "segments_info": truth_segments})
        predictions.append({"segmentation": predicted, "segments_info": predicted_segments})
    for file, entries in (("truth.json", truth_entries), ("predicted.json", predicted_entries)):
        coco = {"images": images, "annotations": entries, "categories": CATEGORIES}
        (tmp_path / file).write_text(json.dumps(coco))

    reference = pq_compute(
        tmp_path / "truth.json", tmp_path / "predicted.json", tmp_path / "truth", tmp_path / "predicted"
    )
    ours = panoptic_quality(predictions, references, things=THINGS, stuff=STUFF)
    assert sum(entry["iscrowd"] for entries in truth_entries for entry in entries["segments_info"]) > 0
    assert reference["Stuff"]["n"] == 2 and reference["Things"]["n"] == 2
    assert 0.3 < reference["All"]["pq"] < 0.95  # neither trivial nor perfect
    for group, suffix in (("All", ""), ("Things", "_things"), ("Stuff", "_stuff")):
        for stat in ("pq", "sq", "rq"):
            assert ours[stat + suffix] == pytest.approx(reference[group][stat], abs=1e-9), (group, stat)


class _HalvedStuffOracle(torch.nn.Module):
    """Answers each image with its ground truth (`tests/test_segmentation_evaluation.py`'s oracle), except that a
    stuff segment comes as two queries, its left and right halves: fused into one segment per class (panoptic) they
    are the sky again; kept apart (instance) each covers half of it, IoU 0.5, no match."""

    def __init__(self, split, task: str) -> None:
        from test_segmentation_evaluation import Oracle

        super().__init__()
        self.oracle = Oracle(split, id2label(split))
        self.oracle.config.task = task
        self.config, self.anchor, self.stuff = self.oracle.config, self.oracle.anchor, 1  # label 1: sky

    def forward(self, pixel_values, pixel_mask):
        outputs = self.oracle(pixel_values, pixel_mask)
        logits, masks = outputs.logits.clone(), outputs.pred_masks.clone()
        for i in range(len(logits)):
            for j in (logits[i, :, self.stuff] > 0).nonzero()[:, 0].tolist():
                free = int((logits[i, :, -1] > 0).nonzero()[0])  # a "no object" query takes the right half
                cols = masks[i, j].gt(0).any(0).nonzero()[:, 0]
                middle = int(cols[len(cols) // 2])
                logits[i, free], masks[i, free] = logits[i, j], torch.full_like(masks[i, j], -10.0)
                masks[i, free, :, middle:] = masks[i, j, :, middle:]
                masks[i, j, :, middle:] = -10.0
        return HfDetrSegmentationOutput(logits=logits, pred_boxes=outputs.pred_boxes, pred_masks=masks)


@pytest.mark.parametrize("task", ["panoptic", "instance"])
def test_a_panoptic_model_fuses_the_data_sets_stuff_classes_and_an_instance_model_does_not(tmp_path, task):
    from hf_detr import HfDetrImageProcessor
    from hf_detr.data import load_detection_dataset
    from hf_detr.evaluation import evaluate
    from test_segmentation_data import _write_panoptic

    split = load_detection_dataset(_write_panoptic(tmp_path), masks=True)["validation"]  # thing, sky (stuff)
    processor = HfDetrImageProcessor(size={"shortest_edge": 96, "longest_edge": 160})
    metrics = evaluate(_HalvedStuffOracle(split, task), processor, split, per_class=True)
    if task == "panoptic":  # the halves fused: the sky is one segment again; sky and thing both PQ ~1
        assert metrics["pq_stuff"] > 0.9 and metrics["pq_things"] > 0.9 and metrics["pq_class_sky"] > 0.9
    else:  # every class a thing, the halves two segments of IoU 0.5: the sky missed, twice a false positive
        assert metrics["pq_stuff"] == -1.0 and metrics["pq_class_sky"] == 0.0 and metrics["pq_class_thing"] > 0.9
