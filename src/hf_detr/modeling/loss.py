"""DETR's set criterion, composed as in the original: a matcher, a weight dict and a list of loss terms.

`build_criterion(config)` maps an `HfDetrConfig` to it: the one-to-one set loss (Hungarian matching, then
cross-entropy, L1 and GIoU losses on the matched pairs) and, with the training recipe's options, the one-to-many
query group (H-DETR) and the encoder's dense head; for segmentation, the focal and dice losses of the matched
masks. docs/ARCHITECTURE.md ("The loss: adding a term") shows how to add a term.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.distributed as dist
from torch.nn import functional as F
from torchvision.ops import box_convert, box_iou, generalized_box_iou_loss, sigmoid_focal_loss

from .boxes import check_boxes
from .configuration_hf_detr import HfDetrConfig
from .errors import HfDetrInputError, HfDetrInputTypeError
from .matcher import HungarianMatcher, Matcher


def validate_labels(labels: object, batch_size: int, num_labels: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The entry check of user-supplied `labels`: per image `class_labels` int `[n]` and `boxes` `[n, 4]` normalized
    (center_x, center_y, width, height), width and height > 0, the box inside [0, 1] x [0, 1]."""
    if not isinstance(labels, Sequence) or isinstance(labels, (str, bytes)):
        raise HfDetrInputTypeError(f"labels must be a list with one dict per image, got {type(labels).__name__}")
    if len(labels) != batch_size:
        raise HfDetrInputError(
            f"labels has {len(labels)} entries but the batch has {batch_size} images; give one per image"
        )
    class_labels, boxes = [], []
    for i, target in enumerate(labels):
        if not isinstance(target, Mapping) or "class_labels" not in target or "boxes" not in target:
            raise HfDetrInputError(f'labels[{i}] must be a dict with "class_labels" and "boxes"')
        ids, bxs = torch.as_tensor(target["class_labels"]), torch.as_tensor(target["boxes"])
        if ids.numel() == 0 and bxs.numel() == 0:  # an image without objects may come as empty lists
            ids, bxs = ids.long(), bxs.reshape(0, 4)
        if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
            raise HfDetrInputTypeError(
                f'labels[{i}]["class_labels"] must hold integer class ids, got dtype {ids.dtype}'
            )
        if ids.ndim != 1 or bxs.ndim != 2 or bxs.shape[-1] != 4 or len(bxs) != len(ids):
            raise HfDetrInputError(
                f'labels[{i}]: "class_labels" must be [n] and "boxes" [n, 4] with the same n, '
                f"got {tuple(ids.shape)} and {tuple(bxs.shape)}"
            )
        class_labels.append(ids.long())
        boxes.append(bxs.float())
    all_ids, all_boxes = torch.cat(class_labels), torch.cat(boxes)
    sizes = [len(c) for c in class_labels]
    bad_ids = (all_ids < 0) | (all_ids >= num_labels)
    if bad_ids.any():
        i, j = _locate(bad_ids, sizes)
        raise HfDetrInputError(
            f'labels[{i}]["class_labels"][{j}] = {int(class_labels[i][j])} is not a class id in [0, {num_labels}); '
            "map dataset categories to contiguous ids and set num_labels / id2label accordingly"
        )

    def name(k: int) -> str:  # box k of the concatenation, by image and entry
        i, j = _locate(torch.arange(len(all_boxes)) == k, sizes)
        return f'labels[{i}]["boxes"][{j}]'

    # the box's extent must lie in the image (not just each number in [0, 1]); 1e-5 absorbs float32 rounding at edges
    check_boxes(all_boxes, name, "cxcywh", positive=True, within=(1.0, 1.0), tolerance=1e-5)
    return class_labels, boxes


def validate_masks(labels: Sequence[Mapping[str, object]], size: tuple[int, int]) -> list[torch.Tensor]:
    """Each image's `masks` `[n, height, width]`, one per box at the padded input `size` (the processor's
    `return_segmentation_masks=True`), as float 0/1."""
    masks = []
    for i, target in enumerate(labels):
        if "masks" not in target:
            raise HfDetrInputError(
                f'labels[{i}] has no "masks"; segmentation needs one mask per box (prepare the '
                "annotations with HfDetrImageProcessor(..., return_segmentation_masks=True))"
            )
        mask = torch.as_tensor(target["masks"])
        expected = (len(torch.as_tensor(target["class_labels"]).reshape(-1)), *size)
        if tuple(mask.shape) != expected and not (mask.numel() == 0 and expected[0] == 0):
            raise HfDetrInputError(
                f'labels[{i}]["masks"] has shape {tuple(mask.shape)}; expected [objects, height, width] = {expected}: '
                "one mask per box at the size of the padded pixel_values"
            )
        masks.append(mask.reshape(expected).float())
    return masks


