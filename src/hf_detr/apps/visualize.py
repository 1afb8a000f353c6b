"""Pictures as PNG files: detections drawn on images (PIL), a grid of them, and with matplotlib (the `viz` extra,
`pip install 'hf_detr[viz]'`) training curves and precision-recall curves.

matplotlib is imported only inside the plotting functions and draws through its Agg canvas directly (no pyplot, no
display, no change to the process's backend). Labels on detections use DejaVu Sans from matplotlib's own files when
matplotlib is installed (found without importing it), else PIL's built-in scalable font.
"""

from __future__ import annotations

import importlib.util
import math
import os
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

if TYPE_CHECKING:
    from ..evaluation.metrics import CocoEvaluation

_PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45", "#9a6324"]

VIZ_HINT = "pip install 'hf_detr[viz]'"


def require_matplotlib() -> Any:
    """The `matplotlib` module, or an ImportError saying how to install it (the `viz` extra)."""
    try:
        import matplotlib
    except ImportError as error:
        raise ImportError(f"these pictures are drawn with matplotlib, which is not installed: {VIZ_HINT} "
                          "(or pip install 'matplotlib>=3.7')") from error  # fmt: skip
    return matplotlib


@lru_cache(maxsize=None)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """A legible TrueType font of `size` pixels: DejaVu Sans shipped with matplotlib, else PIL's built-in one."""
    try:
        spec = importlib.util.find_spec("matplotlib")
    except (ImportError, ValueError):  # a broken or blocked installation
        spec = None
    if spec is not None and spec.origin is not None:
        path = Path(spec.origin).parent / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
        if path.is_file():
            return ImageFont.truetype(str(path), size)
    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1 with FreeType
    except (TypeError, OSError):
        return ImageFont.load_default()


def _text_color(fill: str) -> str:
    """Black or white, whichever reads better on `fill`."""
    red, green, blue = (int(fill[i : i + 2], 16) for i in (1, 3, 5))
    return "black" if 0.299 * red + 0.587 * green + 0.114 * blue > 150 else "white"


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """The area two (x0, y0, x1, y1) rectangles share."""
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


