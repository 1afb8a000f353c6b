"""COCO detection and panoptic annotations to the processor's targets (checked, in original pixels) and to the
model's labels (boxes normalized to the resized image, masks at the padded size)."""

from __future__ import annotations

import operator
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torchvision.ops import box_convert, masks_to_boxes
from torchvision.transforms.v2 import functional as tvF

from .boxes import check_boxes, normalize_boxes
from .coco_masks import object_mask, panoptic_ids
from .errors import HfDetrInputError, HfDetrInputTypeError

__all__ = ["checked_int", "coco_panoptic_target", "coco_targets", "labels_from_target"]


def coco_targets(
    annotations: Any,
    image_sizes: list[tuple[int, int]],
    annotation_format: str,
    return_masks: bool,
    masks_path: str | os.PathLike | None,
) -> list[dict[str, torch.Tensor]] | None:
    """The processor's entry check of COCO annotations; per image unclipped (x0, y0, x1, y1) float64 `boxes` in
    original pixels."""
    if annotations is None:
        return None
    if isinstance(annotations, Mapping):
        annotations = [annotations]
    if not isinstance(annotations, (list, tuple)):
        raise HfDetrInputTypeError(
            f"`annotations` must be a dict or a list of dicts (one per image), got {type(annotations).__name__}."
        )
    if len(annotations) != len(image_sizes):
        raise HfDetrInputError(
            f"Got {len(annotations)} annotations for {len(image_sizes)} images; pass exactly one annotation dict per "
            "image, in the same order."
        )
    if annotation_format == "coco_panoptic":
        return [
            coco_panoptic_target(annotation, f"annotations[{i}]", size, return_masks, masks_path)
            for i, (annotation, size) in enumerate(zip(annotations, image_sizes))
        ]
    return [
        _coco_target(annotation, f"annotations[{i}]", size, return_masks)
        for i, (annotation, size) in enumerate(zip(annotations, image_sizes))
    ]


def _coco_target(
    annotation: Any, where: str, image_size: tuple[int, int], return_masks: bool
) -> dict[str, torch.Tensor]:
    if not isinstance(annotation, Mapping) or "image_id" not in annotation or "annotations" not in annotation:
        raise HfDetrInputError(
            f'{where} must be a COCO detection dict {{"image_id": int, "annotations": [...]}}, got {annotation!r:.200}.'
        )
    image_id = checked_int(annotation["image_id"], f'{where}["image_id"]')
    objects = annotation["annotations"]
    if not isinstance(objects, (list, tuple)):
        raise HfDetrInputError(f'{where}["annotations"] must be a list of object dicts, got {type(objects).__name__}.')
    labels, crowd = [], []
    for j, obj in enumerate(objects):
        name = f'{where}["annotations"][{j}]'
        missing = [key for key in ("bbox", "category_id") if not isinstance(obj, Mapping) or key not in obj]
        if missing:
            raise HfDetrInputError(
                f'{name} has no {" or ".join(map(repr, missing))}: every object needs "bbox": [x, y, width, height] '
                'in pixels and an integer "category_id".'
            )
        labels.append(checked_int(obj["category_id"], f'{name}["category_id"]'))
        crowd.append(checked_int(obj.get("iscrowd", 0), f'{name}["iscrowd"]'))
    boxes = check_boxes([obj["bbox"] for obj in objects], lambda j: f'{where}["annotations"][{j}]["bbox"]', "xywh")
    areas = [float(obj.get("area", w * h)) for obj, (_, _, w, h) in zip(objects, boxes.tolist())]
    target = {
        "image_id": torch.tensor([image_id], dtype=torch.int64),
        "boxes": box_convert(boxes, "xywh", "xyxy"),
        "class_labels": torch.tensor(labels, dtype=torch.int64),
        "area": torch.tensor(areas, dtype=torch.float64),
        "iscrowd": torch.tensor(crowd, dtype=torch.int64),
    }
    if return_masks:
        masks = [
            object_mask(obj, f'{where}["annotations"][{j}]["segmentation"] (image_id {image_id})', image_size)
            for j, obj in enumerate(objects)
        ]
        target["masks"] = torch.from_numpy(np.stack(masks)) if masks else torch.zeros(0, *image_size, dtype=torch.bool)
    return target


