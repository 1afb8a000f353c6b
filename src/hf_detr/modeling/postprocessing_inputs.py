"""The checks of what the image processor's post-processing reads: model outputs, target sizes and thresholds."""

from __future__ import annotations

from typing import Any

import torch

from .errors import HfDetrInputError, HfDetrInputTypeError
from .image_inputs import is_array

__all__ = [
    "check_thresholds",
    "checked_target_sizes",
    "detection_outputs",
    "output_tensors",
    "segmentation_outputs",
    "segmentation_sizes",
]


def output_tensors(outputs: Any, names: tuple[str, ...], needs: str) -> tuple[torch.Tensor, ...]:
    """`needs` starts the error, e.g. "post_process_object_detection needs model outputs"."""
    missing = [name for name in names if getattr(outputs, name, None) is None]
    if missing:
        raise HfDetrInputTypeError(
            f"{needs} with {' and '.join(f'`{name}`' for name in names)}; "
            f"{type(outputs).__name__} has no {' or '.join(f'`{m}`' for m in missing)}."
        )
    return tuple(torch.as_tensor(getattr(outputs, name)) for name in names)


def detection_outputs(outputs: Any) -> tuple[torch.Tensor, torch.Tensor]:
    needs = "post_process_object_detection needs model outputs"
    logits, boxes = output_tensors(outputs, ("logits", "pred_boxes"), needs)
    if logits.ndim != 3 or logits.shape[-1] < 2 or boxes.shape != (*logits.shape[:2], 4):
        raise HfDetrInputError(
            "Expected `logits` [batch, queries, num_labels + 1] and `pred_boxes` [batch, queries, 4], got shapes "
            f"{tuple(logits.shape)} and {tuple(boxes.shape)}."
        )
    return logits, boxes


def checked_target_sizes(target_sizes: Any, batch: int) -> torch.Tensor:
    sizes = torch.as_tensor(
        [[float(v) for v in pair] for pair in target_sizes] if not is_array(target_sizes) else target_sizes
    )
    if sizes.shape != (batch, 2):
        raise HfDetrInputError(
            f"`target_sizes` must hold one (height, width) per image, shape ({batch}, 2); got {tuple(sizes.shape)}."
        )
    return sizes


def segmentation_outputs(outputs: Any, method: str) -> tuple[torch.Tensor, torch.Tensor]:
    needs = f"{method} needs segmentation outputs (HfDetrForSegmentation's)"
    logits, masks = output_tensors(outputs, ("logits", "pred_masks"), needs)
    if logits.ndim != 3 or logits.shape[-1] < 2 or masks.ndim != 4 or masks.shape[:2] != logits.shape[:2]:
        raise HfDetrInputError(
            "Expected `logits` [batch, queries, num_labels + 1] and `pred_masks` [batch, queries, height, width], got "
            f"shapes {tuple(logits.shape)} and {tuple(masks.shape)}."
        )
    return logits, masks


def segmentation_sizes(target_sizes: Any, batch: int) -> list[tuple[int, int]] | None:
    if target_sizes is None:
        return None
    sizes = checked_target_sizes(target_sizes, batch)
    if not (sizes == sizes.round()).all() or (sizes < 1).any():
        raise HfDetrInputError(f"`target_sizes` must be positive whole (height, width) pairs, got {sizes.tolist()}.")
    return [(int(height), int(width)) for height, width in sizes.tolist()]


def check_thresholds(threshold: float, mask_threshold: float, overlap_mask_area_threshold: float) -> None:
    for name, value in [
        ("threshold", threshold),
        ("mask_threshold", mask_threshold),
        ("overlap_mask_area_threshold", overlap_mask_area_threshold),
    ]:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise HfDetrInputError(f"`{name}` must be a number in [0, 1], got {value!r}.")
