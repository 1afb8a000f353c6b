"""Segmentation in HfDetrImageProcessor: COCO polygon, RLE and panoptic annotations to masks (against transformers'
DetrImageProcessor), the errors of bad masks, and the semantic, instance and panoptic post-processing (against
DetrImageProcessor on the same outputs, with the one correction on panoptic ids)."""

from __future__ import annotations

import types

import numpy as np
import PIL.Image
import pytest
import torch
from pycocotools import mask as coco_mask
from transformers import DetrImageProcessor

from hf_detr import HfDetrImageProcessor

NUM_LABELS = 5  # logits have NUM_LABELS + 1 entries, the last "no object"
NO_OBJECT = NUM_LABELS
SIZE = {"shortest_edge": 24, "longest_edge": 40}
IMAGE_SIZES = [(30, 40), (45, 37), (26, 26)]  # (height, width): padded into one batch after resizing


# ---------------------------------------------------------------------------------------------- post-processing


def _blob_masks(generator: torch.Generator, queries: int, height: int, width: int) -> torch.Tensor:
    """`[queries, height, width]` mask logits of discs centred on a shuffled 4 x 4 grid, wide enough to overlap their
    neighbours."""
    ys, xs = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    cell = torch.tensor([height / 4, width / 4])
    grid = torch.stack(torch.meshgrid(torch.arange(4), torch.arange(4), indexing="ij"), -1).reshape(-1, 2)
    centers = (grid[torch.randperm(16, generator=generator)[:queries]] + 0.5) * cell
    centers += (torch.rand(queries, 2, generator=generator) - 0.5) * cell * 0.5
    radii = (torch.rand(queries, 1, 1, generator=generator) * 0.6 + 0.5) * cell.min()
    distance = ((ys - centers[:, 0, None, None]) ** 2 + (xs - centers[:, 1, None, None]) ** 2).sqrt()
    return 6.0 * (1.0 - distance / radii) + 0.3 * torch.randn(queries, height, width, generator=generator)


def _outputs(queries_per_image: list[list[tuple[int, float]]], seed: int = 0, mask_size=(24, 32)):
    """Fake segmentation outputs; each query is (label, strength): the label gets logit `strength` above the others,
    so strength 8 passes any threshold, 0 none (a probability of 1/6). Query 0 must score higher than query 2."""
    generator = torch.Generator().manual_seed(seed)
    batch, queries = len(queries_per_image), len(queries_per_image[0])
    logits = torch.randn(batch, queries, NUM_LABELS + 1, generator=generator) * 0.2
    for i, image_queries in enumerate(queries_per_image):
        for q, (label, strength) in enumerate(image_queries):
            logits[i, q, label] += strength
    masks = torch.stack([_blob_masks(generator, queries, *mask_size) for _ in range(batch)])
    # query 2 is query 0's disc moved by 2 pixels: it wins only a sliver (query 0 scores higher), too little of
    # its mask for a segment
    masks[:, 2] = masks[:, 0].roll(2, dims=-1)
    return types.SimpleNamespace(logits=logits, pred_masks=masks)


FUSED = {3, 4}
# Queries of the fused labels come last among those kept: transformers then gives correct ids (see
# test_panoptic_ids_are_never_given_twice for the order where it does not).
QUERIES = [
    [(0, 8), (1, 6), (2, 3), (NO_OBJECT, 8), (1, 0), (0, 5), (2, 7), (1, 4), (3, 7), (0, 0), (4, 6), (4, 4), (4, 9)],
    [(0, 9), (0, 7), (0, 6), (2, 1), (1, 8), (NO_OBJECT, 3), (2, 6), (1, 5), (4, 7), (4, 8), (3, 6), (3, 9), (0, 0)],
    [(NO_OBJECT, 8)] * 6 + [(1, 0)] * 7,  # nothing passes: a map of -1
]
TARGET_SIZES = {
    "none": None,
    "list": [(20, 24), (16, 20), (9, 30)],
    "tensor": torch.tensor([[33, 21], [8, 10], [40, 40]]),
}
THRESHOLDS = {"defaults": (0.5, 0.5, 0.8), "loose": (0.3, 0.35, 0.6)}


def _listed(target_sizes):
    """transformers' segmentation post-processing takes target sizes as a list only (a tensor fails in
    `interpolate`); ours takes both."""
    return target_sizes.tolist() if isinstance(target_sizes, torch.Tensor) else target_sizes


