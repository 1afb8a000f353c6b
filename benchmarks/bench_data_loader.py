"""How many DataLoader workers a GPU needs: images per second that the training data pipeline delivers with 0, 1 and 2
workers, at the paper's sizes (image processor shortest edge 800, longest 1333) with DETR's augmentation (flip,
multi-scale resize, random crop: `hf_detr.training.setup.training_data(split, processor, "detr", seed)`), batch size
2, on 640x480 JPEGs of COCO's size and object count (`benchmarks/scale_data.py`).

Run from the repository root: `python -m benchmarks.bench_data_loader [--batches 100] [--rounds 3]`. The first
batch of each setting (worker start-up) is timed apart; the rate is over the following `--batches` batches. The
settings alternate for `--rounds` rounds, so that load from other processes hits them alike, and each reports its best
round. Each worker runs one thread, so one worker's rate is what one CPU core delivers.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from typing import Any

import torch

from benchmarks.scale_data import write_coco_folder
from hf_detr import HfDetrImageProcessor
from hf_detr.data import load_data
from hf_detr.presets import DETR_IMAGE_SIZE, DETR_MAX_SIZE
from hf_detr.training.setup import training_data

BATCH_SIZE = 2


def measure_workers(dataset: torch.utils.data.Dataset, collator: Any, workers: int, batches: int) -> dict[str, float]:
    """Seconds to the first batch and images per second over the next ``batches`` batches with ``workers``."""
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=BATCH_SIZE,
        shuffle=True,
        collate_fn=collator,
        num_workers=workers,
        generator=torch.Generator().manual_seed(0),
    )
    start = time.perf_counter()
    iterator = iter(loader)
    next(iterator)
    first = time.perf_counter()
    images = 0
    for batch in (next(iterator) for _ in range(batches)):
        images += len(batch["labels"])
    return {"first_batch_seconds": first - start, "images_per_second": images / (time.perf_counter() - first)}


def main(argv: list[str] | None = None) -> dict[int, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=256, help="training images generated")
    parser.add_argument("--batches", type=int, default=100, help="batches timed per setting and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--gpu_steps", type=float, default=10.0, help="a GPU's steps per second to feed")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.images < BATCH_SIZE * (args.batches + 1):
        parser.error(f"--images must hold --batches + 1 batches of {BATCH_SIZE}")

    processor = HfDetrImageProcessor(size={"shortest_edge": DETR_IMAGE_SIZE, "longest_edge": DETR_MAX_SIZE})
    with tempfile.TemporaryDirectory() as root:
        write_coco_folder(root, args.images, args.seed)
        dataset, collator = training_data(load_data(root, ["train"])["train"], processor, "detr", args.seed)
        results: dict[int, dict[str, float]] = {}
        for _ in range(args.rounds):
            for workers in args.workers:
                result = measure_workers(dataset, collator, workers, args.batches)
                if workers not in results or result["images_per_second"] > results[workers]["images_per_second"]:
                    results[workers] = result

    print(
        f"DETR augmentation at shortest edge {DETR_IMAGE_SIZE}, longest {DETR_MAX_SIZE}; 640x480 JPEGs; batch "
        f"{BATCH_SIZE}; best of {args.rounds} rounds of {args.batches} batches; main process "
        f"{torch.get_num_threads()} threads, workers 1"
    )
    for workers, result in results.items():
        print(
            f"{workers} worker{'' if workers == 1 else 's'}: {result['images_per_second']:6.1f} images/s "
            f"(first batch after {result['first_batch_seconds']:.2f} s)"
        )
    if 1 in results:
        needed = math.ceil(args.gpu_steps * BATCH_SIZE / results[1]["images_per_second"])
        print(
            f"one worker delivers {results[1]['images_per_second']:.1f} images/s: a GPU stepping at "
            f"{args.gpu_steps:g} it/s at batch {BATCH_SIZE} needs {needed} worker{'' if needed == 1 else 's'}"
        )
    return results


if __name__ == "__main__":
    main()