def coco_panoptic_target(
    annotation: Any,
    where: str,
    image_size: tuple[int, int],
    return_masks: bool,
    masks_path: str | os.PathLike | None,
) -> dict[str, torch.Tensor]:
    if not isinstance(annotation, Mapping) or "segments_info" not in annotation or "image_id" not in annotation:
        raise HfDetrInputError(
            f'{where} must be a COCO panoptic dict {{"image_id": int, "segments_info": [...], "file_name": str}}, got '
            f"{annotation!r:.200}."
        )
    image_id = checked_int(annotation["image_id"], f'{where}["image_id"]')
    segments = annotation["segments_info"]
    if not isinstance(segments, (list, tuple)):
        raise HfDetrInputError(
            f'{where}["segments_info"] must be a list of segment dicts, got {type(segments).__name__}.'
        )
    ids, labels, crowd = [], [], []
    for j, segment in enumerate(segments):
        name = f'{where}["segments_info"][{j}]'
        if not isinstance(segment, Mapping) or "id" not in segment or "category_id" not in segment:
            raise HfDetrInputError(f'{name} needs an integer "id" and "category_id".')
        ids.append(checked_int(segment["id"], f'{name}["id"]'))
        labels.append(checked_int(segment["category_id"], f'{name}["category_id"]'))
        crowd.append(checked_int(segment.get("iscrowd", 0), f'{name}["iscrowd"]'))
    if len(set(ids)) < len(ids):
        raise HfDetrInputError(f'{where}["segments_info"] (image_id {image_id}) lists a segment id twice: {ids}.')
    id_map = panoptic_ids(annotation, where, image_id, image_size, masks_path)
    unlisted = sorted(set(torch.unique(id_map).tolist()) - set(ids) - {0})
    if unlisted:
        raise HfDetrInputError(
            f"{where} (image_id {image_id}): the panoptic PNG has segment ids {unlisted[:10]} (R + 256 G + 256^2 B) "
            'that "segments_info" does not list; is the PNG the one of this image? (id 0 is unlabeled, needs no entry.)'
        )
    masks = id_map == torch.tensor(ids, dtype=torch.int64).reshape(-1, 1, 1)
    target = {
        "image_id": torch.tensor([image_id], dtype=torch.int64),
        "boxes": masks_to_boxes(masks).to(torch.float64),  # an empty mask gets (0, 0, 0, 0), dropped later
        "class_labels": torch.tensor(labels, dtype=torch.int64),
        "area": torch.tensor(
            [float(s["area"]) if "area" in s else float(m.sum()) for s, m in zip(segments, masks)], dtype=torch.float64
        ),
        "iscrowd": torch.tensor(crowd, dtype=torch.int64),
    }
    if return_masks:
        target["masks"] = masks
    return target


def checked_int(value: Any, name: str) -> int:
    try:
        return operator.index(value)
    except TypeError:
        raise HfDetrInputError(f"{name} must be an int, got {value!r}.") from None


def labels_from_target(
    target: dict[str, torch.Tensor],
    orig_size: tuple[int, int],
    size: tuple[int, int],
    canvas: tuple[int, int],
    do_convert_annotations: bool,
    keep_crowd: bool,
    device: torch.device,
) -> dict[str, torch.Tensor]:
    """Boxes clipped to the image, empty (and unless `keep_crowd` crowd) ones dropped with their masks; masks resized
    to `size` and padded to `canvas`."""
    orig_h, orig_w = orig_size
    height, width = size
    boxes = target["boxes"].clone()
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, orig_w)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, orig_h)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    if not keep_crowd:
        keep &= target["iscrowd"] == 0
    boxes = boxes[keep]
    if do_convert_annotations:
        # Normalized to the resized image before padding, which is the original image's frame scaled.
        boxes = normalize_boxes(boxes, "xyxy", (orig_h, orig_w))
    else:
        boxes = boxes * torch.tensor([width / orig_w, height / orig_h] * 2, dtype=torch.float64)
    labels = {
        "size": torch.tensor([height, width]),
        "image_id": target["image_id"],
        "class_labels": target["class_labels"][keep],
        "boxes": boxes.to(torch.float32),
        "area": (target["area"][keep] * (height * width / (orig_h * orig_w))).to(torch.float32),
        "iscrowd": target["iscrowd"][keep],
        "orig_size": torch.tensor([orig_h, orig_w]),
    }
    if "masks" in target:
        labels["masks"] = _label_masks(target["masks"][keep].to(device), size, canvas)
    return {key: value.to(device) for key, value in labels.items()}


def _label_masks(masks: torch.Tensor, size: tuple[int, int], canvas: tuple[int, int]) -> torch.Tensor:
    """float32 `[n, *canvas]`."""
    out = torch.zeros(len(masks), *canvas, device=masks.device)
    if not len(masks):  # an image without objects
        return out
    if tuple(masks.shape[-2:]) != tuple(size):
        # nearest-exact, transformers' NEAREST: a pixel takes the source pixel under its centre
        masks = tvF.resize(masks.to(torch.uint8), list(size), interpolation=tvF.InterpolationMode.NEAREST_EXACT)
    out[:, : size[0], : size[1]] = masks
    return out
