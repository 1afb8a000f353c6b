"""Object masks in the data sets: one stored form, COCO's compressed RLE, and the conversions to and from it.

A split loaded with ``masks=True`` has ``objects.segmentation``: per object ``{"size": [height, width], "counts":
str}`` (int32 size, string counts), pycocotools' compressed run-length encoding (column-major) of the object's pixels
in its image. Polygons, uncompressed RLEs (COCO's crowd annotations) and the segments of panoptic PNGs become this form
at load time, so the augmentation, the collator and the metrics read one form, and Arrow stores one type.

Decoding and its checks are the image processor's (the codec :mod:`hf_detr.modeling.coco_masks` and its panoptic
annotations, :func:`hf_detr.modeling.coco_annotations.coco_panoptic_target`): a mask of another size than its image, a
polygon reaching outside its image, an RLE that does not decode to its size and a panoptic PNG whose segment ids
``segments_info`` does not list raise a ``ValueError`` naming the image and the field.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torchvision.transforms.v2 import functional as F

from ..modeling.coco_annotations import coco_panoptic_target
from ..modeling.coco_masks import object_mask, polygon_rle, rle_mask
from ..modeling.errors import HfDetrInputError
from ..modeling.segmentation_postprocessing import encode_rles

__all__ = ["decode_rles", "encode_rles", "mask_references", "panoptic_rles", "segmentation_rle"]


def decode_rles(rles: Sequence[Mapping[str, Any]], name: str, image_size: tuple[int, int]) -> np.ndarray:
    """``rles`` (``objects.segmentation`` of one image) as bool ``[n, height, width]`` masks of its ``image_size``
    (height, width), each checked; ``name`` starts the error messages, e.g. ``"example with image_id=3: `objects
    .segmentation`"``."""
    masks = [rle_mask(rle, f"{name}[{j}]", image_size) for j, rle in enumerate(rles)]
    return np.stack(masks) if masks else np.zeros((0, *image_size), dtype=bool)


def segmentation_rle(segmentation: Any, name: str, image_size: tuple[int, int]) -> dict[str, Any]:
    """A COCO ``segmentation`` (polygons ``[[x1, y1, x2, y2, ...], ...]`` in pixels, or an RLE with list or str
    ``counts``) checked against its image of ``image_size`` (height, width) and returned in the stored form."""
    if segmentation is None:
        raise HfDetrInputError(
            f"{name} is missing: masks=True needs every object's COCO polygons or RLE; load with masks=False to read "
            "the boxes only."
        )
    if isinstance(segmentation, (list, tuple)) and segmentation:  # COCO's usual form, encoded without drawing it
        return polygon_rle(segmentation, name, image_size)
    return encode_rles(object_mask({"segmentation": segmentation}, name, image_size)[None])[0]


def panoptic_rles(
    annotation: Mapping[str, Any],
    where: str,
    image_size: tuple[int, int],
    png_folder: str | os.PathLike,
    positions: Sequence[int],
) -> list[dict[str, Any]]:
    """The stored masks of the segments at ``positions`` of a COCO panoptic ``annotation`` (``{"image_id",
    "file_name", "segments_info"}``, its PNG in ``png_folder``), read by the image processor's panoptic decoding."""
    masks = coco_panoptic_target(annotation, where, image_size, True, png_folder)["masks"]
    return encode_rles(masks[list(positions)])


def mask_references(example: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The ground truth the mask metrics take for one example in the schema with ``objects.segmentation``: ``masks``
    bool ``[n, height, width]`` at the size of ``example["image"]`` (the original image for an evaluation example,
    which no transform changed), ``labels`` int64 ``[n]`` (``objects.category``) and ``iscrowd`` int64 ``[n]``,
    crowd objects included (COCO's evaluation ignores detections on them)."""
    objects = example.get("objects")
    where = f"example with image_id={example.get('image_id')}"
    if not isinstance(objects, Mapping) or "segmentation" not in objects:
        raise HfDetrInputError(
            f"{where}: `objects` has no `segmentation`; load the data set with masks=True for mask references."
        )
    size = tuple(F.get_size(example["image"]))
    n = len(objects["segmentation"])
    return {
        "masks": torch.from_numpy(decode_rles(objects["segmentation"], f"{where}: `objects.segmentation`", size)),
        "labels": torch.as_tensor(objects["category"], dtype=torch.int64).reshape(n),
        "iscrowd": torch.as_tensor(objects.get("iscrowd", [0] * n), dtype=torch.int64).reshape(n),
    }
