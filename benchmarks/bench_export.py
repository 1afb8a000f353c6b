"""The exported ONNX graphs under onnxruntime against the PyTorch model, eager and `torch.compile`d: same random
weights, same inputs, same thread count, one process.

Run from the repository root: `python -m benchmarks.bench_export [--threads 2] [--repeats 5]`. Models: DETR-R50
(`create_model("detr-resnet-50")`, random weights: speed does not depend on them) at 800x1066 and the demo's model
(the `demo` preset made plain DETR, as `make demo` saves it) at 128x170, each at batch 1 and 4. Each time is the
median of `--repeats` timed runs after one warm-up run (for `torch.compile`, the warm-up compiles), the three ways
taking turns run by run, so that load from other processes falls on all three alike. Two workloads:

- `model`: the raw float32 graph (`hf-detr export`'s `model.onnx`) against the model's forward, on padded batches
  of decreasing image sizes (image i an eighth smaller per side than image i - 1; batch 1: one full-size image).
- `end-to-end`: the end-to-end graph (`model_end_to_end.onnx`, uint8 images in, the 100 best detections out)
  against the Python pipeline it replaces, `HfDetrImageProcessor` + the model + `post_process_object_detection`, on
  480x640 photos (random pixels) decreasing the same way.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime
import torch

from benchmarks.bench_model import INFERENCE_SIZE
from hf_detr import create_model, presets
from hf_detr.hub.export import export_folder
from hf_detr.hub.onnx_runtime import OnnxDetector, session
from hf_detr.hub.validate import compare_detections, reference_detections

MODELS = {"R50": ("detr-resnet-50", INFERENCE_SIZE), "demo": ("demo", (128, 170))}
BATCHES = (1, 4)
PHOTO_SIZE = (480, 640)

Runs = dict[str, Callable[[], object]]


def interleaved_medians(runs: Runs, repeats: int) -> dict[str, float]:
    """The median seconds of each of `runs` over `repeats` timed runs after one warm-up run each, the runs taking
    turns."""
    for run in runs.values():
        run()
    times: dict[str, list[float]] = {way: [] for way in runs}
    for _ in range(repeats):
        for way, run in runs.items():
            start = time.perf_counter()
            run()
            times[way].append(time.perf_counter() - start)
    return {way: statistics.median(values) for way, values in times.items()}


def build(preset: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(preset).to_plain_detr().eval()


def decreasing_sizes(batch: int, size: tuple[int, int]) -> list[tuple[int, int]]:
    """`batch` sizes from `size` down, each an eighth smaller per side than the one before."""
    height, width = size
    return [(height - i * height // 8, width - i * width // 8) for i in range(batch)]


def padded_inputs(batch: int, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded random images of `decreasing_sizes(batch, size)` padded to `size`, with the pixel mask."""
    generator = torch.Generator().manual_seed(0)
    pixel_values = torch.zeros(batch, 3, *size)
    pixel_mask = torch.zeros(batch, *size, dtype=torch.long)
    for i, (h, w) in enumerate(decreasing_sizes(batch, size)):
        pixel_values[i, :, :h, :w] = torch.randn(3, h, w, generator=generator)
        pixel_mask[i, :h, :w] = 1
    return pixel_values, pixel_mask


def model_runs(
    model: torch.nn.Module, compiled: torch.nn.Module, graph: Path, threads: int, batch: int, size: tuple[int, int]
) -> tuple[Runs, float]:
    """The three ways to run the model on a padded batch, and the largest difference of the logits and boxes of
    onnxruntime and eager PyTorch."""
    pixel_values, pixel_mask = padded_inputs(batch, size)
    graph_session = session(graph, threads=threads)
    feed = {"pixel_values": pixel_values.numpy(), "pixel_mask": pixel_mask.numpy()}

    def forward(module: torch.nn.Module) -> Callable[[], object]:
        return torch.no_grad()(lambda: module(pixel_values, pixel_mask))

    expected, (logits, boxes) = forward(model)(), graph_session.run(None, feed)
    error = max(
        float((torch.from_numpy(logits) - expected.logits).abs().max()),
        float((torch.from_numpy(boxes) - expected.pred_boxes).abs().max()),
    )
    return {
        "eager": forward(model),
        "compile": forward(compiled),
        "onnxruntime": lambda: graph_session.run(None, feed),
    }, error


def end_to_end_runs(
    model: torch.nn.Module, compiled: torch.nn.Module, processor: object, graph: Path, threads: int, batch: int
) -> tuple[Runs, float]:
    """The Python pipeline (processor, eager or compiled model, post-processing) and the end-to-end graph on
    `batch` uint8 photos, and the largest difference of their boxes in pixels."""
    generator = np.random.default_rng(0)
    images = [generator.integers(0, 256, (*size, 3), dtype=np.uint8) for size in decreasing_sizes(batch, PHOTO_SIZE)]
    detector = OnnxDetector(graph, threads=threads)
    top_k = min(100, model.config.num_queries)

    def pipeline(module: torch.nn.Module) -> Callable[[], object]:
        @torch.no_grad()
        def run() -> object:
            inputs = processor(images=images, return_tensors="pt")
            outputs = module(inputs["pixel_values"], inputs["pixel_mask"])
            sizes = [image.shape[:2] for image in images]
            return processor.post_process_object_detection(outputs, 0.0, target_sizes=sizes, top_k=top_k)

        return run

    comparison = compare_detections(detector(images), reference_detections(model, processor, images, top_k))
    return {
        "eager": pipeline(model),
        "compile": pipeline(compiled),
        "onnxruntime": lambda: detector(images),
    }, comparison["max_abs_error_boxes_px"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--models", nargs="+", choices=tuple(MODELS), default=list(MODELS))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    rows, errors = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            preset, size = MODELS[name]
            model, processor = build(preset), presets.get(preset).image_processor()
            graphs = export_folder(
                model, processor, Path(tmp) / name, end_to_end=True, max_detections=min(100, model.config.num_queries)
            ).graphs
            for batch in BATCHES:
                compiled = torch.compile(model)
                workloads = {
                    f"model {name} {size[0]}x{size[1]} batch {batch}": model_runs(
                        model, compiled, graphs["raw"], args.threads, batch, size
                    ),
                    f"end-to-end {name} {PHOTO_SIZE[0]}x{PHOTO_SIZE[1]} photos batch {batch}": end_to_end_runs(
                        model, compiled, processor, graphs["end_to_end"], args.threads, batch
                    ),
                }
                for label, (runs, errors[label]) in workloads.items():
                    rows.append((f"{label} (s)", interleaved_medians(runs, args.repeats)))
                torch._dynamo.reset()  # each batch size compiles for its own shapes, as a deployment would

    print(
        f"threads: {args.threads}, repeats: {args.repeats}, torch {torch.__version__}, "
        f"onnxruntime {onnxruntime.__version__}"
    )
    print("max abs difference, onnxruntime vs eager (model: logits and boxes; end-to-end: boxes in pixels):")
    for label, error in errors.items():
        print(f"  {label}: {error:.1e}")
    print(f"{'measure':<50} {'eager':>8} {'compile':>8} {'onnxruntime':>12} {'compile/eager':>14} {'ort/eager':>10}")
    for label, times in rows:
        eager, compiled, ort = times["eager"], times["compile"], times["onnxruntime"]
        print(f"{label:<50} {eager:>8.3f} {compiled:>8.3f} {ort:>12.3f} {compiled / eager:>14.2f} {ort / eager:>10.2f}")


if __name__ == "__main__":
    main()
