"""Segmentation data: masks through the loaders (COCO instances and panoptic folders, save_to_disk data sets, the
synthetic shapes), their checks, the augmentation and the batches (issue #13)."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import numpy as np
import PIL.Image
import pytest
import torch
from pycocotools import mask as coco_mask
from torchvision.ops import masks_to_boxes
from torchvision.transforms import v2

from hf_detr.data import (
    coco_detection_features,
    coco_isthing,
    load_coco_folder,
    load_data,
    load_detection_dataset,
    mask_references,
)
from hf_detr.data.collate import DetectionCollator, DetectionDataset
from hf_detr.data.synthetic import SHAPES, make_synthetic_dataset, render_image
from hf_detr.data.transforms import make_train_transform, training_transform, transform_example
from hf_detr.modeling import HfDetrImageProcessor

HEIGHT, WIDTH = 20, 30  # image a


def _mask(shape, *rectangles):
    """A hand-drawn bool mask: the union of (rows, cols) slices."""
    mask = np.zeros(shape, dtype=bool)
    for rows, cols in rectangles:
        mask[rows, cols] = True
    return mask


def _uncompressed(mask):
    """COCO's uncompressed RLE of a mask, counted by hand: column-major runs, starting with background."""
    flat = mask.flatten(order="F").astype(int)
    changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    return {"size": list(mask.shape), "counts": np.diff(np.concatenate([[0], changes])).tolist()}


def _compressed(mask):
    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": list(mask.shape), "counts": rle["counts"].decode("ascii")}


# image a: (mask, bbox, category, iscrowd, segmentation as the json gives it)
L_SHAPE = _mask((HEIGHT, WIDTH), (slice(4, 8), slice(15, 25)), (slice(8, 16), slice(15, 19)))
CROWD = _mask((HEIGHT, WIDTH), (slice(12, 18), slice(2, 8)))
TWO_PARTS = _mask((HEIGHT, WIDTH), (slice(14, 19), slice(22, 26)), (slice(10, 12), slice(26, 29)))
A_OBJECTS = [
    (_mask((HEIGHT, WIDTH), (slice(2, 8), slice(3, 11))), [3, 2, 8, 6], 1, 0, [[3, 2, 11, 2, 11, 8, 3, 8]]),
    (L_SHAPE, [15, 4, 10, 12], 2, 0, [[15, 4, 25, 4, 25, 8, 19, 8, 19, 16, 15, 16]]),
    (CROWD, [2, 12, 6, 6], 1, 1, _uncompressed(CROWD)),
    (TWO_PARTS, [22, 10, 7, 9], 2, 0, _compressed(TWO_PARTS)),
    # a box reaching 4 px outside the image: clipped, its mask kept
    (_mask((HEIGHT, WIDTH), (slice(0, 3), slice(24, 30))), [24, 0, 10, 3], 1, 0, [[24, 0, 30, 0, 30, 3, 24, 3]]),
]
DROPPED = ([40, 5, 5, 5], 2, [[0, 0, 2, 0, 2, 2]])  # a box outside the image: dropped with its mask
# image b: one object of two polygons
B_SIZE = (16, 12)
B_MASK = _mask(B_SIZE, (slice(1, 4), slice(1, 5)), (slice(9, 14), slice(6, 11)))
B_POLYGONS = [[1, 1, 5, 1, 5, 4, 1, 4], [6, 9, 11, 9, 11, 14, 6, 14]]
COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255)]


def _image(shape, masks=()):
    """Black, each mask painted in its COLOURS entry."""
    pixels = np.zeros((*shape, 3), dtype=np.uint8)
    for mask, colour in zip(masks, COLOURS):
        pixels[mask] = colour
    return PIL.Image.fromarray(pixels)


def _expected_a():
    return np.stack([mask for mask, *_ in A_OBJECTS])