def draw_detections(
    image: Image.Image | torch.Tensor,
    boxes: torch.Tensor,
    labels: Sequence[int],
    id2label: Mapping[int, str],
    scores: Sequence[float] | None = None,
    min_side: int | None = None,
) -> torch.Tensor:
    """Draw absolute (x0, y0, x1, y1) boxes with their label (and score) on an image; returns uint8 `[3, H, W]`.

    With `min_side`, an image whose shorter side is smaller is first upscaled by the smallest integer factor that
    reaches it (bicubic; the boxes scaled by the same factor), so that the boxes and labels are drawn at a size one
    can read. Each label sits on a band of its box's colour, above the box where there is room, and moves inside,
    below or further away rather than cover a label already drawn; with `scores`, the best-scoring detections are
    drawn on top and placed first.
    """
    if isinstance(image, torch.Tensor):
        image = Image.fromarray(image.permute(1, 2, 0).cpu().numpy())
    image = image.convert("RGB")
    boxes = torch.as_tensor(boxes, dtype=torch.float32).detach().cpu().reshape(-1, 4).clone()
    if min_side is not None and min(image.size) < min_side:
        factor = math.ceil(min_side / min(image.size))
        image = image.resize((image.width * factor, image.height * factor), Image.Resampling.BICUBIC)
        boxes *= factor
    short = min(image.size)
    font = _font(min(28, max(11, round(short / 26))))
    line = max(2, round(short / 128))
    names = [id2label.get(int(label), str(int(label))) for label in labels]
    if scores is not None:
        names = [f"{name} {float(score):.2f}" for name, score in zip(names, scores)]
    colors = [_PALETTE[int(label) % len(_PALETTE)] for label in labels]

    # the best-scoring detections are drawn last (on top) and get their labels placed first
    order = list(range(len(names)))
    if scores is not None:
        order.sort(key=lambda i: -float(scores[i]))
    draw = ImageDraw.Draw(image)
    for i in reversed(order):
        draw.rectangle(boxes[i].tolist(), outline=colors[i], width=line)
    placed: list[tuple[float, ...]] = []
    pad = max(1, line // 2 + 1)
    for i in order:
        (x0, y0, x1, y1), name, color = boxes[i].tolist(), names[i], colors[i]
        left, top, right, bottom = draw.textbbox((0, 0), name, font=font)
        width, height = right - left + 2 * pad, bottom - top + 2 * pad
        # above the box, inside its top, below it, then further inside, further above and further below
        candidates = [(x0, y0 - height), (x0 + line, y0 + line), (x0, y1)]
        candidates += [(x0 + line, y0 + line + k * height) for k in range(1, max(1, int((y1 - y0) // height)))]
        candidates += [(x0, y0 - (k + 1) * height) for k in range(1, 4)] + [(x0, y1 + k * height) for k in range(1, 4)]
        spots = [(min(max(x, 0), image.width - width), min(max(y, 0), image.height - height)) for x, y in candidates]
        rects = [(x, y, x + width, y + height) for x, y in spots]
        covered = [sum(_overlap(rect, other) for other in placed) for rect in rects]
        rect = rects[covered.index(min(covered))]  # the first free spot, else the least covered one
        placed.append(rect)
        draw.rectangle(rect, fill=color)
        draw.text((rect[0] + pad - left, rect[1] + pad - top), name, fill=_text_color(color), font=font)
    return torch.from_numpy(np.array(image)).permute(2, 0, 1)


def save_grid(
    images: Sequence[torch.Tensor | Image.Image],
    path: str | os.PathLike,
    columns: int,
    column_titles: Sequence[str] | None = None,
    padding: int = 8,
) -> None:
    """Save uint8 `[3, H, W]` images (or PIL images) as a grid PNG, `columns` wide, white between them; images of
    other sizes are centred in cells of the largest. `column_titles` (repeating if shorter than `columns`) head
    the columns."""
    tiles = [Image.fromarray(t.permute(1, 2, 0).cpu().numpy()) if isinstance(t, torch.Tensor) else t.convert("RGB")
             for t in images]  # fmt: skip
    if not tiles:
        raise ValueError("save_grid needs at least one image")
    cell_w, cell_h = max(t.width for t in tiles), max(t.height for t in tiles)
    columns = max(1, min(columns, len(tiles)))
    rows = math.ceil(len(tiles) / columns)
    font = _font(min(28, max(12, round(cell_w / 22))))
    header = 0
    if column_titles:
        header = font.getbbox("Ag")[3] + padding
    canvas = Image.new("RGB", (padding + columns * (cell_w + padding), header + padding + rows * (cell_h + padding)),
                       "white")  # fmt: skip
    draw = ImageDraw.Draw(canvas)
    for column in range(columns if column_titles else 0):
        title = column_titles[column % len(column_titles)]
        centre = padding + column * (cell_w + padding) + cell_w / 2
        draw.text((centre - draw.textlength(title, font=font) / 2, padding // 2), title, fill="black", font=font)
    for index, tile in enumerate(tiles):
        row, column = divmod(index, columns)
        x = padding + column * (cell_w + padding) + (cell_w - tile.width) // 2
        y = header + padding + row * (cell_h + padding) + (cell_h - tile.height) // 2
        canvas.paste(tile, (x, y))
    canvas.save(path)


def _figure(width: float, height: float) -> Any:
    """A matplotlib Figure on the Agg canvas (no pyplot: nothing global changes)."""
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _moving_average(values: Sequence[float], window: int) -> np.ndarray:
    """Mean of each value and the up to `window - 1` before it (same length as `values`)."""
    cumulative = np.cumsum(np.r_[0.0, np.asarray(values, dtype=float)])
    ends = np.arange(1, len(values) + 1)
    starts = np.maximum(0, ends - window)
    return (cumulative[ends] - cumulative[starts]) / (ends - starts)


def save_curves(
    log_history: Sequence[Mapping[str, float]],
    path: str | os.PathLike,
    validation_note: str = "no validation split",
) -> None:
    """One PNG of a training run's log (`TrainResult.log_history`, or the lines of `train_log.jsonl`): the
    training loss against the step (left; with a moving average when there are many points) and the validation
    mAP@[.50:.95] and AP50 (`eval_map`, `eval_map_50`) against the step (right). Without any validation entry the
    right panel says `validation_note` instead of showing empty axes."""
    figure = _figure(11, 4.2)
    loss_axes, eval_axes = figure.subplots(1, 2)
    losses = [(entry["step"], entry["loss"]) for entry in log_history if "loss" in entry]
    evaluations = [entry for entry in log_history if "eval_map" in entry]
    last_step = max([entry.get("step", 0) for entry in log_history] or [0])

    if losses:
        steps, values = map(np.asarray, zip(*losses))
        many = len(values) >= 12
        loss_axes.plot(steps, values, color="C0", linewidth=1, alpha=0.45 if many else 1.0,
                       marker=None if many else "o", label="loss per log interval")  # fmt: skip
        if many:
            window = max(3, len(values) // 15)
            loss_axes.plot(steps, _moving_average(values, window), color="C0", linewidth=2.2,
                           label=f"moving average ({window} intervals)")  # fmt: skip
        loss_axes.set_ylim(bottom=0, top=1.05 * float(values.max()))
        loss_axes.legend(loc="best")
    else:
        loss_axes.text(0.5, 0.5, "no training loss logged", transform=loss_axes.transAxes, ha="center", va="center",
                       fontsize=13, color="0.4")  # fmt: skip
    loss_axes.set(title="training loss", xlabel="step", ylabel="loss (weighted sum of the terms)")

    if evaluations:
        steps = [entry["step"] for entry in evaluations]
        for key, label, style in (("eval_map", "mAP@[.50:.95]", "-o"), ("eval_map_50", "AP50", "--s")):
            values = [entry.get(key, -1.0) for entry in evaluations]
            values = [value if value >= 0 else np.nan for value in values]  # -1: undefined (no ground truth)
            eval_axes.plot(steps, values, style, linewidth=2, markersize=5, label=label)
        eval_axes.set_ylim(-0.02, 1.02)
        eval_axes.legend(loc="best")
    else:
        eval_axes.text(0.5, 0.5, validation_note, transform=eval_axes.transAxes, ha="center", va="center",
                       fontsize=13, color="0.4")  # fmt: skip
        eval_axes.set_ylim(-0.02, 1.02)
    eval_axes.set(title="validation", xlabel="step", ylabel="COCO box AP")
    for axes in (loss_axes, eval_axes):
        axes.set_xlim(0, 1.03 * max(last_step, 1))  # room for the markers at the last step
        axes.grid(True, alpha=0.35)
    figure.savefig(path)


def save_pr_curve(evaluation: CocoEvaluation, path: str | os.PathLike, max_classes: int = 10) -> None:
    """One PNG of precision against recall from COCOeval's arrays (`CocoEvaluation.precision`, area "all", 100
    detections): the mean over the classes with ground truth at IoU 0.50 (solid) and 0.75 (dashed), and, with at
    most `max_classes` such classes, each class's curve at IoU 0.50. The legend's AP is the mean precision over
    COCO's 101 recall points, so it equals the evaluation's `map_50` / `map_75` and per-class AP50."""
    figure = _figure(7, 5.6)
    axes = figure.subplots()
    if evaluation.precision is None:
        axes.text(0.5, 0.5, "nothing was evaluated (no images)", transform=axes.transAxes, ha="center",
                  va="center", fontsize=13, color="0.4")  # fmt: skip
    else:
        recall = evaluation.recall_thresholds
        at_50 = evaluation.precision_curves(0.5)
        defined = np.flatnonzero((at_50 > -1).all(axis=1))  # rows of -1: a class without ground truth
        if 0 < len(defined) <= max_classes:
            ids = evaluation.category_ids or list(range(len(evaluation.class_names)))
            for k in defined:
                axes.plot(recall, at_50[k], linewidth=1.3, alpha=0.85, color=_PALETTE[int(ids[k]) % len(_PALETTE)],
                          label=f"{evaluation.class_names[k]}, IoU 0.50 (AP {at_50[k].mean():.3f})")  # fmt: skip
        for iou, style in ((0.5, "-"), (0.75, "--")):
            curves = evaluation.precision_curves(iou)[defined]
            if len(curves):
                mean = curves.mean(axis=0)
                axes.plot(recall, mean, style, color="black", linewidth=2.6,
                          label=f"all classes, IoU {iou:.2f} (AP {mean.mean():.3f})")  # fmt: skip
        if len(defined) == 0:
            axes.text(0.5, 0.5, "no ground-truth objects", transform=axes.transAxes, ha="center", va="center",
                      fontsize=13, color="0.4")  # fmt: skip
        else:
            axes.legend(loc="lower left", fontsize=9, framealpha=0.9)
    axes.set(title="precision-recall (COCO, area all, up to 100 detections)", xlabel="recall", ylabel="precision",
             xlim=(0, 1), ylim=(-0.02, 1.02))  # fmt: skip
    axes.grid(True, alpha=0.35)
    figure.savefig(path)
