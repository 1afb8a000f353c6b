"""Small-compute training: transformers' DETR against hf_detr's demo recipe, same data, same budget, same seed.

Run from the repository root: `python -m benchmarks.bench_recipe [--time_budget 600] [--threads 2] [--dataset PATH]`.

Both models train in the same loop: the same generated (or `--dataset`) training split, the same augmentation (the
recipe's, `DEMO_TRAINING["augment"]`), the same batches in the same order, AdamW with the demo's learning rates,
gradient clipping 0.1, a cosine schedule over the time budget, then COCO mAP on the test split with the same
evaluation code.
What differs is only what each side brings:

* transformers: `DetrForObjectDetection` as the issue measured it (resnet18 from scratch with transformers' frozen
  BatchNorm, stride 32, d_model 128, 3+3 layers, 16 queries, its default dropout 0.1, no auxiliary loss);
* hf_detr: `hf_detr.demo.DEMO_MODEL` (the recipe options; see docs/RECIPE.md).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

import datasets
import torch
from transformers import DetrConfig, DetrForObjectDetection

from hf_detr import HfDetrConfig, HfDetrForObjectDetection
from hf_detr.collate import DetectionCollator, DetectionDataset
from hf_detr.data import id2label as dataset_id2label
from hf_detr.data import load_detection_dataset
from hf_detr.demo import DEMO_MODEL, DEMO_TRAINING, IMAGE_SIZE, demo_processor, score_split
from hf_detr.synthetic import make_synthetic_dataset
from hf_detr.train import TrainConfig, _param_groups, lr_factor, scaled_detr_transforms

REFERENCE_MODEL: dict[str, Any] = dict(
    backbone="resnet18", d_model=128, encoder_layers=3, decoder_layers=3, encoder_attention_heads=8,
    decoder_attention_heads=8, encoder_ffn_dim=512, decoder_ffn_dim=512, num_queries=16,
)  # fmt: skip


def build_models(id2label: dict[int, str]) -> dict[str, Callable[[], torch.nn.Module]]:
    return {
        "transformers DETR": lambda: DetrForObjectDetection(DetrConfig(**REFERENCE_MODEL, id2label=id2label)),
        "hf_detr demo recipe": lambda: HfDetrForObjectDetection(HfDetrConfig(**DEMO_MODEL, id2label=id2label)),
    }


def train_and_evaluate(
    model: torch.nn.Module, data: datasets.DatasetDict, config: TrainConfig, id2label: dict[int, str]
) -> dict[str, float]:
    """Train `model` on `data["train"]` for `config.time_budget` seconds; COCO metrics on `data["test"]`."""
    processor = demo_processor()
    train_transform, _ = scaled_detr_transforms(IMAGE_SIZE, IMAGE_SIZE * 2, config.augment)
    train_set = DetectionDataset(data["train"], train_transform, seed=config.seed)
    loader = torch.utils.data.DataLoader(
        train_set, batch_size=config.per_device_train_batch_size, shuffle=True, drop_last=True,
        collate_fn=DetectionCollator(processor), generator=torch.Generator().manual_seed(config.seed),
    )  # fmt: skip
    optimizer = torch.optim.AdamW(_param_groups(model, config), weight_decay=config.weight_decay)
    model.train()
    step, epoch, start = 0, 0, time.monotonic()
    while time.monotonic() - start < config.time_budget:
        train_set.set_epoch(epoch)
        for batch in loader:
            elapsed = time.monotonic() - start
            if elapsed >= config.time_budget:
                break
            for group in optimizer.param_groups:
                group["lr"] = group["base_lr"] * lr_factor(elapsed / config.time_budget, step, config)
            loss = model(**batch).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            optimizer.step()
            step += 1
        epoch += 1
    seconds = time.monotonic() - start
    metrics = score_split(model, processor, data["test"], id2label, config.per_device_eval_batch_size)
    return {"steps": step, "train_seconds": round(seconds, 1), **{k: metrics[k] for k in ("map", "map_50", "map_75")}}


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--time_budget", type=float, default=600.0, help="training seconds per model")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dataset", help="a data set with train and test splits (default: generated shapes)")
    parser.add_argument("--num_train", type=int, default=2000, help="generated training images")
    parser.add_argument("--num_test", type=int, default=200, help="generated test images")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.dataset:
        data = load_detection_dataset(args.dataset, splits=["train", "test"])
    else:
        data = make_synthetic_dataset(args.num_train, 0, args.num_test, image_size=IMAGE_SIZE, seed=args.seed)
    id2label = dataset_id2label(data["train"])
    config = TrainConfig(output_dir="unused", time_budget=args.time_budget, seed=args.seed, **DEMO_TRAINING)
    results = {}
    for name, build in build_models(id2label).items():
        torch.manual_seed(args.seed)
        results[name] = train_and_evaluate(build(), data, config, id2label)
        print(f"{name:>20}: {json.dumps(results[name])}", flush=True)
    reference, ours = results.values()
    print(f"AP50 {ours['map_50']:.3f} vs {reference['map_50']:.3f}, AP {ours['map']:.3f} vs {reference['map']:.3f} "
          f"(hf_detr vs transformers; {args.time_budget:.0f} s each, {args.threads} threads, seed {args.seed})")
    return results


if __name__ == "__main__":
    main()
