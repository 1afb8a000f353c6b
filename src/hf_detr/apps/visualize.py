"""Pictures of detections (torchvision's `draw_bounding_boxes`) and of training curves, as PNG files."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw
from torchvision.utils import draw_bounding_boxes, make_grid

_PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45", "#9a6324"]


def draw_detections(
    image: Image.Image | torch.Tensor,
    boxes: torch.Tensor,
    labels: Sequence[int],
    id2label: Mapping[int, str],
    scores: Sequence[float] | None = None,
) -> torch.Tensor:
    """Draw absolute (x0, y0, x1, y1) boxes with their label (and score) on an image; returns uint8 `[3, H, W]`."""
    if isinstance(image, Image.Image):
        image = torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)
    names = [id2label.get(int(label), str(int(label))) for label in labels]
    if scores is not None:
        names = [f"{name} {float(score):.2f}" for name, score in zip(names, scores)]
    colors = [_PALETTE[int(label) % len(_PALETTE)] for label in labels]
    if len(names) == 0:
        return image
    return draw_bounding_boxes(image, torch.as_tensor(boxes, dtype=torch.float32), names, colors=colors, width=2)


def save_grid(images: Sequence[torch.Tensor], path: str | os.PathLike, columns: int) -> None:
    """Save uint8 `[3, H, W]` images of one size as a grid PNG."""
    grid = make_grid(list(images), nrow=columns, padding=4, pad_value=255)
    Image.fromarray(grid.permute(1, 2, 0).numpy()).save(path)


def save_curves(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    path: str | os.PathLike,
    x_label: str = "step",
    size: tuple[int, int] = (900, 300),
) -> None:
    """Plot named (x, y) series side by side, one panel each, on their own y range; save as PNG."""
    panel_width, height = size[0] // max(len(series), 1), size[1]
    canvas = Image.new("RGB", (panel_width * max(len(series), 1), height), "white")
    draw = ImageDraw.Draw(canvas)
    margin = 40
    for index, (name, (xs, ys)) in enumerate(series.items()):
        left = index * panel_width
        box = (left + margin, 20, left + panel_width - 10, height - margin)
        draw.rectangle(box, outline="black")
        draw.text((left + margin, 4), name, fill="black")
        draw.text((box[2] - 60, height - margin + 18), x_label, fill="black")
        if len(xs) == 0:
            continue
        x0, x1 = min(xs), max(xs)
        y0, y1 = min(ys), max(ys)
        draw.text((left + 2, box[1]), f"{y1:.3g}", fill="black")
        draw.text((left + 2, box[3] - 10), f"{y0:.3g}", fill="black")
        draw.text((box[0], box[3] + 4), f"{x0:g}", fill="black")
        draw.text((box[2] - 30, box[3] + 4), f"{x1:g}", fill="black")
        points = [
            (box[0] + (x - x0) / ((x1 - x0) or 1) * (box[2] - box[0]),
             box[3] - (y - y0) / ((y1 - y0) or 1) * (box[3] - box[1]))
            for x, y in zip(xs, ys)
        ]
        if len(points) == 1:
            draw.ellipse([points[0][0] - 3, points[0][1] - 3, points[0][0] + 3, points[0][1] + 3], fill=_PALETTE[2])
        else:
            draw.line(points, fill=_PALETTE[2], width=2)
    canvas.save(path)
