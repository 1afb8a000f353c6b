"""hf_detr.data.transforms: boxes stay on their objects through DETR's augmentation, on Hub-COCO examples."""

from __future__ import annotations

import functools

import datasets
import numpy as np
import PIL.Image
import pytest
from torchvision.transforms import v2

from hf_detr.data.transforms import (
    DETR_MAX_SIZE,
    DETR_TRAIN_SCALES,
    make_train_transform,
    to_coco_annotations,
    transform_batch,
    transform_example,
)

BACKGROUND, FOREGROUND = 50, 230
SMALL = dict(scales=range(96, 161, 16), max_size=267, crop_resize_scales=(80, 100, 120), crop_size=(72, 120))


def rectangle_example(rng: np.random.Generator, width: int = 160, height: int = 120) -> dict:
    """A plain image with one filled rectangle at a random place, and its box in the Hub COCO schema."""
    w, h = int(rng.integers(8, width // 2)), int(rng.integers(8, height // 2))
    x, y = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
    pixels = np.full((height, width, 3), BACKGROUND, dtype=np.uint8)
    pixels[y : y + h, x : x + w] = FOREGROUND
    return {
        "image": PIL.Image.fromarray(pixels),
        "image_id": 7,
        "width": width,
        "height": height,
        "objects": {"bbox": [[x, y, w, h]], "category": [3], "area": [0.5 * w * h], "iscrowd": [0], "id": [11]},
    }


def pixel_extent(image: PIL.Image.Image) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) of the pixels brighter than mid-grey, or None when the rectangle is gone."""
    mask = np.asarray(image)[..., 0] > (BACKGROUND + FOREGROUND) / 2
    if not mask.any():
        return None
    cols, rows = np.flatnonzero(mask.any(0)), np.flatnonzero(mask.any(1))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


@pytest.mark.parametrize("sizes", [{}, SMALL], ids=["detr_defaults", "small_scales"])
def test_augmented_box_frames_the_rectangle(sizes):
    transform = make_train_transform(**sizes)
    rng = np.random.default_rng(0)
    kept = dropped = cut = 0
    for draw in range(200):
        example = rectangle_example(rng)
        out = transform_example(example, transform)
        extent = pixel_extent(out["image"])
        objects = out["objects"]
        assert (out["width"], out["height"]) == out["image"].size
        if not objects["bbox"]:
            # Dropped only when the crop left (almost) nothing of the rectangle.
            assert extent is None or min(extent[2] - extent[0], extent[3] - extent[1]) <= 2, f"draw {draw}"
            dropped += 1
            continue
        x, y, w, h = objects["bbox"][0]
        if extent is None:  # a sub-pixel sliver survives the crop but blurs away in the resize
            assert min(w, h) <= 2, f"draw {draw}"
            continue
        np.testing.assert_allclose([x, y, x + w, y + h], extent, atol=2, err_msg=f"draw {draw}")
        assert objects["category"] == [3] and objects["iscrowd"] == [0] and objects["id"] == [11]
        # area keeps its ratio (0.5) to the box area through resizes and crops
        assert objects["area"][0] == pytest.approx(0.5 * w * h)
        kept += 1
        orig_x, orig_y, orig_w, orig_h = example["objects"]["bbox"][0]
        cut += abs(w / h - orig_w / orig_h) > 0.1 * orig_w / orig_h  # aspect changed: partially cropped away
    # the draws exercised every path
    assert kept > 100 and dropped > 0 and cut > 0, (kept, dropped, cut)


def test_crop_drops_objects_it_cuts_away_with_their_fields():
    example = {
        "image": PIL.Image.new("RGB", (100, 100)),
        "image_id": 1,
        "objects": {
            "bbox": [[0, 0, 20, 20], [45, 45, 10, 10], [25, 25, 20, 20]],
            "category": [0, 1, 2],
            "area": [400.0, 50.0, 400.0],
            "iscrowd": [1, 0, 0],
            "id": [100, 101, 102],
        },
    }
    # Window [30, 70) x [30, 70): the first box is outside it, the third is half inside.
    out = transform_example(example, v2.Compose([v2.CenterCrop(40), v2.SanitizeBoundingBoxes()]))
    assert out["image"].size == (40, 40)
    assert out["objects"] == {
        "bbox": [[15.0, 15.0, 10.0, 10.0], [0.0, 0.0, 15.0, 15.0]],
        "category": [1, 2],
        "area": [50.0, 400.0 * 225 / 400],
        "iscrowd": [0, 0],
        "id": [101, 102],
    }
    assert example["objects"]["id"] == [100, 101, 102], "the input example must not be modified"


def test_train_transform_drops_boxes_outside_every_crop():
    # Boxes at opposite corners of a 100 px image cannot both meet a 50 px window.
    example = {
        "image": PIL.Image.new("RGB", (100, 100)),
        "objects": {"bbox": [[0, 0, 20, 20], [80, 80, 20, 20]], "category": [0, 1]},
    }
    transform = make_train_transform(
        scales=(50,), max_size=100, crop_resize_scales=(100,), crop_size=(50, 50), crop_prob=1.0, flip_prob=0.0
    )
    for _ in range(20):
        out = transform_example(example, transform)
        assert out["image"].size == (50, 50)
        assert len(out["objects"]["bbox"]) == len(out["objects"]["category"]) <= 1
        for (x, y, w, h), category in zip(out["objects"]["bbox"], out["objects"]["category"]):
            # the surviving box is the corner it came from
            assert (x == 0 and y == 0) if category == 0 else (x + w == 50 and y + h == 50)


def test_horizontal_flip_mirrors_pixels_and_boxes():
    pixels = np.random.default_rng(1).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    example = {"image": PIL.Image.fromarray(pixels), "objects": {"bbox": [[10, 20, 30, 40]], "category": [1]}}
    # the only scale equals the shorter side, so the resize is the identity
    flip = make_train_transform(scales=(120,), max_size=1000, crop_prob=0.0, flip_prob=1.0)
    out = transform_example(example, flip)
    np.testing.assert_array_equal(np.asarray(out["image"]), pixels[:, ::-1])
    assert out["objects"]["bbox"] == [[160 - 10 - 30, 20, 30, 40]]
    no_flip = make_train_transform(scales=(120,), max_size=1000, crop_prob=0.0, flip_prob=0.0)
    assert transform_example(example, no_flip)["objects"]["bbox"] == [[10, 20, 30, 40]]


# 428 x 321: RandomShortestSize would truncate 321 * (672 / 321) to 671 here; Resize must not.
@pytest.mark.parametrize("image_size", [(160, 120), (90, 700), (1000, 40), (428, 321)])
def test_resize_bounds(image_size):
    transform = make_train_transform()
    example = {"image": PIL.Image.new("RGB", image_size), "objects": {"bbox": [], "category": []}}
    shorter_sides = set()
    for _ in range(25):
        width, height = transform_example(example, transform)["image"].size
        shorter, longer = min(width, height), max(width, height)
        assert longer <= DETR_MAX_SIZE
        # the shorter side is one of the scales unless the longer side hit the cap
        assert shorter in DETR_TRAIN_SCALES or longer == DETR_MAX_SIZE, (width, height)
        shorter_sides.add(shorter)
    if max(image_size) / min(image_size) < DETR_MAX_SIZE / max(DETR_TRAIN_SCALES):
        assert len(shorter_sides) > 3  # really multi-scale


def test_eval_transform_is_deterministic_and_keeps_every_box():
    pixels = np.random.default_rng(2).integers(0, 256, (120, 200, 3), dtype=np.uint8)
    example = {
        "image": PIL.Image.fromarray(pixels),
        "width": 200,
        "height": 120,
        "objects": {"bbox": [[10, 20, 30, 40], [199.5, 0, 0.5, 0.5]], "category": [1, 2], "area": [600.0, 0.25]},
    }
    transform = v2.Resize(96, max_size=150)  # the resize of the training transforms
    first, second = transform_example(example, transform), transform_example(example, transform)
    np.testing.assert_array_equal(np.asarray(first["image"]), np.asarray(second["image"]))
    assert first["objects"] == second["objects"]
    # 200 x 120 -> shorter side 96 would make the longer 160 > 150, so the longer side is capped: 150 x 90
    assert first["image"].size == (150, 90) and (first["width"], first["height"]) == (150, 90)
    np.testing.assert_allclose(first["objects"]["bbox"], np.array(example["objects"]["bbox"]) * 0.75, atol=1e-4)
    np.testing.assert_allclose(first["objects"]["area"], [600 * 0.75**2, 0.25 * 0.75**2], rtol=1e-5)
    assert first["objects"]["category"] == [1, 2]


def test_with_transform_on_a_dataset_and_coco_annotations():
    features = datasets.Features(
        {
            "image_id": datasets.Value("int64"),
            "image": datasets.Image(),
            "width": datasets.Value("int32"),
            "height": datasets.Value("int32"),
            "objects": datasets.Sequence(
                {
                    "id": datasets.Value("int64"),
                    "area": datasets.Value("float32"),
                    "bbox": datasets.Sequence(datasets.Value("float32"), length=4),
                    "category": datasets.ClassLabel(names=["cat", "dog"]),
                    "iscrowd": datasets.Value("bool"),
                }
            ),
        }
    )
    dataset = datasets.Dataset.from_dict(
        {
            "image_id": [5, 6],
            "image": [PIL.Image.new("RGB", (64, 48)), PIL.Image.new("RGB", (48, 64))],
            "width": [64, 48],
            "height": [48, 64],
            "objects": [
                {
                    "id": [1, 2],
                    "area": [20.0, 30.0],
                    "bbox": [[0, 0, 4, 5], [10, 10, 5, 6]],
                    "category": [0, 1],
                    "iscrowd": [False, True],
                },
                {"id": [], "area": [], "bbox": [], "category": [], "iscrowd": []},
            ],
        },
        features=features,
    )
    transformed = dataset.with_transform(functools.partial(transform_batch, transform=v2.Resize(96, max_size=200)))
    first, second = transformed[0], transformed[1]
    assert first["image"].size == (128, 96) and (first["width"], first["height"]) == (128, 96)
    np.testing.assert_allclose(first["objects"]["bbox"], [[0, 0, 8, 10], [20, 20, 10, 12]], atol=1e-4)
    assert second["image"].size == (96, 128) and second["objects"]["bbox"] == []

    assert to_coco_annotations(first) == {
        "image_id": 5,
        "annotations": [
            {"bbox": pytest.approx([0, 0, 8, 10]), "category_id": 0, "area": pytest.approx(80.0), "iscrowd": 0},
            {"bbox": pytest.approx([20, 20, 10, 12]), "category_id": 1, "area": pytest.approx(120.0), "iscrowd": 1},
        ],
    }
    assert to_coco_annotations(second) == {"image_id": 6, "annotations": []}
    # missing area / iscrowd fall back to the box area / 0
    bare = {"image_id": 1, "objects": {"bbox": [[1, 2, 3, 4]], "category": [0]}}
    assert to_coco_annotations(bare)["annotations"] == [
        {"bbox": [1, 2, 3, 4], "category_id": 0, "area": 12.0, "iscrowd": 0}
    ]


@pytest.mark.parametrize(
    ("objects", "message"),
    # the boxes' values are checked where the data set is loaded (tests/test_data.py, test_real_world_data.py), not
    # again here; the structure of `objects` is what the transform reads
    [
        ({"bbox": [[1, 2, 3, 4]], "category": [0, 1]}, r"objects.category. has 2 entries but .objects.bbox. has 1"),
        ({"category": [0]}, r"image_id=9.*`objects`.*`bbox`"),
    ],
)
def test_bad_objects_raise_value_error_naming_the_example(objects, message):
    example = {"image": PIL.Image.new("RGB", (10, 10)), "image_id": 9, "objects": objects}
    with pytest.raises(ValueError, match=message):
        transform_example(example, v2.Resize(8, max_size=20))


def test_bad_image_and_parameters():
    with pytest.raises(TypeError, match=r"image_id=3.*`image` must be a PIL image"):
        transform_example({"image": np.zeros((4, 4, 3)), "image_id": 3, "objects": {"bbox": []}}, v2.Identity())
    with pytest.raises(ValueError, match="no `image_id`"):
        to_coco_annotations({"objects": {"bbox": [], "category": []}})
    with pytest.raises(ValueError, match=r"`max_size` \(800\) must be larger than every value of `scales`"):
        make_train_transform(max_size=800)
    with pytest.raises(ValueError, match="crop_prob"):
        make_train_transform(crop_prob=1.5)
    with pytest.raises(ValueError, match="min_size <= max_size"):
        make_train_transform(crop_size=(600, 384))
