"""The one evaluation path: a model, its image processor and a split in the Hub's COCO schema in, COCO metrics out.

`evaluate` serves the training loop, `hf-detr evaluate`, the demo and the benchmarks; `Trainer` runs its own loop over
the same batches (`evaluation_dataset` + `evaluation_collator`, see `hf_detr.training.DetrTrainer`) and scores them
with the same `make_compute_metrics`, so every path gives the same numbers for the same model and split.

Images are resized by the image processor, as at inference, and scored in their original pixel frame; crowd boxes
are kept so that detections on them are ignored, as in COCO. The data set's categories are matched to the model's
classes by name, so a COCO model can be scored on a COCO folder whose category ids differ.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import datasets
import numpy as np
import torch
from accelerate.utils import broadcast_object_list
from transformers import EvalPrediction

from ..data.collate import DetectionCollator, DetectionDataset
from ..data.loading import id2label as dataset_id2label
from .metrics import CocoEvaluation, make_compute_metrics

__all__ = ["evaluate", "evaluation_collator", "evaluation_dataset", "evaluation_loader", "model_labels"]


def model_labels(dataset_names: Sequence[str], model_id2label: Mapping[int, str]) -> list[int]:
    """The model's label of each data set label (`dataset_names[label]`), matched by name."""
    model_label = {name: int(label) for label, name in model_id2label.items()}
    unknown = [name for name in dataset_names if name not in model_label]
    if unknown:
        raise ValueError(
            f"the data set's categories {unknown} are not classes of the model (it has {sorted(model_label)}); "
            "evaluate on data with the model's classes, or fine-tune it on this data set first."
        )
    return [model_label[name] for name in dataset_names]


def evaluation_collator(image_processor: Any) -> DetectionCollator:
    """Batches resized by the processor, as at inference, with crowd boxes kept (COCO ignores detections on them)."""
    return DetectionCollator(image_processor, do_resize=True, keep_crowd=True)


def evaluation_dataset(split: datasets.Dataset, model_id2label: Mapping[int, str]) -> DetectionDataset:
    """`split` without augmentation, its categories relabelled as the model's classes of the same names."""
    return DetectionDataset(split, label_map=model_labels(list(dataset_id2label(split).values()), model_id2label))


def evaluation_loader(
    split: datasets.Dataset,
    image_processor: Any,
    model_id2label: Mapping[int, str],
    batch_size: int = 8,
    num_workers: int = 0,
) -> torch.utils.data.DataLoader:
    """The batches `evaluate` scores, in order; `accelerator.prepare` it to share it among processes."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if len(split) == 0:
        raise ValueError("the evaluation split has no images")
    return torch.utils.data.DataLoader(
        evaluation_dataset(split, model_id2label), batch_size=batch_size, num_workers=num_workers,
        collate_fn=evaluation_collator(image_processor),
    )  # fmt: skip


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    image_processor: Any,
    data: datasets.Dataset | torch.utils.data.DataLoader,
    *,
    batch_size: int = 8,
    accelerator: Any = None,
    per_class: bool = False,
    threshold: float = 0.0,
    return_evaluation: bool = False,
) -> dict[str, float] | CocoEvaluation:
    """COCO box metrics (`make_compute_metrics`: `map`, `map_50`, ..., and with `per_class` the flat
    `map_class_<name>`, `map_50_class_<name>`, `mar_100_class_<name>` of each class) of `model` on `data`: a split in
    the Hub's COCO schema, or a loader made by `evaluation_loader` (already `accelerator.prepare`d when several
    processes share it). With `return_evaluation=True` the result is the `CocoEvaluation` of the same single COCOeval
    run: these metrics (`.metrics`), the per-class table (`.per_class`: AP, AP50, AR@100 and the ground-truth objects
    of each class) and COCOeval's precision array for precision-recall curves (`.precision`).

    With an `accelerate.Accelerator`, every process predicts its share and `gather_for_metrics` collects one entry per
    image, dropping the duplicates accelerate pads the last uneven batch with, so each image is scored exactly once;
    the main process scores and every process returns the same dict. Without one, batches go to the model's device.
    """
    config = (accelerator.unwrap_model(model) if accelerator is not None else model).config
    if isinstance(data, torch.utils.data.DataLoader):
        loader, split = data, data.dataset.dataset
    else:
        loader, split = evaluation_loader(data, image_processor, config.id2label, batch_size), data
        if accelerator is not None:
            loader = accelerator.prepare(loader)
    names = list(dataset_id2label(split).values())
    # per-class results for the data set's classes only, under the model's labels
    id2label = dict(zip(model_labels(names, config.id2label), names))
    device = None if accelerator is not None else next(model.parameters()).device

    was_training = model.training
    model.eval()
    images: list[tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]] = []
    for batch in loader:
        pixel_values, pixel_mask = batch["pixel_values"], batch["pixel_mask"]
        if device is not None:
            pixel_values, pixel_mask = pixel_values.to(device), pixel_mask.to(device)
        outputs = model(pixel_values=pixel_values, pixel_mask=pixel_mask)
        logits, boxes = outputs.logits.float().cpu().numpy(), outputs.pred_boxes.float().cpu().numpy()
        labels = [{key: value.cpu().numpy() for key, value in label.items()} for label in batch["labels"]]
        entries = list(zip(logits, boxes, labels))
        images += entries if accelerator is None else accelerator.gather_for_metrics(entries, use_gather_object=True)
    model.train(was_training)

    metrics = None
    if accelerator is None or accelerator.is_main_process:
        compute_metrics = make_compute_metrics(image_processor, id2label=id2label, threshold=threshold,
                                               per_class=per_class, return_evaluation=return_evaluation)  # fmt: skip
        logits, boxes, labels = zip(*images)
        prediction = EvalPrediction(predictions=[(np.stack(logits), np.stack(boxes))], label_ids=[list(labels)])
        metrics = compute_metrics(prediction)
    return metrics if accelerator is None else broadcast_object_list([metrics])[0]