def _assert_same_segments(ours: list[dict], theirs: list[dict]) -> None:
    assert len(ours) == len(theirs)
    for mine, ref in zip(ours, theirs):
        assert mine["segmentation"].dtype == torch.int32
        assert mine["segmentation"].shape == ref["segmentation"].shape
        assert torch.equal(mine["segmentation"], ref["segmentation"].to(torch.int32))
        assert [{k: v for k, v in s.items() if k != "score"} for s in mine["segments_info"]] == [
            {k: v for k, v in s.items() if k != "score"} for s in ref["segments_info"]
        ]
        for a, b in zip(mine["segments_info"], ref["segments_info"]):
            assert abs(a["score"] - b["score"]) <= 1e-6


@pytest.mark.parametrize("thresholds", THRESHOLDS.values(), ids=THRESHOLDS.keys())
@pytest.mark.parametrize("target_sizes", TARGET_SIZES.values(), ids=TARGET_SIZES.keys())
def test_panoptic_matches_transformers(target_sizes, thresholds):
    threshold, mask_threshold, overlap = thresholds
    outputs = _outputs(QUERIES)
    kwargs = {
        "threshold": threshold,
        "mask_threshold": mask_threshold,
        "overlap_mask_area_threshold": overlap,
        "label_ids_to_fuse": FUSED,
    }
    theirs = DetrImageProcessor().post_process_panoptic_segmentation(
        outputs, **kwargs, target_sizes=_listed(target_sizes)
    )
    ours = HfDetrImageProcessor().post_process_panoptic_segmentation(outputs, **kwargs, target_sizes=target_sizes)
    _assert_same_segments(ours, theirs)

    # the case is not trivial: several segments, a fused label with several queries on one id, a query kept by its
    # score but not a segment (its mask mostly lost to others), and an image with nothing
    segments = ours[0]["segments_info"] + ours[1]["segments_info"]
    assert len(ours[0]["segments_info"]) >= 4 and len(ours[1]["segments_info"]) >= 4
    fused_ids = [(s["id"], s["label_id"]) for s in segments if s["was_fused"]]
    assert len(fused_ids) > len(set(fused_ids)) >= 2
    scores, labels = outputs.logits[:2].softmax(-1).max(-1)
    assert len(segments) < ((labels != NO_OBJECT) & (scores > threshold)).sum()
    assert ours[2]["segments_info"] == [] and (ours[2]["segmentation"] == -1).all()
    if target_sizes is not None:
        assert [tuple(r["segmentation"].shape) for r in ours] == [tuple(map(int, s)) for s in target_sizes]
    else:
        assert all(r["segmentation"].shape == (24, 32) for r in ours)


@pytest.mark.parametrize("target_sizes", TARGET_SIZES.values(), ids=TARGET_SIZES.keys())
def test_instance_matches_transformers(target_sizes):
    outputs = _outputs(QUERIES, seed=1)
    theirs = DetrImageProcessor().post_process_instance_segmentation(outputs, 0.4, target_sizes=_listed(target_sizes))
    ours = HfDetrImageProcessor().post_process_instance_segmentation(outputs, 0.4, target_sizes=target_sizes)
    _assert_same_segments(ours, theirs)
    ids = [s["id"] for s in ours[1]["segments_info"]]
    assert len(ids) >= 4 and ids == list(range(1, len(ids) + 1))  # every instance its own id, fused labels too
    assert not any(s["was_fused"] for r in ours for s in r["segments_info"])

    # COCO RLE, one per segment in the order of segments_info, which pycocotools decodes to that segment's pixels
    rles = HfDetrImageProcessor().post_process_instance_segmentation(
        outputs, 0.4, target_sizes=target_sizes, return_coco_annotation=True
    )
    for result, ref in zip(rles, theirs):
        assert [s["id"] for s in result["segments_info"]] == [s["id"] for s in ref["segments_info"]]
        assert len(result["segmentation"]) == len(result["segments_info"])
        for rle, segment in zip(result["segmentation"], result["segments_info"]):
            assert isinstance(rle["counts"], str)
            decoded = torch.from_numpy(coco_mask.decode(rle)).bool()
            assert decoded.any() and torch.equal(decoded, ref["segmentation"] == segment["id"])
    assert rles[2]["segmentation"] == []