def _locate(flags: torch.Tensor, sizes: list[int]) -> tuple[int, int]:
    """(image, entry) of the first True in per-box `flags` concatenated over images of `sizes` boxes."""
    index = int(flags.nonzero()[0, 0])
    for image, size in enumerate(sizes):
        if index < size:
            return image, index
        index -= size
    raise IndexError(index)


def _process_means(values: list[float], device: torch.device) -> list[float]:
    """Average per-process `values` over processes (the values themselves without torch.distributed).

    DDP averages gradients over processes, so a loss divided by a normalizer averaged over processes (e.g. all boxes
    / world size) gives the gradient of the whole batch's loss divided by the whole batch's normalizer, as if one
    process had seen the whole batch.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return (tensor / dist.get_world_size()).tolist()


def _box_losses(src_boxes: torch.Tensor, target_boxes: torch.Tensor, normalizer: float) -> tuple[torch.Tensor, ...]:
    """Summed L1 and GIoU losses of paired (cx, cy, w, h) boxes `[n, 4]`, each divided by `normalizer`."""
    loss_bbox = F.l1_loss(src_boxes, target_boxes, reduction="sum") / normalizer
    loss_giou = (
        generalized_box_iou_loss(
            box_convert(src_boxes, "cxcywh", "xyxy"), box_convert(target_boxes, "cxcywh", "xyxy"), reduction="sum"
        )
        / normalizer
    )
    return loss_bbox, loss_giou


LossOutputs = Mapping[str, "torch.Tensor | list[dict[str, torch.Tensor]]"]
"""The model's outputs a criterion reads: `logits`, `pred_boxes`, optionally `auxiliary_outputs` and the outputs of
training-only heads (e.g. `encoder_logits`), by name."""


@dataclass(frozen=True)
class QueryGroups:
    """`count` consecutive groups of queries spanning `queries` of the query axis."""

    queries: slice
    count: int

    def per_row(self, per_image: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per-image targets repeated for each group, in the row order of `layers`."""
        return [item for item in per_image for _ in range(self.count)]

    def layers(self, outputs: LossOutputs) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
        """`(suffix, logits, pred_boxes)` of these queries on the last decoder layer (suffix `""`) and on every
        auxiliary layer i (suffix `_{i}`), as `[batch * count, queries per group, ...]`: one matching per image and
        group, the groups of image b at rows `b * count ... (b + 1) * count - 1`."""

        def by_group(x: torch.Tensor) -> torch.Tensor:
            x = x[:, self.queries]
            return x.reshape(x.shape[0] * self.count, x.shape[1] // self.count, *x.shape[2:])

        layers = [("", outputs["logits"], outputs["pred_boxes"])]
        for i, aux in enumerate(outputs.get("auxiliary_outputs") or []):
            layers.append((f"_{i}", aux["logits"], aux["pred_boxes"]))
        return [(suffix, by_group(logits), by_group(boxes)) for suffix, logits, boxes in layers]


@dataclass(frozen=True)
class LossTargets:
    """What `SetCriterion` computes once per call and hands to every term.

    Attributes:
        boxes: per image `[n_i, 4]` normalized (cx, cy, w, h), validated and on the outputs' device.
        class_weight: `[num_labels + 1]`: 1 per class, then `eos_coefficient` ("no object").
        one_to_one: every query group but the one `one_to_many` takes.
        one_to_many: the last query group, when a term takes it (`LossTerm.takes_last_group`) and the outputs hold
            more than one group (training).
        masks: per image float `[n_i, height, width]` at the padded input size, when a term reads masks.
        matches: computed once per (query groups, layer) and shared by the terms (`match`): the mask loss reuses
            the one-to-one matches of the last layer.
    """

    class_labels: list[torch.Tensor]
    boxes: list[torch.Tensor]
    matcher: Matcher
    eos_coefficient: float
    class_weight: torch.Tensor
    one_to_one: QueryGroups
    one_to_many: QueryGroups | None
    masks: list[torch.Tensor] | None = None
    matches: dict[tuple, list[tuple[torch.Tensor, torch.Tensor]]] = field(default_factory=dict)

    def match(
        self,
        groups: QueryGroups,
        suffix: str,
        logits: torch.Tensor,
        pred_boxes: torch.Tensor,
        class_labels: list[torch.Tensor],
        boxes: list[torch.Tensor],
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """`(query indices, target indices)` per row of `groups.layers(outputs)`'s layer `suffix`, cached."""
        key = (groups.queries.start, groups.queries.stop, suffix)  # slices are not hashable before Python 3.12
        if key not in self.matches:
            name = f"auxiliary_outputs[{suffix[1:]}]." if suffix else ""
            self.matches[key] = self.matcher(logits, pred_boxes, class_labels, boxes, name=name)
        return self.matches[key]


class LossTerm(abc.ABC):
    """One term of the loss: called with the model's outputs and the criterion's `LossTargets`, it returns its
    unweighted values by name. `SetCriterion` weights those in its `weight_dict` and only logs the others; a term
    whose inputs are absent (a training-only head in eval mode) returns nothing."""

    takes_last_group: ClassVar[bool] = False
    """True for a term that reads the last query group on its own; the one-to-one term then leaves that group out."""
    reads_masks: ClassVar[bool] = False
    """True for a term that reads the target masks (`LossTargets.masks`), which `labels` must then hold."""

    @abc.abstractmethod
    def __call__(self, outputs: LossOutputs, targets: LossTargets) -> dict[str, torch.Tensor]: ...


def _set_loss(
    outputs: LossOutputs,
    targets: LossTargets,
    groups: QueryGroups,
    class_labels: list[torch.Tensor],
    boxes: list[torch.Tensor],
    duplicate_weight: float = 0.0,
) -> dict[str, torch.Tensor]:
    """DETR's terms of the query `groups`, each group matched one-to-one to all of `class_labels` / `boxes` on its
    own and the terms averaged over groups, on the last decoder layer and (`_{i}` suffixed) every auxiliary one;
    `duplicate_weight` as `HfDetrConfig.duplicate_eos_coefficient`."""
    class_labels, boxes = groups.per_row(class_labels), groups.per_row(boxes)
    layers = groups.layers(outputs)
    num_queries, device = layers[0][1].shape[1], layers[0][1].device
    # L1 and GIoU are divided by the number of target boxes; the cross-entropy is a weighted mean over all
    # queries (matched ones weigh 1, the others eos_coefficient). Both normalizers are averaged over processes,
    # or N processes would not compute what one process computes on the whole batch. Summed over groups, they
    # make the terms the mean over groups (every group has the same targets).
    matched = sum(min(num_queries, len(b)) for b in boxes)
    class_weight_total = matched + targets.eos_coefficient * (len(boxes) * num_queries - matched)
    num_boxes, ce_norm = _process_means([float(sum(len(b) for b in boxes)), class_weight_total], device)
    num_boxes = max(num_boxes, 1.0)
    loss_dict: dict[str, torch.Tensor] = {}
    for suffix, logits, pred_boxes in layers:
        indices = targets.match(groups, suffix, logits, pred_boxes, class_labels, boxes)
        terms = _matched_terms(
            logits, pred_boxes, class_labels, boxes, indices, num_boxes, ce_norm, targets.class_weight, duplicate_weight
        )
        loss_dict.update({key + suffix: value for key, value in terms.items()})
    return loss_dict


DUPLICATE_TARGET_IOU = 0.5
"""An unmatched query whose box overlaps a target this much would be a true positive at COCO's AP50 had another
query not taken the object: at inference it is a duplicate (`HfDetrConfig.duplicate_eos_coefficient`)."""


def _overlaps_a_target(pred_boxes: torch.Tensor, boxes: list[torch.Tensor]) -> torch.Tensor:
    """`[rows, queries]` bool: the query's (cx, cy, w, h) box overlaps one of its row's target `boxes` at IoU >=
    `DUPLICATE_TARGET_IOU`."""
    overlaps = torch.zeros(pred_boxes.shape[:2], dtype=torch.bool, device=pred_boxes.device)
    for row, targets in enumerate(boxes):
        if len(targets):
            corners = box_convert(pred_boxes[row].float(), "cxcywh", "xyxy"), box_convert(targets, "cxcywh", "xyxy")
            overlaps[row] = box_iou(*corners).amax(1) >= DUPLICATE_TARGET_IOU
    return overlaps


def _matched_terms(
    logits: torch.Tensor,
    pred_boxes: torch.Tensor,
    class_labels: list[torch.Tensor],
    boxes: list[torch.Tensor],
    indices: list[tuple[torch.Tensor, torch.Tensor]],
    num_boxes: float,
    ce_norm: float,
    class_weight: torch.Tensor,
    duplicate_weight: float = 0.0,
) -> dict[str, torch.Tensor]:
    """DETR's four values of one layer, given the matcher's `indices` per row. With `duplicate_weight` > 0, an
    unmatched query whose box overlaps a target at IoU >= `DUPLICATE_TARGET_IOU` has that "no object" weight instead
    of `class_weight[-1]`; the normalizer stays DETR's, so only those queries' share of the loss grows."""
    device = logits.device
    num_classes = logits.shape[-1] - 1
    batch_idx = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)]).to(device)
    query_idx = torch.cat([src for src, _ in indices]).to(device)
    matched_ids = torch.cat([ids[tgt.to(device)] for ids, (_, tgt) in zip(class_labels, indices)])
    matched_boxes = torch.cat([bxs[tgt.to(device)] for bxs, (_, tgt) in zip(boxes, indices)])

    logits = logits.float()
    target_classes = torch.full(logits.shape[:2], num_classes, dtype=torch.int64, device=device)
    target_classes[batch_idx, query_idx] = matched_ids
    weight = class_weight[target_classes]
    if duplicate_weight:
        with torch.no_grad():
            duplicate = _overlaps_a_target(pred_boxes, boxes)
            duplicate[batch_idx, query_idx] = False
        weight = torch.where(duplicate, duplicate_weight, weight)
    loss_ce = (F.cross_entropy(logits.transpose(1, 2), target_classes, reduction="none") * weight).sum() / ce_norm
    loss_bbox, loss_giou = _box_losses(pred_boxes[batch_idx, query_idx].float(), matched_boxes, num_boxes)

    with torch.no_grad():
        predicted_objects = (logits.argmax(-1) != num_classes).sum(1).float()
        target_counts = torch.tensor([float(len(b)) for b in boxes], device=device)
        cardinality_error = F.l1_loss(predicted_objects, target_counts)
    return {
        "loss_ce": loss_ce,
        "loss_bbox": loss_bbox,
        "loss_giou": loss_giou,
        "cardinality_error": cardinality_error,
    }


