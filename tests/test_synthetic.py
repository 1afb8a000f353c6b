"""hf_detr.data.synthetic: determinism, schema, and boxes that frame the drawn objects."""

from __future__ import annotations

import datasets
import numpy as np
import pytest

from hf_detr.data import SYNTHETIC, coco_detection_features, id2label, load_data
from hf_detr.data.synthetic import ID2LABEL, SHAPES, make_synthetic_dataset, render_image


def _encoded(ds: datasets.DatasetDict) -> dict[str, list[dict]]:
    """Every split as Python rows with the images as their encoded bytes."""
    return {name: split.cast_column("image", datasets.Image(decode=False)).to_list() for name, split in ds.items()}


@pytest.fixture(scope="module")
def dataset() -> datasets.DatasetDict:
    return make_synthetic_dataset(num_train=40, num_validation=6, num_test=4, seed=3)


def test_same_arguments_give_identical_bytes_and_seeds_differ(dataset):
    again = _encoded(make_synthetic_dataset(num_train=40, num_validation=6, num_test=4, seed=3))
    assert _encoded(dataset) == again

    other = _encoded(make_synthetic_dataset(num_train=40, num_validation=6, num_test=4, seed=4))
    for name in ("train", "validation", "test"):
        assert all(a["image"]["bytes"] != b["image"]["bytes"] for a, b in zip(again[name], other[name]))
    # the splits draw from different streams
    assert again["train"][0]["image"]["bytes"] != again["validation"][0]["image"]["bytes"]
    # image i depends on (seed, split, i) only: a larger request keeps the first images
    first = make_synthetic_dataset(num_train=3, num_validation=0, num_test=0, seed=3)
    assert _encoded(first)["train"] == again["train"][:3]


def test_schema_and_split_sizes(dataset):
    assert {name: len(split) for name, split in dataset.items()} == {"train": 40, "validation": 6, "test": 4}
    features = dataset["train"].features
    assert features == coco_detection_features(SHAPES)
    assert isinstance(features["image"], datasets.Image)
    assert features["image_id"] == datasets.Value("int64")
    assert features["width"] == features["height"] == datasets.Value("int32")
    objects = features["objects"]
    assert objects["id"].feature == datasets.Value("int64")
    assert objects["area"].feature == datasets.Value("float32")
    assert objects["bbox"].feature == datasets.List(datasets.Value("float32"), length=4)
    assert objects["category"].feature.names == list(SHAPES) == list(ID2LABEL.values())
    assert objects["iscrowd"].feature == datasets.Value("int64")
    assert id2label(dataset["train"]) == ID2LABEL

    custom = make_synthetic_dataset(num_train=8, num_validation=0, num_test=0, classes=["star", "ring"], seed=0)
    assert id2label(custom["train"]) == {0: "star", 1: "ring"}
    assert {c for row in custom["train"] for c in row["objects"]["category"]} == {0, 1}


@pytest.mark.parametrize("image_size", [128, (72, 160)])
def test_boxes_inside_images_with_positive_size_and_empty_images_present(image_size):
    ds = make_synthetic_dataset(num_train=40, num_validation=0, num_test=0, image_size=image_size, seed=0)
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    counts = []
    ids = []
    for row in ds["train"]:
        assert row["image"].size == (width, height) == (row["width"], row["height"])
        objects = row["objects"]
        counts.append(len(objects["bbox"]))
        ids += objects["id"]
        assert objects["iscrowd"] == [0] * counts[-1]
        for (x, y, w, h), area in zip(objects["bbox"], objects["area"]):
            assert w > 0 and h > 0
            assert x >= 0 and y >= 0 and x + w <= width and y + h <= height
            assert 0 < area <= w * h
    assert 0 in counts, "some images must hold no object"
    assert max(counts) >= 4
    assert len(set(ids)) == len(ids)
    assert [row["image_id"] for row in ds["train"]] == list(range(40))