@pytest.mark.parametrize("target_sizes", TARGET_SIZES.values(), ids=TARGET_SIZES.keys())
def test_semantic_matches_transformers(target_sizes):
    outputs = _outputs(QUERIES, seed=2)
    reference, processor = DetrImageProcessor(), HfDetrImageProcessor()
    theirs = reference.post_process_semantic_segmentation(outputs, target_sizes=_listed(target_sizes))
    ours = processor.post_process_semantic_segmentation(outputs, target_sizes=target_sizes)
    assert len(ours) == 3
    for mine, ref in zip(ours, theirs):
        assert mine.dtype == torch.int64 and torch.equal(mine, ref)
    assert len(torch.unique(ours[0])) >= 3

    theirs = reference.post_process_semantic_segmentation(
        outputs, _listed(target_sizes), return_segmentation_scores=True
    )
    ours = processor.post_process_semantic_segmentation(outputs, target_sizes, return_segmentation_scores=True)
    for mine, ref in zip(ours, theirs):
        assert torch.equal(mine.segmentation, ref.segmentation)
        assert mine.segmentation_scores.shape == (NUM_LABELS, *mine.segmentation.shape)
        torch.testing.assert_close(mine.segmentation_scores, ref.segmentation_scores, atol=1e-6, rtol=0)


def test_panoptic_ids_are_never_given_twice():
    """Queries: label 1 (fused), label 2, label 1 again, label 3, each owning one quadrant. transformers continues
    counting from the fused id when label 1 reappears and gives the label-3 segment id 2, which the label-2 segment
    already has; here it gets 3."""
    logits = torch.full((1, 4, NUM_LABELS + 1), -10.0)
    logits[0, torch.arange(4), torch.tensor([1, 2, 1, 3])] = 10.0
    masks = torch.full((1, 4, 4, 4), -10.0)
    quadrants = [
        (slice(0, 2), slice(0, 2)),
        (slice(0, 2), slice(2, 4)),
        (slice(2, 4), slice(0, 2)),
        (slice(2, 4), slice(2, 4)),
    ]
    for q, (rows, cols) in enumerate(quadrants):
        masks[0, q, rows, cols] = 10.0
    outputs = types.SimpleNamespace(logits=logits, pred_masks=masks)
    (result,) = HfDetrImageProcessor().post_process_panoptic_segmentation(outputs, label_ids_to_fuse={1})
    expected = torch.tensor([[1, 1, 2, 2], [1, 1, 2, 2], [1, 1, 3, 3], [1, 1, 3, 3]], dtype=torch.int32)
    assert torch.equal(result["segmentation"], expected)
    assert [(s["id"], s["label_id"], s["was_fused"]) for s in result["segments_info"]] == [
        (1, 1, True),
        (2, 2, False),
        (1, 1, True),
        (3, 3, False),
    ]


def test_the_overlap_ratio_is_compared_as_transformers_does():
    """Query 0 has 5 confident pixels and wins 4 (query 1 scores higher on the shared one): 4 / 5 in float32 is
    0.800000012 > 0.8, so transformers keeps it as a segment at overlap_mask_area_threshold=0.8, and so do we."""
    logits = torch.zeros(1, 2, NUM_LABELS + 1)
    logits[0, 0, 1], logits[0, 1, 2] = 3.0, 10.0  # scores 0.80 and 1.0
    masks = torch.full((1, 2, 1, 10), -10.0)
    masks[0, 0, 0, :5], masks[0, 1, 0, 4:] = 10.0, 10.0
    outputs = types.SimpleNamespace(logits=logits, pred_masks=masks)
    (ours,) = HfDetrImageProcessor().post_process_panoptic_segmentation(outputs, overlap_mask_area_threshold=0.8)
    assert ours["segmentation"].tolist() == [[1, 1, 1, 1, 2, 2, 2, 2, 2, 2]]
    (theirs,) = DetrImageProcessor().post_process_panoptic_segmentation(outputs, overlap_mask_area_threshold=0.8)
    _assert_same_segments([ours], [theirs])


