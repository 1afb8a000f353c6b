"""Screen variants of the demo recipe at a reduced budget, as docs/RECIPE.md's sessions do: the same data, batches and
loop as `bench_recipe`, one variant per process (run two side by side with `--threads 1` each on 2 cores).

Run from the repository root: `python -m benchmarks.screen_recipe VARIANT [VARIANT ...] [--time_budget 390]
[--threads 1] [--dataset PATH]`. Each variant is the `demo` preset with the overrides of `VARIANTS`; the line printed
per variant holds the steps, COCO AP, AP50, AP75, AR@100 of the detections scoring 0.5 or more, the duplicate
measure (`hf_detr.evaluation.duplicates`), recall and duplicated objects at score thresholds 0.2 ... 0.8 (to compare
duplicates at equal recall) and the AP and duplicates after post-processing's class-wise NMS at IoU 0.7 (what the
measure counts).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import torch

from hf_detr import create_model
from hf_detr.data import SYNTHETIC, id2label, load_data
from hf_detr.evaluation.duplicates import DUPLICATE_IOU
from hf_detr.training import TrainConfig

from .bench_recipe import DEMO, train_and_evaluate

# name -> (model overrides, training overrides) of the demo preset
VARIANTS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "one-to-one last 30%": ({}, {"one_to_one_finish": 0.3}),
    "one-to-one last 50%": ({}, {"one_to_one_finish": 0.5}),
    "one-to-one last 30%, eos 0.5": ({"eos_coefficient": 0.5}, {"one_to_one_finish": 0.3}),
    "one-to-one last 30%, eos 0.3": ({"eos_coefficient": 0.3}, {"one_to_one_finish": 0.3}),
    "one-to-one last 50%, eos 0.5": ({"eos_coefficient": 0.5}, {"one_to_one_finish": 0.5}),
    "demo": ({}, {}),
    "demo in bf16": ({}, {"mixed_precision": "bf16"}),  # `hf-detr demo` on a CPU with native bf16
    "session 5's recipe": ({"duplicate_eos_coefficient": 0.0}, {}),
    "session 5's recipe in bf16": ({"duplicate_eos_coefficient": 0.0}, {"mixed_precision": "bf16"}),
    "order cost 0.2": ({"order_cost": 0.2}, {}),
    "no order cost": ({"order_cost": 0.0}, {}),
    "session 6's recipe in bf16": ({"duplicate_eos_coefficient": 0.3}, {"mixed_precision": "bf16"}),
    "duplicate eos 0.5 in bf16": ({"duplicate_eos_coefficient": 0.5}, {"mixed_precision": "bf16"}),
    "eos 0.3": ({"eos_coefficient": 0.3}, {}),
    "eos 0.5": ({"eos_coefficient": 0.5}, {}),
    "eos 1.0": ({"eos_coefficient": 1.0}, {}),
    "6 decoder layers": ({"decoder_layers": 6}, {}),
    "2 one-to-one groups": ({"num_query_groups": 3}, {}),
    "no one-to-many group": ({"num_query_groups": 1, "one_to_many_repeats": 0}, {}),
    "3 one-to-one groups, no one-to-many": ({"num_query_groups": 3, "one_to_many_repeats": 0}, {}),
    "one-to-many k=2": ({"one_to_many_repeats": 2}, {}),
    "dense head w=2": ({"encoder_loss_coefficient": 2.0}, {}),
}


def main(argv: list[str] | None = None) -> dict[str, dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("variants", nargs="+", choices=sorted(VARIANTS))
    parser.add_argument("--time_budget", type=float, default=390.0, help="training seconds per variant")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dataset", help="a data set with train and test splits (default: generated shapes)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = load_data(
        args.dataset or SYNTHETIC,
        ["train", "test"],
        synthetic_sizes={"train": 2000, "test": 200},
        synthetic_image_size=DEMO.image_size,
        seed=args.seed,
    )
    results = {}
    for name in args.variants:
        model_overrides, training_overrides = VARIANTS[name]
        config = TrainConfig(
            output_dir="unused",
            time_budget=args.time_budget,
            seed=args.seed,
            **{**DEMO.training, **training_overrides},
        )
        torch.manual_seed(args.seed)
        model = create_model("demo", id2label=id2label(data["train"]), **model_overrides)
        result = train_and_evaluate(model, data, config, nms_threshold=DUPLICATE_IOU)
        results[name] = {key: value for key, value in result.items() if key != "batches"}
        print(f"{name}: {json.dumps(results[name])}", flush=True)
    return results


if __name__ == "__main__":
    main()
