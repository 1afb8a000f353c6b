"""Real annotation exports (issue 14): boxes outside their image, zero-area and degenerate boxes, EXIF rotation,
grayscale / RGBA / 16-bit / palette files and category ids of any numbering, under `box_policy` "clip" (the default),
"drop" and "error", through the loader, the accelerate loop, evaluation and the Trainer example."""

from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path

import datasets
import numpy as np
import PIL.Image
import pytest
from torchvision.transforms import v2

from helpers import EXAMPLE, load_script, tiny_config_kwargs
from hf_detr import HfDetrConfig, HfDetrForObjectDetection
from hf_detr.data import (
    apply_box_policy,
    coco_category_ids,
    coco_detection_features,
    id2label,
    load_data,
    load_detection_dataset,
)
from hf_detr.data.collate import DetectionCollator, DetectionDataset, upright_rgb
from hf_detr.evaluation import evaluate
from hf_detr.training import TrainConfig, add_arguments, train
from training_commands import TINY_MODEL

LOGGER = "hf_detr.data"  # the parent of every data module's logger
WIDTH, HEIGHT = 64, 48
# COCO ids that skip numbers: labels 0..3 in increasing id order
CATEGORIES = [{"id": 42, "name": "fish"}, {"id": 1, "name": "cat"}, {"id": 7, "name": "bird"}, {"id": 3, "name": "dog"}]
NAMES = ["cat", "dog", "bird", "fish"]
LABEL_OF = {1: 0, 3: 1, 7: 2, 42: 3}
RED = (255, 0, 0)

# the upright picture stored with EXIF orientation 6: a red rectangle on black, exactly the box of annotation 10
EXIF_BOX = [10.0, 8.0, 20.0, 12.0]
# image id -> (file name, kind)
IMAGES = {
    1: ("right.png", "rgb"),
    2: ("left.png", "rgb"),
    3: ("outside.png", "rgb"),
    4: ("zero.png", "rgb"),
    5: ("degenerate.png", "rgb"),
    6: ("exif.png", "exif"),
    7: ("gray.png", "gray"),
    8: ("rgba.png", "rgba"),
    9: ("deep.png", "deep"),
    10: ("palette.png", "palette"),
}
# annotation id -> (image id, category id, bbox, area or None, defect or None)
ANNOTATIONS = {
    1: (1, 1, [50.0, 10.0, 18.0, 10.0], 150.0, "right"),  # 4 px past the right edge
    2: (2, 3, [-2.0, 5.0, 10.0, 10.0], None, "left"),  # 2 px left of 0
    3: (3, 7, [70.0, 5.0, 10.0, 10.0], None, "outside"),  # entirely outside
    4: (3, 1, [5.0, 5.0, 10.0, 10.0], None, None),
    5: (4, 42, [10.0, 10.0, 0.0, 5.0], None, "zero-area"),
    6: (4, 3, [20.0, 20.0, 10.0, 10.0], 90.0, None),
    7: (5, 1, [20.0, 10.0, -5.0, 5.0], None, "negative"),
    8: (5, 1, [float("nan"), 3.0, 4.0, 5.0], None, "nan"),  # Python's json writes and reads NaN
    9: (5, 7, [1.0, 1.0, 10.0, 10.0], None, None),
    10: (6, 1, EXIF_BOX, None, None),
    11: (7, 3, [4.0, 4.0, 20.0, 20.0], None, None),
    12: (8, 7, [4.0, 4.0, 20.0, 20.0], None, None),
    13: (9, 42, [4.0, 4.0, 20.0, 20.0], None, None),
    14: (10, 1, [4.0, 4.0, 20.0, 20.0], None, None),
    15: (1, 3, [0.0, 0.0, 64.5, 48.0], None, None),  # 0.5 px out: float slop within box_tolerance, kept as written
}
CLIPPED = {1: [50.0, 10.0, 14.0, 10.0], 2: [0.0, 5.0, 8.0, 10.0]}
DROPPED_BY_CLIP = {3, 5, 7, 8}
CLIP_SUMMARY = (
    "instances_train.json: 10 images, 2 boxes clipped to their image, 4 dropped (1 not finite, "
    "1 negative size, 1 zero-area, 1 outside the image) by box_policy='clip'"
)
DROP_SUMMARY = (
    "instances_train.json: 10 images, 6 boxes dropped (1 not finite, 1 negative size, 1 zero-area, "
    "3 outside the image) by box_policy='drop'"
)


