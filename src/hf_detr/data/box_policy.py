"""The one ``box_policy``, the same in every loader (:func:`apply_box_policy`).

``"clip"`` (the default) clips a box that reaches outside its image to the image and drops the boxes that are left
without area (entirely outside) or have none (zero or negative width or height, NaN), ``"drop"`` drops every box that
reaches outside its image or has no area, ``"error"`` raises a ``ValueError`` naming the image and the box. A box
reaching at most ``box_tolerance`` pixels (default 1) outside its image is float slop: it counts as inside under every
policy and is kept as written (the image processor clips it to the image). Each split logs one warning line with what
was clipped and dropped, e.g. ``instances_train.json: 412 images, 3 boxes clipped to their image, 2 dropped (1
zero-area, 1 outside the image) by box_policy='clip'``; DEBUG logging lists every box.
"""

from __future__ import annotations

import logging
import typing
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch

from ..modeling.boxes import BoxPolicy, box_flags, check_boxes, clip_boxes
from ..modeling.errors import HfDetrInputError

logger = logging.getLogger(__name__)

__all__ = ["BoxChange", "BoxCounts", "BoxPolicy", "BoxPolicyResult", "apply_box_policy"]

# why a box is dropped, in the order a box with several problems is counted under
_NOT_FINITE, _NEGATIVE, _ZERO_AREA, _OUTSIDE = "not finite", "negative size", "zero-area", "outside the image"
_REASONS = (_NOT_FINITE, _NEGATIVE, _ZERO_AREA, _OUTSIDE)


class BoxChange(NamedTuple):
    """A box a ``box_policy`` clipped or dropped: its position in the input, ``"clipped"`` or why it was dropped
    (``"not finite"``, ``"negative size"``, ``"zero-area"``, ``"outside the image"``) and a line naming the box, e.g.
    ``"instances_train.json: annotation id 3 (image_id 1, 'a.png'): bbox = [70.0, 5.0, 10.0, 10.0] dropped (outside
    the image)"``."""

    index: int
    outcome: str
    message: str


@dataclass
class BoxCounts:
    clipped: int = 0
    dropped: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, changes: Iterable[BoxChange]) -> BoxCounts:
        counts = cls()
        for change in changes:
            if change.outcome == "clipped":
                counts.clipped += 1
            else:
                counts.dropped[change.outcome] = counts.dropped.get(change.outcome, 0) + 1
        return counts

    def __bool__(self) -> bool:
        return bool(self.clipped or self.dropped)

    def __iadd__(self, other: BoxCounts) -> BoxCounts:
        self.clipped += other.clipped
        for reason, count in other.dropped.items():
            self.dropped[reason] = self.dropped.get(reason, 0) + count
        return self

    @property
    def num_dropped(self) -> int:
        return sum(self.dropped.values())

    @property
    def changed(self) -> int:
        return self.clipped + self.num_dropped

    def summary(self) -> str:
        """E.g. ``"3 boxes clipped to their image, 2 dropped (1 zero-area, 1 outside the image)"``."""
        parts = []
        if self.clipped:
            parts.append(
                f"{self.clipped} {'box' if self.clipped == 1 else 'boxes'} clipped to "
                f"{'its' if self.clipped == 1 else 'their'} image"
            )
        if self.dropped:
            reasons = ", ".join(f"{self.dropped[r]} {r}" for r in _REASONS if r in self.dropped)
            noun = "" if parts else (" box" if self.num_dropped == 1 else " boxes")
            parts.append(f"{self.num_dropped}{noun} dropped ({reasons})")
        return ", ".join(parts) or "no box clipped or dropped"


class BoxPolicyResult(NamedTuple):
    """The kept boxes (float64 ``[k, 4]`` xywh pixels), their positions in the input (take every other per-object
    field with it), their areas, the counts and every change in input order."""

    boxes: torch.Tensor
    index: torch.Tensor
    areas: torch.Tensor
    counts: BoxCounts
    changes: tuple[BoxChange, ...] = ()


