"""Validation of an export folder (`hf-detr export` runs it after every export; `hf-detr export --validate` alone):
its graphs under onnxruntime against the PyTorch model.

- On a batch of three images of different sizes and aspect ratios: the largest difference of each raw output
  (`logits`, `pred_boxes`, `pred_masks`, the inputs prepared by the image processor) and of the end-to-end graph's
  detections against `HfDetrImageProcessor` + the model + `post_process_object_detection` (scores, boxes in pixels,
  labels, mask pixels), best detections paired rank by rank (ranks whose scores lie closer together than the
  graph's score error may swap, and are paired within their group).
- Given a data set split: COCO mAP of each graph and of the PyTorch model, all through `hf_detr.evaluation` (the raw
  graph through `evaluate` itself, the end-to-end graph's detections through the same metrics), boxes and, for a
  segmentation model, masks.

Validation fails when a mAP differs from the PyTorch model's by more than `MAP_TOLERANCE[dtype]`, or, for float32
graphs, when the raw logits or boxes differ by more than `FP32_OUTPUT_TOLERANCE` or an end-to-end detection finds no
counterpart of its label within `FP32_BOX_TOLERANCE_PX` pixel. The numbers go to `validation.json`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..modeling.errors import HfDetrInputError
from .export import END_TO_END_FILE, RAW_FILE, graph_metadata
from .onnx_graph import MIN_SIDE
from .onnx_runtime import OnnxDetector, OnnxModel, _pixels, session

__all__ = [
    "FP32_BOX_TOLERANCE_PX",
    "FP32_OUTPUT_TOLERANCE",
    "MAP_TOLERANCE",
    "VALIDATION_FILE",
    "check_recorded_options",
    "compare_detections",
    "load_validation_split",
    "mixed_size_images",
    "reference_detections",
    "validate_export",
]

VALIDATION_FILE = "validation.json"
# how far an exported graph's COCO mAP may lie from the PyTorch model's on the same split
MAP_TOLERANCE = {"fp32": 0.002, "fp16": 0.01}
# a float32 graph computes what PyTorch computes up to the order of float operations
FP32_OUTPUT_TOLERANCE, FP32_BOX_TOLERANCE_PX = 1e-3, 0.5
_COMPARED_MAPS = ("map", "segm_map")
_REPORTED_METRICS = ("map", "map_50", "map_75", "segm_map", "segm_map_50", "pq")


def check_recorded_options(
    out_dir: str | os.PathLike, dtype: str | None = None, end_to_end: bool = False, max_detections: int | None = None
) -> None:
    """Validation reads the dtype, the graphs and `max_detections` from the export itself: an export option given
    with `--validate` that disagrees with them would be silently ignored, so it is an error instead."""
    out = Path(out_dir)
    if not (out / RAW_FILE).is_file():
        raise HfDetrInputError(f"{out} has no {RAW_FILE}: --validate takes a folder written by hf-detr export")
    raw = graph_metadata(session(out / RAW_FILE))
    joined = graph_metadata(session(out / END_TO_END_FILE)) if (out / END_TO_END_FILE).is_file() else None
    recorded = f"(it holds a {raw['dtype']} export{'' if joined else ' without the end-to-end graph'}"
    recorded += f", {joined['max_detections']} detections per image)" if joined else ")"
    wrong = []
    if dtype is not None and dtype != raw["dtype"]:
        wrong.append(f"--dtype {dtype}")
    if end_to_end and joined is None:
        wrong.append("--end_to_end")
    if max_detections is not None and (joined is None or max_detections != joined["max_detections"]):
        wrong.append(f"--max_detections {max_detections}")
    if wrong:
        raise HfDetrInputError(
            f"{' and '.join(wrong)} with --validate: validation checks the export in {out} as it was written "
            f"{recorded}; drop the option, or export again with it (hf-detr export MODEL {out} ...)"
        )


def mixed_size_images(processor: Any, seed: int = 0) -> list[np.ndarray]:
    """Three seeded random uint8 RGB images of different sizes and aspect ratios (landscape, portrait, square)
    around the processor's target size."""
    size = processor.size
    side = size.shortest_edge or size.max_height or size.height
    shapes = [(round(0.75 * side), side), (side, round(0.6 * side)), (round(0.5 * side), round(0.5 * side))]
    generator = np.random.default_rng(seed)
    return [generator.integers(0, 256, (max(h, MIN_SIDE), max(w, MIN_SIDE), 3), dtype=np.uint8) for h, w in shapes]