def _pixels(kind: str, rng: np.random.Generator) -> tuple[PIL.Image.Image, np.ndarray]:
    """The image file to write and the upright 8-bit RGB pixels the pipeline must hand out for it."""
    if kind == "rgb":
        array = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
        return PIL.Image.fromarray(array), array
    if kind == "exif":
        upright = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
        x, y, w, h = map(int, EXIF_BOX)
        upright[y : y + h, x : x + w] = RED
        # orientation 6: the viewer turns the stored image 90 degrees clockwise, so store it turned counterclockwise
        return PIL.Image.fromarray(upright).transpose(PIL.Image.Transpose.ROTATE_90), upright
    if kind == "gray":
        array = rng.integers(0, 256, (HEIGHT, WIDTH), dtype=np.uint8)
        return PIL.Image.fromarray(array), np.repeat(array[..., None], 3, axis=2)
    if kind == "rgba":
        array = np.zeros((HEIGHT, WIDTH, 4), np.uint8)
        array[:, : WIDTH // 2] = (200, 30, 40, 255)  # opaque
        array[:, WIDTH // 2 :] = (0, 255, 0, 0)  # transparent: white once composited
        expected = np.full((HEIGHT, WIDTH, 3), 255, np.uint8)
        expected[:, : WIDTH // 2] = (200, 30, 40)
        return PIL.Image.fromarray(array), expected
    if kind == "deep":
        values = (np.arange(HEIGHT * WIDTH).reshape(HEIGHT, WIDTH) * 21).astype(np.uint16)  # 0 .. 64491
        return PIL.Image.fromarray(values), np.repeat((values >> 8).astype(np.uint8)[..., None], 3, axis=2)
    if kind == "palette":
        indices = np.zeros((HEIGHT, WIDTH), np.uint8)
        indices[:, 20:40], indices[:, 40:] = 1, 2
        image = PIL.Image.frombytes("P", (WIDTH, HEIGHT), indices.tobytes())
        image.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * (768 - 9))
        expected = np.full((HEIGHT, WIDTH, 3), 255, np.uint8)  # index 0 is transparent
        expected[:, 20:40], expected[:, 40:] = RED, (0, 0, 255)
        return image, expected
    raise AssertionError(kind)


def _save(image: PIL.Image.Image, kind: str, path: Path) -> None:
    if kind == "exif":
        exif = PIL.Image.Exif()
        exif[0x0112] = 6
        image.save(path, exif=exif)
    elif kind == "palette":
        image.save(path, transparency=0)
    else:
        image.save(path)


def write_defective_coco(root: Path, only: str | None = None) -> dict[int, np.ndarray]:
    """The COCO folder of the module docstring (train: every defect; validation: a box 4 px out and a clean one).
    ``only``: keep just that defect (and every clean annotation). Returns the expected pixels by image id."""
    rng = np.random.default_rng(0)
    expected = {}
    (root / "annotations").mkdir(parents=True)
    splits = {
        "train": (IMAGES, ANNOTATIONS),
        "val": (
            {11: ("v1.png", "rgb"), 12: ("v2.png", "gray")},
            {
                21: (11, 1, [40.0, 20.0, 28.0, 20.0], None, "right"),
                22: (12, 7, [5.0, 5.0, 30.0, 30.0], None, None),
                23: (11, 3, [2.0, 2.0, 20.0, 10.0], None, None),
            },
        ),
    }
    for split, (images, split_annotations) in splits.items():
        (root / split).mkdir()
        for image_id, (file_name, kind) in images.items():
            stored, expected[image_id] = _pixels(kind, rng)
            _save(stored, kind, root / split / file_name)
        coco = {
            "images": [{"id": i, "file_name": f, "width": WIDTH, "height": HEIGHT} for i, (f, _) in images.items()],
            "annotations": [
                {"id": a, "image_id": i, "category_id": c, "bbox": b, **({"area": area} if area else {})}
                for a, (i, c, b, area, defect) in split_annotations.items()
                if defect is None or only in (None, defect)
            ],
            "categories": CATEGORIES,
        }
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(coco))
    return expected


@pytest.fixture
def defective(tmp_path) -> tuple[Path, dict[int, np.ndarray]]:
    root = tmp_path / "coco"
    return root, write_defective_coco(root)


def _objects_by_id(split) -> dict[int, dict]:
    """annotation id -> (image id, bbox, area, category, iscrowd) of every object of the split."""
    found = {}
    for row in split:
        objects = row["objects"]
        for k, annotation_id in enumerate(objects["id"]):
            found[annotation_id] = {"image_id": row["image_id"], **{key: objects[key][k] for key in objects}}
    return found


# ----------------------------------------------------------------------------------------------- box_policy="clip"


@pytest.mark.parametrize("streaming", [False, True])
def test_clip_clips_and_drops_with_one_summary_line(defective, caplog, streaming):
    root, _ = defective
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        ds = load_detection_dataset(root, streaming=streaming)
        objects = _objects_by_id(ds["train"])
    summaries = [r.getMessage() for r in caplog.records if "box_policy" in r.getMessage()]
    assert summaries[0] == CLIP_SUMMARY
    assert summaries[1] == "instances_val.json: 2 images, 1 box clipped to its image by box_policy='clip'"
    assert len(summaries) == 2  # one line per split

    # dropped objects are gone with their id, category, area and iscrowd; the images are kept
    assert set(objects) == set(ANNOTATIONS) - DROPPED_BY_CLIP
    assert len(list(ds["train"])) == len(IMAGES)
    for annotation_id, obj in objects.items():
        image_id, category_id, bbox, area, _ = ANNOTATIONS[annotation_id]
        assert obj["image_id"] == image_id and obj["category"] == LABEL_OF[category_id] and obj["iscrowd"] == 0
        assert obj["bbox"] == CLIPPED.get(annotation_id, bbox)
    # a clipped box's area shrinks with it (COCO's 150 of a 180 px box, now 140 px); a missing one is the box area
    assert objects[1]["area"] == pytest.approx(150.0 * 140 / 180)
    assert objects[2]["area"] == 80.0 and objects[6]["area"] == 90.0
    assert objects[15]["bbox"] == [0.0, 0.0, 64.5, 48.0]  # within box_tolerance: float slop, kept as written


def test_box_tolerance_reaches_the_loader_from_load_data(defective):
    from hf_detr.data import load_data

    root, _ = defective
    exact = _objects_by_id(load_data(str(root), ["train"], box_tolerance=0.0)["train"])
    assert exact[15]["bbox"] == [0.0, 0.0, 64.0, 48.0]  # the 0.5 px of slop clipped: no tolerance


def test_drop_drops_every_box_outside_its_image(defective, caplog):
    root, _ = defective
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        ds = load_detection_dataset(root, box_policy="drop", splits=["train"])
    assert DROP_SUMMARY in caplog.text
    assert set(_objects_by_id(ds["train"])) == set(ANNOTATIONS) - DROPPED_BY_CLIP - set(CLIPPED)


def test_clean_data_logs_no_box_policy_line(tmp_path, caplog):
    root = tmp_path / "clean"
    write_defective_coco(root, only="none of them")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        ds = load_detection_dataset(root)
    assert "box_policy" not in caplog.text
    assert set(_objects_by_id(ds["train"])) == {a for a, spec in ANNOTATIONS.items() if spec[4] is None}


# ----------------------------------------------------------------------------------------------- box_policy="error"

ERRORS = {
    "right": r"annotation id 1 \(image_id 1, 'right.png'\): bbox = \[50.0, 10.0, 18.0, 10.0\] lies outside "
    r"\[0, 64\] x \[0, 48\] by more than the tolerance 1",
    "left": r"annotation id 2 \(image_id 2, 'left.png'\): bbox = \[-2.0, 5.0, 10.0, 10.0\] lies outside",
    "outside": r"annotation id 3 \(image_id 3, 'outside.png'\): bbox = \[70.0, 5.0, 10.0, 10.0\] lies outside",
    "zero-area": r"annotation id 5 \(image_id 4, 'zero.png'\): bbox = \[10.0, 10.0, 0.0, 5.0\] has width or height "
    r"<= 0",
    "negative": r"annotation id 7 \(image_id 5, 'degenerate.png'\): bbox = \[20.0, 10.0, -5.0, 5.0\] has a negative "
    r"width or height",
    "nan": r"annotation id 8 \(image_id 5, 'degenerate.png'\): bbox = \[nan, 3.0, 4.0, 5.0\] is NaN or infinite",
}


@pytest.mark.parametrize("defect", sorted(ERRORS))
def test_error_names_the_image_and_the_box_of_each_defect(tmp_path, defect):
    root = tmp_path / "coco"
    write_defective_coco(root, only=defect)
    with pytest.raises(ValueError, match=r"^instances_train.json: " + ERRORS[defect] + r".*box_policy='clip'"):
        load_detection_dataset(root, box_policy="error")
    load_detection_dataset(root)  # the default clips or drops it


def test_exif_rotated_file_is_checked_against_its_upright_size(tmp_path):
    root = tmp_path / "coco"
    write_defective_coco(root, only="none")
    path = root / "annotations" / "instances_train.json"
    coco = json.loads(path.read_text())
    coco["images"][5].update(width=HEIGHT, height=WIDTH)  # the stored size instead of the upright one
    path.write_text(json.dumps(coco))
    with pytest.raises(
        ValueError,
        match=r"image_id 6 \('exif.png'\): .*exif.png is 64x48 pixels upright \(EXIF "
        r"orientation 6; stored as 48x64\) but the json says width=48, height=64",
    ):
        load_detection_dataset(root, box_policy="error")


def test_unknown_policy_is_named(defective):
    with pytest.raises(ValueError, match=r"box_policy='fix': choose 'clip' \(the default\), 'drop' or 'error'"):
        load_detection_dataset(defective[0], box_policy="fix")


# ----------------------------------------------------------------------------------------------- Hub / save_to_disk


def _saved_split(tmp_path: Path) -> Path:
    """A save_to_disk folder whose first example has a box 5 px past the right edge and a zero-area box."""
    rows = {
        "image": [PIL.Image.new("RGB", (30, 20), "red"), PIL.Image.new("RGB", (16, 16), "blue")],
        "image_id": [4, 5],
        "width": [30, 16],
        "height": [20, 16],
        "objects": [
            {
                "id": [40, 41, 42],
                "area": [40.0, 0.0, 6.0],
                "bbox": [[25.0, 2.0, 10.0, 4.0], [1.0, 1.0, 0.0, 3.0], [0.0, 0.0, 2.0, 3.0]],
                "category": [1, 0, 0],
                "iscrowd": [0, 0, 1],
            },
            {"id": [50], "area": [4.0], "bbox": [[1.0, 1.0, 2.0, 2.0]], "category": [1], "iscrowd": [0]},
        ],
    }
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_dict(rows, features=coco_detection_features(["a", "b"]))}
    ).save_to_disk(tmp_path / "saved")
    return tmp_path / "saved"


