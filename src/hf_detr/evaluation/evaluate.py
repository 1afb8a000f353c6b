"""The one evaluation path: a model, its image processor and a split in the Hub's COCO schema in, COCO metrics out.

`evaluate` serves the training loop, `hf-detr evaluate`, the demo and the benchmarks; `Trainer` runs its own loop over
the same batches (`evaluation_dataset` + `evaluation_collator`, see `hf_detr.training.DetrTrainer`) and scores them
with the same `make_compute_metrics`, so every path gives the same numbers for the same model and split.

Images are resized by the image processor, as at inference, and scored in their original pixel frame; crowd boxes
are kept so that detections on them are ignored, as in COCO. The data set's categories are matched to the model's
classes by name, so a COCO model can be scored on a COCO folder whose category ids differ.

A segmentation model (`config.predicts_masks`) is also scored on its masks, on a split loaded with masks
(`objects.segmentation`): mask mAP (`segm_*`) and panoptic quality (`pq`, `sq`, `rq`), each image's masks taken from
its own unpadded region. The tasks differ as in the paper: a `"panoptic"` model's stuff classes (the data set's
`isthing`, e.g. a COCO panoptic folder's) are fused into one segment per class and PQ reports them apart
(`pq_stuff`); an `"instance"` model's classes are all things.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

import datasets
import torch
from accelerate.utils import broadcast_object_list, gather_object
from transformers import EvalPrediction

from ..data.collate import DetectionCollator, DetectionDataset
from ..data.masks import encode_rles
from ..data.schema import coco_isthing
from ..data.schema import id2label as dataset_id2label
from ..modeling.errors import HfDetrInputError
from .metrics import CocoEvaluation, PostProcessInputs, detections_in_original_frame, make_compute_metrics
from .segmentation_metrics import PanopticQualityMetric, SegmentCounts, coco_segmentation_evaluate

__all__ = [
    "MaskScorer",
    "evaluate",
    "evaluation_collator",
    "evaluation_dataset",
    "evaluation_loader",
    "model_labels",
    "own_region",
    "stuff_labels",
]


def model_labels(dataset_names: Sequence[str], model_id2label: Mapping[int, str]) -> list[int]:
    """The model's label of each data set label (`dataset_names[label]`), matched by name."""
    model_label = {name: int(label) for label, name in model_id2label.items()}
    unknown = [name for name in dataset_names if name not in model_label]
    if unknown:
        raise HfDetrInputError(
            f"the data set's categories {unknown} are not classes of the model (it has {sorted(model_label)}); "
            "evaluate on data with the model's classes, or fine-tune it on this data set first."
        )
    return [model_label[name] for name in dataset_names]


def evaluation_collator(image_processor: Any, mask_references: bool = False) -> DetectionCollator:
    """Batches resized by the processor, as at inference, with crowd boxes kept (COCO ignores detections on them);
    with `mask_references`, each image's ground-truth masks at its original size too (for a segmentation model)."""
    return DetectionCollator(image_processor, do_resize=True, keep_crowd=True, mask_references=mask_references)


def evaluation_dataset(split: datasets.Dataset, model_id2label: Mapping[int, str]) -> DetectionDataset:
    """`split` without augmentation, its categories relabelled as the model's classes of the same names."""
    return DetectionDataset(split, label_map=model_labels(list(dataset_id2label(split).values()), model_id2label))


