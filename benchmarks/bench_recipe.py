"""Small-compute training: transformers' DETR against hf_detr's demo recipe, same data, same budget, same seed.

Run from the repository root: `python -m benchmarks.bench_recipe [--time_budget 600] [--threads 2] [--dataset PATH]`.

Both models train in the same loop: the same generated (or `--dataset`) training split, the same augmentation (the
recipe's, the `demo` preset's `augment`), the same batches in the same order, AdamW with the demo's learning rates,
gradient clipping 0.1, a cosine schedule over the time budget, then COCO mAP on the test split with the same
evaluation code.
What differs is only what each side brings:

* transformers: `DetrForObjectDetection` as the issue measured it (resnet18 from scratch with transformers' frozen
  BatchNorm, stride 32, d_model 128, 3+3 layers, 16 queries, its default dropout 0.1, no auxiliary loss);
* hf_detr: the `demo` preset of `hf_detr.presets` (the recipe options; see docs/RECIPE.md).
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

from hf_detr import HfDetrForObjectDetection, create_model, presets
from hf_detr.data import SYNTHETIC, id2label, load_data
from hf_detr.evaluation import evaluate
from hf_detr.evaluation.coco_evaluation import CocoEvaluation
from hf_detr.evaluation.diagnostics import diagnose
from hf_detr.evaluation.duplicates import DUPLICATE_STAT_NAMES, duplicate_measure
from hf_detr.training import TrainConfig, finish_one_to_one, lr_factor, parameter_groups
from hf_detr.training.setup import training_data

DEMO = presets.get("demo")

REFERENCE_MODEL: dict[str, Any] = dict(
    backbone="resnet18",
    d_model=128,
    encoder_layers=3,
    decoder_layers=3,
    encoder_attention_heads=8,
    decoder_attention_heads=8,
    encoder_ffn_dim=512,
    decoder_ffn_dim=512,
    num_queries=16,
)


def build_models(id2label: dict[int, str]) -> dict[str, Callable[[], torch.nn.Module]]:
    return {
        "transformers DETR": lambda: DetrForObjectDetection(DetrConfig(**REFERENCE_MODEL, id2label=id2label)),
        "hf_detr demo recipe": lambda: create_model("demo", id2label=id2label),
    }


CURVE_THRESHOLDS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)


def recall_and_duplicates(evaluation: CocoEvaluation) -> list[tuple[float, float, float]]:
    """`(score threshold, recall, duplicated objects)` at each of `CURVE_THRESHOLDS`: recall is the share of objects
    found by a detection of their class at IoU 0.5. A change that lowers every score also lowers the duplicates at
    a fixed threshold; compared at equal recall, it must still have fewer (docs/RECIPE.md, sessions 5 and 6)."""
    curve = []
    for threshold in CURVE_THRESHOLDS:
        images = diagnose(evaluation, score_threshold=threshold).images
        found = sum(image.correct for image in images)
        objects = sum(len(image.matched) + len(image.missed) for image in images)
        duplicated = duplicate_measure(evaluation.predictions, evaluation.references, threshold=threshold)
        curve.append((threshold, round(found / max(objects, 1), 4), round(duplicated["duplicated_objects"], 4)))
    return curve


def train_and_evaluate(
    model: torch.nn.Module,
    data: datasets.DatasetDict,
    config: TrainConfig,
    nms_threshold: float | None = None,
) -> dict[str, Any]:
    """Train `model` on `data["train"]` for `config.time_budget` seconds; COCO metrics and the duplicate measure on
    `data["test"]` (also after class-wise NMS at `nms_threshold`, when given), the step count and the image ids of
    every batch trained on (`batches`, the same for every model up to its step count)."""
    processor = DEMO.image_processor()
    train_set, collator = training_data(data["train"], processor, config.augment, config.seed)
    loader = torch.utils.data.DataLoader(
        train_set,
        batch_size=config.per_device_train_batch_size,
        shuffle=True,
        drop_last=True,
        collate_fn=collator,
        generator=torch.Generator().manual_seed(config.seed),
    )
    groups = parameter_groups(model, config.learning_rate, config.backbone_learning_rate)
    optimizer = torch.optim.AdamW([{**g, "base_lr": g["lr"]} for g in groups], weight_decay=config.weight_decay)
    batches = []
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
            if isinstance(model, HfDetrForObjectDetection):  # the recipe's; transformers' DETR has no groups
                finish_one_to_one(model, elapsed / config.time_budget, config.one_to_one_finish)
            batches.append([int(label["image_id"]) for label in batch["labels"]])
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.mixed_precision == "bf16"):
                loss = model(**batch).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            optimizer.step()
            step += 1
        epoch += 1
    seconds = time.monotonic() - start
    reported = ("map", "map_50", "map_75", *DUPLICATE_STAT_NAMES)
    evaluation = evaluate(
        model, processor, data["test"], batch_size=config.per_device_eval_batch_size, return_evaluation=True
    )
    metrics = evaluation.metrics
    with_nms = {}
    if nms_threshold is not None:
        metrics_nms = evaluate(
            model, processor, data["test"], batch_size=config.per_device_eval_batch_size, nms_threshold=nms_threshold
        )
        with_nms = {"with_nms": {k: round(metrics_nms[k], 4) for k in reported}}
    # recall of the detections the pipeline keeps by default: a duplicate fix must not buy its drop in falling scores
    confident = evaluate(model, processor, data["test"], batch_size=config.per_device_eval_batch_size, threshold=0.5)
    return {
        "steps": step,
        "train_seconds": round(seconds, 1),
        **{k: round(metrics[k], 4) for k in reported},
        "mar_100_at_score_0.5": round(confident["mar_100"], 4),
        "recall_and_duplicates": recall_and_duplicates(evaluation),
        **with_nms,
        "batches": batches,
    }


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
    sizes = {"train": args.num_train, "test": args.num_test}
    data = load_data(
        args.dataset or SYNTHETIC,
        ["train", "test"],
        synthetic_sizes=sizes,
        synthetic_image_size=DEMO.image_size,
        seed=args.seed,
    )
    config = TrainConfig(output_dir="unused", time_budget=args.time_budget, seed=args.seed, **DEMO.training)
    results = {}
    for name, build in build_models(id2label(data["train"])).items():
        torch.manual_seed(args.seed)
        results[name] = train_and_evaluate(build(), data, config)
        shown = {key: value for key, value in results[name].items() if key != "batches"}
        print(f"{name:>20}: {json.dumps(shown)}", flush=True)
    reference, ours = results.values()
    print(
        f"AP50 {ours['map_50']:.3f} vs {reference['map_50']:.3f}, AP {ours['map']:.3f} vs {reference['map']:.3f} "
        f"(hf_detr vs transformers; {args.time_budget:.0f} s each, {args.threads} threads, seed {args.seed})"
    )
    return results


if __name__ == "__main__":
    main()
