"""The batches an evaluation reads: `Trainer`'s `EvalPrediction`, the image processor's label dicts (checked when
the processor made them, so trusted here) and their packed form for accelerate's gathering."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers.utils import ModelOutput

from ..modeling.boxes import denormalize_boxes
from ..modeling.errors import HfDetrInputError
from .coco_inputs import checked_tensor

__all__ = [
    "PostProcessInputs",
    "are_detections",
    "detections_in_original_frame",
    "logits_and_boxes",
    "pack_labels",
    "reference_from_label",
    "unpack_labels",
]


@dataclass
class PostProcessInputs(ModelOutput):
    """The outputs post-processing reads, rebuilt from stored predictions."""

    logits: torch.Tensor | None = None
    pred_boxes: torch.Tensor | None = None
    pred_masks: torch.Tensor | None = None


def logits_and_boxes(batch_predictions: Any, batch_index: int) -> tuple[np.ndarray, np.ndarray]:
    """Trainer passes the output's non-``loss`` fields in order, e.g. ``(loss_dict, logits, pred_boxes,
    auxiliary_outputs, ...)``; dicts and lists come before or after the two arrays, so they are the first two."""
    items = batch_predictions if isinstance(batch_predictions, (tuple, list)) else (batch_predictions,)
    arrays = [x for x in items if isinstance(x, (np.ndarray, torch.Tensor))]
    if len(arrays) < 2:
        raise HfDetrInputError(
            f"EvalPrediction.predictions[{batch_index}] has no (logits, pred_boxes) arrays. Pass a list of per-batch "
            "tuples: set TrainingArguments(eval_do_concat_batches=False) and keep `logits`/`pred_boxes` out of "
            "`keys_to_ignore_at_inference`."
        )
    logits, boxes = (np.asarray(a) for a in arrays[:2])
    if logits.ndim != 3 or boxes.ndim != 3 or boxes.shape[-1] != 4 or logits.shape[:2] != boxes.shape[:2]:
        raise HfDetrInputError(
            f"EvalPrediction.predictions[{batch_index}]: expected logits (B, Q, C + 1) and pred_boxes (B, Q, 4), got "
            f"shapes {logits.shape} and {boxes.shape}. Did you set TrainingArguments(eval_do_concat_batches=False)?"
        )
    return logits, boxes


def _height_width(label: Mapping[str, Any], key: str, where: str) -> tuple[float, float]:
    size = checked_tensor(label[key], where, key, torch.float64)
    if size.shape != (2,):
        raise HfDetrInputError(
            f"{where}: `{key}` must be (h, w), got {size.tolist()}. If this is the last evaluation batch, "
            "accelerate's gather_for_metrics cut every label tensor to the batch's remainder: make the eval set size "
            "a multiple of per_device_eval_batch_size * world size (see make_compute_metrics)."
        )
    height, width = size.tolist()
    return height, width


def _float64(value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", torch.float64)
    return torch.as_tensor(np.asarray(value), dtype=torch.float64)


def reference_from_label(label: Mapping[str, Any], where: str) -> dict[str, Any]:
    """A processor label dict as a reference in the original image's pixel frame (boxes not checked again)."""
    missing = [key for key in ("boxes", "class_labels", "orig_size") if key not in label]
    if missing:
        raise HfDetrInputError(f"{where} is missing {missing}; expected the image processor's label dict.")
    orig_h, orig_w = _height_width(label, "orig_size", where)
    boxes = denormalize_boxes(_float64(label["boxes"]).reshape(-1, 4), "xywh", (orig_h, orig_w))
    reference = {"boxes": boxes, "labels": label["class_labels"], "iscrowd": label.get("iscrowd", np.zeros(len(boxes)))}
    if "area" in label:
        # The processor scales `area` to the resized image; bring it back to the original frame.
        if "size" not in label:
            raise HfDetrInputError(f"{where} has `area` but no `size` (the resized (h, w) the area refers to).")
        size_h, size_w = _height_width(label, "size", where)
        reference["area"] = _float64(label["area"]).reshape(-1) * (orig_h * orig_w) / (size_h * size_w)
    return reference


def detections_in_original_frame(
    image_processor: Any,
    logits: Any,
    pred_boxes: Any,
    labels: Sequence[Mapping[str, Any]],
    threshold: float,
    where: str = "labels",
    nms_threshold: float | None = None,
) -> list[dict[str, np.ndarray]]:
    """Post-processed at ``threshold`` to each label's ``orig_size``, as numpy arrays: the compact form an evaluation
    keeps of each image until it scores them all."""
    sizes = [_height_width(label, "orig_size", f"{where}[{i}]") for i, label in enumerate(labels)]
    outputs = PostProcessInputs(logits=torch.as_tensor(logits), pred_boxes=torch.as_tensor(pred_boxes))
    # only when asked: another processor (transformers' DETR's) has no NMS option
    nms = {} if nms_threshold is None else {"nms_threshold": nms_threshold}
    found = image_processor.post_process_object_detection(outputs, threshold, target_sizes=torch.tensor(sizes), **nms)
    return [{key: value.cpu().numpy() for key, value in image.items()} for image in found]


def are_detections(batch_predictions: Any) -> bool:
    """Already post-processed: one detection dict per image."""
    return isinstance(batch_predictions, list) and all(
        isinstance(image, Mapping) and "scores" in image for image in batch_predictions
    )


def pack_labels(labels: Sequence[Mapping[str, torch.Tensor]]) -> torch.Tensor:
    """A batch of the image processor's label dicts as one float64 tensor `[batch, 1 + M, 7]` (M: the most objects
    of an image). Row 0 of image i is `(orig_h, orig_w, size_h, size_w, n, image_id, 0)`, rows 1..n its objects
    `(cx, cy, w, h, class, iscrowd, area)`; the rest is padding.

    Trainer gathers evaluation labels with accelerate's `gather_for_metrics`, which handles one tensor per batch:
    across processes it pads dimension 1 and drops the duplicated samples of the last batch along dimension 0. A list
    of per-image dicts breaks both: tensors of different sizes cannot be gathered, and the last batch would cut every
    tensor *inside* the dicts, losing ground-truth boxes.
    """
    most = max(len(label["class_labels"]) for label in labels)
    packed = torch.zeros(len(labels), 1 + most, 7, dtype=torch.float64, device=labels[0]["boxes"].device)
    for row, label in zip(packed, labels):
        count = len(label["class_labels"])
        header = [*label["orig_size"].tolist(), *label["size"].tolist(), count, int(label["image_id"].reshape(-1)[0])]
        row[0, :6] = torch.tensor(header, dtype=torch.float64)
        fields = [label["boxes"], label["class_labels"][:, None], label["iscrowd"][:, None], label["area"][:, None]]
        row[1 : 1 + count] = torch.cat([field.to(torch.float64) for field in fields], dim=1)
    return packed


def unpack_labels(packed: np.ndarray) -> list[dict[str, np.ndarray]]:
    """Extra padding rows are ignored."""
    labels = []
    for image in packed:
        orig_h, orig_w, size_h, size_w, count, image_id = image[0, :6]
        objects = image[1 : 1 + int(count)]
        labels.append(
            {
                "orig_size": np.array([orig_h, orig_w], dtype=np.int64),
                "size": np.array([size_h, size_w], dtype=np.int64),
                "image_id": np.array([image_id], dtype=np.int64),
                "boxes": objects[:, :4],
                "class_labels": objects[:, 4].astype(np.int64),
                "iscrowd": objects[:, 5].astype(np.int64),
                "area": objects[:, 6],
            }
        )
    return labels
