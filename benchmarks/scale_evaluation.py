"""Evaluation at COCO val2017's size: wall time and peak memory of box mAP, mask mAP and panoptic quality.

    python -m benchmarks.scale_evaluation [--images 5000] [--detections 100] [--backend pycocotools numpy]

:func:`measure_evaluation` generates a seeded COCO-shaped set: 640x480 images, 80 classes, 4 to 10 ground-truth
objects per image (about 7; 1% crowd), an ellipse inside each box; per image ``detections`` detections, half of them
jittered copies of the ground truth (80% with its class), half random, scores uniform, as post-processing gives them
(float32 scores and boxes, int64 labels). It does so in a fresh Python process, which then measures its RSS, runs
the evaluation and reports the evaluation's wall time, the process's peak RSS (VmHWM, :mod:`benchmarks.memory`)
and that peak over the RSS before the evaluation (the data, hf_detr, torch and pycocotools loaded):

- ``boxes``: ``coco_evaluate`` on per-image ``{"scores", "labels", "boxes"}``;
- ``masks``: ``coco_segmentation_evaluate`` on per-image RLEs of the ellipses (what ``MaskScorer`` keeps);
- ``panoptic``: ``PanopticQualityMetric`` counting one image at a time, as ``MaskScorer`` does, on panoptic maps
  painted per image (the detections in score order, later over earlier; never a split's maps at once); the time
  counts ``count_image``, ``add_counts`` and ``compute``, not the painting.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.memory import peak_rss_mib, rss_mib

KINDS = ("boxes", "masks", "panoptic")
HEIGHT, WIDTH, CLASSES = 480, 640, 80
_VERTICES = 24  # of each ellipse's polygon


def _scene(rng: np.random.Generator, detections: int, perfect: bool) -> dict[str, np.ndarray]:
    """One image's ground truth and detections: boxes (x, y, w, h) inside the frame, labels, crowd flags, scores.
    ``perfect``: the detections are the ground truth itself, score 1 (those on crowd regions are ignored)."""
    frame = np.array([WIDTH, HEIGHT], dtype=np.float64)
    count = int(rng.integers(4, 11))
    size = rng.uniform(8, 0.5 * frame, size=(count, 2))
    truth = np.concatenate([rng.uniform(0, 1, size=(count, 2)) * (frame - size), size], axis=1)
    labels = rng.integers(0, CLASSES, count)
    crowd = (rng.uniform(size=count) < 0.01).astype(np.int64)
    if perfect:
        found, found_labels, scores = truth, labels, np.ones(count)
    else:
        near = rng.integers(0, count, detections // 2)
        jittered = truth[near] + rng.normal(0, 0.1, (len(near), 4)) * np.tile(truth[near, 2:], 2)
        far = detections - len(near)
        size = rng.uniform(8, 0.5 * frame, size=(far, 2))
        found = np.concatenate([jittered, np.concatenate([rng.uniform(0, 1, (far, 2)) * (frame - size), size], 1)])
        corners = np.clip(np.concatenate([found[:, :2], found[:, :2] + np.abs(found[:, 2:])], 1), 0, np.tile(frame, 2))
        found = np.concatenate([corners[:, :2], np.maximum(corners[:, 2:] - corners[:, :2], 1.0)], axis=1)
        right = rng.uniform(size=len(near)) < 0.8
        found_labels = np.concatenate(
            [np.where(right, labels[near], rng.integers(0, CLASSES, len(near))), rng.integers(0, CLASSES, far)]
        )
        scores = rng.uniform(0, 1, detections)
    return {
        "truth": truth,
        "labels": labels,
        "crowd": crowd,
        "found": found,
        "found_labels": found_labels,
        "scores": scores.astype(np.float32),
    }


def _ellipse_rles(boxes: np.ndarray) -> list[dict[str, Any]]:
    """The RLE of the ellipse inscribed in each (x, y, w, h) box (pycocotools rasterizes the polygons)."""
    from pycocotools import mask as mask_utils

    if not len(boxes):
        return []
    angle = np.linspace(0, 2 * np.pi, _VERTICES, endpoint=False)
    centre, radius = boxes[:, None, :2] + boxes[:, None, 2:] / 2, boxes[:, None, 2:] / 2
    points = centre + radius * np.stack([np.cos(angle), np.sin(angle)], axis=-1)[None]
    rles = mask_utils.frPyObjects(points.reshape(len(boxes), -1).tolist(), HEIGHT, WIDTH)
    return [{"size": rle["size"], "counts": rle["counts"].decode("ascii")} for rle in rles]


def _panoptic_map(boxes: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Segment ids ``[H, W]``: the ellipse of ``boxes[j]`` painted with id j + 1, in ``order`` (later over earlier)."""
    ids = np.zeros((HEIGHT, WIDTH), dtype=np.int64)
    corners = np.round(np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], 1)).astype(int)
    for j in order:
        x0, y0, x1, y1 = corners[j].clip(0, [WIDTH, HEIGHT, WIDTH, HEIGHT])
        if x1 <= x0 or y1 <= y0:
            continue
        rows, cols = np.ogrid[y0:y1, x0:x1]
        dx, dy = (cols + 0.5 - (x0 + x1) / 2) / ((x1 - x0) / 2), (rows + 0.5 - (y0 + y1) / 2) / ((y1 - y0) / 2)
        ids[y0:y1, x0:x1][dx**2 + dy**2 <= 1] = j + 1
    return ids


