"""HfDetrImageProcessor against transformers' DetrImageProcessor: images per second on one batch of 640x480 PIL images
with COCO annotations, default settings (resize to 800x1066, rescale, normalize, pad, labels), same thread count.

Run from the repository root: `python -m benchmarks.bench_image_processor [--batch 8] [--threads 2] [--repeats 7]`.
Each time is the median of `--repeats` timed runs after one warm-up run; the two processors alternate for
`--rounds` rounds so that load from other processes hits both alike, and the best round of each is reported.
"""

from __future__ import annotations

import argparse
import functools

import numpy as np
import PIL.Image
import torch
from transformers import DetrImageProcessor

from benchmarks.bench_model import median_seconds
from hf_detr import HfDetrImageProcessor


def make_batch(batch: int, objects: int = 15, seed: int = 0) -> tuple[list[PIL.Image.Image], list[dict]]:
    """`batch` random 640x480 RGB images, each with `objects` random COCO boxes."""
    rng = np.random.default_rng(seed)
    images = [PIL.Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)) for _ in range(batch)]
    annotations = []
    for image_id in range(batch):
        sizes = rng.uniform(10, 300, (objects, 2))
        corners = rng.uniform(0, 1, (objects, 2)) * (np.array([640, 480]) - sizes)
        annotations.append(
            {
                "image_id": image_id,
                "annotations": [
                    {
                        "bbox": [*map(float, xy), *map(float, wh)],
                        "category_id": int(c),
                        "area": float(wh.prod()),
                        "iscrowd": 0,
                    }
                    for xy, wh, c in zip(corners, sizes, rng.integers(1, 91, objects))
                ],
            }
        )
    return images, annotations


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    images, annotations = make_batch(args.batch)
    processors = {
        "transformers DetrImageProcessor": DetrImageProcessor(),
        "hf_detr HfDetrImageProcessor": HfDetrImageProcessor(),
    }
    outputs = {name: p(images=images, annotations=annotations, return_tensors="pt") for name, p in processors.items()}
    reference, ours = outputs.values()
    error = (reference["pixel_values"] - ours["pixel_values"]).abs().max().item()
    box_error = max((a["boxes"] - b["boxes"]).abs().max().item() for a, b in zip(reference["labels"], ours["labels"]))

    best = dict.fromkeys(processors, float("inf"))
    for _ in range(args.rounds):
        for name, processor in processors.items():
            run = functools.partial(processor, images=images, annotations=annotations, return_tensors="pt")
            best[name] = min(best[name], median_seconds(run, args.repeats))

    shape = tuple(ours["pixel_values"].shape)
    print(f"batch: {args.batch} PIL images 640x480 with 15 boxes each -> pixel_values {shape}")
    print(f"threads: {args.threads}, repeats: {args.repeats}, rounds: {args.rounds}, torch {torch.__version__}")
    print(f"max abs difference: pixel_values {error:.2e}, label boxes {box_error:.2e}")
    for name, seconds in best.items():
        print(f"{name:<32} {args.batch / seconds:>8.1f} images/s")
    theirs, mine = best.values()
    print(f"{'speed-up (hf_detr / transformers)':<32} {theirs / mine:>8.2f}x")


if __name__ == "__main__":
    main()