@torch.no_grad()
def _raw_errors(path: Path, model: torch.nn.Module, processor: Any, images: Sequence[np.ndarray]) -> dict[str, float]:
    inputs = processor(images=list(images), return_tensors="pt")
    expected = model(inputs["pixel_values"], inputs["pixel_mask"])
    found = OnnxModel(path, model.config)(inputs["pixel_values"], inputs["pixel_mask"])
    names = ("logits", "pred_boxes", "pred_masks")
    return {
        f"max_abs_error_{name}": float((getattr(found, name) - getattr(expected, name)).abs().max())
        for name in names
        if getattr(expected, name, None) is not None
    }


@torch.no_grad()
def reference_detections(
    model: torch.nn.Module, processor: Any, images: Sequence[np.ndarray], max_detections: int
) -> list[dict[str, np.ndarray]]:
    """What the end-to-end graph computes, in PyTorch: `processor` on the batch of `images`, the model, and per image
    `post_process_object_detection(threshold=0, top_k=max_detections)` at its original size, a segmentation model's
    masks from the image's own region of the padded batch (as `hf_detr.evaluation.evaluate` cuts them)."""
    from ..evaluation.evaluate import own_region
    from ..evaluation.metrics import PostProcessInputs

    inputs = processor(images=list(images), return_tensors="pt")
    outputs = model(inputs["pixel_values"], inputs["pixel_mask"])
    masks = getattr(outputs, "pred_masks", None)
    found = []
    for i, image in enumerate(images):
        own = None if masks is None else own_region(masks[i], inputs["pixel_mask"][i])[None]
        single = PostProcessInputs(
            logits=outputs.logits[i : i + 1], pred_boxes=outputs.pred_boxes[i : i + 1], pred_masks=own
        )
        result = processor.post_process_object_detection(
            single, 0.0, target_sizes=[image.shape[:2]], top_k=max_detections, return_masks=masks is not None
        )[0]
        found.append({name: value.numpy() for name, value in result.items()})
    return found


def compare_detections(
    found: Sequence[Mapping[str, np.ndarray]], expected: Sequence[Mapping[str, np.ndarray]]
) -> dict[str, Any]:
    """The largest differences between two lists of per-image detections sorted best first (`scores`, `labels`,
    `boxes`, optional `masks`): of the scores rank by rank; of the boxes (pixels) and the masks (fraction of pixels)
    of each detection against the expected one of its rank with its label, where ranks whose expected scores lie
    within twice the score error of each other count as one group of interchangeable ranks; `same_labels` says
    whether every detection found such a partner."""
    score_error = max(float(np.abs(f["scores"] - e["scores"]).max(initial=0.0)) for f, e in zip(found, expected))
    box_error, mask_error, same_labels = 0.0, 0.0, True
    for image_found, image_expected in zip(found, expected):
        for rank, members in _tie_groups(image_expected["scores"], 2 * score_error + 1e-6):
            candidates = [j for j in members if image_expected["labels"][j] == image_found["labels"][rank]]
            if not candidates:
                same_labels = False
                continue
            errors = [float(np.abs(image_found["boxes"][rank] - image_expected["boxes"][j]).max()) for j in candidates]
            best = candidates[int(np.argmin(errors))]
            box_error = max(box_error, min(errors))
            if "masks" in image_expected:
                differ = image_found["masks"][rank] != image_expected["masks"][best]
                mask_error = max(mask_error, float(differ.mean()) if differ.size else 0.0)
    result = {"max_abs_error_scores": score_error, "max_abs_error_boxes_px": box_error, "same_labels": same_labels}
    if expected and "masks" in expected[0]:
        result["max_fraction_of_mask_pixels_differing"] = mask_error
    return result


def _tie_groups(scores: np.ndarray, tolerance: float) -> list[tuple[int, list[int]]]:
    """Each rank with the ranks of its group: neighbours whose scores differ by at most `tolerance` are chained."""
    groups: list[list[int]] = []
    for rank, score in enumerate(scores):
        if groups and scores[groups[-1][-1]] - score <= tolerance:
            groups[-1].append(rank)
        else:
            groups.append([rank])
    return [(rank, group) for group in groups for rank in group]