@pytest.mark.parametrize(
    "call, error, message",
    [
        (
            lambda p: p.post_process_panoptic_segmentation(types.SimpleNamespace(logits=torch.zeros(1, 3, 4))),
            TypeError,
            r"no `pred_masks`",
        ),
        (
            lambda p: p.post_process_semantic_segmentation(
                types.SimpleNamespace(logits=torch.zeros(1, 3, 4), pred_masks=torch.zeros(1, 2, 8, 8))
            ),
            ValueError,
            r"`pred_masks` \[batch, queries, height, width\]",
        ),
        (
            lambda p: p.post_process_instance_segmentation(_outputs(QUERIES), target_sizes=[(8, 8)]),
            ValueError,
            r"one \(height, width\) per image",
        ),
        (
            lambda p: p.post_process_instance_segmentation(_outputs(QUERIES), target_sizes=[(8, 8.5)] * 3),
            ValueError,
            r"positive whole",
        ),
        (
            lambda p: p.post_process_panoptic_segmentation(_outputs(QUERIES), mask_threshold=2),
            ValueError,
            r"`mask_threshold` must be a number in \[0, 1\]",
        ),
        (
            lambda p: p.post_process_panoptic_segmentation(_outputs(QUERIES), label_ids_to_fuse=3),
            TypeError,
            r"`label_ids_to_fuse` must be a set",
        ),
    ],
)
def test_bad_post_processing_input(call, error, message):
    with pytest.raises(error, match=message):
        call(HfDetrImageProcessor())


# ------------------------------------------------------------------------------------------ annotations to masks


def _image(rng: np.random.Generator, height: int, width: int) -> PIL.Image.Image:
    return PIL.Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def _polygon(rng: np.random.Generator, height: int, width: int) -> list[float]:
    """A random star-shaped polygon inside the image (one point on its right border)."""
    center = rng.uniform([width * 0.3, height * 0.3], [width * 0.7, height * 0.7])
    angles = np.sort(rng.uniform(0, 2 * np.pi, 7))
    radii = rng.uniform(3, min(height, width) * 0.4, 7)
    points = np.clip(center + np.stack([np.cos(angles), np.sin(angles)], 1) * radii[:, None], 0, [width, height])
    points[0, 0] = width
    return points.round(2).ravel().tolist()


def _detection_annotations(rng: np.random.Generator) -> tuple[list[dict], list[dict], list]:
    """Per image: objects with polygons (one with two polygons) and RLEs, as uncompressed RLE (which transformers
    reads) and, for the same objects, compressed RLE; with the images."""
    images, uncompressed, compressed = [], [], []
    for i, (height, width) in enumerate(IMAGE_SIZES):
        images.append(_image(rng, height, width))
        objects, objects_compressed = [], []
        for k in range(4):
            if k == 3:  # a random blob mask as RLE
                mask = np.zeros((height, width), np.uint8)
                y, x = rng.integers(0, height - 8), rng.integers(0, width - 8)
                mask[y : y + 8, x : x + rng.integers(3, 8)] = 1
                mask[y + 2 : y + 5, x : x + 3] = 0
                segmentation = {"size": [height, width], "counts": _runs(mask)}
                segmentation_compressed = {
                    "size": [height, width],
                    "counts": coco_mask.encode(np.asfortranarray(mask))["counts"].decode(),
                }
            else:
                segmentation = [_polygon(rng, height, width)] + ([_polygon(rng, height, width)] if k == 1 else [])
                segmentation_compressed = segmentation
            box_mask = coco_mask.decode(coco_mask.frPyObjects(segmentation, height, width))
            box_mask = box_mask.any(-1) if box_mask.ndim == 3 else box_mask
            ys, xs = np.nonzero(box_mask)
            bbox = [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]
            obj = {"bbox": bbox, "category_id": int(rng.integers(1, 91)), "area": float(box_mask.sum()), "iscrowd": 0}
            objects.append({**obj, "segmentation": segmentation})
            objects_compressed.append({**obj, "segmentation": segmentation_compressed})
        uncompressed.append({"image_id": 10 + i, "annotations": objects})
        compressed.append({"image_id": 10 + i, "annotations": objects_compressed})
    return uncompressed, compressed, images


def _runs(mask: np.ndarray) -> list[int]:
    """Uncompressed COCO RLE counts of a mask (column-major, starting with background)."""
    values = mask.ravel(order="F")
    boundaries = np.flatnonzero(values[1:] != values[:-1]) + 1
    lengths = np.diff(np.concatenate([[0], boundaries, [values.size]])).tolist()
    return ([0] if values[0] else []) + lengths