@pytest.mark.parametrize("streaming", [False, True])
def test_saved_split_follows_the_policy(tmp_path, caplog, streaming):
    saved = _saved_split(tmp_path)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        rows = list(load_detection_dataset(saved, streaming=streaming)["train"])
    assert rows[0]["objects"] == {
        "id": [40, 42],
        "area": [20.0, 6.0],
        "bbox": [[25.0, 2.0, 5.0, 4.0], [0.0, 0.0, 2.0, 3.0]],
        "category": [1, 0],
        "iscrowd": [0, 1],
    }
    assert rows[1]["objects"]["id"] == [50]
    counts = "1 box clipped to its image, 1 dropped (1 zero-area) "
    if streaming:  # counted as the examples are read
        assert f"split 'train' (streamed, counted as read): {counts}in the first 1 examples read" in caplog.text
    else:
        assert f"split 'train': 2 examples, {counts}by box_policy='clip'" in caplog.text

    # the check names a box without area before one outside its image
    with pytest.raises(
        ValueError,
        match=r"split 'train' example 0 \(image_id 4\) object 1: bbox = \[1.0, 1.0, 0.0, "
        r"3.0\] has width or height <= 0",
    ):
        list(load_detection_dataset(saved, streaming=streaming, box_policy="error")["train"])
    dropped = load_detection_dataset(saved, streaming=streaming, box_policy="drop")["train"]
    assert next(iter(dropped))["objects"]["id"] == [42]