def _write_instances(root: Path, edit=None) -> Path:
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "train").mkdir()
    _image((HEIGHT, WIDTH), _expected_a()).save(root / "train" / "a.png")
    _image(B_SIZE, [B_MASK]).save(root / "train" / "b.png")
    _image((10, 10)).save(root / "train" / "c.png")
    annotations = [
        {"id": k + 1, "image_id": 1, "bbox": bbox, "category_id": category, "iscrowd": crowd, "segmentation": seg}
        for k, (_, bbox, category, crowd, seg) in enumerate(A_OBJECTS)
    ]
    annotations.append(
        {"id": 6, "image_id": 1, "bbox": DROPPED[0], "category_id": DROPPED[1], "segmentation": DROPPED[2]}
    )
    annotations.append({"id": 7, "image_id": 2, "bbox": [1, 1, 10, 13], "category_id": 1, "segmentation": B_POLYGONS})
    coco = {
        "images": [
            {"id": 1, "file_name": "a.png", "width": WIDTH, "height": HEIGHT},
            {"id": 2, "file_name": "b.png", "width": B_SIZE[1], "height": B_SIZE[0]},
            {"id": 3, "file_name": "c.png", "width": 10, "height": 10},
        ],
        "annotations": annotations,
        "categories": [{"id": 1, "name": "box"}, {"id": 2, "name": "ell"}],
    }
    if edit is not None:
        edit(coco)
    (root / "annotations" / "instances_train.json").write_text(json.dumps(coco))
    return root


def _decoded(objects, size):
    rles = objects["segmentation"]
    return np.stack([coco_mask.decode(rle).astype(bool) for rle in rles]) if rles else np.zeros((0, *size), bool)


def _assert_instances(split):
    a, b, c = split
    assert a["objects"]["id"] == [1, 2, 3, 4, 5]  # id 6 dropped (outside the image) with its mask
    assert a["objects"]["bbox"][4] == [24.0, 0.0, 6.0, 3.0]  # clipped; its mask kept as drawn
    assert a["objects"]["iscrowd"] == [0, 0, 1, 0, 0]
    rles = a["objects"]["segmentation"]
    assert all(rle["size"] == [HEIGHT, WIDTH] and isinstance(rle["counts"], str) for rle in rles)
    np.testing.assert_array_equal(_decoded(a["objects"], (HEIGHT, WIDTH)), _expected_a())
    np.testing.assert_array_equal(_decoded(b["objects"], B_SIZE), B_MASK[None])
    assert c["objects"]["segmentation"] == []


def test_coco_instances_folder_gives_the_hand_drawn_masks(tmp_path):
    root = _write_instances(tmp_path)
    loaded = load_detection_dataset(root, masks=True)["train"]
    assert loaded.features == coco_detection_features(["box", "ell"], masks=True)
    _assert_instances(list(loaded))
    streamed = load_coco_folder(root, masks=True, streaming=True)["train"]
    _assert_instances(list(streamed))
    # detection-only loading is unchanged: the same rows without `segmentation`, the schema without it
    boxes_only = load_detection_dataset(root)["train"]
    assert boxes_only.features == coco_detection_features(["box", "ell"])
    for with_masks, without in zip(loaded, boxes_only):
        assert {**with_masks["objects"], "segmentation": None} == {**without["objects"], "segmentation": None}
        assert np.array_equal(np.asarray(with_masks["image"]), np.asarray(without["image"]))


def _save_hub_like(path: Path, segmentations, segmentation_feature, image_id=5) -> Path:
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "image_id": datasets.Value("int64"),
            "width": datasets.Value("int32"),
            "height": datasets.Value("int32"),
            "objects": datasets.Sequence(
                {
                    "bbox": datasets.Sequence(datasets.Value("float32"), length=4),
                    "category": datasets.ClassLabel(names=["box", "ell"]),
                    "segmentation": segmentation_feature,
                }
            ),
        }
    )
    objects = {
        "bbox": [bbox for _, bbox, *_ in A_OBJECTS],
        "category": [c - 1 for *_, c, _, _ in A_OBJECTS],
        "segmentation": segmentations,
    }
    row = {"image": _image((HEIGHT, WIDTH)), "image_id": image_id, "width": WIDTH, "height": HEIGHT, "objects": objects}
    datasets.DatasetDict({"train": datasets.Dataset.from_list([row], features=features)}).save_to_disk(str(path))
    return path


POLYGONS = datasets.Sequence(datasets.Sequence(datasets.Value("float32")))
RLE = {"size": datasets.Sequence(datasets.Value("int32")), "counts": datasets.Value("string")}


