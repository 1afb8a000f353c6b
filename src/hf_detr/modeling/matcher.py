"""One-to-one matching of predictions to ground truth with the Hungarian algorithm."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch
from scipy.optimize import linear_sum_assignment
from torchvision.ops import box_convert, generalized_box_iou

# GIoU of every prediction against every target of the same image, for a whole batch at once.
_batched_giou = torch.vmap(generalized_box_iou)


class NonFiniteOutputError(ValueError):
    """Model outputs reaching the matcher hold NaN or inf: the training diverged or fp16 overflowed."""


def check_finite(tensor: torch.Tensor, name: str) -> None:
    """Instead of scipy's "cost matrix is infeasible"."""
    if not torch.isfinite(tensor).all():
        raise NonFiniteOutputError(
            f"{name} contains NaN or inf values: the model has diverged or a half-precision value overflowed. "
            "Lower the learning rate, clip gradients (max_grad_norm=0.1 as in DETR), or train in bf16/float32."
        )


class Matcher(Protocol):
    """What `SetCriterion` asks of a matcher (`HungarianMatcher.__call__`'s signature): any such callable can be
    injected, e.g. a different cost or a recording fake in tests."""

    def __call__(
        self,
        logits: torch.Tensor,
        pred_boxes: torch.Tensor,
        class_labels: Sequence[torch.Tensor],
        boxes: Sequence[torch.Tensor],
        name: str = "",
    ) -> list[tuple[torch.Tensor, torch.Tensor]]: ...


class HungarianMatcher:
    """Computes, per image, the assignment of queries to targets that minimizes
    `class_cost * (-p(class)) + bbox_cost * L1 + giou_cost * (-GIoU)`, plus `order_cost * query / queries` (a
    tie-break, `HfDetrConfig.order_cost`; 0 in DETR).

    The cost of the whole batch is built in one pass over a padded `[batch, queries, max_targets]` tensor (only
    same-image pairs, unlike a full batch-by-batch matrix), copied to the CPU once and solved image by image with
    `scipy.optimize.linear_sum_assignment`. It runs in float32 whatever the autocast state.
    """

    def __init__(
        self, class_cost: float = 1.0, bbox_cost: float = 5.0, giou_cost: float = 2.0, order_cost: float = 0.0
    ) -> None:
        self.class_cost = class_cost
        self.bbox_cost = bbox_cost
        self.giou_cost = giou_cost
        self.order_cost = order_cost

    @torch.no_grad()
    def __call__(
        self,
        logits: torch.Tensor,
        pred_boxes: torch.Tensor,
        class_labels: Sequence[torch.Tensor],
        boxes: Sequence[torch.Tensor],
        name: str = "",
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per image `(query_indices, target_indices)`, int64 CPU tensors of length `min(queries, n_i)`; boxes
        normalized (cx, cy, w, h); `name` prefixes errors (e.g. "auxiliary_outputs[2].")."""
        batch, num_queries = logits.shape[:2]
        sizes = [len(b) for b in boxes]
        empty = torch.empty(0, dtype=torch.int64)
        if max(sizes, default=0) == 0:
            return [(empty, empty) for _ in sizes]
        check_finite(logits, f"{name}logits")
        check_finite(pred_boxes, f"{name}pred_boxes")
        device = logits.device
        with torch.autocast(device.type, enabled=False):
            prob = logits.float().softmax(-1)
            max_targets = max(sizes)
            target_ids = torch.zeros(batch, max_targets, dtype=torch.int64, device=device)
            # padding targets get a valid dummy box so GIoU stays finite; their columns are never read
            target_boxes = torch.full((batch, max_targets, 4), 0.5, device=device)
            for i, (ids, bxs) in enumerate(zip(class_labels, boxes)):
                target_ids[i, : sizes[i]] = ids
                target_boxes[i, : sizes[i]] = bxs.float()
            out_boxes = pred_boxes.float()
            cost_class = -prob.gather(2, target_ids[:, None, :].expand(-1, num_queries, -1))
            cost_bbox = torch.cdist(out_boxes, target_boxes, p=1)
            corners = box_convert(out_boxes, "cxcywh", "xyxy"), box_convert(target_boxes, "cxcywh", "xyxy")
            cost_giou = -_batched_giou(*corners)
            cost = self.bbox_cost * cost_bbox + self.class_cost * cost_class + self.giou_cost * cost_giou
            if self.order_cost:  # near-equal queries: the earlier one wins, every time
                order = torch.arange(num_queries, device=device, dtype=cost.dtype) / num_queries
                cost = cost + self.order_cost * order[None, :, None]
        cost = cost.cpu()
        indices = []
        for i, n in enumerate(sizes):
            rows, cols = linear_sum_assignment(cost[i, :, :n].numpy())
            indices.append((torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)))
        return indices
