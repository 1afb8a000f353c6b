"""hf_detr.data: COCO folders, save_to_disk folders and load_dataset sources in the Hub's COCO detection schema."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import datasets
import numpy as np
import PIL.Image
import pytest

from hf_detr.data import coco_category_ids, coco_detection_features, id2label, load_detection_dataset

# COCO ids are sparse and listed out of order; labels follow increasing id: person=0, airplane=1, toothbrush=2.
CATEGORIES = [{"id": 90, "name": "toothbrush"}, {"id": 1, "name": "person"}, {"id": 5, "name": "airplane"}]
LABEL_NAMES = ["person", "airplane", "toothbrush"]
LABEL_OF = {1: 0, 5: 1, 90: 2}


def _coco(split: str) -> dict:
    if split == "train":
        images = [
            {"id": 7, "file_name": "a.png", "width": 64, "height": 48},
            {"id": 8, "file_name": "b.png", "width": 40, "height": 30},
            {"id": 9, "file_name": "c.png", "width": 32, "height": 32},  # no annotation
        ]
        annotations = [
            {"id": 1, "image_id": 7, "category_id": 90, "bbox": [3.5, 4.25, 20.0, 10.5], "area": 150.0, "iscrowd": 0},
            {"id": 2, "image_id": 7, "category_id": 1, "bbox": [0.0, 0.0, 64.0, 48.0], "area": 2000.0, "iscrowd": 1},
            # reaches 0.5 px past the right edge: inside the default 1 px tolerance, kept as written
            {"id": 3, "image_id": 8, "category_id": 5, "bbox": [30.0, 2.0, 10.5, 6.0], "area": 40.0, "iscrowd": 0},
        ]
    else:
        images = [{"id": 100, "file_name": "v.png", "width": 24, "height": 20}]
        annotations = [{"id": 11, "image_id": 100, "category_id": 5, "bbox": [1.0, 2.0, 3.0, 4.0]}]
    return {"images": images, "annotations": annotations, "categories": CATEGORIES}


def _write_coco(root: Path) -> dict[str, np.ndarray]:
    """A COCO folder: train images under train/, val2017 images under images/. Returns the pixels by file name."""
    rng = np.random.default_rng(0)
    pixels = {}
    for split, json_split, folder in (("train", "train", "train"), ("val", "val2017", "images")):
        coco = _coco(split)
        (root / folder).mkdir(parents=True)
        for image in coco["images"]:
            array = rng.integers(0, 256, size=(image["height"], image["width"], 3), dtype=np.uint8)
            PIL.Image.fromarray(array).save(root / folder / image["file_name"])
            pixels[image["file_name"]] = array
        (root / "annotations").mkdir(exist_ok=True)
        (root / "annotations" / f"instances_{json_split}.json").write_text(json.dumps(coco))
    return pixels


@pytest.fixture
def coco_root(tmp_path) -> Path:
    root = tmp_path / "coco"
    _write_coco(root)
    return root


def _rows(split) -> list[dict]:
    """Examples with the image as a pixel array, comparable with ==."""
    return [{**row, "image": np.asarray(row["image"]).tolist()} for row in split]


def test_coco_folder_gives_the_schema_the_label_map_and_the_json_boxes(tmp_path, caplog):
    root = tmp_path / "coco"
    pixels = _write_coco(root)
    with caplog.at_level(logging.INFO, logger="hf_detr.data"):
        ds = load_detection_dataset(root)
    assert "instances_train.json: 3 images (1 without objects), 3 annotations (1 crowd)" in caplog.text

    assert isinstance(ds, datasets.DatasetDict)
    assert set(ds) == {"train", "validation"}  # instances_val2017.json is the Hub's "validation"
    for split in ds.values():
        assert split.features == coco_detection_features(LABEL_NAMES)
        assert id2label(split) == dict(enumerate(LABEL_NAMES))
        assert coco_category_ids(split) == [1, 5, 90]

    for name, coco_split in (("train", "train"), ("validation", "val")):
        coco = _coco(coco_split)
        rows = list(ds[name])
        assert [row["image_id"] for row in rows] == [image["id"] for image in coco["images"]]
        for row, image in zip(rows, coco["images"]):
            assert (row["width"], row["height"]) == (image["width"], image["height"])
            np.testing.assert_array_equal(np.asarray(row["image"]), pixels[image["file_name"]])
            annotations = [a for a in coco["annotations"] if a["image_id"] == image["id"]]
            box_areas = [a["bbox"][2] * a["bbox"][3] for a in annotations]
            assert row["objects"] == {
                "id": [a["id"] for a in annotations],
                "area": [a.get("area", area) for a, area in zip(annotations, box_areas)],
                "bbox": [a["bbox"] for a in annotations],
                "category": [LABEL_OF[a["category_id"]] for a in annotations],
                "iscrowd": [a.get("iscrowd", 0) for a in annotations],
            }
    assert list(ds["train"])[2]["objects"]["bbox"] == []  # the image without objects is kept
    names = ds["train"].features["objects"]["category"].feature.int2str([0, 1, 2])
    assert names == LABEL_NAMES


def test_save_to_disk_round_trip_keeps_examples_and_label_map(coco_root, tmp_path):
    ds = load_detection_dataset(coco_root)
    expected = {name: _rows(split) for name, split in ds.items()}
    ds.save_to_disk(tmp_path / "saved")
    shutil.rmtree(coco_root)  # the saved folder must hold the image bytes, not paths into the COCO folder

    loaded = load_detection_dataset(tmp_path / "saved")
    assert isinstance(loaded, datasets.DatasetDict)
    assert {name: _rows(split) for name, split in loaded.items()} == expected
    assert loaded["train"].features == coco_detection_features(LABEL_NAMES)
    assert coco_category_ids(loaded["train"]) == [1, 5, 90]

    streamed = load_detection_dataset(tmp_path / "saved", streaming=True, splits=["validation"])
    assert isinstance(streamed, datasets.IterableDatasetDict) and list(streamed) == ["validation"]
    assert streamed["validation"].features == coco_detection_features(LABEL_NAMES)
    assert _rows(streamed["validation"]) == expected["validation"]


def test_streaming_coco_folder_gives_the_same_examples(coco_root):
    eager = load_detection_dataset(coco_root)
    streamed = load_detection_dataset(coco_root, streaming=True)
    assert isinstance(streamed, datasets.IterableDatasetDict)
    assert set(streamed) == set(eager)
    for name in eager:
        assert isinstance(streamed[name], datasets.IterableDataset)
        assert streamed[name].features == eager[name].features
        assert coco_category_ids(streamed[name]) == [1, 5, 90]
        assert _rows(streamed[name]) == _rows(eager[name])


def test_a_json_changed_after_preparing_is_prepared_again(coco_root):
    prepared = load_detection_dataset(coco_root, splits=["train"])["train"]
    streamed = load_detection_dataset(coco_root, streaming=True, splits=["train"])["train"]
    _edit_train_json(coco_root, lambda coco: coco["annotations"][0]["bbox"].__setitem__(0, 5.5))
    # the cache is keyed by the json's content: the next load sees the edit
    assert load_detection_dataset(coco_root, splits=["train"])["train"][0]["objects"]["bbox"][0][0] == 5.5
    # what was opened before reads the data it was prepared from, consistently
    assert prepared[0]["objects"]["bbox"][0][0] == 3.5
    assert next(iter(streamed))["objects"]["bbox"][0][0] == 3.5


def _cppe5_like(tmp_path: Path, bbox: list[float]) -> Path:
    """A local data folder of parquet in the shape of the `cppe-5` Hub data set: int64 width/height and area, float64
    boxes, no iscrowd, plus a column outside the schema."""
    features = datasets.Features(
        {
            "image_id": datasets.Value("int64"),
            "image": datasets.Image(),
            "width": datasets.Value("int64"),
            "height": datasets.Value("int64"),
            "objects": datasets.Sequence(
                {
                    "id": datasets.Value("int64"),
                    "area": datasets.Value("int64"),
                    "bbox": datasets.Sequence(datasets.Value("float64"), length=4),
                    "category": datasets.ClassLabel(names=["Coverall", "Mask"]),
                }
            ),
            "source": datasets.Value("string"),
        }
    )
    rows = {
        "image_id": [4, 5],
        "image": [PIL.Image.new("RGB", (30, 20), "red"), PIL.Image.new("RGB", (16, 16), "blue")],
        "width": [30, 16],
        "height": [20, 16],
        "objects": [
            {"id": [40, 41], "area": [12, 6], "bbox": [bbox, [0.0, 0.0, 2.0, 3.0]], "category": [1, 0]},
            {"id": [], "area": [], "bbox": [], "category": []},
        ],
        "source": ["x", "y"],
    }
    folder = tmp_path / "hub"
    (folder / "data").mkdir(parents=True)
    datasets.Dataset.from_dict(rows, features=features).to_parquet(folder / "data" / "train-00000-of-00001.parquet")
    return folder


@pytest.mark.parametrize("streaming", [False, True])
def test_load_dataset_source_is_brought_to_the_schema(tmp_path, streaming):
    folder = _cppe5_like(tmp_path, [1.0, 2.0, 3.0, 4.0])
    ds = load_detection_dataset(folder, streaming=streaming, cache_dir=str(tmp_path / "cache"))
    assert list(ds) == ["train"]
    assert ds["train"].features == coco_detection_features(["Coverall", "Mask"])
    rows = list(ds["train"])
    assert rows[0]["objects"] == {
        "id": [40, 41],
        "area": [12.0, 6.0],
        "bbox": [[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 2.0, 3.0]],
        "category": [1, 0],
        "iscrowd": [0, 0],
    }
    assert all(isinstance(a, float) for a in rows[0]["objects"]["area"])
    assert rows[1]["objects"]["bbox"] == [] and rows[1]["image"].size == (16, 16)
    assert "source" not in rows[0]


@pytest.mark.parametrize("streaming", [False, True])
def test_load_dataset_source_with_a_box_outside_its_image_is_an_error(tmp_path, streaming):
    folder = _cppe5_like(tmp_path, [25.0, 2.0, 10.0, 4.0])  # x + w = 35 > width 30
    message = r"split 'train' example 0 \(image_id 4\) object 0: bbox = .* lies outside \[0, 30\] x \[0, 20\]"
    with pytest.raises(ValueError, match=message):  # the default box_policy="clip" clips it (test_real_world_data.py)
        ds = load_detection_dataset(folder, streaming=streaming, box_policy="error", cache_dir=str(tmp_path / "cache"))
        list(ds["train"])  # a streamed split is checked as it is read


def test_hub_id_goes_to_load_dataset(monkeypatch):
    calls = []
    split = datasets.Dataset.from_dict(
        {
            "image": [PIL.Image.new("RGB", (8, 8))],
            "image_id": [1],
            "width": [8],
            "height": [8],
            "objects": [{"id": [1], "area": [4.0], "bbox": [[1.0, 1.0, 2.0, 2.0]], "category": [0], "iscrowd": [0]}],
        },
        features=coco_detection_features(["thing"]),
    )

    def fake_load_dataset(path, **kwargs):
        calls.append((path, kwargs))
        return [split]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    ds = load_detection_dataset("some-org/some-data", splits=["validation"], revision="v1", token="t")
    assert calls == [
        (
            "some-org/some-data",
            {"split": ["validation"], "streaming": False, "revision": "v1", "cache_dir": None, "token": "t"},
        ),
    ]
    assert list(ds) == ["validation"] and ds["validation"][0]["objects"]["bbox"] == [[1.0, 1.0, 2.0, 2.0]]


def test_category_must_be_a_class_label(tmp_path):
    ds = datasets.Dataset.from_dict(
        {"image": [PIL.Image.new("RGB", (8, 8))], "objects": [{"bbox": [[1.0, 1.0, 2.0, 2.0]], "category": [3]}]}
    )
    ds.save_to_disk(tmp_path / "saved")
    with pytest.raises(ValueError, match=r"split 'train': `objects.category` must be a datasets.ClassLabel"):
        load_detection_dataset(tmp_path / "saved")


def _edit_train_json(root: Path, edit) -> None:
    path = root / "annotations" / "instances_train.json"
    coco = json.loads(path.read_text())
    edit(coco)
    path.write_text(json.dumps(coco))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda c: c["annotations"][1].update(category_id=3),
            r"instances_train.json: annotation id 2 \(image_id 7, 'a.png'\): category_id 3 is not in `categories` "
            r"\(ids \[1, 5, 90\]\)",
        ),
        (
            lambda c: c["annotations"][2].update(bbox=[30.0, 2.0, 12.0, 6.0]),
            r"annotation id 3 \(image_id 8, 'b.png'\): bbox = .* lies outside \[0, 40\] x \[0, 30\]",
        ),
        (
            lambda c: c["annotations"][0].update(bbox=[3.0, 4.0, -2.0, 5.0]),
            r"annotation id 1 \(image_id 7, 'a.png'\): bbox .* negative width or height",
        ),
        (
            lambda c: c["annotations"][0].update(image_id=12),
            r"annotation id 1 refers to image_id 12, which is not in `images`",
        ),
        (
            lambda c: c["images"][0].update(width=65),
            r"image_id 7 \('a.png'\): .*a.png is 64x48 pixels but the json says width=65, height=48",
        ),
    ],
)
def test_bad_annotations_name_the_example(coco_root, edit, message):
    _edit_train_json(coco_root, edit)
    with pytest.raises(ValueError, match=message):  # the default box_policy="clip" clips or drops the bad boxes
        load_detection_dataset(coco_root, box_policy="error")


@pytest.mark.parametrize("streaming", [False, True])
@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda path: path.unlink(), r"image_id 8 \('b.png'\): image file not found; looked in \["),
        (lambda path: path.write_text("not an image"), r"image_id 8 \('b.png'\): .*b.png is not a readable image"),
    ],
)
def test_missing_or_unreadable_image_names_the_file(coco_root, damage, message, streaming):
    damage(coco_root / "train" / "b.png")
    with pytest.raises(ValueError, match=message):
        ds = load_detection_dataset(coco_root, streaming=streaming, splits=["train"])
        list(ds["train"])  # a streamed split opens its image files as it is read


def test_unknown_split_is_named(coco_root):
    with pytest.raises(ValueError, match=r"has no split \['test'\]; available splits: \['train', 'validation'\]"):
        load_detection_dataset(coco_root, splits=["test"])