@pytest.mark.parametrize("form", ["polygons", "rle"])
def test_save_to_disk_data_set_with_segmentation_gives_the_hand_drawn_masks(tmp_path, form):
    if form == "polygons":  # the RLE objects of image a drawn as polygons: rectangles of their pixels
        segmentations = [seg if isinstance(seg, list) else _rectangles(mask) for mask, _, _, _, seg in A_OBJECTS]
        path = _save_hub_like(tmp_path / "saved", segmentations, POLYGONS)
    else:
        path = _save_hub_like(tmp_path / "saved", [_compressed(mask) for mask, *_ in A_OBJECTS], RLE)
    loaded = load_data(str(path), masks=True)["train"]
    assert loaded.features == coco_detection_features(["box", "ell"], masks=True)
    (row,) = list(loaded)
    np.testing.assert_array_equal(_decoded(row["objects"], (HEIGHT, WIDTH)), _expected_a())
    assert row["objects"]["bbox"][4] == [24.0, 0.0, 6.0, 3.0]  # clipped by the box policy, its mask kept
    # the same through streaming, and boxes only without masks
    (streamed,) = list(load_detection_dataset(path, masks=True, streaming=True)["train"])
    np.testing.assert_array_equal(_decoded(streamed["objects"], (HEIGHT, WIDTH)), _expected_a())
    assert load_detection_dataset(path)["train"].features == coco_detection_features(["box", "ell"])


def _rectangles(mask):
    """Polygons of a mask made of axis-aligned rectangles: one per run of equal rows."""
    polygons, rows = [], np.flatnonzero(mask.any(1))
    for r in rows:
        cols = np.flatnonzero(mask[r])
        for run in np.split(cols, np.flatnonzero(np.diff(cols) > 1) + 1):
            x0, x1 = int(run[0]), int(run[-1]) + 1
            polygons.append([x0, int(r), x1, int(r), x1, int(r) + 1, x0, int(r) + 1])
    return polygons


# the panoptic folder: image p (HEIGHT x WIDTH) with stuff, a thing and a crowd thing; image q (10 x 12)
SKY = _mask((HEIGHT, WIDTH), (slice(0, 5), slice(0, WIDTH)))
THING = _mask((HEIGHT, WIDTH), (slice(8, 14), slice(4, 12)))
THINGS = _mask((HEIGHT, WIDTH), (slice(15, 20), slice(20, 30)))
Q_THING = _mask((10, 12), (slice(2, 6), slice(3, 9)))
SKY_ID, THING_ID, CROWD_ID, Q_ID = 300, 5 + 256 * 2, 70000, 9