# ----------------------------------------------------------------------------------------------- images


def test_every_image_is_upright_rgb_and_its_boxes_match_the_pixels(defective):
    root, expected = defective
    train = load_detection_dataset(root)["train"]
    dataset = DetectionDataset(train)
    for index, row in enumerate(train):
        item = dataset[index]
        image = item["image"]
        assert image.mode == "RGB" and item["orig_size"] == (HEIGHT, WIDTH), IMAGES[row["image_id"]]
        array = np.asarray(image)
        assert array.dtype == np.uint8
        np.testing.assert_array_equal(array, expected[row["image_id"]], err_msg=str(IMAGES[row["image_id"]]))

    # the 16-bit file is scaled, not clipped to white
    deep = np.asarray(dataset[8]["image"])
    assert deep.max() == 64491 >> 8 and (deep == 255).mean() < 0.01 and len(np.unique(deep)) > 200

    # the EXIF image: its upright box covers exactly the red rectangle, also after a flip of the augmentation
    for transform, box in ((None, EXIF_BOX), (v2.RandomHorizontalFlip(1.0), [34.0, 8.0, 20.0, 12.0])):
        item = DetectionDataset(train, transform)[5]
        assert item["objects"]["bbox"] == [box]
        red = np.all(np.asarray(item["image"]) == RED, axis=2)
        rows, cols = red.any(1).nonzero()[0], red.any(0).nonzero()[0]
        assert [cols[0], rows[0], cols[-1] + 1 - cols[0], rows[-1] + 1 - rows[0]] == box
        assert red.sum() == box[2] * box[3]