def _assert_labels_match(ours, theirs) -> None:
    """Ours equal transformers' labels; boxes after mapping transformers' padded-canvas normalization onto the
    unpadded image, the convention of HfDetrImageProcessor (see its docstring)."""
    torch.testing.assert_close(ours["pixel_values"], theirs["pixel_values"], atol=1e-5, rtol=0)
    assert torch.equal(ours["pixel_mask"], theirs["pixel_mask"])
    canvas = torch.tensor(ours["pixel_values"].shape[-2:])
    for mine, ref in zip(ours["labels"], theirs["labels"], strict=True):
        assert torch.equal(mine["class_labels"], ref["class_labels"])
        assert mine["masks"].dtype == torch.float32 and mine["masks"].shape == (len(mine["boxes"]), *canvas.tolist())
        assert torch.equal(mine["masks"], ref["masks"].float())
        height, width = mine["size"].tolist()
        scale = torch.stack([canvas[1] / width, canvas[0] / height] * 2).float()
        torch.testing.assert_close(mine["boxes"], ref["boxes"] * scale, atol=1e-5, rtol=0)
        torch.testing.assert_close(mine["area"], ref["area"], atol=1e-3, rtol=1e-5)
        assert mine["masks"][:, height:].sum() == 0 and mine["masks"][:, :, width:].sum() == 0  # padding


def test_polygon_and_rle_masks_match_transformers():
    uncompressed, compressed, images = _detection_annotations(np.random.default_rng(0))
    theirs = DetrImageProcessor(size=SIZE)(
        images=images, annotations=uncompressed, return_segmentation_masks=True, return_tensors="pt"
    )
    processor = HfDetrImageProcessor(size=SIZE)
    ours = processor(images=images, annotations=uncompressed, return_segmentation_masks=True, return_tensors="pt")
    _assert_labels_match(ours, theirs)
    assert len({tuple(label["size"].tolist()) for label in ours["labels"]}) == 3  # three sizes, padded
    assert all(label["masks"].flatten(1).sum(1).min() > 4 for label in ours["labels"])
    # compressed RLE (which transformers cannot read) gives the same masks
    same = processor(images=images, annotations=compressed, return_segmentation_masks=True, return_tensors="pt")
    for a, b in zip(same["labels"], ours["labels"]):
        assert torch.equal(a["masks"], b["masks"])
    # and absolute boxes (do_convert_annotations=False) equal transformers' without any mapping
    kwargs = {"size": SIZE, "do_convert_annotations": False}
    absolute = HfDetrImageProcessor(**kwargs)(images=images, annotations=uncompressed, return_segmentation_masks=True)
    reference = DetrImageProcessor(**kwargs)(images=images, annotations=uncompressed, return_segmentation_masks=True)
    for a, b in zip(absolute["labels"], reference["labels"]):
        torch.testing.assert_close(a["boxes"], b["boxes"], atol=1e-5, rtol=0)
        assert torch.equal(a["masks"], b["masks"].float())
    # without the option, no masks (the default for coco_detection)
    assert "masks" not in processor(images=images, annotations=uncompressed)["labels"][0]


def test_masks_follow_their_objects_when_objects_are_dropped():
    """Crowd objects and objects without area are dropped with their masks (transformers fails on crowd objects
    with masks); an unresized image keeps the decoded masks as they are."""
    height, width = 20, 30
    square = [[2, 2, 12, 2, 12, 12, 2, 12]]  # x in [2, 12), y in [2, 12)
    crowd = {"size": [height, width], "counts": [height * 20, height * 5, height * 5]}  # columns 20..24
    objects = [
        {"bbox": [2, 2, 10, 10], "category_id": 1, "segmentation": square},
        {"bbox": [20, 0, 5, 20], "category_id": 2, "iscrowd": 1, "segmentation": crowd},
        {"bbox": [40, 5, 5, 5], "category_id": 3, "segmentation": [[29, 5, 30, 5, 30, 10]]},  # box outside
        {"bbox": [25, 1, 4, 4], "category_id": 4, "segmentation": [[25, 1, 29, 1, 29, 5, 25, 5], [1, 1, 2, 2]]},
    ]
    processor = HfDetrImageProcessor(do_resize=False)
    image = PIL.Image.new("RGB", (width, height))
    labels = processor(
        images=image, annotations={"image_id": 1, "annotations": objects}, return_segmentation_masks=True
    )["labels"][0]
    assert labels["class_labels"].tolist() == [1, 4]
    expected = torch.zeros(2, height, width)
    expected[0, 2:12, 2:12] = 1
    expected[1, 1:5, 25:29] = 1  # the 2-point polygon encloses nothing
    assert torch.equal(labels["masks"], expected)
    kept = processor(
        images=image,
        annotations={"image_id": 1, "annotations": objects},
        keep_crowd=True,
        return_segmentation_masks=True,
    )["labels"][0]
    assert kept["class_labels"].tolist() == [1, 2, 4]
    assert kept["masks"][1].sum() == height * 5 and kept["masks"][1, :, 20:25].all()