@dataclass(frozen=True)
class OneToOneSetLoss(LossTerm):
    """DETR's Hungarian loss: `loss_ce` (cross-entropy over all queries, "no object" weighted by `eos_coefficient`),
    `loss_bbox` (L1) and `loss_giou` (1 - GIoU) over matched pairs divided by the number of target boxes, and
    `cardinality_error` (logged, no gradient); `_{i}` suffixed for auxiliary layer i. With several query groups
    (Group DETR) each is matched to all targets on its own and the terms are averaged over groups.
    `duplicate_weight`: `HfDetrConfig.duplicate_eos_coefficient` (0: DETR)."""

    duplicate_weight: float = 0.0

    def __call__(self, outputs: LossOutputs, targets: LossTargets) -> dict[str, torch.Tensor]:
        return _set_loss(
            outputs, targets, targets.one_to_one, targets.class_labels, targets.boxes, self.duplicate_weight
        )


@dataclass(frozen=True)
class OneToManyLoss(LossTerm):
    """H-DETR's hybrid branch: the last query group matched to every target repeated `repeats` times (many positive
    queries per object), normalized by its own target count; DETR's terms prefixed `one_to_many_`."""

    repeats: int
    takes_last_group: ClassVar[bool] = True

    def __call__(self, outputs: LossOutputs, targets: LossTargets) -> dict[str, torch.Tensor]:
        if targets.one_to_many is None:  # one query group (inference): no one-to-many branch
            return {}
        class_labels = [c.repeat(self.repeats) for c in targets.class_labels]
        boxes = [b.repeat(self.repeats, 1) for b in targets.boxes]
        terms = _set_loss(outputs, targets, targets.one_to_many, class_labels, boxes)
        return {f"one_to_many_{key}": value for key, value in terms.items()}