def test_upright_rgb_modes():
    assert upright_rgb(PIL.Image.new("RGB", (3, 2))).mode == "RGB"
    wide = PIL.Image.fromarray(np.array([[0, 256, 65535, 70000]], np.int32))  # 32-bit "I": taken as 16-bit
    assert wide.mode == "I"
    np.testing.assert_array_equal(np.asarray(upright_rgb(wide))[0, :, 0], [0, 1, 255, 255])
    la = PIL.Image.fromarray(np.array([[[10, 255], [10, 0]]], np.uint8))
    assert la.mode == "LA"
    np.testing.assert_array_equal(np.asarray(upright_rgb(la))[0], [[10, 10, 10], [255, 255, 255]])
    assert upright_rgb(PIL.Image.new("CMYK", (2, 2))).mode == "RGB"


# ----------------------------------------------------------------------------------------------- category ids


def test_category_ids_of_any_numbering_become_contiguous_labels(defective, tmp_path):
    root, _ = defective
    train = load_detection_dataset(root)["train"]
    assert id2label(train) == dict(enumerate(NAMES))
    ids = coco_category_ids(train)
    assert ids == [1, 3, 7, 42]
    for annotation_id, obj in _objects_by_id(train).items():
        assert ids[obj["category"]] == ANNOTATIONS[annotation_id][1]  # the label maps back to the COCO id

    zero_based = tmp_path / "zero"
    (zero_based / "annotations").mkdir(parents=True)
    (zero_based / "images").mkdir()
    PIL.Image.new("RGB", (8, 8)).save(zero_based / "images" / "a.png")
    categories = [{"id": 2, "name": "two"}, {"id": 0, "name": "zero"}, {"id": 1, "name": "one"}]
    coco = {
        "images": [{"id": 0, "file_name": "a.png", "width": 8, "height": 8}],
        "categories": categories,
        "annotations": [
            {"id": 0, "image_id": 0, "category_id": 0, "bbox": [1, 1, 2, 2]},
            {"id": 1, "image_id": 0, "category_id": 2, "bbox": [3, 3, 2, 2]},
        ],
    }
    (zero_based / "annotations" / "instances_train.json").write_text(json.dumps(coco))
    split = load_detection_dataset(zero_based)["train"]
    assert id2label(split) == {0: "zero", 1: "one", 2: "two"} and coco_category_ids(split) == [0, 1, 2]
    assert split[0]["objects"]["category"] == [0, 2] and split[0]["objects"]["id"] == [0, 1]


