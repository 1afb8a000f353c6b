"""`hf-detr demo` / `make demo`: generate the synthetic shapes data, train a small DETR within a time budget on the
CPU, evaluate COCO mAP on the test split, and write the model folder, metrics (with a per-class table) and pictures
(training curves, predictions next to ground truth, the precision-recall curve; drawn with matplotlib, the `viz`
extra).

The recipe (the `demo` preset of `hf_detr.presets`; measurements in docs/RECIPE.md) is for small compute, where steps
are worth more than capacity: a ResNet-18 trained from scratch (trainable BatchNorm and stem: with no ImageNet weights,
frozen BatchNorm would leave the residual branches that timm initializes to zero dead) cut at layer2 (a stride-8
map for 128-pixel images), no encoder layers (the decoder reads the projected features), horizontal flips as the
only augmentation, and two training-only signals: an H-DETR one-to-many query group and a dense head on the
projected features, which let much higher learning rates pay off; a tie-break in the matching (`order_cost`) keeps
pairs of queries from both learning to fire on one object, and an unmatched query on an object is told "no object" at
weight 1.0 instead of DETR's 0.1 (`duplicate_eos_coefficient`). It trains in bf16 autocast where the CPU computes
bf16 natively (1.3x the steps; attention's backward then runs in float32, which is faster there: session 7 of
docs/RECIPE.md). The saved model is plain DETR (`to_plain_detr()`).

`task="instance"` (or `"panoptic"`) follows the paper's two phases: the detector as above for 3/4 of the budget,
then DETR's mask head alone (`freeze_detection`) on the shapes' masks (each shape's visible pixels) for the rest; it
also reports mask AP and panoptic quality, and `predictions.png` shows the masks. Trained jointly from the start, the
mask head barely learned in the same budget (Dice loss 0.70 -> 0.65 in 785 steps, mask AP50 0.01): its gradients are
a small part of the total that DETR's gradient clipping (0.1) scales down.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Any

import torch

# `builder.create_model` is looked up at the call: the one place a model is built, which tests replace
from .. import builder, presets
from ..data.masks import mask_references
from ..data.schema import id2label as dataset_id2label
from ..data.sources import SYNTHETIC, load_data
from ..evaluation.duplicates import DUPLICATE_IOU  # NMS at the measure's IoU removes what it counts
from ..evaluation.evaluate import evaluate
from ..modeling.configuration_hf_detr import TASKS
from ..modeling.errors import HfDetrInputError
from ..training.config import TrainConfig
from ..training.loop import train
from ..training.setup import cpu_has_fast_bf16
from .visualize import draw_detections, require_matplotlib, save_curves, save_grid, save_pr_curve

DEMO = presets.get("demo")
SEGMENTATION_SHARE = 0.25  # of the time budget, for the mask head on the frozen detector
MASK_HEAD_TRAINING = {"learning_rate": 1e-3, "lr_scheduler": "cosine", "warmup_steps": 0}


def run_demo(
    output_dir: str | Path = "demo_output",
    time_budget: float = 600.0,
    seed: int = 0,
    num_train: int = 2000,
    num_validation: int = 100,
    num_test: int = 200,
    show: int = 8,
    dataset: str | None = None,
    task: str = "detection",
    load_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the demo; returns the test metrics written to `<output_dir>/metrics.json`: the COCO numbers (`map`,
    `map_50`, ...), the duplicate measure (`duplicate_rate`, `duplicated_objects`: `hf_detr.evaluation.duplicates`),
    `with_nms` (the same numbers after post-processing's class-wise NMS fallback at IoU `DUPLICATE_IOU`, which
    DETR should not need), `steps`, `train_seconds`, `total_seconds` and `per_class`, `{class: {"map", "map_50",
    "mar_100", "objects"}}` (AP, AP50, AR@100 and the number of ground-truth objects of each class in the test
    split), `mixed_precision` ("bf16" where the CPU computes it natively, else "no"); with `task="instance"` or
    `"panoptic"` also mask AP (`segm_map`, ...) and panoptic quality (`pq`, `sq`, `rq`). Pictures:
    `curves.png`, `predictions.png` (the first `show` test images) and `pr_curve.png`.

    `dataset`: instead of the generated shapes, a data set with `train` and `test` splits (and optionally
    `validation`, evaluated during training) that `load_data` reads (with `load_options`, its box policy and
    tolerance), e.g. a held-out shapes set to check that the recipe was not tuned to the generator.
    `task="segmentation"` is the deprecated name of `"instance"`.
    """
    if task == "segmentation":
        warnings.warn(
            "task='segmentation' (hf-detr demo --task segmentation) is deprecated and will be removed in hf_detr 0.3: "
            "use 'instance' (or 'panoptic'), the task names of every command",
            FutureWarning,
            stacklevel=2,
        )
        task = "instance"
    if task not in TASKS:
        raise HfDetrInputError(f"task must be one of {TASKS}, got {task!r}")
    started = time.time()
    require_matplotlib()  # the pictures need it: say so now, not after the training
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    def load(masks: bool) -> Any:
        if dataset is None:
            sizes = {"train": num_train, "validation": num_validation, "test": num_test}
            return load_data(
                SYNTHETIC, synthetic_sizes=sizes, synthetic_image_size=DEMO.image_size, seed=seed, masks=masks
            )
        loaded = load_data(dataset, masks=masks, **(load_options or {}))
        missing = [split for split in ("train", "test") if split not in loaded]
        if missing:
            raise HfDetrInputError(
                f"dataset={dataset!r} has no split {missing} (it has {list(loaded)}); the demo trains "
                "on 'train', tracks 'validation' when present and reports 'test'"
            )
        return loaded

    data = load(masks=False)  # the detector trains on boxes alone, without decoding masks
    id2label = dataset_id2label(data["train"])
    model = builder.create_model("demo", id2label=id2label)
    processor = DEMO.image_processor()
    segmentation = DEMO.config(task=task).predicts_masks  # the first phase trains the detector whatever the task
    detection_budget = time_budget * (1 - SEGMENTATION_SHARE) if segmentation else time_budget
    config = TrainConfig(
        output_dir=str(output_dir / "run"),
        time_budget=detection_budget,
        seed=seed,
        cpu=True,
        save_steps=0,
        eval_steps=None,
        eval_split="validation" if "validation" in data else None,
        # steps are what the budget buys (docs/RECIPE.md): bf16 autocast where the CPU computes it natively
        mixed_precision="bf16" if cpu_has_fast_bf16() else "no",
        **DEMO.training,
    )
    result = train(config, dataset=data, model=model, image_processor=processor)
    model = result.model.to_plain_detr().eval()
    log_history, steps = result.log_history, result.global_step
    if segmentation:  # the paper's second phase: the mask head on the trained, frozen detector
        data = load(masks=True)
        detector = model
        model = builder.create_model(detector.config, task)
        model.load_state_dict(detector.state_dict(), strict=False)  # every detector weight; the head is new
        config = TrainConfig(
            **{
                **vars(config),
                "output_dir": str(output_dir / "masks"),
                "task": task,
                "freeze_detection": True,
                "time_budget": time_budget - detection_budget,
                **MASK_HEAD_TRAINING,
            }
        )
        result = train(config, dataset=data, model=model, image_processor=processor)
        model = result.model.eval()
        elapsed = log_history[-1].get("elapsed", 0.0) if log_history else 0.0
        log_history = log_history + [
            {
                **entry,
                "step": entry["step"] + steps,
                **({"elapsed": entry["elapsed"] + elapsed} if "elapsed" in entry else {}),
            }
            for entry in result.log_history
        ]
        steps += result.global_step
    model.save_pretrained(output_dir / "model")
    processor.save_pretrained(output_dir / "model")

    evaluation = evaluate(
        model, processor, data["test"], batch_size=config.per_device_eval_batch_size, return_evaluation=True
    )
    metrics: dict[str, Any] = dict(evaluation.metrics)
    with_nms = evaluate(
        model, processor, data["test"], batch_size=config.per_device_eval_batch_size, nms_threshold=DUPLICATE_IOU
    )
    metrics["with_nms"] = {key: with_nms[key] for key in NMS_REPORTED if key in with_nms}
    metrics.update(
        train_seconds=round(log_history[-1].get("elapsed", time_budget), 1) if log_history else 0.0,
        steps=steps,
        mixed_precision=config.mixed_precision,
        total_seconds=round(time.time() - started, 1),
    )
    metrics["per_class"] = evaluation.per_class
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    has_validation = len(data.get("validation", ())) > 0
    save_curves(
        log_history,
        output_dir / "curves.png",
        validation_note="no validation results" if has_validation else "no validation split",
    )
    _save_predictions(model, processor, data["test"], output_dir / "predictions.png", show, id2label)
    save_pr_curve(evaluation, output_dir / "pr_curve.png")
    return metrics