def _end_to_end_metrics(
    detector: Callable[[Sequence[Any]], list[dict[str, np.ndarray]]],
    model: torch.nn.Module,
    processor: Any,
    split: Any,
    batch_size: int,
) -> dict[str, float]:
    """COCO box (and mask) mAP of the end-to-end detections on `split` (`detector`: the graph's `OnnxDetector`, or
    the model doing what the graph does), through the same metrics as
    `hf_detr.evaluation.evaluate` (images in the same order and batches, categories matched by name)."""
    from transformers import EvalPrediction

    from ..data.masks import encode_rles
    from ..data.schema import id2label as dataset_id2label
    from ..evaluation.evaluate import evaluation_collator, evaluation_dataset, model_labels
    from ..evaluation.metrics import make_compute_metrics
    from ..evaluation.segmentation_metrics import coco_segmentation_evaluate

    with_masks = model.config.predicts_masks
    dataset = evaluation_dataset(split, model.config.id2label)
    collate = evaluation_collator(processor, mask_references=with_masks)
    names = list(dataset_id2label(split).values())
    id2label = dict(zip(model_labels(names, model.config.id2label), names))
    detections, labels, mask_predictions, mask_references = [], [], [], []
    for start in range(0, len(dataset), batch_size):
        items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        found = detector([item["image"] for item in items])
        batch = collate(items)
        detections.append([{name: image[name] for name in ("scores", "labels", "boxes")} for image in found])
        labels.append(batch["labels"])
        if with_masks:
            mask_predictions += [
                {"masks": encode_rles(image["masks"]), "scores": image["scores"], "labels": image["labels"]}
                for image in found
            ]
            mask_references += [
                {**reference, "masks": encode_rles(reference["masks"])} for reference in batch["mask_references"]
            ]
    compute_metrics = make_compute_metrics(processor, id2label=id2label)
    metrics = compute_metrics(EvalPrediction(predictions=detections, label_ids=labels))
    if with_masks:
        metrics.update(coco_segmentation_evaluate(mask_predictions, mask_references, id2label=id2label))
    return metrics


def load_validation_split(dataset: str, split: str, model: torch.nn.Module, **load_options: Any) -> Any:
    """`split` of `dataset` (`hf_detr.data.load_data`: "synthetic", a Hub id or a folder), with masks for a
    segmentation model (`load_options`: load_data's box policy and tolerance); a ValueError naming the categories
    when they are not the model's classes (checked here, so that `hf-detr export` stops before the export rather
    than after it)."""
    from ..data.schema import id2label as dataset_id2label
    from ..data.sources import load_data
    from ..evaluation.evaluate import model_labels

    data = load_data(dataset, [split], masks=model.config.predicts_masks, **load_options)[split]
    if len(data) == 0:
        raise HfDetrInputError(f"split {split!r} of {dataset} has no images; pass --split with a split that has.")
    model_labels(list(dataset_id2label(data).values()), model.config.id2label)
    return data


def _reported(metrics: Mapping[str, float]) -> dict[str, float]:
    return {name: round(float(metrics[name]), 4) for name in _REPORTED_METRICS if name in metrics}


def _mixed_size_check(
    paths: Mapping[str, Path], metadata: Mapping[str, Any], model: torch.nn.Module, processor: Any
) -> tuple[dict[str, Any], list[str]]:
    """The graphs against the model on `mixed_size_images`, and what fails a float32 graph."""
    images = mixed_size_images(processor)
    numbers: dict[str, Any] = {
        "sizes": [list(image.shape[:2]) for image in images],
        "raw": _raw_errors(paths["raw"], model, processor, images),
    }
    if "end_to_end" in paths:
        expected = reference_detections(model, processor, images, metadata["end_to_end"]["max_detections"])
        numbers["end_to_end"] = compare_detections(OnnxDetector(paths["end_to_end"])(images), expected)
    if metadata["raw"]["dtype"] != "fp32":
        return numbers, []
    failures = [
        f"raw graph: {name} {numbers['raw'][name]:.2e} > {FP32_OUTPUT_TOLERANCE:g} on the mixed-size batch"
        for name in ("max_abs_error_logits", "max_abs_error_pred_boxes")
        if numbers["raw"][name] > FP32_OUTPUT_TOLERANCE
    ]
    end_to_end = numbers.get("end_to_end", {"same_labels": True, "max_abs_error_boxes_px": 0.0})
    if not end_to_end["same_labels"] or end_to_end["max_abs_error_boxes_px"] > FP32_BOX_TOLERANCE_PX:
        failures.append(
            f"end-to-end graph: other labels or boxes more than {FP32_BOX_TOLERANCE_PX:g} pixel away on "
            f"the mixed-size batch ({end_to_end})"
        )
    return numbers, failures