def _panoptic_png(rng: np.random.Generator, height: int, width: int, segment_ids: list[int]) -> np.ndarray:
    """An RGB panoptic PNG: vertical bands of the ids (the last band unlabeled, id 0), then a random rectangle."""
    ids = np.zeros((height, width), np.int64)
    bounds = np.linspace(0, width, len(segment_ids) + 2).astype(int)
    for segment_id, start, stop in zip(segment_ids, bounds[:-1], bounds[1:]):
        ids[:, start:stop] = segment_id
    y, x = rng.integers(0, height - 6), rng.integers(0, width - 6)
    ids[y : y + 6, x : x + 5] = segment_ids[0]
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536], -1).astype(np.uint8)


def _panoptic_annotations(rng, tmp_path):
    images, annotations, pngs = [], [], []
    for i, (height, width) in enumerate(IMAGE_SIZES):
        segment_ids = [int(v) for v in rng.choice([1, 300, 70000, 5 + 256 * 9 + 65536 * 2, 42], 4, replace=False)]
        png = _panoptic_png(rng, height, width, segment_ids)
        PIL.Image.fromarray(png).save(tmp_path / f"{i}.png")
        images.append(_image(rng, height, width))
        pngs.append(png)
        segments = [
            {
                "id": segment_id,
                "category_id": int(rng.integers(1, 200)),
                "iscrowd": int(k == 2),
                "bbox": [0, 0, 1, 1],
                "area": float(rng.uniform(10, 100)),
            }
            for k, segment_id in enumerate(segment_ids)
        ]
        annotations.append({"image_id": 20 + i, "file_name": f"{i}.png", "segments_info": segments})
    return images, annotations, pngs


def test_panoptic_masks_match_transformers(tmp_path):
    images, annotations, pngs = _panoptic_annotations(np.random.default_rng(1), tmp_path)
    theirs = DetrImageProcessor(size=SIZE, format="coco_panoptic")(
        images=images, annotations=annotations, masks_path=tmp_path, return_tensors="pt"
    )
    processor = HfDetrImageProcessor(size=SIZE, format="coco_panoptic", keep_crowd=True)  # transformers keeps crowd
    ours = processor(images=images, annotations=annotations, masks_path=tmp_path, return_tensors="pt")
    _assert_labels_match(ours, theirs)
    assert all(len(label["class_labels"]) == 4 and label["iscrowd"].sum() == 1 for label in ours["labels"])
    # the PNG given directly, as a PIL image or as pixels, is read the same way
    direct = [
        {**a, "panoptic_png": PIL.Image.fromarray(png) if i % 2 else png}
        for i, (a, png) in enumerate(zip(annotations, pngs))
    ]
    same = processor(images=images, annotations=direct, return_tensors="pt")
    for a, b in zip(same["labels"], ours["labels"]):
        assert torch.equal(a["masks"], b["masks"]) and torch.equal(a["boxes"], b["boxes"])
    # crowd segments are dropped by default, and masks are left out on request
    default = HfDetrImageProcessor(size=SIZE, format="coco_panoptic")(
        images=images, annotations=direct, return_segmentation_masks=False
    )
    for a, b in zip(default["labels"], ours["labels"]):
        assert "masks" not in a and torch.equal(a["boxes"], b["boxes"][b["iscrowd"] == 0])


def test_a_listed_segment_without_pixels_is_dropped():
    png = np.zeros((10, 12, 3), np.uint8)
    png[:, 6:, 0] = 7  # segment 7 on the right half; segment 9 is listed but has no pixel
    segments = [{"id": 9, "category_id": 1}, {"id": 7, "category_id": 2}]
    labels = HfDetrImageProcessor(do_resize=False, format="coco_panoptic")(
        images=PIL.Image.new("RGB", (12, 10)),
        annotations={"image_id": 3, "segments_info": segments, "panoptic_png": png},
    )["labels"][0]
    assert labels["class_labels"].tolist() == [2]
    assert labels["area"].tolist() == [60.0]  # the pixel count without an "area"
    # masks_to_boxes' maximum is the last pixel's index, as in transformers: x in [6, 11], y in [0, 9]
    torch.testing.assert_close(labels["boxes"], torch.tensor([[8.5 / 12, 4.5 / 10, 5 / 12, 9 / 10]]))
    assert labels["masks"].sum() == 60 and labels["masks"][0, :, 6:].all()