@dataclass(frozen=True)
class EncoderDenseLoss(LossTerm):
    """Loss of the dense head on the encoder tokens, one-to-many, terms prefixed `encoder_` (their weights include
    `config.encoder_loss_coefficient`).

    A token is assigned an object when its cell holds the object's centre, or lies within one cell of it and
    inside the box (the smallest such object when several qualify); all others are "no object". Its box is
    predicted relative to the cell centre. Terms as in the set loss: weighted cross-entropy over real tokens,
    L1 and GIoU over assigned tokens.

    Reads `outputs["encoder_logits"]` `[batch, h * w, num_labels + 1]`, `outputs["encoder_box_logits"]`
    `[batch, h * w, 4]` and `outputs["feature_mask"]` `[batch, h, w]` (True on real cells); the model gives them
    in training only.
    """

    def __call__(self, outputs: LossOutputs, targets: LossTargets) -> dict[str, torch.Tensor]:
        if "encoder_logits" not in outputs:
            return {}
        logits, box_logits = outputs["encoder_logits"], outputs["encoder_box_logits"]
        feature_mask = outputs["feature_mask"]
        batch, height, width = feature_mask.shape
        device = logits.device
        # cell centres in each image's normalized coordinates (its real cells span [0, 1])
        rows = feature_mask.any(2).sum(1).clamp(min=1)[:, None, None]
        cols = feature_mask.any(1).sum(1).clamp(min=1)[:, None, None]
        grid_y, grid_x = torch.meshgrid(
            torch.arange(height, device=device), torch.arange(width, device=device), indexing="ij"
        )
        centres = torch.stack([((grid_x + 0.5) / cols).flatten(1), ((grid_y + 0.5) / rows).flatten(1)], -1)
        cells = torch.cat([cols, rows], -1).reshape(batch, 1, 2)  # cells per unit length, x and y

        num_classes = logits.shape[-1] - 1
        real = feature_mask.flatten(1)
        target_classes = torch.full(real.shape, num_classes, dtype=torch.int64, device=device)
        target_boxes = torch.zeros(*real.shape, 4, device=device)
        for i, (ids, bxs) in enumerate(zip(targets.class_labels, targets.boxes)):
            if len(ids) == 0:  # an image without objects: every token is "no object"
                continue
            offset = (centres[i][:, None] - bxs[None, :, :2]).abs()  # [h * w, n, 2]
            in_cells = offset * cells[i][:, None]
            assigned = (in_cells <= 0.5).all(-1) | ((in_cells <= 1).all(-1) & (offset < bxs[None, :, 2:] / 2).all(-1))
            area = torch.where(assigned, bxs[:, 2] * bxs[:, 3], torch.inf)
            best, hit = area.argmin(1), assigned.any(1) & real[i]
            target_classes[i, hit], target_boxes[i, hit] = ids[best[hit]], bxs[best[hit]]
        positive = target_classes != num_classes

        class_weight = targets.class_weight
        num_positive, ce_norm = _process_means(
            [float(positive.sum()), float(class_weight[target_classes][real].sum())], device
        )
        ce = F.cross_entropy(logits.float().transpose(1, 2), target_classes, class_weight, reduction="none")
        loss_ce = ce[real].sum() / max(ce_norm, 1e-6)
        offsets = box_logits[positive].float()
        src_boxes = torch.cat(
            [(torch.logit(centres[positive]) + offsets[:, :2]).sigmoid(), offsets[:, 2:].sigmoid()], -1
        )
        loss_bbox, loss_giou = _box_losses(src_boxes, target_boxes[positive], max(num_positive, 1.0))
        return {"encoder_loss_ce": loss_ce, "encoder_loss_bbox": loss_bbox, "encoder_loss_giou": loss_giou}