# ----------------------------------------------------------------------------------------------- apply_box_policy


def test_apply_box_policy_on_its_own():
    name = lambda j: f"box {j}"  # noqa: E731
    boxes = [[-4.0, 0.0, 10.0, 10.0], [0.0, 0.0, 5.0, 5.0], [12.0, 0.0, 3.0, 3.0]]
    kept = apply_box_policy(boxes, name, within=(10, 10), areas=[50.0, None, 9.0])
    assert kept.index.tolist() == [0, 1] and kept.boxes.tolist() == [[0.0, 0.0, 6.0, 10.0], [0.0, 0.0, 5.0, 5.0]]
    assert kept.areas.tolist() == [30.0, 25.0]  # 50 of 100 px -> 30 of 60 px; missing: the box area
    assert kept.counts.summary() == "1 box clipped to its image, 1 dropped (1 outside the image)"
    # per-box frames, and a clipped area never larger than the clipped box
    kept = apply_box_policy([[8.0, 0.0, 4.0, 4.0]], name, within=[(10, 10)], areas=[100.0])
    assert kept.boxes.tolist() == [[8.0, 0.0, 2.0, 4.0]] and kept.areas.tolist() == [8.0]
    with pytest.raises(ValueError, match=r"^box 0 = \[-4.0, 0.0, 10.0, 10.0\] lies outside \[0, 10\] x \[0, 10\]"):
        apply_box_policy(boxes, name, within=(10, 10), policy="error")
    with pytest.raises(ValueError, match=r"^box 1 = \[1, 2\] is not 4 numbers"):  # malformed under every policy
        apply_box_policy([[1, 2, 3, 4], [1, 2]], name, within=(10, 10))
    assert not apply_box_policy([], name, within=(10, 10)).counts


# ----------------------------------------------------------------------------------------------- training, evaluation


def test_box_policy_is_a_validated_train_option():
    assert TrainConfig(output_dir="x", max_steps=1).box_policy == "clip"
    with pytest.raises(ValueError, match=r"TrainConfig.box_policy='fix' is invalid: choose 'clip'"):
        TrainConfig(output_dir="x", max_steps=1, box_policy="fix")
    import argparse

    parser = add_arguments(argparse.ArgumentParser())
    assert parser.parse_args(["--output_dir", "x", "--box_policy", "drop"]).box_policy == "drop"
    with pytest.raises(SystemExit):
        parser.parse_args(["--output_dir", "x", "--box_policy", "fix"])