def evaluation_loader(
    split: datasets.Dataset,
    image_processor: Any,
    model_id2label: Mapping[int, str],
    batch_size: int = 8,
    num_workers: int = 0,
    mask_references: bool = False,
) -> torch.utils.data.DataLoader:
    """The batches `evaluate` scores, in order; `accelerator.prepare` it to share it among processes. A
    segmentation model's need `mask_references` (a split loaded with masks)."""
    if batch_size < 1:
        raise HfDetrInputError(f"batch_size must be at least 1, got {batch_size}")
    if len(split) == 0:
        raise HfDetrInputError("the evaluation split has no images")
    return torch.utils.data.DataLoader(
        evaluation_dataset(split, model_id2label),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=evaluation_collator(image_processor, mask_references),
    )


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
    backend: str = "pycocotools",
    nms_threshold: float | None = None,
) -> dict[str, float] | CocoEvaluation:
    """COCO box metrics (`make_compute_metrics`: `map`, `map_50`, ..., and with `per_class` the flat
    `map_class_<name>`, `map_50_class_<name>`, `mar_100_class_<name>` of each class) of `model` on `data`: a split in
    the Hub's COCO schema, or a loader made by `evaluation_loader` (already `accelerator.prepare`d when several
    processes share it). With `return_evaluation=True` the result is the `CocoEvaluation` of the same single COCOeval
    run: these metrics (`.metrics`), the per-class table (`.per_class`: AP, AP50, AR@100 and the ground-truth objects
    of each class), COCOeval's precision array for precision-recall curves (`.precision`) and the detections and
    ground truth of each image of `data`, in its order, in the original pixel frame (`.predictions`, `.references`:
    what `hf_detr.evaluation.diagnostics.diagnose` reads, so diagnostics need no second model pass).

    `backend` computes COCOeval's numbers: "pycocotools" or "numpy" (the same numbers, several times faster on large
    sets; see `hf_detr.evaluation.metrics.coco_evaluate`). `nms_threshold` scores the detections left by
    post-processing's class-wise NMS fallback (`HfDetrImageProcessor.post_process_object_detection`). The metrics
    include the duplicate measure (`hf_detr.evaluation.duplicates`: `duplicate_rate`, `duplicated_objects`).

    Memory stays that of the detections: each batch is post-processed at once (at `threshold`, to each image's
    original frame) and kept as numpy arrays, a segmentation model's masks as RLEs. With an `accelerate.Accelerator`,
    every process predicts its share and keeps it; one gather at the end puts every image in the data's order and
    drops the duplicates accelerate pads the last uneven round of batches with, so each image is scored exactly once;
    the main process scores and every process returns the same dict. Without one, batches go to the model's device.
    """
    unwrapped = accelerator.unwrap_model(model) if accelerator is not None else model
    config = unwrapped.config
    if isinstance(data, torch.utils.data.DataLoader):
        loader, split = data, data.dataset.dataset
    else:
        # a segmentation model is scored on its masks too; another library's model (transformers' DETR, scored by
        # the benchmarks) does not say, and is scored on its boxes
        with_masks = getattr(config, "predicts_masks", False)
        loader = evaluation_loader(data, image_processor, config.id2label, batch_size, mask_references=with_masks)
        split = data
        if accelerator is not None:
            loader = accelerator.prepare(loader)
    names = list(dataset_id2label(split).values())
    # per-class results for the data set's classes only, under the model's labels
    id2label = dict(zip(model_labels(names, config.id2label), names))
    device = None if accelerator is not None else next(model.parameters()).device

    was_training = model.training
    model.eval()
    boxes: list[list[tuple[dict[str, Any], dict[str, Any]]]] = []  # per batch, per image: (detections, label)
    masks: list[list[tuple[dict[str, Any], dict[int, SegmentCounts]]]] = []  # the same, for a segmentation model
    scorer = None
    for batch in loader:
        pixel_values, pixel_mask = batch["pixel_values"], batch["pixel_mask"]
        if device is not None:
            pixel_values, pixel_mask = pixel_values.to(device), pixel_mask.to(device)
        outputs = model(pixel_values=pixel_values, pixel_mask=pixel_mask)
        # kept until the end: the box metric's fields, not a segmentation label's `masks` (pixels at the padded size)
        labels = [
            {key: value.cpu().numpy() for key, value in label.items() if key != "masks"} for label in batch["labels"]
        ]
        detections = detections_in_original_frame(
            image_processor,
            outputs.logits.float().cpu(),
            outputs.pred_boxes.float().cpu(),
            labels,
            threshold,
            f"batch {len(boxes)} labels",
            nms_threshold,
        )
        boxes.append(list(zip(detections, labels)))
        if getattr(outputs, "pred_masks", None) is not None:
            if "mask_references" not in batch:
                raise HfDetrInputError(
                    "the model predicts masks but the batches carry no ground-truth masks: build the "
                    "loader with evaluation_loader(..., mask_references=True) on a split loaded with "
                    "masks=True"
                )
            scorer = scorer or MaskScorer(
                image_processor, config.id2label, threshold, nms_threshold, stuff_labels(split, config)
            )
            masks.append(scorer.batch(outputs, pixel_mask, batch["mask_references"]))
    model.train(was_training)
    images = len(loader.dataset)
    boxes, masks = _in_data_order(boxes, images, accelerator), _in_data_order(masks, images, accelerator)

    metrics = None
    if accelerator is None or accelerator.is_main_process:
        compute_metrics = make_compute_metrics(
            image_processor,
            id2label=id2label,
            threshold=threshold,
            per_class=per_class,
            return_evaluation=return_evaluation,
            backend=backend,
        )
        detections, labels = zip(*boxes)
        metrics = compute_metrics(EvalPrediction(predictions=[list(detections)], label_ids=[list(labels)]))
        if scorer is not None:
            segm = scorer.compute(masks, per_class, id2label, backend)
            if isinstance(metrics, CocoEvaluation):
                metrics.metrics.update(segm)
            else:
                metrics.update(segm)
    return metrics if accelerator is None else broadcast_object_list([metrics])[0]


def _in_data_order(batches: list[list[Any]], images: int, accelerator: Any = None) -> list[Any]:
    """Every process's per-batch entries (one per image) in one list in the data's order, with one gather.

    accelerate deals the loader's batches out in turn (batch i of process p is the data's batch i * processes + p,
    or its p-th slice with `split_batches`) and completes the last round with repeated images; so the entries sorted
    by batch, then process, are the data's, and the repeats are whatever lies past its `images`."""
    if accelerator is None or accelerator.num_processes == 1:
        return [entry for batch in batches for entry in batch]
    gathered = gather_object(list(enumerate(batches)))  # process 0's batches, then process 1's, ...
    ordered = sorted(gathered, key=lambda item: item[0])  # stable: processes in order within a batch index
    return [entry for _, batch in ordered for entry in batch][:images]