@dataclass(frozen=True)
class MaskLoss(LossTerm):
    """The mask head's loss on the one-to-one matches of the last layer (masks are not in the matching cost, as in
    the paper): `loss_mask`, sigmoid focal loss (alpha 0.25, gamma 2) averaged over each mask's pixels, and
    `loss_dice`, 1 - smoothed Dice, both summed over masks and divided by the target boxes (averaged over processes).

    Predicted masks are upsampled (bilinear) to the padded input size. Padding pixels (`outputs["pixel_mask"]`) are
    left out, so a padded image has the loss it has alone; the original and transformers count them as background.
    Reads `outputs["pred_masks"]` `[batch, num_queries, h, w]` (the first query group), or `outputs["masks_of"]`,
    a function of the matched (image, query) pairs giving their mask logits `[n, h, w]` (what
    `HfDetrForSegmentation` passes in training, to run the head on the matched queries alone).
    """

    reads_masks: ClassVar[bool] = True

    def __call__(self, outputs: LossOutputs, targets: LossTargets) -> dict[str, torch.Tensor]:
        if "pred_masks" not in outputs and "masks_of" not in outputs:
            return {}
        groups = targets.one_to_one
        _, logits, pred_boxes = groups.layers(outputs)[0]
        class_labels, boxes = groups.per_row(targets.class_labels), groups.per_row(targets.boxes)
        # the first group of each image: the queries the mask head reads
        indices = targets.match(groups, "", logits, pred_boxes, class_labels, boxes)[:: groups.count]
        device = outputs["logits"].device
        (num_boxes,) = _process_means([float(sum(len(b) for b in targets.boxes))], device)
        num_boxes = max(num_boxes, 1.0)
        batch_idx = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)]).to(device)
        query_idx = torch.cat([src for src, _ in indices]).to(device)
        if len(query_idx) == 0:  # no objects in the batch: zero, still connected to the graph
            zero = outputs["logits"].sum() * 0.0
            return {"loss_mask": zero, "loss_dice": zero}
        if "pred_masks" in outputs:
            matched = outputs["pred_masks"][batch_idx, query_idx]
        else:
            matched = outputs["masks_of"](batch_idx, query_idx)
        target = torch.cat([m[tgt.to(device)] for m, (_, tgt) in zip(targets.masks, indices)])
        pixel_mask = outputs.get("pixel_mask")
        valid = torch.ones_like(target, dtype=torch.bool) if pixel_mask is None else pixel_mask.bool()[batch_idx]
        pred = F.interpolate(matched[:, None].float(), size=target.shape[-2:], mode="bilinear", align_corners=False)[
            :, 0
        ]
        valid_pixels = valid.flatten(1).sum(1).clamp(min=1)
        focal = sigmoid_focal_loss(pred, target, alpha=0.25, gamma=2.0, reduction="none")
        loss_mask = ((focal * valid).flatten(1).sum(1) / valid_pixels).sum() / num_boxes
        prob = (pred.sigmoid() * valid).flatten(1)
        target = target.flatten(1)
        dice = 1 - (2 * (prob * target).sum(1) + 1) / (prob.sum(1) + target.sum(1) + 1)
        return {"loss_mask": loss_mask, "loss_dice": dice.sum() / num_boxes}


