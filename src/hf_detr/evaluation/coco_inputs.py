"""The per-image inputs of the COCO metrics as numpy arrays: checked where they enter (``prediction_arrays``,
``reference_arrays``: errors name the image and the field), or trusted when hf_detr made them (``trusted_*``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..modeling.boxes import check_boxes
from ..modeling.errors import HfDetrInputError, HfDetrInputTypeError

__all__ = [
    "check_lengths",
    "checked_tensor",
    "column",
    "image_index",
    "listed",
    "prediction_arrays",
    "reference_arrays",
    "trusted_prediction_arrays",
    "trusted_reference_arrays",
]


def checked_tensor(
    value: Any, where: str, field: str, dtype: torch.dtype, trailing: tuple[int, ...] = ()
) -> torch.Tensor:
    """Shape (N, *trailing)."""
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu()
    else:
        try:
            array = np.asarray(value)
        except ValueError as err:  # ragged nested lists
            raise HfDetrInputError(f"{where}: `{field}` is not a regular array: {err}.") from None
        if array.dtype.kind not in "biuf":
            raise HfDetrInputError(f"{where}: `{field}` must be numeric, got {value!r}.")
        tensor = torch.as_tensor(array)
    if not dtype.is_floating_point and tensor.is_floating_point() and (tensor != tensor.round()).any():
        raise HfDetrInputError(f"{where}: `{field}` must hold integers, got {value!r}.")
    tensor = tensor.to(dtype)
    if tensor.numel() == 0:
        tensor = tensor.reshape((0, *trailing))
    if tensor.ndim != 1 + len(trailing) or tuple(tensor.shape[1:]) != trailing:
        shape = "(N, " + ", ".join(map(str, trailing)) + ")" if trailing else "(N,)"
        raise HfDetrInputError(f"{where}: `{field}` must have shape {shape}, got {tuple(tensor.shape)}.")
    if dtype.is_floating_point and not torch.isfinite(tensor).all():
        raise HfDetrInputError(f"{where}: `{field}` contains NaN or inf.")
    return tensor


def check_lengths(where: str, fields: Mapping[str, torch.Tensor]) -> None:
    lengths = {name: len(t) for name, t in fields.items()}
    if len(set(lengths.values())) > 1:
        raise HfDetrInputError(f"{where}: per-box fields must have the same length, got {lengths}.")


def _float_dtype(source: Any) -> type:
    """float32 for a single or half precision input (exact, since the values came from it; what post-processing
    gives, and half the memory of a split's detections in float64), float64 otherwise."""
    if isinstance(source, torch.Tensor):
        narrow = source.dtype in (torch.float32, torch.float16, torch.bfloat16)
    else:
        narrow = isinstance(source, np.ndarray) and source.dtype.kind == "f" and source.dtype.itemsize <= 4
    return np.float32 if narrow else np.float64


def _numpy(value: Any, dtype: type, trailing: tuple[int, ...] = ()) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        value = (value.float() if value.dtype == torch.bfloat16 else value).numpy()
    return np.asarray(value).astype(dtype, copy=False).reshape(-1, *trailing)


def prediction_arrays(prediction: Mapping[str, Any], where: str) -> dict[str, np.ndarray]:
    """``boxes`` (x0, y0, x1, y1) pixels; scores and boxes in float32 when given so, float64 otherwise."""
    if not isinstance(prediction, Mapping):
        raise HfDetrInputTypeError(
            f"{where} must be a dict with `scores`, `labels`, `boxes`, got {type(prediction).__name__}."
        )
    missing = [key for key in ("scores", "labels", "boxes") if key not in prediction]
    if missing:
        raise HfDetrInputError(
            f"{where} is missing {missing}; expected `scores`, `labels`, `boxes` (x0, y0, x1, y1 pixels)."
        )
    fields = {
        "scores": checked_tensor(prediction["scores"], where, "scores", torch.float64),
        "labels": checked_tensor(prediction["labels"], where, "labels", torch.int64),
        "boxes": check_boxes(prediction["boxes"], lambda j: f"{where}: `boxes[{j}]`", "xyxy"),
    }
    check_lengths(where, fields)
    return {
        "scores": fields["scores"].numpy().astype(_float_dtype(prediction["scores"]), copy=False),
        "labels": fields["labels"].numpy(),
        "boxes": fields["boxes"].numpy().astype(_float_dtype(prediction["boxes"]), copy=False),
    }


def trusted_prediction_arrays(prediction: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """:func:`prediction_arrays` without its checks, for detections hf_detr's post-processing made."""
    return {
        "scores": _numpy(prediction["scores"], _float_dtype(prediction["scores"])),
        "labels": _numpy(prediction["labels"], np.int64),
        "boxes": _numpy(prediction["boxes"], _float_dtype(prediction["boxes"]), (4,)),
    }


def reference_arrays(reference: Mapping[str, Any], where: str) -> dict[str, np.ndarray]:
    """``boxes`` COCO (x, y, w, h) pixels, ``labels`` or ``class_labels``, ``iscrowd`` (default 0), ``area`` (default
    w * h); other keys ignored."""
    if not isinstance(reference, Mapping):
        raise HfDetrInputTypeError(f"{where} must be a dict with `boxes` and `labels`, got {type(reference).__name__}.")
    label_key = "labels" if "labels" in reference else "class_labels"
    if "boxes" not in reference or label_key not in reference:
        raise HfDetrInputError(f"{where} needs `boxes` (COCO x, y, w, h pixels) and `labels` (or `class_labels`).")
    boxes = check_boxes(reference["boxes"], lambda j: f"{where}: `boxes[{j}]`", "xywh")
    fields = {
        "boxes": boxes,
        "labels": checked_tensor(reference[label_key], where, label_key, torch.int64),
        "iscrowd": checked_tensor(reference.get("iscrowd", torch.zeros(len(boxes))), where, "iscrowd", torch.int64),
        "area": checked_tensor(reference.get("area", boxes[:, 2] * boxes[:, 3]), where, "area", torch.float64),
    }
    check_lengths(where, fields)
    return {name: t.numpy() for name, t in fields.items()}


def trusted_reference_arrays(reference: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """:func:`reference_arrays` without its checks, for labels the image processor made (checked there)."""
    boxes = _numpy(reference["boxes"], np.float64, (4,))
    labels = reference["labels"] if "labels" in reference else reference["class_labels"]
    return {
        "boxes": boxes,
        "labels": _numpy(labels, np.int64),
        "iscrowd": _numpy(reference.get("iscrowd", np.zeros(len(boxes))), np.int64),
        "area": _numpy(reference["area"], np.float64) if "area" in reference else boxes[:, 2] * boxes[:, 3],
    }


def listed(fields: Mapping[str, Any]) -> dict[str, Any]:
    """What ``evaluate.Metric`` stores and ``CocoEvaluation`` carries."""
    return {name: value.tolist() if isinstance(value, np.ndarray) else value for name, value in fields.items()}


def column(values: Sequence[Any], dtype: type, trailing: tuple[int, ...] = ()) -> np.ndarray:
    empty = np.zeros((0, *trailing), dtype=dtype)
    return np.concatenate([empty, *(np.asarray(v, dtype=dtype).reshape(-1, *trailing) for v in values)])


def image_index(counts: Sequence[int]) -> np.ndarray:
    return np.repeat(np.arange(len(counts), dtype=np.int64), np.asarray(counts, dtype=np.int64))