def _detection(segmentation):
    return {"image_id": 5, "annotations": [{"bbox": [1, 1, 4, 4], "category_id": 1, "segmentation": segmentation}]}


def _panoptic(png, segments=({"id": 7, "category_id": 1},)):
    return {"image_id": 6, "segments_info": list(segments), "panoptic_png": png}


_PNG = np.zeros((10, 12, 3), np.uint8)
_PNG[2:5, 2:5, 0] = 7
_PNG_UNLISTED = _PNG.copy()
_PNG_UNLISTED[8:, 8:] = (1, 1, 0)  # id 257


@pytest.mark.parametrize(
    "annotation, kwargs, message",
    [
        # a mask whose size differs from its image
        (
            _detection({"size": [12, 10], "counts": [120]}),
            {},
            r'\["segmentation"\] \(image_id 5\)\["size"\] = '
            r"\[12, 10\] differs from its image, \[height, width\] = \[10, 12\]",
        ),
        (
            _panoptic(np.zeros((12, 10, 3), np.uint8)),
            {"format": "coco_panoptic"},
            r'\["panoptic_png"\] \(image_id 6\) is 12 x 10 \(height x width\), but its image is 10 x 12',
        ),
        # a polygon with a point more than 1 px outside the image
        (
            _detection([[1, 1, 5, 1, 13.5, 5]]),
            {},
            r'\["segmentation"\] \(image_id 5\)\[0\] has the point \(x, y\) = '
            r"\(13.5, 5\), more than 1 pixel outside its 12 x 10",
        ),
        (_detection([[1, 1, 5, 1, 5]]), {}, r"\[0\] = \[1, 1, 5, 1, 5\] is not a polygon"),
        # an RLE that does not decode: too few pixels, too many, a truncated or foreign compressed string
        (
            _detection({"size": [10, 12], "counts": [50, 20]}),
            {},
            r"image_id 5.*does not decode to a 10 x 12 mask: "
            r"its runs are \[50, 20\] and sum to 70 pixels, not 120",
        ),
        (_detection({"size": [10, 12], "counts": "0" + chr(48 + 60)}), {}, r"image_id 5.*ends inside a run"),
        (_detection({"size": [10, 12], "counts": "06"}), {}, r"does not decode to a 10 x 12 mask.*sum to 6 pixels"),
        (_detection({"size": [10, 12], "counts": "0 6"}), {}, r"has the character ' '"),
        # a panoptic PNG with a segment id that segments_info does not list
        (
            _panoptic(_PNG_UNLISTED),
            {"format": "coco_panoptic"},
            r"annotations\[0\] \(image_id 6\): the panoptic PNG "
            r'has segment ids \[257\] \(R \+ 256 G \+ 256\^2 B\) that "segments_info" does not list',
        ),
        (
            _panoptic(_PNG, [{"id": 7, "category_id": 1}, {"id": 7, "category_id": 2}]),
            {"format": "coco_panoptic"},
            r"lists a segment id twice",
        ),
        (_detection(None), {}, r'\["segmentation"\] \(image_id 5\) is missing'),
        (
            {"image_id": 6, "segments_info": [], "file_name": "x.png"},
            {"format": "coco_panoptic"},
            r"\(image_id 6\) has no panoptic PNG: pass masks_path",
        ),
    ],
)
def test_bad_masks_name_the_image_and_the_field(annotation, kwargs, message):
    processor = HfDetrImageProcessor(do_resize=False, **kwargs)
    with pytest.raises(ValueError, match=message):
        processor(images=np.zeros((10, 12, 3), np.uint8), annotations=annotation, return_segmentation_masks=True)


def test_format_is_checked_and_saved(tmp_path):
    with pytest.raises(ValueError, match=r"`format` must be one of \('coco_detection', 'coco_panoptic'\)"):
        HfDetrImageProcessor(format="coco_keypoints")
    HfDetrImageProcessor(format="coco_panoptic").save_pretrained(tmp_path)
    assert HfDetrImageProcessor.from_pretrained(tmp_path).format == "coco_panoptic"