@dataclass
class SetCriterion:
    """DETR's loss, composed as the original's `SetCriterion(num_classes, matcher, weight_dict, eos_coef, losses)`:
    every term in `losses` is computed, and those named in `weight_dict` are summed with their weights.

    Values not in `weight_dict` (`cardinality_error`) are only logged. Outputs with `k * num_queries` queries hold
    k groups (Group DETR training; one group in eval mode). `num_labels` excludes "no object".
    """

    matcher: Matcher
    weight_dict: dict[str, float]
    losses: list[LossTerm]
    num_queries: int
    eos_coefficient: float
    num_labels: int

    def __post_init__(self) -> None:
        takers = [type(term).__name__ for term in self.losses if term.takes_last_group]
        if len(takers) > 1:
            raise HfDetrInputError(f"only one loss term can take the last query group, got {takers}")

    def __call__(self, outputs: LossOutputs, labels: object) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The weighted total and every value by name. `outputs`: `logits`, `pred_boxes`, optionally
        `auxiliary_outputs` (one dict of both per decoder layer but the last) and what other terms read; `labels`:
        see `validate_labels` and `validate_masks`."""
        targets = self._targets(outputs, labels)
        loss_dict = self._terms(outputs, targets)
        weighted = (self.weight_dict[key] * value for key, value in loss_dict.items() if key in self.weight_dict)
        loss = sum(weighted, torch.zeros((), device=outputs["logits"].device))
        return loss, loss_dict

    def _targets(self, outputs: LossOutputs, labels: object) -> LossTargets:
        """Once for every term."""
        logits = outputs["logits"]
        device = logits.device
        class_labels, boxes = validate_labels(labels, logits.shape[0], self.num_labels)
        groups, rest = divmod(logits.shape[1], self.num_queries)
        if rest or not groups:
            raise HfDetrInputError(
                f'outputs["logits"] has {logits.shape[1]} queries, not a multiple of num_queries={self.num_queries}'
            )
        # with one group (eval) there is no one-to-many branch: the one-to-one term reads every query
        many = 1 if groups > 1 and any(term.takes_last_group for term in self.losses) else 0
        split = (groups - many) * self.num_queries
        class_weight = torch.ones(self.num_labels + 1, device=device)
        class_weight[-1] = self.eos_coefficient
        masks = None
        if any(term.reads_masks for term in self.losses) and ("pred_masks" in outputs or "masks_of" in outputs):
            size = outputs["pixel_mask"].shape[-2:] if "pixel_mask" in outputs else None
            if size is None:  # the first image's masks give the size the others must have
                size = torch.as_tensor(labels[0].get("masks", torch.zeros(0, 0, 0))).shape[-2:]
            masks = [m.to(device) for m in validate_masks(labels, tuple(size))]
        return LossTargets(
            class_labels=[c.to(device) for c in class_labels],
            boxes=[b.to(device) for b in boxes],
            matcher=self.matcher,
            eos_coefficient=self.eos_coefficient,
            class_weight=class_weight,
            one_to_one=QueryGroups(slice(0, split), groups - many),
            one_to_many=QueryGroups(slice(split, None), 1) if many else None,
            masks=masks,
        )

    def _terms(self, outputs: LossOutputs, targets: LossTargets) -> dict[str, torch.Tensor]:
        """Every term's values, unweighted, merged by name (one seam: tests/test_train.py checks their dtypes here)."""
        loss_dict: dict[str, torch.Tensor] = {}
        for term in self.losses:
            values = term(outputs, targets)
            if clash := loss_dict.keys() & values.keys():
                raise HfDetrInputError(
                    f"{type(term).__name__} returns {sorted(clash)}, which another loss term returned"
                )
            loss_dict.update(values)
        return loss_dict


