"""COCO-shaped data of any size for the scale benchmark: deterministic, and fast to write for tens of thousands of
images on 2 cores.

Every image is a 640x480 JPEG of ~150 KB, near COCO's mean of ~160 KB (a smooth colour field, filled polygons and
pixel noise), holding on average train2017's 7.27 objects (860,001 / 118,287), each with a COCO polygon
``segmentation`` inside the image and its bounding box; COCO's 80 category ids (1..90 with gaps) and names; 1% of the
objects are crowd (``iscrowd=1``); in 2% of the images one box reaches 3 px outside the right edge (its polygon does
not), which the default ``box_policy="clip"`` clips. Only ``pool`` distinct images are drawn; image ``j`` is pool image
``j % pool`` with its objects (but its own image id, file name and annotation ids), so writing N images costs little
more than writing the pool. Two forms of the same content:

* :func:`write_coco_folder`: ``annotations/instances_train2017.json`` and ``train2017/`` (and ``val2017`` when
  ``val > 0``), the layout of COCO's own download; image files beyond the pool are hard links to the pool's files.
* :func:`write_hub_dataset`: a ``save_to_disk`` ``DatasetDict`` (``train``, and ``validation`` when ``val > 0``) in
  the Hub's COCO schema with the JPEG bytes embedded, as ``load_dataset`` gives the Hub's COCO, ``objects`` a struct of
  lists with the polygons as ``segmentation``.

Both return a :class:`Written` per split: the counts the loaders should give back, and the boxes placed outside.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import PIL.Image
import PIL.ImageDraw

from hf_detr.data.loading import coco_detection_features
from hf_detr.hub.coco_labels import COCO_ID2LABEL

__all__ = ["CATEGORIES", "HEIGHT", "OUTSIDE_PIXELS", "WIDTH", "Written", "write_coco_folder", "write_hub_dataset"]

WIDTH, HEIGHT = 640, 480
# COCO's 80 detection categories: ids 1..90 without the ten it never assigned
CATEGORIES: dict[int, str] = {i: name for i, name in COCO_ID2LABEL.items() if i > 0 and name != "N/A"}
OBJECTS_PER_IMAGE = 860_001 / 118_287  # train2017's mean
CROWD_FRACTION = 0.01
OUTSIDE_FRACTION = 0.02
OUTSIDE_PIXELS = 3.0  # how far a box placed outside reaches past the right edge: beyond the loader's 1 px tolerance
POOL_SIZE = 256
# the folder and json names of each split: (COCO folder split, Hub split)
_SPLITS = {"train": ("train2017", "train"), "val": ("val2017", "validation")}


@dataclass(frozen=True)
class Written:
    """One written split: its images, boxes (annotations) and crowd boxes, and the boxes placed outside the image
    (annotation id -> the ``[x, y, w, h]`` written, which reaches ``OUTSIDE_PIXELS`` past ``WIDTH``)."""

    images: int
    boxes: int
    crowd: int
    outside: dict[int, list[float]]


@dataclass(frozen=True)
class _Split:
    """A split's COCO ``images`` and ``annotations`` lists and the pool image of each image."""

    images: list[dict[str, Any]]
    annotations: list[dict[str, Any]]
    pool_index: list[int]
    outside: dict[int, list[float]]

    def written(self) -> Written:
        crowd = sum(a["iscrowd"] for a in self.annotations)
        return Written(len(self.images), len(self.annotations), crowd, self.outside)


def write_coco_folder(
    root: str | os.PathLike, n: int, seed: int = 0, *, val: int = 0, pool: int = POOL_SIZE
) -> dict[str, Written]:
    """Write a COCO folder of ``n`` training images (and ``val`` validation images) under ``root``; the counts per
    split name of the json (``"train2017"``, ``"val2017"``)."""
    root = Path(root)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    images, splits = _generate(n, val, seed, pool)
    categories = [{"id": i, "name": name, "supercategory": "object"} for i, name in CATEGORIES.items()]
    for name, split in splits.items():
        folder = root / name
        folder.mkdir(exist_ok=True)
        for image, k in zip(split.images, split.pool_index):
            first = split.images[k]["file_name"]  # the pool's file of this split
            if image["file_name"] == first:
                (folder / first).write_bytes(images[k])
            else:  # a hard link: each image has its own file name, the bytes are written once
                os.link(folder / first, folder / image["file_name"])
        coco = {
            "info": {"description": "hf_detr scale benchmark data"},
            "images": split.images,
            "annotations": split.annotations,
            "categories": categories,
        }
        (root / "annotations" / f"instances_{name}.json").write_text(json.dumps(coco))
    return {name: split.written() for name, split in splits.items()}


def write_hub_dataset(
    path: str | os.PathLike, n: int, seed: int = 0, *, val: int = 0, pool: int = POOL_SIZE
) -> dict[str, Written]:
    """Write the same content as :func:`write_coco_folder` as a ``save_to_disk`` ``DatasetDict`` in the Hub's COCO
    schema with the images embedded; the counts per split (``"train"``, ``"validation"``)."""
    images, splits = _generate(n, val, seed, pool)
    label_of = {category_id: label for label, category_id in enumerate(CATEGORIES)}
    features = coco_detection_features(list(CATEGORIES.values()))
    features["objects"]["segmentation"] = datasets.List(datasets.List(datasets.List(datasets.Value("float32"))))
    hub_names = {folder: hub for folder, hub in _SPLITS.values()}
    with tempfile.TemporaryDirectory(dir=Path(path).parent) as cache:  # from_generator's copy, before save_to_disk
        built = datasets.DatasetDict(
            {
                hub_names[name]: datasets.Dataset.from_generator(
                    _hub_rows,
                    features=features,
                    cache_dir=cache,
                    gen_kwargs={
                        "images": tuple(images),
                        "split": split,
                        "label_of": label_of,
                    },  # a list would be sharded
                )
                for name, split in splits.items()
            }
        )
        built.save_to_disk(str(path))
        del built  # its files are in `cache`, removed now
    return {hub_names[name]: split.written() for name, split in splits.items()}


