"""Per-process script of `test_distributed.py::test_uneven_evaluation_scores_every_image_once`.

    accelerate launch --multi_gpu --num_processes 2 tests/distributed_eval.py OUT.json --cpu

Evaluates a random tiny model with `hf_detr.evaluation.evaluate` over `NUM_IMAGES` images in batches of
`BATCH_SIZE` per process (the last round is uneven, so accelerate pads it with repeated images) and records the image
ids that reach the metric with their labels. The main process writes `{"num_processes", "images", "metrics"}` to
OUT.json. Run without `accelerate launch` it does the same in one process.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import torch
from accelerate import Accelerator

sys.path.insert(0, str(Path(__file__).parent))
from helpers import tiny_config_kwargs  # noqa: E402
from hf_detr import HfDetrConfig, HfDetrForObjectDetection, HfDetrImageProcessor  # noqa: E402
from hf_detr.data import id2label  # noqa: E402
from hf_detr.data.synthetic import make_synthetic_dataset  # noqa: E402
from hf_detr.evaluation import evaluate, evaluation_loader  # noqa: E402

# the module, not the function of the same name that `hf_detr.evaluation` exports
evaluate_module = importlib.import_module("hf_detr.evaluation.evaluate")

NUM_IMAGES = 5  # with 2 processes x 2 images per batch: 4 + 1, the last round padded with 3 repeated images
BATCH_SIZE = 2


def run(accelerator: Accelerator) -> dict:
    """Evaluate; return the images (id, boxes, original size) that reached the metric, and the metrics."""
    seen: list[dict] = []
    make_compute_metrics = evaluate_module.make_compute_metrics

    def recording_factory(*args, **kwargs):
        compute_metrics = make_compute_metrics(*args, **kwargs)

        def compute(eval_pred):
            seen.extend(
                {
                    "image_id": int(label["image_id"][0]),
                    "boxes": label["boxes"].tolist(),
                    "orig_size": label["orig_size"].tolist(),
                }
                for batch in eval_pred.label_ids
                for label in batch
            )
            return compute_metrics(eval_pred)

        return compute

    evaluate_module.make_compute_metrics = recording_factory
    try:
        split = make_synthetic_dataset(0, NUM_IMAGES, 0, image_size=64, seed=3)["validation"]
        torch.manual_seed(0)
        labels = id2label(split)
        model = HfDetrForObjectDetection(HfDetrConfig(**tiny_config_kwargs(num_queries=50, id2label=labels)))
        processor = HfDetrImageProcessor(size={"shortest_edge": 48, "longest_edge": 80})
        model, loader = accelerator.prepare(model, evaluation_loader(split, processor, labels, BATCH_SIZE))
        metrics = evaluate(model, processor, loader, accelerator=accelerator)
    finally:
        evaluate_module.make_compute_metrics = make_compute_metrics
    return {"num_processes": accelerator.num_processes, "images": seen, "metrics": metrics}


if __name__ == "__main__":
    accelerator = Accelerator(cpu="--cpu" in sys.argv)
    result = run(accelerator)
    if accelerator.is_main_process:
        Path(sys.argv[1]).write_text(json.dumps(result))
    accelerator.wait_for_everyone()
    accelerator.end_training()  # destroys the process group: left to interpreter exit, gloo can abort (SIGABRT)