def build_criterion(config: HfDetrConfig, masks: bool = False) -> SetCriterion:
    """The loss `config` describes (with `masks`, the segmentation model's: plus `MaskLoss`): the one place that maps
    config values to the matcher (built once), the weights and the terms. Cheap (no tensors), so the model builds it
    at every forward with labels and config edits apply."""
    detr = {"loss_ce": 1.0, "loss_bbox": config.bbox_loss_coefficient, "loss_giou": config.giou_loss_coefficient}
    suffixes = [""] + [f"_{i}" for i in range(config.decoder_layers - 1) if config.auxiliary_loss]
    set_weights = {key + suffix: weight for suffix in suffixes for key, weight in detr.items()}
    # every term with the weights of the values it returns; adding a term is adding an entry
    terms: list[tuple[LossTerm, dict[str, float]]] = [(OneToOneSetLoss(config.duplicate_eos_coefficient), set_weights)]
    if config.one_to_many_repeats > 0:
        many_weights = {f"one_to_many_{key}": weight for key, weight in set_weights.items()}
        terms.append((OneToManyLoss(config.one_to_many_repeats), many_weights))
    if config.encoder_loss_coefficient > 0:
        coefficient = config.encoder_loss_coefficient
        terms.append((EncoderDenseLoss(), {f"encoder_{k}": w * coefficient for k, w in detr.items()}))
    if masks:
        terms.append(
            (MaskLoss(), {"loss_mask": config.mask_loss_coefficient, "loss_dice": config.dice_loss_coefficient})
        )
    return SetCriterion(
        matcher=HungarianMatcher(config.class_cost, config.bbox_cost, config.giou_cost, config.order_cost),
        weight_dict={key: weight for _, weights in terms for key, weight in weights.items()},
        losses=[term for term, _ in terms],
        num_queries=config.num_queries,
        eos_coefficient=config.eos_coefficient,
        num_labels=config.num_labels,
    )