def _dataset_check(
    paths: Mapping[str, Path],
    metadata: Mapping[str, Any],
    model: torch.nn.Module,
    processor: Any,
    data: Any,
    batch_size: int,
) -> tuple[dict[str, Any], list[str]]:
    """COCO mAP of the model and of each graph on `data`, and the graphs whose mAP lies too far from the model's.
    The end-to-end graph keeps its `max_detections` best detections per image, which lowers its mAP below the
    model's when more queries find objects: it is compared with the model kept to as many (`pytorch_end_to_end`)."""
    from ..evaluation.evaluate import evaluate, evaluation_loader

    with_masks = model.config.predicts_masks
    loader = evaluation_loader(data, processor, model.config.id2label, batch_size, mask_references=with_masks)
    maps = {
        "pytorch": _reported(evaluate(model, processor, loader)),
        "raw": _reported(evaluate(OnnxModel(paths["raw"], model.config), processor, loader)),
    }
    references = {"raw": "pytorch"}
    if "end_to_end" in paths:
        kept = metadata["end_to_end"]["max_detections"]

        def model_kept(images: Sequence[Any]) -> list[dict[str, np.ndarray]]:
            pixels = [_pixels(image, f"images[{i}]") for i, image in enumerate(images)]
            return reference_detections(model, processor, pixels, kept)

        maps["pytorch_end_to_end"] = _reported(_end_to_end_metrics(model_kept, model, processor, data, batch_size))
        detector = OnnxDetector(paths["end_to_end"])
        maps["end_to_end"] = _reported(_end_to_end_metrics(detector, model, processor, data, batch_size))
        references["end_to_end"] = "pytorch_end_to_end"
    dtype = metadata["raw"]["dtype"]
    failures = []
    for graph, reference in references.items():
        for name in _COMPARED_MAPS:
            if name in maps[reference]:
                difference = abs(maps[graph][name] - maps[reference][name])
                if difference > MAP_TOLERANCE[dtype]:
                    failures.append(
                        f"{graph} graph: {name} {maps[graph][name]:.4f} vs PyTorch's "
                        f"{maps[reference][name]:.4f}, a difference of {difference:.4f} > "
                        f"{MAP_TOLERANCE[dtype]:g} ({dtype})"
                    )
    return maps, failures


def validate_export(
    out_dir: str | os.PathLike,
    model: torch.nn.Module,
    processor: Any,
    data: Any = None,
    *,
    data_name: str | None = None,
    batch_size: int = 8,
) -> dict[str, Any]:
    """Validate the graphs in `out_dir` (written by `hub.export.export_folder`) against `model` and `processor`, on
    a mixed-size batch and, given `data` (a split in the Hub's COCO schema, loaded with masks for a segmentation
    model; `data_name` says which, for the record), on COCO mAP. Writes `out_dir/validation.json` and returns its
    content; `"passed"` is False and `"failures"` says why when a bound is exceeded."""
    out = Path(out_dir)
    paths = {
        name: out / file
        for name, file in (("raw", RAW_FILE), ("end_to_end", END_TO_END_FILE))
        if (out / file).is_file()
    }
    if "raw" not in paths:
        raise HfDetrInputError(f"{out} has no {RAW_FILE}: pass a folder written by hf-detr export.")
    metadata = {name: graph_metadata(session(path)) for name, path in paths.items()}
    dtype = metadata["raw"]["dtype"]
    model = model.eval()
    report: dict[str, Any] = {
        "source": metadata["raw"].get("source"),
        "dtype": dtype,
        "fp32_layers": metadata.get("end_to_end", metadata["raw"])["fp32_layers"],
        "map_tolerance": MAP_TOLERANCE[dtype],
    }
    report["mixed_size_batch"], failures = _mixed_size_check(paths, metadata, model, processor)
    if data is not None:
        maps, map_failures = _dataset_check(paths, metadata, model, processor, data, batch_size)
        report["dataset"] = {"name": data_name, "images": len(data), **maps}
        failures += map_failures
    report["passed"], report["failures"] = not failures, failures
    (out / VALIDATION_FILE).write_text(json.dumps(report, indent=2) + "\n")
    return report
