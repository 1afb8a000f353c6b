"""Object masks in the data sets: one stored form, COCO's compressed RLE, and the conversions to and from it.

A split loaded with ``masks=True`` has ``objects.segmentation``: per object ``{"size": [height, width], "counts":
str}`` (int32 size, string counts), pycocotools' compressed run-length encoding (column-major) of the object's pixels
in its image. Polygons, uncompressed RLEs (COCO's crowd annotations) and the segments of panoptic PNGs become this form
at load time, so the augmentation, the collator and the metrics read one form, and Arrow stores one type.

Decoding and its checks are the image processor's (:mod:`hf_detr.modeling.coco_masks`,
:func:`hf_detr.modeling.coco_annotations.coco_panoptic_target`), run here where masks enter.
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
    """One image's ``objects.segmentation`` as bool ``[n, height, width]``, each checked."""
    masks = [rle_mask(rle, f"{name}[{j}]", image_size) for j, rle in enumerate(rles)]
    return np.stack(masks) if masks else np.zeros((0, *image_size), dtype=bool)


def segmentation_rle(segmentation: Any, name: str, image_size: tuple[int, int]) -> dict[str, Any]:
    """COCO polygons in pixels or an RLE (list or str ``counts``), checked against its image, in the stored form."""
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
    """The segments at ``positions`` of a COCO panoptic ``annotation`` whose PNG is in ``png_folder``."""
    masks = coco_panoptic_target(annotation, where, image_size, True, png_folder)["masks"]
    return encode_rles(masks[list(positions)])


def mask_references(example: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The mask metrics' ground truth: ``masks`` bool ``[n, height, width]`` at the size of ``example["image"]``
    (the original for an evaluation example), ``labels`` and ``iscrowd``, crowd objects included."""
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
