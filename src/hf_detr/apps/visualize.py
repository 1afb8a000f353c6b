"""Pictures as PNG files: detections drawn on images (PIL), a grid of them, the worst images of an evaluation, and
with matplotlib (the `viz` extra, `pip install 'hf_detr[viz]'`) training curves, precision-recall curves (all
classes, and one panel per class) and the confusion matrix; `save_diagnostics` writes an evaluation's diagnostics.

matplotlib is imported only inside the plotting functions and draws through its Agg canvas directly (no pyplot, no
display, no change to the process's backend). Labels on detections use DejaVu Sans from matplotlib's own files when
matplotlib is installed (found without importing it), else PIL's built-in scalable font.
"""

from __future__ import annotations

import importlib.util
import math
import os
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torchvision.ops import box_convert
from torchvision.utils import draw_segmentation_masks

from ..modeling.errors import HfDetrInputError
from .extras import require_extra

if TYPE_CHECKING:
    from ..evaluation.diagnostics import Diagnostics, ImageMatch
    from ..evaluation.metrics import CocoEvaluation

_PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45", "#9a6324"]


def require_matplotlib() -> Any:
    """The `matplotlib` module, or an ImportError saying how to install it (the `viz` extra)."""
    return require_extra("matplotlib", "these pictures are drawn with matplotlib", "viz", "'matplotlib>=3.7'")


