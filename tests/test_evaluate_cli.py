"""`hf-detr evaluate`: the COCO table of a saved model folder equals pycocotools run directly on its detections."""

from __future__ import annotations

import json

import datasets
import numpy as np
import pytest
import torch

from helpers import tiny_config_kwargs
from hf_detr import HfDetrConfig, HfDetrForObjectDetection, HfDetrImageProcessor
from hf_detr.apps.cli import main
from hf_detr.data import coco_detection_features
from hf_detr.evaluation.duplicates import DUPLICATE_STAT_NAMES
from hf_detr.evaluation.metrics import COCO_STAT_NAMES, coco_evaluate

LABELS = ["a", "b", "c"]
# (height, width) of the evaluation images: non-square both ways, so swapped axes would move every box
SIZES = [(64, 96), (96, 64), (80, 80), (64, 96), (72, 88), (96, 64), (64, 64)]
BATCH = 3


def _examples() -> list[dict]:
    """Images whose first object is the central box the crafted model predicts (class i % 3), plus a random box;
    the last image holds only a crowd region."""
    rng = np.random.default_rng(0)
    rows = []
    for i, (height, width) in enumerate(SIZES):
        boxes, categories, crowd = [], [], []
        if i != 6:
            boxes += [[width / 4, height / 4, width / 2, height / 2]]
            categories += [i % 3]
            crowd += [0]
            x, y = rng.uniform(0, width / 2), rng.uniform(0, height / 2)
            boxes += [[x, y, rng.uniform(8, width / 2), rng.uniform(8, height / 2)]]
            categories += [int(rng.integers(3))]
            crowd += [0]
        else:  # a crowd region of the predicted class around the central box: detections there are ignored
            boxes += [[8.0, 8.0, 48.0, 48.0]]
            categories += [2]
            crowd += [1]
        pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        rows.append(
            {
                "image": pixels,
                "image_id": i,
                "width": width,
                "height": height,
                "objects": {
                    "id": list(range(len(boxes))),
                    "area": [w * h * 0.8 for *_, w, h in boxes],
                    "bbox": boxes,
                    "category": categories,
                    "iscrowd": crowd,
                },
            }
        )
    return rows


def _save_dataset(folder, names: list[str], rows: list[dict]) -> str:
    import PIL.Image

    columns = {key: [row[key] for row in rows] for key in rows[0]}
    columns["image"] = [PIL.Image.fromarray(pixels) for pixels in columns["image"]]
    split = datasets.Dataset.from_dict(columns, features=coco_detection_features(names))
    datasets.DatasetDict({"validation": split}).save_to_disk(str(folder))
    return str(folder)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> str:
    """A tiny model whose queries all predict the central box (cx, cy, w, h) = (0.5, 0.5, 0.5, 0.5) with scores and
    classes that vary by query and image, saved with its image processor."""
    torch.manual_seed(0)
    config = HfDetrConfig(
        **tiny_config_kwargs(
            d_model=32, decoder_layers=1, encoder_ffn_dim=64, decoder_ffn_dim=64, id2label=dict(enumerate(LABELS))
        )
    )
    model = HfDetrForObjectDetection(config)
    with torch.no_grad():
        last = model.bbox_embed.layers[-1]
        last.weight.zero_()
        last.bias.fill_(0.0)  # sigmoid(0) = 0.5
        model.class_embed.weight.mul_(20)  # spread the class scores
    folder = tmp_path_factory.mktemp("model")
    model.save_pretrained(folder)
    HfDetrImageProcessor(size={"shortest_edge": 64, "longest_edge": 128}).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory) -> str:
    return _save_dataset(tmp_path_factory.mktemp("data"), LABELS, _examples())


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    status = main(["evaluate", *argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def _table(out: str) -> dict[str, float]:
    """``{metric or class: value}`` of the printed table (per-class rows give AP under the class name)."""
    values = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2:
            try:
                values[parts[0]] = float(parts[1])
            except ValueError:
                continue
    return values


def _class_rows(out: str) -> dict[str, list[float]]:
    """``{class: [AP, AP50, AR@100, objects]}`` of the printed per-class table."""
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:5] == ["class", "AP", "AP50", "AR@100", "objects"])
    rows = {}
    for line in lines[header + 1 :]:
        parts = line.split()
        if len(parts) != 5:
            break
        rows[parts[0]] = [float(value) for value in parts[1:]]
    return rows


def _direct_metrics(model_dir: str, dataset_dir: str) -> dict[str, float]:
    """pycocotools on the model's detections in the original pixel frames, against the data set's own boxes."""
    model = HfDetrForObjectDetection.from_pretrained(model_dir).eval()
    processor = HfDetrImageProcessor.from_pretrained(model_dir)
    rows = datasets.load_from_disk(dataset_dir)["validation"]
    predictions, references = [], []
    for start in range(0, len(rows), BATCH):
        batch = rows[start : start + BATCH]
        with torch.no_grad():
            outputs = model(**processor(images=batch["image"], return_tensors="pt"))
        sizes = list(zip(batch["height"], batch["width"]))
        predictions += processor.post_process_object_detection(outputs, threshold=0.0, target_sizes=sizes)
        references += [
            {"boxes": o["bbox"], "labels": o["category"], "iscrowd": o["iscrowd"], "area": o["area"]}
            for o in batch["objects"]
        ]
    return coco_evaluate(predictions, references, per_class=True, id2label=dict(enumerate(LABELS)))