def test_dataset_rows_are_the_rendered_images(dataset):
    for index in (0, 7, 21):
        row = dataset["train"][index]
        drawn = render_image([3, 0, index])
        np.testing.assert_array_equal(np.asarray(row["image"]), drawn.image)
        np.testing.assert_array_equal(np.array(row["objects"]["bbox"], dtype=np.float32).reshape(-1, 4), drawn.boxes)
        assert row["objects"]["category"] == drawn.labels.tolist()
        assert row["objects"]["area"] == drawn.areas.tolist()


def test_boxes_are_tight_around_the_drawn_objects():
    checked = 0
    for seed in range(25):
        drawn = render_image([seed, 9, 0], max_occlusion=0.35)
        image = drawn.image.astype(np.float32)
        # visible masks are disjoint: occluded pixels belong to the object on top only
        assert drawn.masks.sum(axis=0).max(initial=0) <= 1
        for box, mask, colour, area in zip(drawn.boxes, drawn.masks, drawn.colours, drawn.areas):
            rows, cols = np.nonzero(mask)
            x, y, w, h = box
            # the box is exactly the extent of the visible pixels (pixel c spans [c, c + 1))
            assert (x, y, x + w, y + h) == (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)
            assert area == mask.sum()
            # the object's colour is what the image shows on its pixels (shading and noise only)...
            distance = np.linalg.norm(image - colour.astype(np.float32), axis=-1)
            assert np.median(distance[mask]) < 30
            # ...and reaches each of the four box edges, so the box is no larger than the drawn object
            x0, y0, x1, y1 = int(x), int(y), int(x + w) - 1, int(y + h) - 1
            for edge in (
                distance[y0, x0 : x1 + 1],
                distance[y1, x0 : x1 + 1],
                distance[y0 : y1 + 1, x0],
                distance[y0 : y1 + 1, x1],
            ):
                assert edge.min() < 40
            # the background around the object does not have its colour, so the object stands out
            ring = np.zeros_like(mask)
            ring[max(y0 - 2, 0) : y1 + 3, max(x0 - 2, 0) : x1 + 3] = True
            ring[y0 : y1 + 1, x0 : x1 + 1] = False
            others = drawn.masks.any(axis=0)
            background = ring & ~others
            if background.any():
                assert np.median(distance[background]) > 40
            checked += 1
    assert checked > 50


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"classes": ["circle", "hexagon"]}, "classes must be distinct names"),
        ({"min_objects": 3, "max_objects": 2}, "min_objects <= max_objects"),
        ({"image_size": 8}, "image_size must be"),
        ({"empty_fraction": 1.5}, "empty_fraction"),
        ({"num_train": -1}, "num_train"),
        ({"scale_range": (0.3, 0.1)}, "scale_range"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_synthetic_dataset(**{"num_train": 1, "num_validation": 0, "num_test": 0, **kwargs})


def test_load_data_names_the_generated_splits():
    """`hf_detr.data.load_data("synthetic", ...)`, the entry point of `hf-detr train`, the demo and the examples."""
    sizes = {"train": 5, "test": 2}
    data = load_data(SYNTHETIC, ["train", "test"], synthetic_sizes=sizes, synthetic_image_size=64, seed=3)
    assert list(data) == ["train", "test"] and {name: len(split) for name, split in data.items()} == sizes
    assert {(row["width"], row["height"]) for row in data["train"]} == {(64, 64)}
    again = load_data(SYNTHETIC, ["train", "test"], synthetic_sizes=sizes, synthetic_image_size=64, seed=3)
    assert _encoded(again) == _encoded(data)  # seeded
    other_seed = load_data(SYNTHETIC, ["train"], synthetic_sizes=sizes, synthetic_image_size=64, seed=4)
    assert list(other_seed) == ["train"] and _encoded(other_seed)["train"] != _encoded(data)["train"]
    with pytest.raises(ValueError, match=r"dataset 'synthetic' has the splits .* not \['val'\]"):
        load_data(SYNTHETIC, ["val"])