def _png(ids):
    return PIL.Image.fromarray(np.stack([ids % 256, ids // 256 % 256, ids // 65536], -1).astype(np.uint8))


def _write_panoptic(root: Path, extra_id=None) -> Path:
    (root / "annotations" / "panoptic_val").mkdir(parents=True)
    (root / "val").mkdir()
    ids = SKY * SKY_ID + THING * THING_ID + THINGS * CROWD_ID
    if extra_id is not None:
        ids[18, 0] = extra_id
    _png(ids).save(root / "annotations" / "panoptic_val" / "p.png")
    _png(Q_THING * Q_ID).save(root / "annotations" / "panoptic_val" / "q.png")
    _image((HEIGHT, WIDTH), [SKY, THING, THINGS]).save(root / "val" / "p.png")
    _image((10, 12), [Q_THING]).save(root / "val" / "q.png")
    segments = [
        {"id": SKY_ID, "category_id": 7, "bbox": [0, 0, 30, 5], "area": 150, "iscrowd": 0},
        {"id": THING_ID, "category_id": 1, "bbox": [4, 8, 8, 6], "area": 48, "iscrowd": 0},
        {"id": CROWD_ID, "category_id": 1, "bbox": [20, 15, 10, 5], "area": 50, "iscrowd": 1},
    ]
    coco = {
        "images": [
            {"id": 1, "file_name": "p.png", "width": WIDTH, "height": HEIGHT},
            {"id": 2, "file_name": "q.png", "width": 12, "height": 10},
        ],
        "annotations": [
            {"image_id": 1, "file_name": "p.png", "segments_info": segments},
            {
                "image_id": 2,
                "file_name": "q.png",
                "segments_info": [{"id": Q_ID, "category_id": 1, "bbox": [3, 2, 6, 4], "area": 24, "iscrowd": 0}],
            },
        ],
        "categories": [{"id": 1, "name": "thing", "isthing": 1}, {"id": 7, "name": "sky", "isthing": 0}],
    }
    (root / "annotations" / "panoptic_val.json").write_text(json.dumps(coco))
    return root


def test_coco_panoptic_folder_gives_one_object_per_segment_with_its_mask(tmp_path):
    root = _write_panoptic(tmp_path)
    split = load_detection_dataset(root, masks=True)["validation"]
    assert coco_isthing(split) == [True, False]  # stuff vs thing of the labels, for panoptic quality
    p, q = list(split)
    assert p["objects"]["id"] == [SKY_ID, THING_ID, CROWD_ID]
    assert p["objects"]["category"] == [1, 0, 0] and p["objects"]["iscrowd"] == [0, 0, 1]
    assert p["objects"]["bbox"] == [[0, 0, 30, 5], [4, 8, 8, 6], [20, 15, 10, 5]]
    assert p["objects"]["area"] == [150, 48, 50]
    np.testing.assert_array_equal(_decoded(p["objects"], (HEIGHT, WIDTH)), np.stack([SKY, THING, THINGS]))
    np.testing.assert_array_equal(_decoded(q["objects"], (10, 12)), Q_THING[None])
    # saved and loaded again, the masks and the stuff / thing split stay
    split.save_to_disk(str(tmp_path / "saved"))
    again = load_detection_dataset(tmp_path / "saved", masks=True)["train"]
    assert coco_isthing(again) == [True, False] and again[0]["objects"] == p["objects"]
    # without masks the PNGs are not needed
    boxes_only = load_detection_dataset(root)["validation"]
    assert boxes_only[0]["objects"]["bbox"] == p["objects"]["bbox"] and "segmentation" not in boxes_only[0]["objects"]
    # a folder with both kinds of json (as COCO's annotations folder): instances by default, panoptic on request
    _write_instances(root)
    assert list(load_detection_dataset(root, masks=True)) == ["train"]
    chosen = load_coco_folder(root, masks=True, annotations="panoptic")
    assert list(chosen) == ["validation"] and chosen["validation"][0]["objects"] == p["objects"]


def _set(path, value):
    def edit(coco):
        target = coco
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return edit


@pytest.mark.parametrize(
    "edit, message",
    [
        # a mask whose size differs from its image
        (
            _set(["annotations", 0, "segmentation"], {"size": [21, 30], "counts": [630]}),
            r"instances_train.json: annotation id 1 \(image_id 1, 'a.png'\): segmentation\[\"size\"\] = \[21, 30\] "
            r"differs from its image, \[height, width\] = \[20, 30\]",
        ),
        # a polygon outside the image
        (
            _set(["annotations", 1, "segmentation"], [[15, 4, 45, 4, 45, 8]]),
            r"annotation id 2 \(image_id 1, 'a.png'\): segmentation\[0\] has the point \(x, y\) = \(45, 4\), "
            r"more than 1 pixel outside its 30 x 20",
        ),
        # an RLE that does not decode: too few pixels, a foreign character
        (
            _set(["annotations", 2, "segmentation"], {"size": [20, 30], "counts": [100, 20]}),
            r"annotation id 3 \(image_id 1, 'a.png'\): segmentation\[\"counts\"\] does not decode to a 20 x 30 mask",
        ),
        (
            _set(["annotations", 3, "segmentation"], {"size": [20, 30], "counts": "0 6"}),
            r"annotation id 4 \(image_id 1, 'a.png'\): segmentation\[\"counts\"\] has the character ' '",
        ),
        (
            _set(["annotations", 0, "segmentation"], None),
            r"annotation id 1 \(image_id 1, 'a.png'\): segmentation is "
            r"missing: masks=True needs",
        ),
    ],
    ids=["rle of another size", "polygon outside", "rle runs", "rle character", "missing"],
)
def test_bad_instance_masks_name_the_image_and_the_field(tmp_path, edit, message):
    root = _write_instances(tmp_path, edit)
    with pytest.raises(ValueError, match=message):
        load_detection_dataset(root, masks=True)
    load_detection_dataset(root)  # masks are not read without masks=True


def test_bad_panoptic_and_stored_masks_name_the_image_and_the_field(tmp_path):
    with pytest.raises(
        ValueError,
        match=r"panoptic_val.json: image 'p.png' \(image_id 1\): the panoptic PNG has "
        r"segment ids \[999\] .* that \"segments_info\" does not list",
    ):
        load_detection_dataset(_write_panoptic(tmp_path / "unlisted", extra_id=999), masks=True)
    root = _write_panoptic(tmp_path / "no_pngs")
    (root / "annotations" / "panoptic_val").rename(root / "annotations" / "elsewhere")
    with pytest.raises(ValueError, match=r"panoptic_val.json: no folder of panoptic PNGs, which masks=True reads"):
        load_detection_dataset(root, masks=True)
    # a stored data set: its RLE of another size than its image, and a data set without masks
    rles = [_compressed(mask) for mask, *_ in A_OBJECTS]
    rles[1] = _compressed(np.zeros((WIDTH, HEIGHT), bool))
    saved = _save_hub_like(tmp_path / "saved", rles, RLE)
    with pytest.raises(
        ValueError,
        match=r"split 'train' example 0 \(image_id 5\) object 1: segmentation\[\"size\"\] "
        r"= \[30, 20\] differs from its image, \[height, width\] = \[20, 30\]",
    ):
        load_detection_dataset(saved, masks=True)
    boxes_only = make_synthetic_dataset(1, 0, 0, image_size=32)["train"]
    datasets.DatasetDict({"train": boxes_only}).save_to_disk(str(tmp_path / "boxes_only"))
    with pytest.raises(ValueError, match=r"split 'train': `objects` has no `segmentation` field, which masks=True"):
        load_detection_dataset(tmp_path / "boxes_only", masks=True)
    (tmp_path / "yolo").mkdir()
    (tmp_path / "yolo" / "data.yaml").write_text("names: [box]\ntrain: images/train\n")
    with pytest.raises(ValueError, match=r"yolo is a YOLO data set, which holds boxes only, but masks=True"):
        load_data(str(tmp_path / "yolo"), masks=True)


def test_synthetic_masks_are_the_rendered_visible_pixels():
    with_masks = make_synthetic_dataset(4, 2, 0, image_size=48, seed=3, masks=True)
    without = make_synthetic_dataset(4, 2, 0, image_size=48, seed=3)
    assert with_masks["train"].features == coco_detection_features(SHAPES, masks=True)
    for split_index, split in enumerate(("train", "validation")):
        for index, (row, plain) in enumerate(zip(with_masks[split], without[split])):
            drawn = render_image([3, split_index, index], image_size=48)
            np.testing.assert_array_equal(_decoded(row["objects"], (48, 48)), drawn.masks)
            assert {**row["objects"], "segmentation": None} == {**plain["objects"], "segmentation": None}
            assert np.array_equal(np.asarray(row["image"]), np.asarray(plain["image"]))
    via_sources = load_data(
        "synthetic", ["train"], synthetic_sizes={"train": 2}, synthetic_image_size=48, seed=3, masks=True
    )["train"]
    assert via_sources[1]["objects"] == with_masks["train"][1]["objects"]


# rectangles only: a crop cuts a rectangle into a rectangle, so each augmented mask's box is the augmented box
RECTANGLES = [
    (slice(2, 8), slice(3, 11)),
    (slice(10, 19), slice(1, 6)),
    (slice(0, 6), slice(14, 27)),
    (slice(12, 16), slice(20, 30)),
    (slice(15, 20), slice(8, 9)),
]


def _rectangle_example():
    masks = np.stack([_mask((HEIGHT, WIDTH), rectangle) for rectangle in RECTANGLES])
    boxes = masks_to_boxes(torch.from_numpy(masks)) + torch.tensor([0, 0, 1, 1])  # [x0, y0, x1, y1] pixel edges
    return {
        "image": _image((HEIGHT, WIDTH), masks),
        "image_id": 1,
        "width": WIDTH,
        "height": HEIGHT,
        "objects": {
            "bbox": [[x0, y0, x1 - x0, y1 - y0] for x0, y0, x1, y1 in boxes.tolist()],
            "category": [0, 1, 0, 1, 0],
            "area": masks.sum((1, 2)).tolist(),
            "iscrowd": [0] * 5,
            "id": [1, 2, 3, 4, 5],
            "segmentation": [_compressed(m) for m in masks],
        },
    }


def _assert_aligned(example, tolerance):
    """Each mask's box (pixel edges) is the example's box within `tolerance` pixels; returns the masks."""
    height, width = example["height"], example["width"]
    assert (example["image"].height, example["image"].width) == (height, width)
    masks = torch.from_numpy(_decoded(example["objects"], (height, width)))
    assert len(masks) == len(example["objects"]["bbox"]) and masks.flatten(1).any(1).all()
    boxes = torch.tensor(example["objects"]["bbox"]).reshape(-1, 4)
    torch.testing.assert_close(
        masks_to_boxes(masks) + torch.tensor([0, 0, 1, 1]),
        torch.cat([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], 1),
        atol=tolerance,
        rtol=0,
    )
    return masks


def test_masks_stay_aligned_with_their_boxes_through_flip_resize_and_crop():
    example = _rectangle_example()
    # DETR's recipe with every step forced: flip, an exact first resize (the shorter side is 20), crop, resize
    forced = make_train_transform(
        scales=[28], max_size=60, crop_resize_scales=[20], crop_size=(10, 16), crop_prob=1.0, flip_prob=1.0
    )
    dropped = 0
    for seed in range(6):
        torch.manual_seed(seed)
        out = transform_example(example, forced)
        assert out["height"] == 28 or out["width"] == 28  # resized after the crop
        _assert_aligned(out, 1.0)
        dropped += 5 - len(out["objects"]["id"])
    assert dropped > 0  # the crops cut objects away, and their masks with them
    # the flip alone mirrors each mask exactly; no transform keeps the RLEs as they are
    torch.manual_seed(0)
    flipped = transform_example(example, v2.RandomHorizontalFlip(1.0))
    mirrored = _decoded(example["objects"], (HEIGHT, WIDTH))[..., ::-1]
    np.testing.assert_array_equal(_assert_aligned(flipped, 0.0).numpy(), mirrored)
    # the recipes of training: "flip", and "detr" at a 24-px image size (crop scales 12-18, crops 12-18, scales
    # 14-24), whose crop branch resizes twice: each nearest resize moves a mask edge by less than a pixel of its
    # output, the first one's scaled by the second (at most 24 / 12), so by less than 1 * 2 + 1 pixels in all
    for augment, tolerance in (("flip", 0.0), ("detr", 3.0)):
        for seed in range(4):
            torch.manual_seed(seed)
            _assert_aligned(transform_example(example, training_transform(augment, 24, 40)), tolerance)
    assert training_transform("none", 24, 40) is None


def test_synthetic_shapes_stay_inside_their_boxes_through_the_detr_recipe():
    """Rotated shapes: a crop clips a box to the window while the mask inside may end earlier, so the mask's box lies
    inside the augmented box; it equals it when the flip and a resize alone ran (crop_prob=0), within 1 px of
    rounding plus, when shrinking (48 -> 40 px), the 40/48 px of a one-pixel tip that nearest resizing skips."""
    split = make_synthetic_dataset(3, 0, 0, image_size=48, masks=True)["train"]
    for crop_prob in (0.0, 1.0):
        # the crop branch's first resize is exact (48 px): one rounding resize, after the crop (up by 40/32 or more)
        transform = make_train_transform(
            scales=[40, 56], max_size=100, crop_resize_scales=[48], crop_size=(24, 32), crop_prob=crop_prob
        )
        dataset = DetectionDataset(split, transform, seed=1)
        for index in range(len(split)):
            example = dataset[index]
            masks = torch.from_numpy(_decoded(example["objects"], (example["height"], example["width"])))
            boxes = torch.tensor(example["objects"]["bbox"]).reshape(-1, 4)
            boxes = torch.cat([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], 1)
            mask_boxes = masks_to_boxes(masks) + torch.tensor([0, 0, 1, 1])
            assert masks.flatten(1).any(1).all()
            if crop_prob == 0.0:
                torch.testing.assert_close(mask_boxes, boxes, atol=1.0 + 40 / 48, rtol=0)
            else:
                assert (mask_boxes[:, :2] >= boxes[:, :2] - 1).all() and (mask_boxes[:, 2:] <= boxes[:, 2:] + 1).all()


def _normalized(colour, processor):
    return (torch.tensor(colour) / 255 - torch.tensor(processor.image_mean)) / torch.tensor(processor.image_std)


def test_the_batch_has_masks_at_the_padded_size_on_their_objects(tmp_path):
    split = load_detection_dataset(_write_instances(tmp_path), masks=True)["train"]
    processor = HfDetrImageProcessor(size={"shortest_edge": 24, "longest_edge": 40})
    # the flip (its batches padded, not resized): each mask lies exactly on its object's colour
    dataset = DetectionDataset(split, v2.RandomHorizontalFlip(1.0))
    batch = DetectionCollator(processor)([dataset[0], dataset[1]])
    canvas = batch["pixel_values"].shape[-2:]
    assert canvas == (HEIGHT, WIDTH)
    a, b = batch["labels"]
    assert a["class_labels"].tolist() == [0, 1, 1, 0]  # the crowd object dropped for training, with its mask
    assert a["masks"].shape == (4, *canvas) and b["masks"].shape == (1, *canvas)
    flipped = torch.from_numpy(_expected_a()[[0, 1, 3, 4], :, ::-1].copy())
    assert torch.equal(a["masks"], flipped.float())
    assert torch.equal(b["masks"][0, : B_SIZE[0], : B_SIZE[1]], torch.from_numpy(B_MASK[:, ::-1].copy()).float())
    assert b["masks"][:, B_SIZE[0] :].sum() == 0 and b["masks"][:, :, B_SIZE[1] :].sum() == 0  # the padding
    for k, colour in enumerate(np.array(COLOURS)[[0, 1, 3, 4]]):
        on_mask = batch["pixel_values"][0][:, a["masks"][k].bool()]
        torch.testing.assert_close(
            on_mask, _normalized(colour, processor)[:, None].expand_as(on_mask), atol=1e-5, rtol=0
        )
    # the processor's resize: masks resized with their images, each mask's box on its label box
    resized = DetectionCollator(processor, do_resize=True, keep_crowd=True)([split[0], split[1]])
    canvas = resized["pixel_values"].shape[-2:]
    for label in resized["labels"]:
        height, width = label["size"].tolist()
        assert label["masks"].shape == (len(label["boxes"]), *canvas)
        assert label["masks"][:, height:].sum() == 0 and label["masks"][:, :, width:].sum() == 0
        scale = torch.tensor([width, height, width, height])
        cx, cy, w, h = (label["boxes"] * scale).unbind(1)
        expected = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)
        got = masks_to_boxes(label["masks"][:, :height, :width]) + torch.tensor([0, 0, 1, 1])
        torch.testing.assert_close(got, expected, atol=1.0, rtol=0)
    # detection batches are unchanged: no masks without them
    boxes_only = load_detection_dataset(tmp_path)["train"]
    assert "masks" not in DetectionCollator(processor)([boxes_only[0]])["labels"][0]


def test_evaluation_batches_carry_the_masks_at_the_original_size(tmp_path):
    split = load_detection_dataset(_write_instances(tmp_path), masks=True)["train"]
    processor = HfDetrImageProcessor(size={"shortest_edge": 24, "longest_edge": 40})
    collator = DetectionCollator(processor, do_resize=True, keep_crowd=True, mask_references=True)
    batch = collator([DetectionDataset(split)[i] for i in range(2)])
    a, b = batch["mask_references"]
    assert torch.equal(a["masks"], torch.from_numpy(_expected_a()))  # the original 20 x 30, crowd included
    assert a["labels"].tolist() == [0, 1, 0, 1, 0] and a["iscrowd"].tolist() == [0, 0, 1, 0, 0]
    assert torch.equal(b["masks"], torch.from_numpy(B_MASK[None]))
    assert batch["labels"][0]["masks"].shape[-2:] == batch["pixel_values"].shape[-2:]  # resized ones for the loss
    assert torch.equal(mask_references(split[1])["masks"], b["masks"])
    empty = mask_references(split[2])  # an image without objects
    assert empty["masks"].shape == (0, 10, 10) and empty["labels"].shape == empty["iscrowd"].shape == (0,)
    augmented = DetectionDataset(split, v2.Resize(10))[0]
    with pytest.raises(
        ValueError,
        match=r"image_id=1: mask references are at the original image size \(20, 30\), "
        r"but a transform made the image \(10, 15\)",
    ):
        collator([augmented])