@cache
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
    notes: Sequence[str] | None = None,
    colors: Sequence[str] | None = None,
    masks: torch.Tensor | None = None,
) -> torch.Tensor:
    """Draw absolute (x0, y0, x1, y1) boxes with their label (and score) on an image; returns uint8 `[3, H, W]`.
    `notes` add a word to each box's label (e.g. "missed"); `colors` ("#rrggbb", one per box) replace the colour of
    its class; `masks` (bool `[n, H, W]`, one per box, at the image's size) are laid over the image in the box's
    colour first (`torchvision.utils.draw_segmentation_masks`).

    With `min_side`, an image whose shorter side is smaller is first upscaled (bicubic) by the smallest integer factor
    that reaches it, so that labels read. Labels never cover one another; with `scores`, the best-scoring detections
    are drawn on top and placed first.
    """
    if isinstance(image, torch.Tensor):
        image = Image.fromarray(image.permute(1, 2, 0).cpu().numpy())
    image = image.convert("RGB")
    boxes = torch.as_tensor(boxes, dtype=torch.float32).detach().cpu().reshape(-1, 4).clone()
    if colors is None:
        colors = [_PALETTE[int(label) % len(_PALETTE)] for label in labels]
    if masks is not None and len(masks):
        pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1)
        pixels = draw_segmentation_masks(
            pixels, torch.as_tensor(masks, dtype=torch.bool).cpu(), alpha=0.5, colors=list(colors)
        )
        image = Image.fromarray(pixels.permute(1, 2, 0).numpy())
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
    if notes is not None:
        names = [f"{name} {note}" if note else name for name, note in zip(names, notes)]

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
        (x0, y0, _, y1), name, color = boxes[i].tolist(), names[i], colors[i]
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
    captions: Sequence[str] | None = None,
) -> None:
    """Save uint8 `[3, H, W]` images (or PIL images) as a grid PNG, `columns` wide, white between them; images of
    other sizes are centred in cells of the largest. `column_titles` (repeating if shorter than `columns`) head
    the columns; `captions` (one per image, lines split by "\\n") are written under the images."""
    tiles = [
        Image.fromarray(t.permute(1, 2, 0).cpu().numpy()) if isinstance(t, torch.Tensor) else t.convert("RGB")
        for t in images
    ]
    if not tiles:
        raise HfDetrInputError("save_grid needs at least one image")
    if captions is not None and len(captions) != len(tiles):
        raise HfDetrInputError(f"captions must give one text per image: got {len(captions)} for {len(tiles)} images")
    cell_w, cell_h = max(t.width for t in tiles), max(t.height for t in tiles)
    columns = max(1, min(columns, len(tiles)))
    rows = math.ceil(len(tiles) / columns)
    font = _font(min(28, max(12, round(cell_w / 22))))
    line_height = font.getbbox("Ag")[3]
    header = line_height + padding if column_titles else 0
    if captions is not None:  # room under each image for the longest caption
        cell_h += max(caption.count("\n") + 1 for caption in captions) * (line_height + 2) + padding // 2
    canvas = Image.new(
        "RGB", (padding + columns * (cell_w + padding), header + padding + rows * (cell_h + padding)), "white"
    )
    draw = ImageDraw.Draw(canvas)
    for column in range(columns if column_titles else 0):
        title = column_titles[column % len(column_titles)]
        centre = padding + column * (cell_w + padding) + cell_w / 2
        draw.text((centre - draw.textlength(title, font=font) / 2, padding // 2), title, fill="black", font=font)
    image_h = max(t.height for t in tiles)
    for index, tile in enumerate(tiles):
        row, column = divmod(index, columns)
        left, top = padding + column * (cell_w + padding), header + padding + row * (cell_h + padding)
        canvas.paste(tile, (left + (cell_w - tile.width) // 2, top + (image_h - tile.height) // 2))
        if captions is not None:
            draw.multiline_text(
                (left, top + image_h + padding // 2), captions[index], fill="black", font=font, spacing=2
            )
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
        loss_axes.plot(
            steps,
            values,
            color="C0",
            linewidth=1,
            alpha=0.45 if many else 1.0,
            marker=None if many else "o",
            label="loss per log interval",
        )
        if many:
            window = max(3, len(values) // 15)
            loss_axes.plot(
                steps,
                _moving_average(values, window),
                color="C0",
                linewidth=2.2,
                label=f"moving average ({window} intervals)",
            )
        loss_axes.set_ylim(bottom=0, top=1.05 * float(values.max()))
        loss_axes.legend(loc="best")
    else:
        loss_axes.text(
            0.5,
            0.5,
            "no training loss logged",
            transform=loss_axes.transAxes,
            ha="center",
            va="center",
            fontsize=13,
            color="0.4",
        )
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
        eval_axes.text(
            0.5, 0.5, validation_note, transform=eval_axes.transAxes, ha="center", va="center", fontsize=13, color="0.4"
        )
        eval_axes.set_ylim(-0.02, 1.02)
    eval_axes.set(title="validation", xlabel="step", ylabel="COCO box AP")
    for axes in (loss_axes, eval_axes):
        axes.set_xlim(0, 1.03 * max(last_step, 1))  # room for the markers at the last step
        axes.grid(True, alpha=0.35)
    figure.savefig(path)


def _say_nothing_was_evaluated(axes: Any, fontsize: int) -> None:
    axes.text(
        0.5,
        0.5,
        "nothing was evaluated (no images)",
        transform=axes.transAxes,
        ha="center",
        va="center",
        fontsize=fontsize,
        color="0.4",
    )


def save_pr_curve(evaluation: CocoEvaluation, path: str | os.PathLike, max_classes: int = 10) -> None:
    """One PNG of precision against recall from COCOeval's arrays (`CocoEvaluation.precision`, area "all", 100
    detections): the mean over the classes with ground truth at IoU 0.50 (solid) and 0.75 (dashed), and, with at
    most `max_classes` such classes, each class's curve at IoU 0.50. The legend's AP is the mean precision over
    COCO's 101 recall points, so it equals the evaluation's `map_50` / `map_75` and per-class AP50."""
    figure = _figure(7, 5.6)
    axes = figure.subplots()
    if evaluation.precision is None:
        _say_nothing_was_evaluated(axes, fontsize=13)
    else:
        recall = evaluation.recall_thresholds
        at_50 = evaluation.precision_curves(0.5)
        defined = np.flatnonzero((at_50 > -1).all(axis=1))  # rows of -1: a class without ground truth
        if 0 < len(defined) <= max_classes:
            ids = evaluation.category_ids or list(range(len(evaluation.class_names)))
            for k in defined:
                axes.plot(
                    recall,
                    at_50[k],
                    linewidth=1.3,
                    alpha=0.85,
                    color=_PALETTE[int(ids[k]) % len(_PALETTE)],
                    label=f"{evaluation.class_names[k]}, IoU 0.50 (AP {at_50[k].mean():.3f})",
                )
        for iou, style in ((0.5, "-"), (0.75, "--")):
            curves = evaluation.precision_curves(iou)[defined]
            if len(curves):
                mean = curves.mean(axis=0)
                axes.plot(
                    recall,
                    mean,
                    style,
                    color="black",
                    linewidth=2.6,
                    label=f"all classes, IoU {iou:.2f} (AP {mean.mean():.3f})",
                )
        if len(defined) == 0:
            axes.text(
                0.5,
                0.5,
                "no ground-truth objects",
                transform=axes.transAxes,
                ha="center",
                va="center",
                fontsize=13,
                color="0.4",
            )
        else:
            axes.legend(loc="lower left", fontsize=9, framealpha=0.9)
    axes.set(
        title="precision-recall (COCO, area all, up to 100 detections)",
        xlabel="recall",
        ylabel="precision",
        xlim=(0, 1),
        ylim=(-0.02, 1.02),
    )
    axes.grid(True, alpha=0.35)
    figure.savefig(path)


def _count(number: int, noun: str) -> str:
    """`number` and `noun`, plural unless one."""
    return f"{number} {noun}" + ("" if number == 1 else "s")


def save_pr_curves_per_class(evaluation: CocoEvaluation, path: str | os.PathLike, iou: float = 0.5) -> None:
    """One PNG with a small precision-recall panel per class, up to 6 a row (`hf_detr.evaluation.diagnostics.
    class_pr_curves`: COCOeval's interpolated precision at IoU `iou`, area "all", 100 detections), titled with the
    class, its AP at that IoU (the evaluation's per-class AP50 at 0.5) and its ground-truth objects; complete for any
    number of classes."""
    from ..evaluation.diagnostics import class_pr_curves

    curves = class_pr_curves(evaluation, iou) if evaluation.precision is not None else []
    columns = max(1, min(6, math.ceil(math.sqrt(len(curves)))))
    rows = max(1, math.ceil(len(curves) / columns))
    figure = _figure(max(5.0, 2.6 * columns), 0.7 + 2.35 * rows)
    grid = figure.subplots(rows, columns, sharex=True, sharey=True, squeeze=False).reshape(-1)
    name = f"AP{round(iou * 100)}"
    for k, axes in enumerate(grid):
        if k >= len(curves):
            axes.set_visible(not curves)  # an empty evaluation keeps one panel to say so
            if not curves:
                _say_nothing_was_evaluated(axes, fontsize=11)
            continue
        curve = curves[k]
        if curve.precision is None:
            axes.text(
                0.5,
                0.5,
                "no ground truth",
                transform=axes.transAxes,
                ha="center",
                va="center",
                fontsize=10,
                color="0.4",
            )
            axes.set_title(curve.name, fontsize=10)
        else:
            color = _PALETTE[int(evaluation.category_ids[k]) % len(_PALETTE)]
            axes.plot(curve.recall, curve.precision, color=color, linewidth=1.8)
            axes.fill_between(curve.recall, curve.precision, color=color, alpha=0.15, linewidth=0)
            axes.set_title(f"{curve.name}\n{name} {curve.ap:.3f}, {_count(curve.objects, 'object')}", fontsize=10)
        axes.grid(True, alpha=0.35)
        axes.tick_params(labelsize=8)
        if k % columns == 0:
            axes.set_ylabel("precision", fontsize=9)
        if k // columns == rows - 1 or k + columns >= len(curves):
            axes.set_xlabel("recall", fontsize=9)
            axes.tick_params(labelbottom=True)
    grid[0].set(xlim=(0, 1), ylim=(-0.02, 1.02))
    figure.suptitle(f"precision-recall per class at IoU {iou:.2f}\n(COCO: area all, up to 100 detections)", fontsize=11)
    figure.savefig(path)


def save_confusion_matrix(diagnostics: Diagnostics, path: str | os.PathLike) -> None:
    """One PNG of `diagnostics.matrix`: rows the ground truth, columns the prediction, the classes and then
    background; each cell shows its count (empty cells none), coloured by its share of the row's boxes."""
    matrix, labels = diagnostics.matrix, diagnostics.labels
    n = len(labels)
    cell = 0.55 if n <= 20 else 0.32  # inches: counts stay legible up to COCO's 80 classes
    longest = max(len(label) for label in labels)
    side = max(4.5, n * cell + 1.2 + 0.075 * min(longest, 30))
    figure = _figure(side + 1.4, side + 0.5)
    axes = figure.subplots()
    totals = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, totals, out=np.zeros(matrix.shape), where=totals > 0)
    image = axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes, shrink=0.8, label="share of the row")
    fontsize = 10 if n <= 12 else 8 if n <= 20 else 6
    for row, column in zip(*np.nonzero(matrix)):
        axes.text(
            column,
            row,
            str(matrix[row, column]),
            ha="center",
            va="center",
            fontsize=fontsize,
            color="white" if shares[row, column] > 0.55 else "black",
        )
    axes.set_xticks(
        range(n),
        labels,
        rotation=45 if n <= 20 else 90,
        ha="right" if n <= 20 else "center",
        rotation_mode="anchor" if n <= 20 else "default",
        fontsize=fontsize + 1,
    )
    axes.set_yticks(range(n), labels, fontsize=fontsize + 1)
    # the background row and column apart from the classes
    axes.axhline(n - 1.5, color="0.3", linewidth=1)
    axes.axvline(n - 1.5, color="0.3", linewidth=1)
    axes.set(xlabel="prediction", ylabel="ground truth")
    axes.set_title(
        f"confusion matrix: IoU >= {diagnostics.iou_threshold:g}, score >= {diagnostics.score_threshold:g}"
        f"\nbackground column: missed, background row: false positives",
        fontsize=10,
    )
    figure.savefig(path)


# outcome colours of the worst-image gallery
_RIGHT, _WRONG_CLASS, _WRONG, _DUPLICATE, _NEUTRAL = "#3cb44b", "#f58231", "#e6194b", "#911eb4", "#a9a9a9"
GALLERY_MIN_SIDE = 384  # gallery tiles are upscaled to at least this shorter side, so labels read


def _outcome_tiles(
    picture: Image.Image,
    match: ImageMatch,
    prediction: Mapping[str, Any],
    reference: Mapping[str, Any],
    id2label: Mapping[int, str],
) -> list[torch.Tensor]:
    """One image's ground truth and detections (at the score threshold) coloured and tagged by their outcome."""
    gt_labels, pred_labels = reference["labels"], prediction["labels"]
    truth, found = {}, {}  # box index -> (colour, note)
    for g, p in match.matched:
        if gt_labels[g] == pred_labels[p]:
            truth[g] = found[p] = (_RIGHT, "")
        else:
            truth[g] = (_WRONG_CLASS, f"(found as {id2label.get(pred_labels[p], pred_labels[p])})")
            found[p] = (_WRONG_CLASS, f"(is {id2label.get(gt_labels[g], gt_labels[g])})")
    truth.update({g: (_WRONG, "missed") for g in match.missed})
    truth.update({g: (_NEUTRAL, "crowd") for g, crowd in enumerate(reference["iscrowd"]) if crowd})
    found.update({p: (_WRONG, "FP") for p in match.false_positives})
    found.update({p: (_DUPLICATE, "duplicate") for p in match.duplicates})
    found.update({p: (_NEUTRAL, "on crowd") for p in match.ignored})

    gt_boxes = box_convert(torch.tensor(reference["boxes"], dtype=torch.float64).reshape(-1, 4), "xywh", "xyxy")
    pred_boxes = torch.tensor(prediction["boxes"], dtype=torch.float64).reshape(-1, 4)
    tiles = []
    for boxes, labels, scores, outcome in (
        (gt_boxes, gt_labels, None, truth),
        (pred_boxes, pred_labels, prediction["scores"], found),
    ):
        order = sorted(outcome)
        tiles.append(
            draw_detections(
                picture,
                boxes[order],
                [labels[i] for i in order],
                id2label,
                None if scores is None else [scores[i] for i in order],
                min_side=GALLERY_MIN_SIDE,
                notes=[outcome[i][1] for i in order],
                colors=[outcome[i][0] for i in order],
            )
        )
    return tiles


def save_worst_images(
    diagnostics: Diagnostics,
    evaluation: CocoEvaluation,
    images: Sequence[Mapping[str, Any]],
    path: str | os.PathLike,
    count: int = 8,
) -> list[int]:
    """A grid PNG of the `count` images with the most errors (`Diagnostics.worst`), ground truth next to the
    detections at the score threshold, two images per row. Boxes are coloured by outcome: green right, orange
    matched with the wrong class (tagged with the other class), red missed or false positive, purple a false
    positive that duplicates a better detection of its class, grey crowd regions and the detections on them.
    `images[i]["image"]` is image `i` of the evaluation (a row of the evaluated split; made upright as the
    evaluation saw it); its `image_id`, when present, is named in the caption. Returns the indices of the images
    drawn, worst first."""
    from ..modeling.image_processing_hf_detr import upright_rgb

    if len(images) != len(diagnostics.images):
        raise HfDetrInputError(
            f"images must be the {len(diagnostics.images)} evaluated images in order, got {len(images)}"
        )
    id2label = dict(zip(diagnostics.category_ids, diagnostics.class_names))
    tiles, captions, shown = [], [], []
    for match in diagnostics.worst(count):
        row = images[match.index]
        tiles += _outcome_tiles(
            upright_rgb(row["image"]),
            match,
            evaluation.predictions[match.index],
            evaluation.references[match.index],
            id2label,
        )
        name = f"image {match.index}" + (f" (image_id {row['image_id']})" if "image_id" in row else "")
        objects = _count(len(match.matched) + len(match.missed), "object")
        captions += [
            f"{name}\n{_count(match.errors, 'error')}; {len(match.missed)} of {objects} missed",
            f"{_count(len(match.false_positives), 'false positive')} ({len(match.duplicates)} duplicate), "
            f"{match.wrong_class} wrong class\n"
            f"{match.correct} correct",
        ]
        shown.append(match.index)
    titles = ("ground truth", f"detections, score >= {diagnostics.score_threshold:g}")
    save_grid(tiles, path, columns=4, column_titles=titles, captions=captions)
    return shown


def save_diagnostics(
    evaluation: CocoEvaluation,
    images: Sequence[Mapping[str, Any]],
    out_dir: str | os.PathLike,
    *,
    iou_threshold: float = 0.5,
    score_threshold: float = 0.5,
    worst: int = 8,
) -> Diagnostics:
    """Write the diagnostics of one evaluation (`evaluate(..., return_evaluation=True)` of the split `images`) to
    `out_dir`: `confusion_matrix.json` and `.png` (`hf_detr.evaluation.diagnostics.diagnose` at the two
    thresholds), `pr_curves_per_class.png` and `worst_images.png` (the `worst` images with the most errors).
    Returns the diagnostics."""
    import json

    from ..evaluation.diagnostics import diagnose

    diagnostics = diagnose(evaluation, iou_threshold=iou_threshold, score_threshold=score_threshold)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "confusion_matrix.json").write_text(json.dumps(diagnostics.confusion_json(), indent=2))
    save_confusion_matrix(diagnostics, out_dir / "confusion_matrix.png")
    save_pr_curves_per_class(evaluation, out_dir / "pr_curves_per_class.png")
    if diagnostics.images:
        save_worst_images(diagnostics, evaluation, images, out_dir / "worst_images.png", worst)
    return diagnostics