def apply_box_policy(
    boxes: Any,
    name: Callable[[int], str],
    *,
    within: Sequence[float] | Sequence[Sequence[float]],
    policy: BoxPolicy = "clip",
    tolerance: float = 1.0,
    areas: Sequence[float] | None = None,
) -> BoxPolicyResult:
    """The loaders' entry check of pixel ``[x, y, w, h]`` ``boxes`` of images of ``within`` = (width, height), or
    ``[n, 2]`` one per box (the policy: the module docstring). The flags are those ``check_boxes`` raises on
    (:func:`~hf_detr.modeling.boxes.box_flags`), so ``"error"`` rejects exactly what ``"clip"`` and ``"drop"``
    change; a box clipped to no width or height (touching the image only at an edge) is dropped as outside.

    ``areas`` (COCO's ``area``; NaN: not given) are kept; a clipped box's area keeps its ratio to the box area, as in
    a crop of the augmentation (at most the clipped box's area); a missing area is the (clipped) box area. Input that
    is not ``[n, 4]`` numbers raises under every policy.
    """
    _check_policy(policy)
    tensor, flags = box_flags(boxes, name, "xywh", within=within, tolerance=tolerance)
    n = len(tensor)
    given = (
        torch.full((n,), float("nan"), dtype=torch.float64)
        if areas is None
        else torch.as_tensor([float("nan") if a is None else float(a) for a in areas], dtype=torch.float64)
    )
    broken = flags.non_finite | flags.empty  # flags.empty includes flags.negative
    bad = broken | flags.outside
    if policy == "error" or not bad.any():  # the common case, every box fine, returns here
        if bad.any():
            try:
                check_boxes(tensor, name, "xywh", positive=True, within=within, tolerance=tolerance)
            except ValueError as error:
                raise HfDetrInputError(
                    f"{error} (box_policy='error'; box_policy='clip', the default, clips boxes to their image and "
                    "drops the ones without area)"
                ) from None
        return BoxPolicyResult(
            tensor, torch.arange(n), torch.where(given.isnan(), _box_areas(tensor), given), BoxCounts()
        )

    # why each box is dropped: 0 kept, else 1 + its position in _REASONS; the first problem of a box decides
    reason = torch.zeros(n, dtype=torch.int64)
    for code, flag in ((3, flags.empty), (2, flags.negative), (1, flags.non_finite)):
        reason[flag] = code
    result = tensor.clone()
    areas_out = torch.where(given.isnan(), _box_areas(tensor), given)
    to_clip = flags.outside & ~broken
    clipped = torch.zeros(n, dtype=torch.bool)
    if policy == "drop":
        reason[to_clip] = 1 + _REASONS.index(_OUTSIDE)
    elif to_clip.any():
        rows = to_clip.nonzero().flatten()
        limits = torch.as_tensor(within, dtype=torch.float64).reshape(-1, 2).expand(n, 2)[rows]
        new = clip_boxes(tensor[rows], "xywh", limits)
        result[rows] = new
        new_area, old_area = _box_areas(new), _box_areas(tensor[rows])
        areas_out[rows] = torch.where(
            given[rows].isnan(), new_area, torch.minimum(given[rows] * new_area / old_area, new_area)
        )
        left_empty = (new[:, 2:] <= 0).any(1)  # entirely outside, or touching the image only at an edge
        reason[rows[left_empty]] = 1 + _REASONS.index(_OUTSIDE)
        clipped[rows[~left_empty]] = True
    keep = reason == 0
    rows = (~keep | clipped).nonzero().flatten()
    changes = tuple(
        BoxChange(j, "clipped", f"{name(j)} = {box} clipped to {new}")
        if code == 0
        else BoxChange(j, _REASONS[code - 1], f"{name(j)} = {box} dropped ({_REASONS[code - 1]})")
        for j, code, box, new in zip(rows.tolist(), reason[rows].tolist(), tensor[rows].tolist(), result[rows].tolist())
    )
    for change in changes:
        logger.debug("%s by box_policy=%r", change.message, policy)
    index = keep.nonzero().flatten()
    return BoxPolicyResult(result[index], index, areas_out[index], BoxCounts.of(changes), changes)


def _box_areas(boxes: torch.Tensor) -> torch.Tensor:
    return boxes[:, 2] * boxes[:, 3]


def _check_policy(box_policy: str) -> None:
    if box_policy not in typing.get_args(BoxPolicy):
        raise HfDetrInputError(f"box_policy={box_policy!r}: choose 'clip' (the default), 'drop' or 'error'.")


def _policy_line(source: str, examples: int, counts: BoxCounts, policy: BoxPolicy, unit: str = "images") -> str:
    return f"{source}: {examples} {unit}, {counts.summary()} by box_policy={policy!r}"
