"""The exported ONNX graph under onnxruntime against the PyTorch model, eager and `torch.compile`d: same random
weights, same inputs, same thread count, one process.

Run from the repository root: `python -m benchmarks.bench_export [--threads 2] [--repeats 5]`. Models: DETR-R50
(`presets.create("detr-resnet-50")`, random weights: speed does not depend on them) at 800x1066 and the demo's model
(the `demo` preset made plain DETR, as `make demo` saves it) at 128x170, each at batch 1 and 4 (padded batches of
decreasing image sizes, image i an eighth smaller per side than image i - 1). Each time is the median of `--repeats`
timed runs after one warm-up run (for `torch.compile`, the warm-up compiles). The graph is the raw float32 one that
`hf-detr export` writes (`hf_detr.hub.export.export_onnx`).
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path

import onnxruntime
import torch

from benchmarks.bench_model import INFERENCE_SIZE, median_seconds
from hf_detr import presets
from hf_detr.hub.export import export_onnx
from hf_detr.hub.onnx_runtime import session

MODELS = {"R50": ("detr-resnet-50", INFERENCE_SIZE), "demo": ("demo", (128, 170))}
BATCHES = (1, 4)


def build(preset: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return presets.create(preset).to_plain_detr().eval()


def padded_inputs(batch: int, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """`batch` seeded random images padded to `size`, image i an eighth smaller per side than image i - 1 (batch 1:
    one full-size image), with the pixel mask."""
    generator = torch.Generator().manual_seed(0)
    height, width = size
    pixel_values = torch.zeros(batch, 3, height, width)
    pixel_mask = torch.zeros(batch, height, width, dtype=torch.long)
    for i in range(batch):
        h, w = height - i * height // 8, width - i * width // 8
        pixel_values[i, :, :h, :w] = torch.randn(3, h, w, generator=generator)
        pixel_mask[i, :h, :w] = 1
    return pixel_values, pixel_mask


def runners(model: torch.nn.Module, graph: Path, threads: int, batch: int, size: tuple[int, int]
            ) -> tuple[dict[str, Callable[[], object]], float]:  # fmt: skip
    """The three ways to run `batch` padded images of `size`, and the largest difference of their logits and boxes
    between onnxruntime and eager PyTorch."""
    pixel_values, pixel_mask = padded_inputs(batch, size)
    compiled = torch.compile(model)
    graph_session = session(graph, threads=threads)
    feed = {"pixel_values": pixel_values.numpy(), "pixel_mask": pixel_mask.numpy()}

    def eager() -> object:
        with torch.no_grad():
            return model(pixel_values, pixel_mask)

    def compiled_run() -> object:
        with torch.no_grad():
            return compiled(pixel_values, pixel_mask)

    expected, (logits, boxes) = eager(), graph_session.run(None, feed)
    error = max(float((torch.from_numpy(logits) - expected.logits).abs().max()),
                float((torch.from_numpy(boxes) - expected.pred_boxes).abs().max()))  # fmt: skip
    return {"eager": eager, "compile": compiled_run, "onnxruntime": lambda: graph_session.run(None, feed)}, error


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
            model = build(preset)
            graph = Path(export_onnx(model, Path(tmp) / f"{name}.onnx", example_size=size))
            for batch in BATCHES:
                runs, errors[f"{name} batch {batch}"] = runners(model, graph, args.threads, batch, size)
                times = {way: median_seconds(run, args.repeats) for way, run in runs.items()}
                rows.append((f"inference {name} {size[0]}x{size[1]} batch {batch} (s)", times))
                torch._dynamo.reset()  # each compiled model compiles for its own shapes, as a deployment would

    print(f"threads: {args.threads}, repeats: {args.repeats}, torch {torch.__version__}, "
          f"onnxruntime {onnxruntime.__version__}")  # fmt: skip
    print("max abs difference of logits and boxes, onnxruntime vs eager: "
          + ", ".join(f"{key} {value:.1e}" for key, value in errors.items()))  # fmt: skip
    header = f"{'measure':<44} {'eager':>8} {'compile':>8} {'onnxruntime':>12} {'compile/eager':>14} {'ort/eager':>10}"
    print(header)
    for label, times in rows:
        eager, compiled, ort = times["eager"], times["compile"], times["onnxruntime"]
        print(f"{label:<44} {eager:>8.3f} {compiled:>8.3f} {ort:>12.3f} {compiled / eager:>14.2f} {ort / eager:>10.2f}")


if __name__ == "__main__":
    main()