def stuff_labels(split: Any, config: Any) -> set[int]:
    """The model labels of the data set's stuff classes, for a panoptic model (an instance model, or a data set that
    does not say, has none)."""
    if not isinstance(split, datasets.Dataset):
        return set()
    isthing = coco_isthing(split)
    if getattr(config, "task", None) != "panoptic" or isthing is None:
        return set()
    labels = model_labels(list(dataset_id2label(split).values()), config.id2label)
    return {label for label, thing in zip(labels, isthing) if not thing}


class MaskScorer:
    """The mask side of the evaluation (`evaluate` and `DetrTrainer`): per image the predicted masks (RLE, at the
    original size) and the panoptic counts, from the image's own region of `pred_masks` (the padding of the batch cut
    off first, so a padded image scores as it would alone), against the batch's `mask_references` (the collator's, in
    the model's labels). `batch` scores one batch; `compute` the images of all batches, once."""

    def __init__(
        self,
        image_processor: Any,
        model_id2label: Mapping[int, str],
        threshold: float = 0.0,
        nms_threshold: float | None = None,
        stuff: Collection[int] = (),
    ) -> None:
        self.image_processor, self.threshold, self.nms_threshold = image_processor, threshold, nms_threshold
        # stuff classes are fused into one segment per class, as the paper's panoptic post-processing does
        self.stuff = sorted(int(label) for label in stuff)
        things = {int(label) for label in model_id2label} - set(self.stuff)
        self.panoptic = PanopticQualityMetric(things=things, stuff=self.stuff)

    def batch(
        self, outputs: Any, pixel_mask: torch.Tensor, references: Sequence[Mapping[str, torch.Tensor]]
    ) -> list[tuple[dict[str, Any], dict[int, SegmentCounts]]]:
        scored = []
        for i, reference in enumerate(references):
            size = tuple(reference["masks"].shape[-2:])
            own = own_region(outputs.pred_masks[i].float(), pixel_mask[i])
            single = PostProcessInputs(
                logits=outputs.logits[i : i + 1].float(), pred_boxes=outputs.pred_boxes[i : i + 1], pred_masks=own[None]
            )
            found = self.image_processor.post_process_object_detection(
                single, self.threshold, target_sizes=[size], return_masks=True, nms_threshold=self.nms_threshold
            )[0]
            prediction = {
                "masks": encode_rles(found["masks"].cpu()),
                "scores": found["scores"].cpu(),
                "labels": found["labels"].cpu(),
            }
            panoptic = self.image_processor.post_process_panoptic_segmentation(
                single, label_ids_to_fuse=self.stuff or None, target_sizes=[size]
            )
            counts = self.panoptic.count_image(panoptic[0], _panoptic_reference(reference), f"batch image {i}")
            # RLEs, not pixels, are kept until the end (and gathered across processes): a split's decoded masks
            # would not fit in memory on COCO's scale
            stored = {**reference, "masks": encode_rles(reference["masks"])}
            scored.append(({"prediction": prediction, "reference": stored}, counts))
        return scored

    def compute(
        self,
        masks: list[tuple[dict[str, Any], dict[int, SegmentCounts]]],
        per_class: bool,
        id2label: Mapping[int, str],
        backend: str = "pycocotools",
    ) -> dict[str, float]:
        pairs, counts = zip(*masks)
        metrics = coco_segmentation_evaluate(
            [p["prediction"] for p in pairs],
            [p["reference"] for p in pairs],
            per_class=per_class,
            id2label=id2label,
            backend=backend,
        )
        self.panoptic.add_counts(counts)
        return {**metrics, **self.panoptic.compute(per_class=per_class, id2label=id2label)}


def own_region(mask_logits: torch.Tensor, pixel_mask: torch.Tensor) -> torch.Tensor:
    """`mask_logits` `[queries, h, w]` cut to the image's real (unpadded) pixels, scaled from `pixel_mask`'s size."""
    rows, cols = pixel_mask.bool().any(1).sum(), pixel_mask.bool().any(0).sum()
    height, width = mask_logits.shape[-2:]
    keep_rows = int(torch.ceil(rows * height / pixel_mask.shape[0]))
    keep_cols = int(torch.ceil(cols * width / pixel_mask.shape[1]))
    return mask_logits[:, :keep_rows, :keep_cols]


def _panoptic_reference(reference: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """A panoptic map of an image's ground-truth masks: object j is segment j + 1 (later objects over earlier ones
    where masks overlap, which COCO panoptic data never does), crowd objects marked."""
    masks = reference["masks"]
    segmentation = torch.zeros(masks.shape[-2:], dtype=torch.int64)
    for j, mask in enumerate(masks):
        segmentation[mask] = j + 1
    segments_info = [
        {"id": j + 1, "label_id": int(label), "iscrowd": int(crowd)}
        for j, (label, crowd) in enumerate(zip(reference["labels"], reference["iscrowd"]))
    ]
    return {"segmentation": segmentation, "segments_info": segments_info}
