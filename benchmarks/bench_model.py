"""hf_detr against transformers' DetrForObjectDetection (or, with `--task segmentation`, DetrForSegmentation): same
random weights, same inputs, same thread count.

Run from the repository root: `python -m benchmarks.bench_model [--task segmentation] [--threads 2] [--repeats 5]`.
Each time is the median of `--repeats` timed runs after one warm-up run. Peak memory is the growth of the peak
resident set size of a fresh process running one workload after building its model, so both sides are measured
the same way.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import DetrConfig, DetrForObjectDetection, DetrForSegmentation
from transformers.loss.loss_for_object_detection import HungarianMatcher as ReferenceMatcher

from benchmarks.memory import peak_rss_mib, rss_mib
from hf_detr.hub.convert import from_transformers
from hf_detr.modeling.matcher import HungarianMatcher

INFERENCE_SIZE = (800, 1066)
# the mask head runs on every query at stride 4: smaller inputs keep a segmentation run to minutes on 2 cores
SEGMENTATION_INFERENCE_SIZE, SEGMENTATION_TRAINING_SIZE = (512, 683), 384
REFERENCE_CLASSES = {"detection": DetrForObjectDetection, "segmentation": DetrForSegmentation}
INFERENCE_SIZES = {"detection": INFERENCE_SIZE, "segmentation": SEGMENTATION_INFERENCE_SIZE}
TRAINING_INPUTS = {
    "detection": {"batch": 4, "size": 512, "boxes": 20},
    "segmentation": {"batch": 2, "size": SEGMENTATION_TRAINING_SIZE, "boxes": 10, "masks": True},
}


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: allocator, oneDNN primitive caches
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def inference_inputs(batch: int, size: tuple[int, int] = INFERENCE_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """`batch` images of decreasing size padded to `size` (batch 1 is one full-size image)."""
    generator = torch.Generator().manual_seed(0)
    height, width = size
    pixel_values = torch.zeros(batch, 3, height, width)
    pixel_mask = torch.zeros(batch, height, width, dtype=torch.long)
    for i in range(batch):
        h, w = height - 64 * i, width - 96 * i
        pixel_values[i, :, :h, :w] = torch.randn(3, h, w, generator=generator)
        pixel_mask[i, :h, :w] = 1
    return pixel_values, pixel_mask


def training_inputs(batch: int = 4, size: int = 512, boxes: int = 20, masks: bool = False):
    """Random images with `boxes` boxes each (and, with `masks`, each box's filled rectangle as its mask)."""
    generator = torch.Generator().manual_seed(1)
    pixel_values = torch.randn(batch, 3, size, size, generator=generator)
    labels = []
    for _ in range(batch):
        wh = torch.rand(boxes, 2, generator=generator) * 0.3 + 0.05
        center = wh / 2 + torch.rand(boxes, 2, generator=generator) * (1 - wh)
        target = {
            "class_labels": torch.randint(0, 91, (boxes,), generator=generator),
            "boxes": torch.cat([center, wh], 1),
        }
        if masks:
            grid = (torch.arange(size) + 0.5) / size
            low, high = (center - wh / 2)[:, :, None], (center + wh / 2)[:, :, None]
            inside = (grid >= low) & (grid < high)  # [boxes, 2 (x, y), size]
            target["masks"] = (inside[:, 1, :, None] & inside[:, 0, None, :]).float()
        labels.append(target)
    return pixel_values, torch.ones(batch, size, size, dtype=torch.long), labels


def build_pair(auxiliary_loss: bool = False, task: str = "detection"):
    """transformers' DETR-R50 with random weights and hf_detr converted from it."""
    config = DetrConfig(num_labels=91, auxiliary_loss=auxiliary_loss)
    reference = REFERENCE_CLASSES[task](config)
    ours = from_transformers(reference.state_dict(), config=config)
    return reference, ours


def run_inference(model, reference: bool, batch: int, size: tuple[int, int] = INFERENCE_SIZE) -> Callable[[], object]:
    pixel_values, pixel_mask = inference_inputs(batch, size)
    model.eval()

    def step():
        with torch.no_grad():
            if reference:
                return model(pixel_values=pixel_values, pixel_mask=pixel_mask)
            return model(pixel_values, pixel_mask)

    return step


def run_training(model, reference: bool, bf16: bool = False, **inputs: object) -> Callable[[], object]:
    """One training step; `bf16`: in bf16 autocast, as `mixed_precision="bf16"` trains (the demo's on a CPU with
    native bf16)."""
    pixel_values, pixel_mask, labels = training_inputs(**inputs)
    model.train()

    def step():
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            if reference:
                loss = model(pixel_values=pixel_values, pixel_mask=pixel_mask, labels=labels).loss
            else:
                loss = model(pixel_values, pixel_mask, labels=labels).loss
        loss.backward()

    return step


def matcher_inputs(batch: int = 32, queries: int = 100, targets: int = 30):
    generator = torch.Generator().manual_seed(2)
    logits = torch.randn(batch, queries, 92, generator=generator)
    pred_boxes = torch.rand(batch, queries, 4, generator=generator) * 0.4 + 0.1
    labels = [
        {
            "class_labels": torch.randint(0, 91, (targets,), generator=generator),
            "boxes": torch.rand(targets, 4, generator=generator) * 0.4 + 0.1,
        }
        for _ in range(batch)
    ]
    return logits, pred_boxes, labels


def peak_memory_child(args: argparse.Namespace) -> None:
    """In a fresh process: build one side, run one workload once, print its peak RSS above the RSS before it, in MiB.

    The workload's activations (hundreds of MiB) dwarf the model build, so the process peak is reached inside it."""
    torch.set_num_threads(args.threads)
    config = DetrConfig(num_labels=91, auxiliary_loss=args.workload == "training")
    state_dict = torch.load(args.weights, weights_only=True)
    is_reference = args.side == "transformers"
    if is_reference:
        model = REFERENCE_CLASSES[args.task](config)
        model.load_state_dict(state_dict)
    else:
        model = from_transformers(state_dict, config=config)
    del state_dict
    gc.collect()
    if args.workload == "training":
        step = run_training(model, is_reference, **TRAINING_INPUTS[args.task])
    else:
        step = run_inference(model, is_reference, 1, INFERENCE_SIZES[args.task])
    rss_before = rss_mib()
    step()
    print(json.dumps({"peak_mib": peak_rss_mib() - rss_before}))


def peak_memory(weights: Path, side: str, workload: str, threads: int, task: str) -> float:
    command = [
        sys.executable,
        "-m",
        "benchmarks.bench_model",
        "--child",
        side,
        workload,
        str(weights),
        "--threads",
        str(threads),
        "--task",
        task,
    ]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return json.loads(output.strip().splitlines()[-1])["peak_mib"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=tuple(REFERENCE_CLASSES), default="detection")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--child", nargs=3, metavar=("SIDE", "WORKLOAD", "WEIGHTS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        args.side, args.workload, args.weights = args.child
        peak_memory_child(args)
        return

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    task, rows = args.task, []
    size, training = INFERENCE_SIZES[task], TRAINING_INPUTS[task]
    outputs = ("logits", "pred_boxes", "pred_masks") if task == "segmentation" else ("logits", "pred_boxes")

    reference, ours = build_pair(task=task)
    with torch.no_grad():
        expected = run_inference(reference, True, 1, size)()
        actual = run_inference(ours, False, 1, size)()
    error = max((getattr(expected, name) - getattr(actual, name)).abs().max().item() for name in outputs)
    for batch in (1, 4) if task == "detection" else (1, 2):
        rows.append(
            (
                f"{task} inference R50 {size[0]}x{size[1]} batch {batch} (s)",
                median_seconds(run_inference(reference, True, batch, size), args.repeats),
                median_seconds(run_inference(ours, False, batch, size), args.repeats),
            )
        )

    reference, ours = build_pair(auxiliary_loss=True, task=task)
    side = training["size"]
    for bf16 in (False, True):
        rows.append(
            (
                f"{task} training step R50 {side}x{side} batch {training['batch']}, {training['boxes']} boxes"
                f"{' in bf16' if bf16 else ''} (s)",
                median_seconds(run_training(reference, True, bf16, **training), args.repeats),
                median_seconds(run_training(ours, False, bf16, **training), args.repeats),
            )
        )

    if task == "detection":
        rows.append(matcher_row(args.repeats))

    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "weights.pt"
        torch.save(build_pair(task=task)[0].state_dict(), weights)
        for workload, label in (
            ("inference", "peak memory, inference batch 1 (MiB)"),
            ("training", "peak memory, training step (MiB)"),
        ):
            rows.append(
                (
                    label,
                    peak_memory(weights, "transformers", workload, args.threads, task),
                    peak_memory(weights, "hf_detr", workload, args.threads, task),
                )
            )

    print(f"threads: {args.threads}, repeats: {args.repeats}, torch {torch.__version__}")
    print(f"max abs difference of outputs ({', '.join(outputs)}) at {size[0]}x{size[1]}: {error:.2e}")
    print(f"{'measure':<72} {'transformers':>13} {'hf_detr':>10} {'ratio':>7}")
    for name, theirs, mine in rows:
        print(f"{name:<72} {theirs:>13.3f} {mine:>10.3f} {mine / theirs:>7.2f}")


def matcher_row(repeats: int) -> tuple[str, float, float]:
    logits, pred_boxes, labels = matcher_inputs()
    reference_matcher = ReferenceMatcher(class_cost=1, bbox_cost=5, giou_cost=2)
    matcher = HungarianMatcher(1, 5, 2)
    ids, boxes = [t["class_labels"] for t in labels], [t["boxes"] for t in labels]
    return (
        "matcher 32 x 100 queries x 30 targets (s)",
        median_seconds(lambda: reference_matcher({"logits": logits, "pred_boxes": pred_boxes}, labels), repeats * 4),
        median_seconds(lambda: matcher(logits, pred_boxes, ids, boxes), repeats * 4),
    )


if __name__ == "__main__":
    main()
