"""ONNX export of the inference graph (logits and boxes) with dynamic batch size and image size."""

from __future__ import annotations

import os

import torch
from torch import nn

from ..modeling.modeling_hf_detr import HfDetrForObjectDetection


class _InferenceGraph(nn.Module):
    """`(pixel_values, pixel_mask) -> (logits, pred_boxes)`: the part of the model a deployment runs."""

    def __init__(self, model: HfDetrForObjectDetection) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor, pixel_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        outputs = self.model(pixel_values, pixel_mask)
        return outputs.logits, outputs.pred_boxes


def export_onnx(
    model: HfDetrForObjectDetection,
    path: str | os.PathLike,
    example_size: tuple[int, int] = (512, 512),
    max_side: int = 4096,
) -> str:
    """Export `model` to ONNX with `torch.onnx.export(dynamo=True)` and save it at `path`.

    Inputs are `pixel_values` float `[batch, channels, height, width]` and `pixel_mask` int64 `[batch, height, width]`;
    outputs `logits` `[batch, queries, num_labels + 1]` and `pred_boxes` `[batch, queries, 4]`. Batch size, height and
    width are dynamic (sides from 64 to `max_side` pixels). Needs the `onnx` extra (`pip install hf_detr[onnx]`).
    """
    height, width = example_size
    channels = model.config.num_channels
    pixel_values = torch.zeros(2, channels, height, width)
    pixel_mask = torch.ones(2, height, width, dtype=torch.long)
    pixel_mask[1, :, width // 2 :] = 0  # trace the padded path, not a constant all-ones mask
    batch = torch.export.Dim("batch", min=1, max=1024)
    dim_h = torch.export.Dim("height", min=64, max=max_side)
    dim_w = torch.export.Dim("width", min=64, max=max_side)
    program = torch.onnx.export(
        _InferenceGraph(model).eval(),
        (pixel_values, pixel_mask),
        input_names=["pixel_values", "pixel_mask"],
        output_names=["logits", "pred_boxes"],
        dynamo=True,
        dynamic_shapes={"pixel_values": {0: batch, 2: dim_h, 3: dim_w}, "pixel_mask": {0: batch, 1: dim_h, 2: dim_w}},
    )
    program.save(str(path))
    return str(path)
