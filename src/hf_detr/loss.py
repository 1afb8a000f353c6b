"""DETR's set criterion: Hungarian matching, then cross-entropy, L1 and GIoU losses on the matched pairs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.distributed as dist
from torch.nn import functional as F
from torchvision.ops import box_convert, generalized_box_iou_loss

from .configuration_hf_detr import HfDetrConfig
from .matcher import HungarianMatcher


def validate_labels(labels: object, batch_size: int, num_labels: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Check `labels` (transformers' format) and return the per-image class ids (int64) and boxes.

    `labels` is a list with one dict per image: `class_labels` int `[n]` and `boxes` float `[n, 4]`, normalized
    (center_x, center_y, width, height) in [0, 1].
    """
    if not isinstance(labels, Sequence) or isinstance(labels, (str, bytes)):
        raise TypeError(f"labels must be a list with one dict per image, got {type(labels).__name__}")
    if len(labels) != batch_size:
        raise ValueError(f"labels has {len(labels)} entries but the batch has {batch_size} images; give one per image")
    class_labels, boxes = [], []
    for i, target in enumerate(labels):
        if not isinstance(target, Mapping) or "class_labels" not in target or "boxes" not in target:
            raise ValueError(f'labels[{i}] must be a dict with "class_labels" and "boxes"')
        ids, bxs = torch.as_tensor(target["class_labels"]), torch.as_tensor(target["boxes"])
        if ids.numel() == 0 and bxs.numel() == 0:  # an image without objects may come as empty lists
            ids, bxs = ids.long(), bxs.reshape(0, 4)
        if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
            raise TypeError(f'labels[{i}]["class_labels"] must hold integer class ids, got dtype {ids.dtype}')
        if ids.ndim != 1 or bxs.ndim != 2 or bxs.shape[-1] != 4 or len(bxs) != len(ids):
            raise ValueError(
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
        raise ValueError(
            f'labels[{i}]["class_labels"][{j}] = {int(class_labels[i][j])} is not a class id in [0, {num_labels}); '
            "map dataset categories to contiguous ids and set num_labels / id2label accordingly"
        )
    checks = (
        (~torch.isfinite(all_boxes).all(-1), "is NaN or infinite"),
        (((all_boxes < 0) | (all_boxes > 1)).any(-1), "lies outside [0, 1]"),
        ((all_boxes[:, 2:] <= 0).any(-1), "has width or height <= 0"),
    )
    for bad, problem in checks:
        if bad.any():
            i, j = _locate(bad, sizes)
            raise ValueError(
                f'labels[{i}]["boxes"][{j}] = {boxes[i][j].tolist()} {problem}; boxes must be normalized '
                "(center_x, center_y, width, height) relative to the image, with width and height > 0"
            )
    return class_labels, boxes


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
    loss_giou = generalized_box_iou_loss(
        box_convert(src_boxes, "cxcywh", "xyxy"), box_convert(target_boxes, "cxcywh", "xyxy"), reduction="sum"
    ) / normalizer
    return loss_bbox, loss_giou


class SetCriterion:
    """Hungarian loss of DETR, reading its weights from the config at every call (the config is the source of truth).

    Terms: `loss_ce` (cross-entropy over all queries, the "no object" class weighted by `eos_coefficient`),
    `loss_bbox` (L1) and `loss_giou` (1 - GIoU) over matched pairs divided by the number of target boxes, and
    `cardinality_error` (logged, no gradient). With auxiliary outputs the same terms get a `_{i}` suffix per layer.
    """

    def __init__(self, config: HfDetrConfig) -> None:
        self.config = config

    def weights(self) -> dict[str, float]:
        """Weight of each loss term in the total."""
        return {
            "loss_ce": 1.0,
            "loss_bbox": self.config.bbox_loss_coefficient,
            "loss_giou": self.config.giou_loss_coefficient,
        }

    def _weighted_sum(self, terms: Mapping[str, torch.Tensor], prefix: str = "") -> torch.Tensor:
        """`loss_ce`, `loss_bbox` and `loss_giou` of `terms` (keys with `prefix`) times their weights, summed."""
        return sum(terms[prefix + key] * weight for key, weight in self.weights().items())

    def _class_weight(self, num_classes: int, device: torch.device) -> torch.Tensor:
        """Cross-entropy class weights: 1 for every class, `eos_coefficient` for the last ("no object")."""
        weight = torch.ones(num_classes + 1, device=device)
        weight[-1] = self.config.eos_coefficient
        return weight

    def __call__(
        self,
        logits: torch.Tensor,
        pred_boxes: torch.Tensor,
        labels: object,
        auxiliary_outputs: list[dict[str, torch.Tensor]] | None = None,
        num_groups: int = 1,
        encoder_outputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Returns the weighted total loss and the dict of every term.

        With `num_groups > 1` (Group DETR) the queries form that many consecutive groups, each matched one-to-one
        to all targets on its own; the losses are averaged over groups. With `config.one_to_many_repeats = k > 0`
        (H-DETR) the last group is matched instead to every target repeated k times, and its loss, normalized by its
        own target count, is added under `one_to_many_*` keys. `encoder_outputs` (the dense head's logits and box
        logits and the feature mask, see `encoder_loss`) add the `encoder_*` terms.
        """
        cfg = self.config
        class_labels, boxes = validate_labels(labels, logits.shape[0], cfg.num_labels)
        class_labels = [c.to(logits.device) for c in class_labels]
        boxes = [b.to(logits.device) for b in boxes]
        repeats = cfg.one_to_many_repeats if num_groups > 1 else 0
        if repeats:
            loss, loss_dict = self._hybrid_loss(logits, pred_boxes, class_labels, boxes, auxiliary_outputs,
                                                num_groups, repeats)  # fmt: skip
        else:
            loss, loss_dict = self._set_loss(logits, pred_boxes, class_labels, boxes, auxiliary_outputs, num_groups)
        if encoder_outputs is not None:
            dense_loss, dense_terms = self._encoder_loss(*encoder_outputs, class_labels, boxes)
            loss = loss + dense_loss
            loss_dict.update(dense_terms)
        return loss, loss_dict

    def _hybrid_loss(
        self,
        logits: torch.Tensor,
        pred_boxes: torch.Tensor,
        class_labels: list[torch.Tensor],
        boxes: list[torch.Tensor],
        auxiliary_outputs: list[dict[str, torch.Tensor]] | None,
        num_groups: int,
        repeats: int,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One-to-one loss of the first `num_groups - 1` groups plus the last group's loss against the targets
        repeated `repeats` times (its terms prefixed `one_to_many_`)."""
        split = logits.shape[1] // num_groups * (num_groups - 1)

        def part(queries: slice) -> tuple[torch.Tensor, torch.Tensor, list[dict[str, torch.Tensor]]]:
            aux = [{key: value[:, queries] for key, value in layer.items()} for layer in auxiliary_outputs or []]
            return logits[:, queries], pred_boxes[:, queries], aux

        one_logits, one_boxes, one_aux = part(slice(None, split))
        loss, loss_dict = self._set_loss(one_logits, one_boxes, class_labels, boxes, one_aux, num_groups - 1)
        many_logits, many_boxes, many_aux = part(slice(split, None))
        many_loss, many_dict = self._set_loss(
            many_logits, many_boxes, [c.repeat(repeats) for c in class_labels], [b.repeat(repeats, 1) for b in boxes],
            many_aux, 1,
        )  # fmt: skip
        loss_dict.update({f"one_to_many_{key}": value for key, value in many_dict.items()})
        return loss + many_loss, loss_dict

    def encoder_loss(
        self, logits: torch.Tensor, box_logits: torch.Tensor, feature_mask: torch.Tensor, labels: object
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss of the dense head on the encoder tokens (`config.encoder_loss_coefficient`), one-to-many.

        A token is assigned an object when its cell holds the object's centre, or lies within one cell of it and
        inside the box (the smallest such object when several qualify); all others are "no object". Its box is
        predicted relative to the cell centre. Terms as in the set loss: weighted cross-entropy over real tokens,
        L1 and GIoU over assigned tokens.

        Args:
            logits: `[batch, h * w, num_labels + 1]`; box_logits: `[batch, h * w, 4]`.
            feature_mask: `[batch, h, w]`, True on real cells; labels: as for `__call__`.
        """
        class_labels, boxes = validate_labels(labels, feature_mask.shape[0], self.config.num_labels)
        return self._encoder_loss(logits, box_logits, feature_mask, class_labels, boxes)

    def _encoder_loss(
        self,
        logits: torch.Tensor,
        box_logits: torch.Tensor,
        feature_mask: torch.Tensor,
        class_labels: list[torch.Tensor],
        boxes: list[torch.Tensor],
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        batch, height, width = feature_mask.shape
        device = logits.device
        # cell centres in each image's normalized coordinates (its real cells span [0, 1])
        rows = feature_mask.any(2).sum(1).clamp(min=1)[:, None, None]
        cols = feature_mask.any(1).sum(1).clamp(min=1)[:, None, None]
        grid_y, grid_x = torch.meshgrid(torch.arange(height, device=device), torch.arange(width, device=device),
                                        indexing="ij")  # fmt: skip
        centres = torch.stack([((grid_x + 0.5) / cols).flatten(1), ((grid_y + 0.5) / rows).flatten(1)], -1)
        cells = torch.cat([cols, rows], -1).reshape(batch, 1, 2)  # cells per unit length, x and y

        num_classes = logits.shape[-1] - 1
        real = feature_mask.flatten(1)
        target_classes = torch.full(real.shape, num_classes, dtype=torch.int64, device=device)
        target_boxes = torch.zeros(*real.shape, 4, device=device)
        for i, (ids, bxs) in enumerate(zip(class_labels, boxes)):
            if len(ids) == 0:  # an image without objects: every token is "no object"
                continue
            ids, bxs = ids.to(device), bxs.to(device)
            offset = (centres[i][:, None] - bxs[None, :, :2]).abs()  # [h * w, n, 2]
            in_cells = offset * cells[i][:, None]
            assigned = (in_cells <= 0.5).all(-1) | ((in_cells <= 1).all(-1) & (offset < bxs[None, :, 2:] / 2).all(-1))
            area = torch.where(assigned, bxs[:, 2] * bxs[:, 3], torch.inf)
            best, hit = area.argmin(1), assigned.any(1) & real[i]
            target_classes[i, hit], target_boxes[i, hit] = ids[best[hit]], bxs[best[hit]]
        positive = target_classes != num_classes

        class_weight = self._class_weight(num_classes, device)
        num_positive, ce_norm = _process_means(
            [float(positive.sum()), float(class_weight[target_classes][real].sum())], device
        )
        ce = F.cross_entropy(logits.float().transpose(1, 2), target_classes, class_weight, reduction="none")
        loss_ce = ce[real].sum() / max(ce_norm, 1e-6)
        offsets = box_logits[positive].float()
        src_boxes = torch.cat([(torch.logit(centres[positive]) + offsets[:, :2]).sigmoid(), offsets[:, 2:].sigmoid()], -1)
        loss_bbox, loss_giou = _box_losses(src_boxes, target_boxes[positive], max(num_positive, 1.0))
        terms = {"encoder_loss_ce": loss_ce, "encoder_loss_bbox": loss_bbox, "encoder_loss_giou": loss_giou}
        return self._weighted_sum(terms, "encoder_") * self.config.encoder_loss_coefficient, terms

    def _set_loss(
        self,
        logits: torch.Tensor,
        pred_boxes: torch.Tensor,
        class_labels: list[torch.Tensor],
        boxes: list[torch.Tensor],
        auxiliary_outputs: list[dict[str, torch.Tensor]] | None,
        num_groups: int,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """DETR's loss of `num_groups` consecutive query groups, each matched one-to-one to all targets."""
        cfg = self.config
        class_labels = [c for c in class_labels for _ in range(num_groups)]
        boxes = [b for b in boxes for _ in range(num_groups)]
        matcher = HungarianMatcher(cfg.class_cost, cfg.bbox_cost, cfg.giou_cost)
        # L1 and GIoU are divided by the number of target boxes; the cross-entropy is a weighted mean over all
        # queries (matched ones weigh 1, the others eos_coefficient). Both normalizers are averaged over processes,
        # or N processes would not compute what one process computes on the whole batch.
        num_queries = logits.shape[1] // num_groups
        matched = sum(min(num_queries, len(b)) for b in boxes)
        class_weight_total = matched + cfg.eos_coefficient * (len(boxes) * num_queries - matched)
        num_boxes, ce_norm = _process_means([float(sum(len(b) for b in boxes)), class_weight_total], logits.device)
        num_boxes = max(num_boxes, 1.0)

        def by_group(x: torch.Tensor) -> torch.Tensor:
            """[batch, groups * queries, ...] -> [batch * groups, queries, ...]"""
            return x.reshape(x.shape[0] * num_groups, x.shape[1] // num_groups, *x.shape[2:])

        outputs = [("", by_group(logits), by_group(pred_boxes))]
        for i, aux in enumerate(auxiliary_outputs or []):
            outputs.append((f"_{i}", by_group(aux["logits"]), by_group(aux["pred_boxes"])))
        loss = logits.new_zeros((), dtype=torch.float32)
        loss_dict: dict[str, torch.Tensor] = {}
        for suffix, layer_logits, layer_boxes in outputs:
            name = f"auxiliary_outputs[{suffix[1:]}]." if suffix else ""
            indices = matcher(layer_logits, layer_boxes, class_labels, boxes, name=name)
            terms = self._terms(layer_logits, layer_boxes, class_labels, boxes, indices, num_boxes, ce_norm)
            loss = loss + self._weighted_sum(terms)
            loss_dict.update({key + suffix: value for key, value in terms.items()})
        return loss, loss_dict

    def _terms(
        self,
        logits: torch.Tensor,
        pred_boxes: torch.Tensor,
        class_labels: list[torch.Tensor],
        boxes: list[torch.Tensor],
        indices: list[tuple[torch.Tensor, torch.Tensor]],
        num_boxes: float,
        ce_norm: float,
    ) -> dict[str, torch.Tensor]:
        device = logits.device
        num_classes = logits.shape[-1] - 1
        batch_idx = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)]).to(device)
        query_idx = torch.cat([src for src, _ in indices]).to(device)
        matched_ids = torch.cat([ids[tgt.to(device)] for ids, (_, tgt) in zip(class_labels, indices)])
        matched_boxes = torch.cat([bxs[tgt.to(device)] for bxs, (_, tgt) in zip(boxes, indices)])

        logits = logits.float()
        target_classes = torch.full(logits.shape[:2], num_classes, dtype=torch.int64, device=device)
        target_classes[batch_idx, query_idx] = matched_ids
        class_weight = self._class_weight(num_classes, device)
        loss_ce = F.cross_entropy(logits.transpose(1, 2), target_classes, class_weight, reduction="sum") / ce_norm
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