PREDICTION_THRESHOLD = 0.5  # detections drawn in predictions.png
NMS_REPORTED = ("map", "map_50", "map_75", "duplicate_rate", "duplicated_objects", "segm_map", "segm_map_50", "pq")
TILE_MIN_SIDE = 384  # predictions.png tiles are upscaled to at least this shorter side, so labels read


def _save_predictions(model, processor, test, path: Path, show: int, id2label: dict[int, str]) -> None:
    """Ground truth next to the predictions for the first `show` test images, as a grid PNG (with masks for a
    segmentation model: each kept query's mask at probability > 0.5)."""
    tiles = []
    for example in test.select(range(min(show, len(test)))):
        image = example["image"].convert("RGB")
        boxes = torch.tensor(example["objects"]["bbox"]).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        truth = mask_references(example)["masks"] if "segmentation" in example["objects"] else None
        tiles.append(
            draw_detections(image, boxes, example["objects"]["category"], id2label, min_side=TILE_MIN_SIDE, masks=truth)
        )
        inputs = processor(images=image, return_tensors="pt")
        with torch.no_grad():
            outputs = model(pixel_values=inputs["pixel_values"], pixel_mask=inputs["pixel_mask"])
        size = (image.height, image.width)
        found = processor.post_process_object_detection(outputs, PREDICTION_THRESHOLD, target_sizes=[size])[0]
        masks = None
        if getattr(outputs, "pred_masks", None) is not None:
            probabilities = outputs.logits.softmax(-1)[0, :, :-1].max(-1).values
            kept = outputs.pred_masks[0, probabilities >= PREDICTION_THRESHOLD]  # the queries post-processing kept
            if len(kept):
                masks = torch.nn.functional.interpolate(kept[None], size=size, mode="bilinear")[0] > 0
        tiles.append(
            draw_detections(
                image,
                found["boxes"],
                found["labels"].tolist(),
                id2label,
                found["scores"],
                min_side=TILE_MIN_SIDE,
                masks=masks,
            )
        )
    titles = ("ground truth", f"prediction (score >= {PREDICTION_THRESHOLD})")
    save_grid(tiles, path, columns=4, column_titles=titles)
