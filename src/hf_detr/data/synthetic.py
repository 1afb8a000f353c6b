"""Deterministic synthetic detection data: coloured shapes on cluttered backgrounds, in the Hub's COCO schema.

Needs no download, so it is the data of the demo, the tests and the examples::

    from hf_detr.data.synthetic import make_synthetic_dataset, ID2LABEL
    ds = make_synthetic_dataset(num_train=1000, num_validation=200, num_test=200, image_size=128, seed=0)
    ds["train"][0]  # {"image": PIL 128x128, "image_id": 0, "width": 128, "height": 128, "objects": {...}}

What an image holds:

* background: one of smooth colour noise, a linear gradient, stripes or a checkerboard, in muted low-saturation
  colours, plus pixel noise and 0-5 thin random polylines (distractors, not objects);
* objects: ``circle``, ``rectangle``, ``triangle``, ``star``, ``cross`` and ``ring``, each with a random size
  (``scale_range`` of the shorter image side), aspect ratio (up to 1.6:1), rotation and saturated colour with mild
  shading. An object's colour differs from the other objects of its image and from the background under it;
* occlusion: objects are painted in order, so later ones may cover earlier ones, but never more than
  ``max_occlusion`` of an object's pixels. The box and ``area`` are those of the *visible* pixels: the box is exactly
  the bounding box of what is drawn (``[x, y, w, h]`` in pixels, inside the image) and ``area`` its pixel count;
* a fraction ``empty_fraction`` of the images holds no object.

Image ``i`` of a split depends only on ``(seed, split, i)``: the same arguments give byte-identical images and
annotations, the three splits use different streams, and asking for more images keeps the first ones unchanged.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

import datasets
import numpy as np
import PIL.Image
import PIL.ImageDraw

from ..modeling.errors import HfDetrInputError
from .masks import encode_rles
from .schema import coco_detection_features

SHAPES: tuple[str, ...] = ("circle", "rectangle", "triangle", "star", "cross", "ring")
ID2LABEL: dict[int, str] = dict(enumerate(SHAPES))
SPLITS: tuple[str, ...] = ("train", "validation", "test")

__all__ = ["ID2LABEL", "SHAPES", "SPLITS", "SyntheticImage", "make_synthetic_dataset", "render_image"]

_PLACEMENT_ATTEMPTS = 30
_MAX_ASPECT = 1.6
_MIN_COLOUR_DISTANCE = 100.0  # RGB distance between two objects of one image
_MIN_CONTRAST = 80.0  # RGB distance between an object's colour and the mean colour under it


def _regular(sides: int, radius: float = 1.0, inner: float | None = None) -> np.ndarray:
    """Unit polygon with ``sides`` vertices (alternating with ``inner`` radius when given: a star), pointing up."""
    count = sides * (2 if inner else 1)
    angles = -math.pi / 2 + 2 * math.pi * np.arange(count) / count
    radii = np.where(np.arange(count) % 2, inner, radius) if inner else np.full(count, radius)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


_ARM = 0.32  # half-width of the cross arms
# Each shape: (outline, hole or None) as (K, 2) vertices in [-1, 1]^2.
_OUTLINES: dict[str, tuple[np.ndarray, np.ndarray | None]] = {
    "circle": (_regular(48), None),
    "rectangle": (np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=float), None),
    "triangle": (np.array([[0, -1], [1, 1], [-1, 1]], dtype=float), None),
    "star": (_regular(5, inner=0.45), None),
    "cross": (
        np.array(
            [
                [-_ARM, -1],
                [_ARM, -1],
                [_ARM, -_ARM],
                [1, -_ARM],
                [1, _ARM],
                [_ARM, _ARM],
                [_ARM, 1],
                [-_ARM, 1],
                [-_ARM, _ARM],
                [-1, _ARM],
                [-1, -_ARM],
                [-_ARM, -_ARM],
            ],
            dtype=float,
        ),
        None,
    ),
    "ring": (_regular(48), _regular(48, radius=0.55)),
}


@dataclass(frozen=True)
class SyntheticImage:
    """One rendered image (H, W, 3) uint8 and its N objects: ``boxes`` (N, 4) float32 ``[x, y, w, h]`` pixels and
    ``areas`` of the visible pixels, ``masks`` (N, H, W) bool, ``labels`` indices into the ``classes`` rendered
    with, ``colours`` (N, 3) uint8 fill colours before shading and noise."""

    image: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    areas: np.ndarray
    masks: np.ndarray
    colours: np.ndarray


def render_image(
    seed: int | Sequence[int],
    *,
    image_size: int | tuple[int, int] = 128,
    classes: Sequence[str] = SHAPES,
    min_objects: int = 1,
    max_objects: int = 6,
    empty_fraction: float = 0.1,
    scale_range: tuple[float, float] = (0.12, 0.4),
    max_occlusion: float = 0.35,
) -> SyntheticImage:
    """``seed`` feeds ``numpy.random.default_rng``. An object that cannot be placed within the occlusion and colour
    rules after a number of tries is left out, so an image may hold fewer than ``min_objects`` (rare with the
    defaults)."""
    height, width = _check_args(image_size, classes, min_objects, max_objects, empty_fraction, scale_range)
    if not 0 <= max_occlusion < 1:
        raise HfDetrInputError(f"max_occlusion must be in [0, 1), got {max_occlusion}.")
    rng = np.random.default_rng(seed)
    canvas = _background(rng, height, width)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)

    count = 0 if rng.random() < empty_fraction else int(rng.integers(min_objects, max_objects + 1))
    labels: list[int] = []
    colours: list[np.ndarray] = []
    full_areas: list[int] = []
    visible: list[np.ndarray] = []
    for _ in range(count):
        label = int(rng.integers(len(classes)))
        for _attempt in range(_PLACEMENT_ATTEMPTS):
            mask = _shape_mask(rng, classes[label], height, width, scale_range)
            colour = _saturated_colour(rng)
            if mask is None or not mask.any():
                continue
            covered_ok = all((v & ~mask).sum() >= (1 - max_occlusion) * a for v, a in zip(visible, full_areas))
            distinct = all(np.linalg.norm(colour - c) >= _MIN_COLOUR_DISTANCE for c in colours)
            contrast = np.linalg.norm(canvas[mask].mean(axis=0) - colour) >= _MIN_CONTRAST
            if covered_ok and distinct and contrast:
                break
        else:
            continue
        # mild linear shading across the object, so it is not a flat colour
        slope_x, slope_y = rng.uniform(-0.25, 0.25, size=2)
        shade = 1 + slope_x * (xx[mask] - xx[mask].mean()) / width + slope_y * (yy[mask] - yy[mask].mean()) / height
        canvas[mask] = colour * shade[:, None]
        visible = [v & ~mask for v in visible] + [mask]
        full_areas.append(int(mask.sum()))
        labels.append(label)
        colours.append(colour)

    canvas += rng.uniform(1.0, 3.0) * rng.standard_normal(canvas.shape, dtype=np.float32)
    image = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    masks = np.stack(visible) if visible else np.zeros((0, height, width), dtype=bool)
    return SyntheticImage(
        image=image,
        boxes=np.array([_mask_box(m) for m in masks], dtype=np.float32).reshape(-1, 4),
        labels=np.array(labels, dtype=np.int64),
        areas=masks.sum(axis=(1, 2)).astype(np.float32),
        masks=masks,
        colours=np.array(colours, dtype=np.float32).reshape(-1, 3).round().astype(np.uint8),
    )


def make_synthetic_dataset(
    num_train: int = 1000,
    num_validation: int = 200,
    num_test: int = 200,
    *,
    image_size: int | tuple[int, int] = 128,
    min_objects: int = 1,
    max_objects: int = 6,
    empty_fraction: float = 0.1,
    classes: Sequence[str] = SHAPES,
    scale_range: tuple[float, float] = (0.12, 0.4),
    seed: int = 0,
    masks: bool = False,
) -> datasets.DatasetDict:
    """The ``train`` / ``validation`` / ``test`` splits in the Hub's COCO schema; ``image_id`` counts from 0 and
    object ``id`` from 1 within each split.

    Args:
        image_size: ``size`` or ``(height, width)`` in pixels.
        classes: names from :data:`SHAPES`, the ClassLabel names in this order.
        scale_range: object size range as a fraction of the shorter image side.
        seed: image ``i`` of split ``s`` uses ``default_rng([seed, SPLITS.index(s), i])``.
        masks: each object's visible pixels as its ``segmentation`` RLE; the images and boxes are the same either way.
    """
    classes = list(classes)
    _check_args(image_size, classes, min_objects, max_objects, empty_fraction, scale_range)
    counts = {"train": num_train, "validation": num_validation, "test": num_test}
    for split, count in counts.items():
        if not isinstance(count, int) or count < 0:
            raise HfDetrInputError(f"num_{split} must be a non-negative int, got {count!r}.")
    if not isinstance(seed, int) or seed < 0:
        raise HfDetrInputError(f"seed must be a non-negative int, got {seed!r}.")
    render_kwargs = dict(
        image_size=image_size,
        classes=classes,
        min_objects=min_objects,
        max_objects=max_objects,
        empty_fraction=empty_fraction,
        scale_range=tuple(scale_range),
    )
    features = coco_detection_features(classes, masks=masks)
    splits = {}
    for split, count in counts.items():
        columns: dict[str, list] = {name: [] for name in features}
        next_id = 1
        for index in range(count):
            drawn = render_image([seed, SPLITS.index(split), index], **render_kwargs)
            n = len(drawn.labels)
            columns["image"].append({"bytes": _png_bytes(drawn.image), "path": None})
            columns["image_id"].append(index)
            columns["width"].append(drawn.image.shape[1])
            columns["height"].append(drawn.image.shape[0])
            columns["objects"].append(
                {
                    "id": list(range(next_id, next_id + n)),
                    "area": drawn.areas.tolist(),
                    "bbox": drawn.boxes.tolist(),
                    "category": drawn.labels.tolist(),
                    "iscrowd": [0] * n,
                    **({"segmentation": encode_rles(drawn.masks)} if masks else {}),
                }
            )
            next_id += n
        description = "hf_detr synthetic shapes: " + json.dumps({"seed": seed, "split": split, **render_kwargs})
        info = datasets.DatasetInfo(description=description, features=features)
        splits[split] = datasets.Dataset.from_dict(columns, features=features, info=info, split=split)
    return datasets.DatasetDict(splits)


def _check_args(
    image_size: int | tuple[int, int],
    classes: Sequence[str],
    min_objects: int,
    max_objects: int,
    empty_fraction: float,
    scale_range: tuple[float, float],
) -> tuple[int, int]:
    """Returns ``(height, width)``."""
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(size) != 2 or not all(isinstance(s, int) and s >= 16 for s in size):
        raise HfDetrInputError(f"image_size must be an int or (height, width) of ints >= 16, got {image_size!r}.")
    unknown = [c for c in classes if c not in _OUTLINES]
    if not classes or unknown or len(set(classes)) != len(classes):
        raise HfDetrInputError(f"classes must be distinct names from {SHAPES}, got {list(classes)!r}.")
    if not 0 <= min_objects <= max_objects:
        raise HfDetrInputError(f"need 0 <= min_objects <= max_objects, got {min_objects=}, {max_objects=}.")
    if not 0 <= empty_fraction <= 1:
        raise HfDetrInputError(f"empty_fraction must be in [0, 1], got {empty_fraction}.")
    low, high = scale_range
    if not 0 < low <= high <= 0.6:
        raise HfDetrInputError(f"scale_range must satisfy 0 < low <= high <= 0.6, got {scale_range!r}.")
    return size


def _muted_colour(rng: np.random.Generator) -> np.ndarray:
    """A grey level with a small tint."""
    return (rng.uniform(40, 215) + rng.uniform(-25, 25, size=3)).astype(np.float32)


def _saturated_colour(rng: np.random.Generator) -> np.ndarray:
    """Random hue, HSV s and v in [0.6, 1]."""
    hue, saturation, value = rng.uniform(0, 6), rng.uniform(0.6, 1), rng.uniform(0.6, 1)
    sector = int(hue) % 6
    f = hue - int(hue)
    p, q, t = value * (1 - saturation), value * (1 - saturation * f), value * (1 - saturation * (1 - f))
    rgb = [(value, t, p), (q, value, p), (p, value, t), (p, q, value), (t, p, value), (value, p, q)][sector]
    return np.array(rgb, dtype=np.float32) * 255


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    kind = int(rng.integers(4))
    low, high = _muted_colour(rng), _muted_colour(rng)
    if kind == 0:  # smooth colour noise: a coarse grid of muted colours, upsampled
        cells = (int(rng.integers(3, 9)), int(rng.integers(3, 9)))
        grid = (rng.uniform(40, 215, size=(*cells, 1)) + rng.uniform(-25, 25, size=(*cells, 3))).astype(np.uint8)
        canvas = np.asarray(PIL.Image.fromarray(grid).resize((width, height), PIL.Image.BILINEAR), dtype=np.float32)
    else:
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        angle = rng.uniform(0, math.pi)
        along = xx * math.cos(angle) + yy * math.sin(angle)
        if kind == 1:  # linear gradient
            t = (along - along.min()) / max(float(np.ptp(along)), 1.0)
        elif kind == 2:  # sinusoidal stripes
            t = 0.5 + 0.5 * np.sin(2 * math.pi * along / rng.uniform(6, 32) + rng.uniform(0, 2 * math.pi))
        else:  # checkerboard
            cell = rng.uniform(6, 24)
            t = ((xx // cell + yy // cell) % 2).astype(np.float32)
        canvas = low + t[..., None] * (high - low)
    canvas = canvas + rng.uniform(2, 10) * rng.standard_normal((height, width, 3), dtype=np.float32)

    lines = PIL.Image.new("L", (width, height))
    draw = PIL.ImageDraw.Draw(lines)
    for index in range(int(rng.integers(0, 6))):
        points = rng.uniform(0, 1, size=(int(rng.integers(2, 5)), 2)) * (width - 1, height - 1)
        draw.line([tuple(p) for p in points], fill=index + 1, width=int(rng.integers(1, 3)))
    ids = np.asarray(lines)
    for index in range(1, int(ids.max()) + 1):
        canvas[ids == index] = _muted_colour(rng) if rng.random() < 0.5 else _saturated_colour(rng)
    return canvas


def _shape_mask(
    rng: np.random.Generator, shape: str, height: int, width: int, scale_range: tuple[float, float]
) -> np.ndarray | None:
    """``None`` if the shape does not fit."""
    size = rng.uniform(*scale_range) * min(height, width)
    aspect = math.exp(rng.uniform(-math.log(_MAX_ASPECT), math.log(_MAX_ASPECT)))
    half = np.array([math.sqrt(aspect), 1 / math.sqrt(aspect)]) * size / 2
    angle = rng.uniform(0, 2 * math.pi)
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    outline, hole = _OUTLINES[shape]
    outline = (outline * half) @ rotation.T
    origin = outline.min(axis=0)
    extent = np.ceil(outline.max(axis=0) - origin).astype(int) + 1
    if extent[0] > width or extent[1] > height:
        return None
    local = PIL.Image.new("1", (int(extent[0]), int(extent[1])))
    draw = PIL.ImageDraw.Draw(local)
    draw.polygon([tuple(p) for p in outline - origin], fill=1)
    if hole is not None:
        draw.polygon([tuple(p) for p in (hole * half) @ rotation.T - origin], fill=0)
    left = int(rng.integers(0, width - extent[0] + 1))
    top = int(rng.integers(0, height - extent[1] + 1))
    mask = np.zeros((height, width), dtype=bool)
    mask[top : top + extent[1], left : left + extent[0]] = np.asarray(local, dtype=bool)
    return mask


def _png_bytes(image: np.ndarray) -> bytes:
    """Compression level 1 encodes noisy images several times faster than PIL's default, ~10% larger."""
    buffer = io.BytesIO()
    PIL.Image.fromarray(image).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _mask_box(mask: np.ndarray) -> list[float]:
    """``[x, y, w, h]``; pixel ``(r, c)`` covers ``[c, c+1) x [r, r+1)``."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return [float(cols[0]), float(rows[0]), float(cols[-1] - cols[0] + 1), float(rows[-1] - rows[0] + 1)]