def _panoptic(ids: np.ndarray, labels: np.ndarray, crowd: np.ndarray | None, key: str) -> dict[str, Any]:
    """A panoptic dict of the segments of ``ids`` that kept a pixel."""
    present = np.flatnonzero(np.bincount(ids.ravel(), minlength=len(labels) + 1)[1:])
    info = [
        {"id": int(j + 1), key: int(labels[j]), **({"iscrowd": int(crowd[j])} if crowd is not None else {})}
        for j in present
    ]
    return {"segmentation": ids, "segments_info": info}


def _run(num_images: int, detections: int, kind: str, backend: str, perfect: bool, seed: int) -> dict[str, Any]:
    """In the measuring process: generate, then time the evaluation and read the memory."""
    import torch

    from hf_detr.evaluation import PanopticQualityMetric, coco_evaluate, coco_segmentation_evaluate

    rng = np.random.default_rng(seed)
    if kind == "panoptic":
        metric, elapsed = PanopticQualityMetric(things=range(CLASSES)), 0.0
        gc.collect()
        baseline = rss_mib()
        for _ in range(num_images):
            scene = _scene(rng, detections, perfect)
            truth = _panoptic(
                _panoptic_map(scene["truth"], np.arange(len(scene["truth"]))),
                scene["labels"],
                scene["crowd"],
                "category_id",
            )
            found = _panoptic(
                _panoptic_map(scene["found"], np.argsort(scene["scores"], kind="stable")),
                scene["found_labels"],
                None,
                "label_id",
            )
            start = time.perf_counter()
            metric.add_counts([metric.count_image(found, truth)])
            elapsed += time.perf_counter() - start
        start = time.perf_counter()
        metrics = metric.compute()
        elapsed += time.perf_counter() - start
    else:
        predictions, references = [], []
        for _ in range(num_images):
            scene = _scene(rng, detections, perfect)
            prediction = {
                "scores": torch.from_numpy(scene["scores"]),
                "labels": torch.from_numpy(scene["found_labels"]),
            }
            reference = {"labels": scene["labels"], "iscrowd": scene["crowd"]}
            if kind == "boxes":
                corners = np.concatenate([scene["found"][:, :2], scene["found"][:, :2] + scene["found"][:, 2:]], 1)
                prediction["boxes"] = torch.from_numpy(corners.astype(np.float32))
                reference["boxes"] = scene["truth"]
            else:
                prediction["masks"], reference["masks"] = _ellipse_rles(scene["found"]), _ellipse_rles(scene["truth"])
            predictions.append(prediction)
            references.append(reference)
        evaluate = coco_evaluate if kind == "boxes" else coco_segmentation_evaluate
        gc.collect()
        baseline = rss_mib()
        start = time.perf_counter()
        metrics = evaluate(predictions, references, backend=backend)
        elapsed = time.perf_counter() - start
    peak = peak_rss_mib()
    return {
        "seconds": elapsed,
        "peak_rss_mib": peak,
        "over_baseline_mib": max(peak - baseline, 0.0),
        "metrics": metrics,
    }


def measure_evaluation(
    num_images: int = 5000,
    detections: int = 100,
    kind: str = "boxes",
    *,
    backend: str = "pycocotools",
    perfect: bool = False,
    seed: int = 0,
) -> dict[str, Any]:
    """Time and memory of evaluating ``num_images`` generated images with ``detections`` detections each (module
    docstring), in a fresh process.

    Args:
        kind: "boxes" (box mAP), "masks" (mask mAP) or "panoptic" (PQ).
        backend: COCOeval's backend for boxes and masks, "pycocotools" or "numpy".
        perfect: detections that are exactly the ground truth (score 1), whose metrics are 1.
        seed: the generator's seed; the same arguments give the same data.

    Returns:
        ``{"seconds", "peak_rss_mib", "over_baseline_mib", "metrics"}``: the evaluation's wall time, the process's
        peak RSS, that peak over the RSS just before the evaluation (MiB), and the evaluation's metrics.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if num_images < 1 or detections < 1:
        raise ValueError(f"num_images and detections must be at least 1, got {num_images} and {detections}")
    arguments = [num_images, detections, kind, backend, perfect, seed]
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.scale_evaluation", "--child", json.dumps(arguments)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    if done.returncode != 0:
        raise RuntimeError(f"the measuring process failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--detections", type=int, default=100)
    parser.add_argument("--backend", nargs="+", default=["pycocotools", "numpy"], choices=["pycocotools", "numpy"])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:  # the measuring process
        print(json.dumps(_run(*json.loads(args.child))))
        return
    print(f"{args.images} images x {args.detections} detections, {WIDTH}x{HEIGHT}, {CLASSES} classes")
    print(f"{'kind':<10}{'backend':<13}{'seconds':>9}{'peak RSS MiB':>14}{'over baseline MiB':>19}   metric")
    for kind in KINDS:
        for backend in args.backend if kind != "panoptic" else ["-"]:
            result = measure_evaluation(
                args.images, args.detections, kind, backend="pycocotools" if backend == "-" else backend
            )
            name = {"boxes": "map", "masks": "segm_map", "panoptic": "pq"}[kind]
            print(
                f"{kind:<10}{backend:<13}{result['seconds']:>9.1f}{result['peak_rss_mib']:>14.0f}"
                f"{result['over_baseline_mib']:>19.0f}   {name} {result['metrics'][name]:.4f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