@pytest.mark.parametrize(
    "backend",
    [[], ["--coco-backend", "pycocotools"], ["--coco_backend", "numpy"]],
    ids=["default", "pycocotools", "numpy"],
)
def test_table_equals_pycocotools_on_the_same_detections(model_dir, dataset_dir, capsys, backend):
    status, out, err = _run(
        capsys, model_dir, "--dataset", dataset_dir, "--per_device_eval_batch_size", str(BATCH), "--per_class", *backend
    )
    assert status == 0, err
    printed = _table(out)
    expected = _direct_metrics(model_dir, dataset_dir)
    # the crafted detections hit some central boxes and miss the others: values strictly between 0 and 1
    assert 0.05 < expected["map"] < 0.95 and 0.05 < expected["mar_100"] < 1.0
    for name in COCO_STAT_NAMES:
        assert printed[name] == pytest.approx(round(expected[name], 4), abs=1e-9), name
    rows = _class_rows(out)
    assert list(rows) == LABELS
    for name in LABELS:
        expected_row = [expected[f"{stat}_class_{name}"] for stat in ("map", "map_50", "mar_100")]
        assert rows[name][:3] == pytest.approx([round(value, 4) for value in expected_row], abs=1e-9), name
    # objects: the non-crowd ground truth of each class
    objects = [pair for row in _examples() for pair in zip(row["objects"]["category"], row["objects"]["iscrowd"])]
    assert [rows[name][3] for name in LABELS] == [
        sum(1 for c, crowd in objects if c == k and not crowd) for k in range(len(LABELS))
    ]
    # the crowd region is kept as COCO keeps it: detections on it are ignored, not false positives
    without_crowd = _examples()
    without_crowd[-1]["objects"] = {key: [] for key in without_crowd[-1]["objects"]}
    assert expected != pytest.approx(
        _direct_metrics(model_dir, _save_dataset(dataset_dir + "-no-crowd", LABELS, without_crowd))
    )


def test_out_writes_the_metrics_with_the_per_class_table_and_the_precision_recall_curve(
    model_dir, dataset_dir, tmp_path, capsys
):
    import PIL.Image

    status, out, err = _run(capsys, model_dir, "--dataset", dataset_dir, "--out", str(tmp_path / "plots"))
    assert status == 0, err
    assert "class " not in out  # the per-class table is printed only with --per-class
    written = json.loads((tmp_path / "plots" / "metrics.json").read_text())
    # the printed table: COCO's numbers and the duplicate measure, as written
    assert {name: written[name] for name in (*COCO_STAT_NAMES, *DUPLICATE_STAT_NAMES)} == _table(out)
    assert list(written["per_class"]) == list(LABELS)
    assert sum(row["objects"] for row in written["per_class"].values()) == sum(
        not crowd for example in _examples() for crowd in example["objects"]["iscrowd"]
    )
    picture = PIL.Image.open(tmp_path / "plots" / "pr_curve.png")
    assert picture.size == (700, 560)
    colours = np.asarray(picture.convert("RGB")).reshape(-1, 3)
    assert (colours != 255).any(axis=1).mean() > 0.03  # axes, grid and curves, not a blank page


def test_out_without_matplotlib_says_how_to_install_it(model_dir, dataset_dir, tmp_path, monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` raises ImportError
    status, out, err = _run(capsys, model_dir, "--dataset", dataset_dir, "--out", str(tmp_path / "plots"))
    assert status == 1 and "pip install 'hf_detr[viz]'" in err and out == ""  # before evaluating anything


def test_threshold_drops_low_scoring_detections(model_dir, dataset_dir, capsys):
    status, out, err = _run(capsys, model_dir, "--dataset", dataset_dir, "--threshold", "0.99")
    assert status == 0, err
    strict = _table(out)
    _, out, _ = _run(capsys, model_dir, "--dataset", dataset_dir)
    assert strict["mar_100"] < _table(out)["mar_100"]


def test_categories_are_matched_to_the_model_by_name(model_dir, dataset_dir, tmp_path, capsys):
    # the same objects, with the data set's label order c, a, b instead of the model's a, b, c
    order = ["c", "a", "b"]
    rows = _examples()
    for row in rows:
        row["objects"]["category"] = [order.index(LABELS[c]) for c in row["objects"]["category"]]
    permuted = _save_dataset(tmp_path / "permuted", order, rows)
    _, reference, _ = _run(capsys, model_dir, "--dataset", dataset_dir, "--per-class")
    status, out, err = _run(capsys, model_dir, "--dataset", permuted, "--per-class")
    assert status == 0, err
    assert _table(out) == _table(reference)


def test_errors_name_the_problem(model_dir, tmp_path, capsys):
    rows = _examples()
    unknown = _save_dataset(tmp_path / "zebra", ["a", "b", "zebra"], rows)
    status, _, err = _run(capsys, model_dir, "--dataset", unknown)
    assert status == 1 and "['zebra']" in err and "not classes of the model" in err

    bare = tmp_path / "no-processor"
    HfDetrForObjectDetection.from_pretrained(model_dir).save_pretrained(bare)
    status, _, err = _run(capsys, str(bare), "--dataset", unknown)
    assert status == 1 and "no image processor" in err

    status, _, err = _run(capsys, model_dir, "--dataset", unknown, "--per_device_eval_batch_size", "0")
    assert status == 1 and "--per_device_eval_batch_size" in err

    empty = tmp_path / "empty-coco"
    (empty / "annotations").mkdir(parents=True)
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(LABELS)]
    (empty / "annotations" / "instances_val.json").write_text(
        json.dumps({"images": [], "annotations": [], "categories": categories})
    )
    status, _, err = _run(capsys, model_dir, "--dataset", str(empty))
    assert status == 1 and "'validation'" in err and "has no images" in err
