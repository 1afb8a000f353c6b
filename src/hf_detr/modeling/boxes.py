"""The one box check and the one pixel <-> normalized cxcywh pair.

:func:`check_boxes` (on the flags of :func:`box_flags`) runs where boxes enter hf_detr, so every entry point rejects
the same bad boxes with the same message: the data loaders (whose `box_policy` clips or drops exactly what it
rejects, `hf_detr.data.box_policy`), the image processor's annotations, the model's `labels` and the public metrics.
Paths inside hf_detr trust what was checked (`tests/test_boundaries.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal, NamedTuple

import torch
from torchvision.ops import box_convert

from .errors import HfDetrInputError

BoxFormat = Literal["xyxy", "xywh", "cxcywh"]
# explained in `hf_detr.data.box_policy`
BoxPolicy = Literal["clip", "drop", "error"]
# (height, width), a `[2]` tensor, or a `[batch, 2]` tensor of one (height, width) per image.
ImageSize = Sequence[float] | torch.Tensor

# Spelled out in every error, since a box in the wrong format is the usual cause of a failed check.
_FORMAT_HINTS: dict[str, str] = {
    "xywh": "[x, y, w, h] in pixels, not corners [x0, y0, x1, y1]",
    "xyxy": "corners [x0, y0, x1, y1] in pixels (x1 >= x0, y1 >= y0), not [x, y, w, h]",
    "cxcywh": "[center_x, center_y, w, h] normalized to the image size",
}


class BoxFlags(NamedTuple):
    """Which boxes fail which check (`[n]` bool tensors), as :func:`box_flags` finds them."""

    non_finite: torch.Tensor  # a NaN or infinite number
    negative: torch.Tensor  # width or height < 0
    empty: torch.Tensor  # width or height <= 0 (includes `negative`)
    outside: torch.Tensor  # reaches further than the tolerance outside `within` (all False without `within`)


def box_flags(
    boxes: Any,
    name: str | Callable[[int], str],
    fmt: BoxFormat = "xywh",
    *,
    within: Sequence[float] | Sequence[Sequence[float]] | torch.Tensor | None = None,
    tolerance: float = 0.0,
) -> tuple[torch.Tensor, BoxFlags]:
    """`boxes` as a float64 CPU tensor `[n, 4]` and the flags :func:`check_boxes` raises on, without raising (only
    input that is not `[n, 4]` numbers raises)."""
    if fmt not in _FORMAT_HINTS:
        raise HfDetrInputError(f"fmt must be one of {list(_FORMAT_HINTS)}, got {fmt!r}")
    label = (lambda j: f"{name}[{j}]") if isinstance(name, str) else name
    tensor = _as_boxes(boxes, label, _FORMAT_HINTS[fmt])
    # every check at once: a call per image or annotation must stay cheap
    non_finite = ~torch.isfinite(tensor).all(1)
    # width and height, which xyxy only has as differences
    wh = tensor[:, 2:] - tensor[:, :2] if fmt == "xyxy" else tensor[:, 2:]
    negative = (wh < 0).any(1)
    empty = (wh <= 0).any(1)
    outside = torch.zeros(len(tensor), dtype=torch.bool)
    if within is not None:
        limits = _limits(within, len(tensor))
        corners = tensor if fmt == "xyxy" else box_convert(tensor, fmt, "xyxy")
        outside = (corners[:, :2] < -tolerance).any(1) | (corners[:, 2:] > limits + tolerance).any(1)
    return tensor, BoxFlags(non_finite, negative, empty, outside)


def check_boxes(
    boxes: Any,
    name: str | Callable[[int], str],
    fmt: BoxFormat = "xywh",
    *,
    positive: bool = False,
    within: Sequence[float] | Sequence[Sequence[float]] | torch.Tensor | None = None,
    tolerance: float = 0.0,
) -> torch.Tensor:
    """`boxes` as a float64 CPU tensor `[n, 4]` (no copy of a float64 CPU tensor), or a `ValueError` naming the
    first bad box.

    Args:
        name: a str names box `j` `f"{name}[{j}]"`, a callable `name(j)`.
        positive: width and height > 0 (otherwise >= 0).
        within: (width, height), or `[n, 2]` per box: the box must lie in [0, width] x [0, height], up to
            `tolerance`.
    """
    tensor, flags = box_flags(boxes, name, fmt, within=within, tolerance=tolerance)
    bad = flags.non_finite | flags.negative | flags.outside
    if positive:
        bad |= flags.empty
    if not bad.any():
        return tensor

    label = (lambda j: f"{name}[{j}]") if isinstance(name, str) else name
    hint = _FORMAT_HINTS[fmt]
    problems = [(flags.non_finite, "is NaN or infinite"), (flags.negative, "has a negative width or height")]
    if positive:
        problems.append((flags.empty, "has width or height <= 0"))
    for problem_flags, problem in problems:
        if problem_flags.any():
            j = int(problem_flags.nonzero()[0, 0])
            extra = ", with width and height > 0" if positive else ""
            raise HfDetrInputError(f"{label(j)} = {tensor[j].tolist()} {problem}; boxes are {hint}{extra}")
    j = int(flags.outside.nonzero()[0, 0])
    width, height = _limits(within, len(tensor))[j].tolist()
    by = f" by more than the tolerance {tolerance:g}" if tolerance else ""
    raise HfDetrInputError(
        f"{label(j)} = {tensor[j].tolist()} lies outside [0, {width:g}] x [0, {height:g}]{by}; fix the box, or check "
        f"that boxes are {hint}"
    )


def clip_boxes(boxes: torch.Tensor, fmt: BoxFormat, within: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """To [0, width] x [0, height] of `within` ((width, height), or `[n, 2]` per box); a box entirely outside gets
    zero width or height. A new float64 tensor."""
    tensor = torch.as_tensor(boxes, dtype=torch.float64)
    limits = _limits(within, len(tensor))
    corners = tensor if fmt == "xyxy" else box_convert(tensor, fmt, "xyxy")
    low = torch.zeros_like(limits)
    mins = torch.minimum(torch.maximum(corners[:, :2], low), limits)
    maxs = torch.minimum(torch.maximum(corners[:, 2:], low), limits)
    clipped = torch.cat([mins, maxs], dim=1)
    return clipped if fmt == "xyxy" else box_convert(clipped, "xyxy", fmt)


def _limits(within: Any, n: int) -> torch.Tensor:
    return torch.as_tensor(within, dtype=torch.float64).reshape(-1, 2).expand(n, 2)


def _as_boxes(boxes: Any, label: Callable[[int], str], hint: str) -> torch.Tensor:
    if isinstance(boxes, torch.Tensor):
        tensor = boxes.detach().to("cpu", torch.float64)
        if tensor.ndim >= 1 and len(tensor) == 0:
            return tensor.reshape(0, 4)
        if tensor.ndim == 2 and tensor.shape[1] == 4:
            return tensor
        first = tensor.reshape(1)[0] if tensor.ndim == 0 else tensor[0]
        raise HfDetrInputError(f"{label(0)} = {_short(first.tolist())} is not 4 numbers; boxes are {hint}")
    try:
        tensor = torch.as_tensor(boxes, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):  # ragged or non-numeric: the scan below finds the entry to blame
        tensor = None
    if tensor is not None and tensor.ndim >= 1 and len(tensor) == 0:
        return tensor.reshape(0, 4)
    if tensor is not None and tensor.ndim == 2 and tensor.shape[1] == 4:
        return tensor
    # slow path, only for bad or unusual input (e.g. a list of tensors): name the first entry as the caller wrote it
    try:
        entries = list(boxes)
    except TypeError:
        raise HfDetrInputError(f"expected [n, 4] boxes at {label(0)}, got {_short(boxes)}; boxes are {hint}") from None
    rows = []
    for j, entry in enumerate(entries):
        try:
            row = torch.as_tensor(entry, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError):
            row = None
        if row is None or row.shape != (4,):
            raise HfDetrInputError(f"{label(j)} = {_short(entry)} is not 4 numbers; boxes are {hint}")
        rows.append(row)
    return torch.stack(rows).cpu() if rows else torch.zeros(0, 4, dtype=torch.float64)


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def normalize_boxes(boxes: torch.Tensor, fmt: BoxFormat, size: ImageSize) -> torch.Tensor:
    """Pixel boxes in `fmt` -> normalized (center_x, center_y, w, h) of `size` = (height, width); batched: boxes
    `[batch, n, 4]` with `size` `[batch, 2]`. In the (floating) dtype of `boxes`."""
    boxes = _floating(boxes)
    return box_convert(boxes, fmt, "cxcywh") / _whwh(size, boxes)


def denormalize_boxes(boxes: torch.Tensor, fmt: BoxFormat, size: ImageSize) -> torch.Tensor:
    """The inverse of :func:`normalize_boxes`, in the dtype of `boxes` (float32 outputs stay float32)."""
    boxes = _floating(boxes)
    # convert first, then scale: the order post-processing and transformers use, so results match bit for bit
    return box_convert(boxes, "cxcywh", fmt) * _whwh(size, boxes)


def _floating(boxes: torch.Tensor) -> torch.Tensor:
    boxes = torch.as_tensor(boxes)
    return boxes if boxes.is_floating_point() else boxes.to(torch.get_default_dtype())


def _whwh(size: ImageSize, boxes: torch.Tensor) -> torch.Tensor:
    """`[4]` for one size, `[batch, 1, 4]` for `[batch, 2]` sizes."""
    if isinstance(size, torch.Tensor):
        size = size.to(boxes)
    else:
        size = torch.as_tensor(size, dtype=boxes.dtype, device=boxes.device)
    if size.shape == (2,):
        height, width = size.unbind(0)
        return torch.stack([width, height, width, height])
    if size.ndim == 2 and size.shape[1] == 2 and boxes.ndim == 3 and len(size) == len(boxes):
        height, width = size.unbind(1)
        return torch.stack([width, height, width, height], dim=1)[:, None, :]
    raise HfDetrInputError(
        f"size must be (height, width), or [batch, 2] for [batch, n, 4] boxes; got size of shape {tuple(size.shape)} "
        f"for boxes of shape {tuple(boxes.shape)}"
    )