@pytest.mark.usefixtures("one_thread")
def test_defective_folder_trains_and_evaluates(defective, tmp_path, caplog):
    root, _ = defective
    config = TrainConfig(
        output_dir=str(tmp_path / "run"),
        dataset=str(root),
        eval_split="validation",
        model_kwargs=TINY_MODEL,
        cpu=True,
        image_size=64,
        per_device_train_batch_size=2,
        per_device_eval_batch_size=2,
        max_steps=2,
        logging_steps=1,
        disable_tqdm=True,
        save_steps=0,
        report_to="none",
    )
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        result = train(config)
    assert CLIP_SUMMARY in caplog.text
    assert result.global_step == 2 and {"map", "map_50"} <= set(result.metrics)
    assert all(math.isfinite(entry["loss"]) for entry in result.log_history if "loss" in entry)

    validation = load_data(str(root), ["validation"])["validation"]
    metrics = evaluate(result.model, result.image_processor, validation, batch_size=2)
    assert 0.0 <= metrics["map"] <= 1.0
    # the batches of the defective images: every box normalized inside its image
    batch = DetectionCollator(result.image_processor, do_resize=True)([DetectionDataset(validation)[0]])
    assert batch["pixel_values"].shape[1] == 3 and bool((batch["labels"][0]["boxes"] <= 1).all())

    # with every defect in the folder, the check names a box that is not finite first
    with pytest.raises(
        ValueError,
        match=r"annotation id 8 \(image_id 5, 'degenerate.png'\): bbox = \[nan, 3.0, 4.0, "
        r"5.0\] is NaN or infinite",
    ):
        train(TrainConfig(**{**vars(config), "box_policy": "error", "output_dir": str(tmp_path / "err")}))


@pytest.mark.usefixtures("one_thread")
def test_trainer_example_follows_the_box_policy(defective, tmp_path):
    root, _ = defective
    script = load_script(EXAMPLE)
    start = tmp_path / "start"
    tiny = dict(d_model=32, encoder_layers=1, decoder_layers=1, encoder_ffn_dim=64, decoder_ffn_dim=64, num_queries=8)
    HfDetrForObjectDetection(HfDetrConfig(**tiny_config_kwargs(**tiny))).save_pretrained(start)
    args = [
        "--model_name_or_path",
        str(start),
        "--dataset",
        str(root),
        "--image_size",
        "64",
        "--max_size",
        "112",
        "--do_train",
        "--do_eval",
        "--max_steps",
        "2",
        "--per_device_train_batch_size",
        "2",
        "--per_device_eval_batch_size",
        "2",
        "--eval_strategy",
        "no",
        "--save_strategy",
        "no",
        "--load_best_model_at_end",
        "false",
        "--use_cpu",
        "--report_to",
        "none",
        "--disable_tqdm",
        "true",
        "--dataloader_num_workers",
        "0",
        "--logging_steps",
        "1",
    ]
    with pytest.raises(
        ValueError,
        match=r"^instances_train.json: annotation id 8 \(image_id 5, 'degenerate.png'\): "
        r"bbox = \[nan, 3.0, 4.0, 5.0\] is NaN or infinite",
    ):
        script.main([*args, "--output_dir", str(tmp_path / "error"), "--box_policy", "error"])
    metrics = script.main([*args, "--output_dir", str(tmp_path / "clip")])
    assert math.isfinite(metrics["train_loss"]) and "eval_map" in metrics


@pytest.mark.parametrize(
    "command",
    [
        ["evaluate", "{model}", "--dataset", "{root}", "--split", "train"],
        ["export", "{model}", "{out}", "--dataset", "{root}", "--split", "train"],
        ["demo", "--dataset", "{root}", "--output_dir", "{out}"],
        ["check-data", "{root}"],
    ],
    ids=lambda command: command[0],
)
def test_every_command_that_loads_data_follows_the_box_policy(defective, model_dir, tmp_path, capsys, command):
    from hf_detr.apps.cli import main

    root, _ = defective
    argv = [part.format(model=model_dir, root=root, out=tmp_path / "out") for part in command]
    assert main([*argv, "--box_policy", "error"]) == 1
    printed = capsys.readouterr()
    # the loader's message (check-data lists each defect on stdout, then counts them on stderr)
    assert re.search(
        r"instances_train.json: annotation id \d+ \(image_id .*box_policy='error'", printed.out + printed.err
    )
    assert not (tmp_path / "out" / "model.onnx").exists() and not (tmp_path / "out" / "run").exists()