def _hub_rows(images: tuple[bytes, ...], split: _Split, label_of: dict[int, int]) -> Iterator[dict[str, Any]]:
    by_image: dict[int, list[dict[str, Any]]] = {}
    for annotation in split.annotations:
        by_image.setdefault(annotation["image_id"], []).append(annotation)
    for image, k in zip(split.images, split.pool_index):
        objects = by_image.get(image["id"], [])
        yield {
            "image": {"bytes": images[k], "path": image["file_name"]},
            "image_id": image["id"],
            "width": image["width"],
            "height": image["height"],
            "objects": {
                "id": [a["id"] for a in objects],
                "area": [a["area"] for a in objects],
                "bbox": [a["bbox"] for a in objects],
                "category": [label_of[a["category_id"]] for a in objects],
                "iscrowd": [a["iscrowd"] for a in objects],
                "segmentation": [a["segmentation"] for a in objects],
            },
        }


def _generate(n: int, val: int, seed: int, pool: int) -> tuple[list[bytes], dict[str, _Split]]:
    """The pool's JPEG bytes and the annotated splits (by COCO folder name) of ``n`` and ``val`` images."""
    if n < 1 or val < 0 or pool < 1:
        raise ValueError(f"need n >= 1, val >= 0 and pool >= 1, got {n=}, {val=}, {pool=}")
    drawn = [_draw(np.random.default_rng([seed, 0, k])) for k in range(min(pool, max(n, val)))]
    counts = {"train": n, "val": val}
    splits = {
        folder: _split(counts[key], [obj for _, obj in drawn], np.random.default_rng([seed, 1 + index]))
        for index, (key, (folder, _)) in enumerate(_SPLITS.items())
        if counts[key]
    }
    return [jpeg for jpeg, _ in drawn], splits


def _split(n: int, pool_objects: list[list[dict[str, Any]]], rng: np.random.Generator) -> _Split:
    """``n`` images, image ``j`` being pool image ``j % len(pool_objects)``; one box reaching outside the image in
    ``OUTSIDE_FRACTION`` of the images (at least one) that have a non-crowd object."""
    pool_index = [j % len(pool_objects) for j in range(n)]
    images = [{"id": j + 1, "file_name": f"{j + 1:012d}.jpg", "width": WIDTH, "height": HEIGHT} for j in range(n)]
    candidates = [j for j in range(n) if any(not o["iscrowd"] for o in pool_objects[pool_index[j]])]
    chosen = set(
        rng.choice(candidates, size=min(len(candidates), max(1, round(n * OUTSIDE_FRACTION))), replace=False).tolist()
    )
    annotations, outside = [], {}
    for j, k in enumerate(pool_index):
        pending = j in chosen  # this image's first non-crowd box is to reach outside
        for obj in pool_objects[k]:
            annotation = {"id": len(annotations) + 1, "image_id": j + 1, **obj}
            if pending and not obj["iscrowd"]:
                x, y, _, h = obj["bbox"]
                annotation["bbox"] = [x, y, WIDTH + OUTSIDE_PIXELS - x, h]
                outside[annotation["id"]] = annotation["bbox"]
                pending = False
            annotations.append(annotation)
    return _Split(images, annotations, pool_index, outside)


def _draw(rng: np.random.Generator) -> tuple[bytes, list[dict[str, Any]]]:
    """One pool image: its JPEG bytes and its objects (COCO annotation fields without ``id`` and ``image_id``)."""
    field = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)  # a smooth colour field: the background
    canvas = PIL.Image.fromarray(field).resize((WIDTH, HEIGHT), PIL.Image.Resampling.BICUBIC)
    draw = PIL.ImageDraw.Draw(canvas)
    objects = []
    category_ids = list(CATEGORIES)
    for _ in range(rng.poisson(OBJECTS_PER_IMAGE)):
        # a star-shaped polygon (sorted angles), its radius log-uniform so that sizes range as COCO's (many small)
        radius = float(np.exp(rng.uniform(np.log(4), np.log(200))))
        vertices = int(rng.integers(8, 25))
        angles = np.sort(rng.uniform(0, 2 * np.pi, vertices))
        radii = radius * rng.uniform(0.5, 1.0, vertices)
        centre = rng.uniform([radius, radius], [WIDTH - radius, HEIGHT - radius])
        points = np.round(centre + radii[:, None] * np.stack([np.cos(angles), np.sin(angles)], 1), 2)
        draw.polygon([tuple(p) for p in points.tolist()], fill=tuple(rng.integers(0, 256, 3).tolist()))
        low, high = points.min(0), points.max(0)
        x, y = points[:, 0], points[:, 1]
        objects.append(
            {
                "category_id": category_ids[int(rng.integers(len(category_ids)))],
                "bbox": [float(low[0]), float(low[1]), float(high[0] - low[0]), float(high[1] - low[1])],
                "area": float(abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))) / 2),  # the polygon's (shoelace)
                "iscrowd": int(rng.random() < CROWD_FRACTION),
                "segmentation": [points.flatten().tolist()],
            }
        )
    # pixel noise brings the JPEG to about COCO's mean size (and decoding cost)
    pixels = np.asarray(canvas, dtype=np.float32) + rng.normal(0, 18, (HEIGHT, WIDTH, 3)).astype(np.float32)
    buffer = io.BytesIO()
    PIL.Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue(), objects
