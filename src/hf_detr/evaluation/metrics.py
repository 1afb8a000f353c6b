"""COCO box mAP with ``pycocotools``: an ``evaluate`` metric and a ``compute_metrics`` factory for ``Trainer``.

Results follow ``COCOeval.summarize()`` (:data:`COCO_STAT_NAMES`: ``map`` is AP@[.50:.95]), with ``per_class=True``
also ``map_class_<name>``, ``map_50_class_<name>`` and ``mar_100_class_<name>`` (AP@[.50:.95], AP@.50, AR@100 of
that class). The ``_class_`` infix keeps the keys apart: no COCO stat name
contains it, and none of the three per-class prefixes is a prefix of another, so a class named like a COCO stat
(``"50"``, ``"small"``, ``"1"``, even ``"class_small"``) cannot collide with a stat or with another class's key, and
:func:`per_class_key` / ``key.startswith(prefix)`` read them back. A value COCO cannot define (no ground truth at
all, or none in that area range / category) is **-1.0**, COCO's own convention; it stays below every real score, so
``metric_for_best_model="eval_map"`` never prefers it.

At COCO's size (val2017: 5,000 images x 100 detections) the inputs stay compact: each image's detections become
numpy arrays (float32 when given so), the run reads them as columns (:class:`~.coco_arrays.Annotations`) and COCOeval
goes one category at a time, so no dict per detection and no per-image record of COCOeval exists for the whole split.

Inputs are checked where they enter (:func:`coco_evaluate`, the metric's ``add``/``add_batch``: :mod:`.coco_inputs`);
``compute_metrics`` trusts the processor's labels and post-processing's detections, checked where they were made.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import datasets
import evaluate
import numpy as np
import torch
from transformers import EvalPrediction

from ..modeling.errors import HfDetrInputError
from .coco_arrays import Annotations
from .coco_evaluation import (
    COCO_BACKENDS,
    COCO_STAT_NAMES,
    PER_CLASS_STATS,
    CocoEvaluation,
    format_per_class_table,
    per_class_key,
    per_class_rows,
    run_cocoeval,
)
from .coco_inputs import (
    column,
    image_index,
    listed,
    prediction_arrays,
    reference_arrays,
    trusted_prediction_arrays,
    trusted_reference_arrays,
)
from .duplicates import DuplicateCounts, count_duplicates
from .eval_batches import (
    PostProcessInputs,
    are_detections,
    detections_in_original_frame,
    logits_and_boxes,
    pack_labels,
    reference_from_label,
    unpack_labels,
)

__all__ = [
    "COCO_BACKENDS",
    "COCO_STAT_NAMES",
    "PER_CLASS_STATS",
    "CocoDetectionMetric",
    "CocoEvaluation",
    "CocoMetric",
    "PostProcessInputs",
    "coco_evaluate",
    "detections_in_original_frame",
    "format_per_class_table",
    "make_compute_metrics",
    "pack_labels",
    "per_class_key",
    "per_class_rows",
    "run_cocoeval",
    "unpack_labels",
]


def _box_annotations(
    preds: Sequence[Mapping[str, Any]], refs: Sequence[Mapping[str, Any]]
) -> tuple[Annotations, Annotations]:
    """COCOeval's columns; a detection's area is its box's."""
    ground_truth = Annotations(
        image=image_index([len(r["labels"]) for r in refs]),
        category=column([r["labels"] for r in refs], np.int64),
        iscrowd=column([r["iscrowd"] for r in refs], np.int64),
        area=column([r["area"] for r in refs], np.float64),
        boxes=column([r["boxes"] for r in refs], np.float64, (4,)),
    )
    corners = column([p["boxes"] for p in preds], np.float64, (4,))
    size = corners[:, 2:] - corners[:, :2]
    detections = Annotations(
        image=image_index([len(pred["labels"]) for pred in preds]),
        category=column([p["labels"] for p in preds], np.int64),
        iscrowd=np.zeros(len(corners), dtype=np.int64),
        area=size[:, 0] * size[:, 1],
        score=column([p["scores"] for p in preds], np.float64),
        boxes=np.concatenate([corners[:, :2], size], axis=1),
    )
    return ground_truth, detections


def coco_evaluate(
    predictions: Sequence[Mapping[str, Any]],
    references: Sequence[Mapping[str, Any]],
    per_class: bool = False,
    id2label: Mapping[int, str] | None = None,
    return_evaluation: bool = False,
    backend: str = "pycocotools",
) -> dict[str, float] | CocoEvaluation:
    """COCO box mAP of ``predictions[i]`` against ``references[i]``.

    Args:
        predictions: per image ``{"scores": (N,), "labels": (N,), "boxes": (N, 4)}``, boxes absolute
            (x0, y0, x1, y1) pixels, as ``post_process_object_detection`` returns.
        references: per image ``{"boxes": (M, 4), "labels" | "class_labels": (M,), "iscrowd"?: (M,),
            "area"?: (M,)}``, boxes COCO (x, y, w, h) pixels in the same frame as the predictions.
        id2label: names for the per-class results (the integer label otherwise); its ids join the categories.
        return_evaluation: the :class:`CocoEvaluation` of this one run instead of the metrics dict.
        backend: "pycocotools" or "numpy" (the same numbers bit for bit, several times faster on large sets:
            :mod:`hf_detr.evaluation.coco_arrays`).

    Returns:
        ``{name: float}`` for :data:`COCO_STAT_NAMES` (and per-class keys); -1.0 where COCO cannot define a value.
    """
    if len(predictions) != len(references):
        raise HfDetrInputError(
            f"Got {len(predictions)} predictions but {len(references)} references; need one per image."
        )
    preds = [prediction_arrays(p, f"predictions[{i}]") for i, p in enumerate(predictions)]
    refs = [reference_arrays(r, f"references[{i}]") for i, r in enumerate(references)]
    evaluation = _evaluate_boxes(preds, refs, per_class, id2label, return_evaluation, backend)
    return evaluation if return_evaluation else evaluation.metrics


def _evaluate_boxes(
    preds: Sequence[Mapping[str, Any]],
    refs: Sequence[Mapping[str, Any]],
    per_class: bool,
    id2label: Mapping[int, str] | None,
    return_evaluation: bool = False,
    backend: str = "pycocotools",
) -> CocoEvaluation:
    """:func:`coco_evaluate`'s unchecked core, on the arrays of ``coco_inputs`` (or their lists); with
    ``return_evaluation`` the evaluation carries them, as lists."""
    ground_truth, detections = _box_annotations(preds, refs)
    evaluation = run_cocoeval(len(refs), ground_truth, detections, "bbox", per_class, id2label, backend=backend)
    if not return_evaluation:
        return evaluation
    return dataclasses.replace(evaluation, predictions=[listed(p) for p in preds], references=[listed(r) for r in refs])


_BOXES = datasets.Sequence(datasets.Sequence(datasets.Value("float64"), length=4))


class CocoMetric(evaluate.Metric):
    """An ``evaluate.Metric`` over one COCOeval run: inputs checked as they arrive (errors name the image), scored at
    ``compute``. Subclasses name the three steps (boxes, masks)."""

    normalize_prediction: ClassVar[Callable[[Mapping, str], dict]]
    normalize_reference: ClassVar[Callable[[Mapping, str], dict]]
    # (predictions, references, per_class, id2label, return_evaluation, backend)
    run: ClassVar[Callable[..., CocoEvaluation]]
    # what `_info` describes: one line, the function whose docstring gives the inputs, the stored location fields
    description: ClassVar[str]
    inputs: ClassVar[Callable[..., Any]]
    prediction_fields: ClassVar[dict[str, Any]]
    reference_fields: ClassVar[dict[str, Any]]

    def _info(self) -> evaluate.MetricInfo:
        ids = datasets.Sequence(datasets.Value("int64"))
        return evaluate.MetricInfo(
            description=self.description,
            citation="Lin et al., Microsoft COCO: Common Objects in Context, ECCV 2014.",
            inputs_description=type(self).inputs.__doc__,
            features=datasets.Features(
                {
                    "predictions": {
                        "scores": datasets.Sequence(datasets.Value("float64")),
                        "labels": ids,
                        **self.prediction_fields,
                    },
                    "references": {**self.reference_fields, "labels": ids, "iscrowd": ids},
                }
            ),
        )

    def add_batch(
        self,
        *,
        predictions: Sequence[Mapping] | None = None,
        references: Sequence[Mapping] | None = None,
        **kwargs: Any,
    ) -> None:
        """``evaluate`` appends the input description to this docstring, which must exist."""
        if predictions is not None:
            predictions = [
                listed(type(self).normalize_prediction(p, f"predictions[{i}]")) for i, p in enumerate(predictions)
            ]
        if references is not None:
            references = [
                listed(type(self).normalize_reference(r, f"references[{i}]")) for i, r in enumerate(references)
            ]
        super().add_batch(predictions=predictions, references=references, **kwargs)

    def add(self, *, prediction: Mapping | None = None, reference: Mapping | None = None, **kwargs: Any) -> None:
        """``evaluate`` appends the input description to this docstring, which must exist."""
        if prediction is not None:
            prediction = listed(type(self).normalize_prediction(prediction, "prediction"))
        if reference is not None:
            reference = listed(type(self).normalize_reference(reference, "reference"))
        super().add(prediction=prediction, reference=reference, **kwargs)

    def _compute(
        self,
        predictions: list[dict],
        references: list[dict],
        per_class: bool = False,
        id2label: Mapping[int, str] | None = None,
        return_evaluation: bool = False,
        backend: str = "pycocotools",
    ) -> dict[str, float] | CocoEvaluation:
        evaluation = type(self).run(predictions, references, per_class, id2label, return_evaluation, backend)
        return evaluation if return_evaluation else evaluation.metrics


class CocoDetectionMetric(CocoMetric):
    """COCO box mAP as an ``evaluate.Metric`` (constructed directly: no Hub download), with the inputs and options of
    :func:`coco_evaluate`; extra reference keys (``image_id``, ``orig_size``, ...) are ignored.

    Example::

        metric = CocoDetectionMetric()
        metric.add_batch(predictions=processor.post_process_object_detection(outputs, 0.0, sizes), references=refs)
        metric.compute(per_class=True, id2label=model.config.id2label)["map"]
    """

    normalize_prediction = staticmethod(prediction_arrays)
    normalize_reference = staticmethod(reference_arrays)
    run = staticmethod(_evaluate_boxes)
    description = "COCO box mAP/mAR computed with pycocotools COCOeval."
    inputs = staticmethod(coco_evaluate)
    prediction_fields = {"boxes": _BOXES}
    reference_fields = {"boxes": _BOXES, "area": datasets.Sequence(datasets.Value("float64"))}


def make_compute_metrics(
    image_processor: Any,
    id2label: Mapping[int, str] | None = None,
    threshold: float = 0.0,
    per_class: bool = False,
    return_evaluation: bool = False,
    backend: str = "pycocotools",
) -> Callable[[EvalPrediction], dict[str, float]]:
    """``compute_metrics`` for ``Trainer(..., args=TrainingArguments(eval_do_concat_batches=False, ...))``:
    :func:`coco_evaluate`'s dict rounded to 4 decimals (with ``return_evaluation``, for callers other than
    ``Trainer``, the rounded :class:`CocoEvaluation`).

    Per batch, ``EvalPrediction.predictions`` holds the model outputs (``logits``, ``pred_boxes``), post-processed to
    each image's ``orig_size`` at ``threshold``, or detections already post-processed so, one dict per image (what
    ``hf_detr.evaluation.evaluate`` keeps); ``label_ids`` the processor's label dicts, scaled to the same frame, or
    their ``[batch, 1 + M, 7]`` array of :func:`pack_labels` (what ``DetrTrainer`` hands over: with a list of dicts,
    accelerate's ``gather_for_metrics`` (transformers 5.x) cuts every tensor *inside* the last uneven batch's dicts,
    silently dropping ground-truth objects; a cut ``orig_size`` raises here). Both were checked where they were made
    and are not checked again. Each batch is reduced to arrays at once, so only the batch at hand is ever expanded.
    For COCO's numbers the labels must keep crowd regions (``HfDetrImageProcessor(keep_crowd=True)``).
    """
    if backend not in COCO_BACKENDS:
        raise HfDetrInputError(f"backend must be one of {COCO_BACKENDS}, got {backend!r}")

    def compute_metrics(eval_pred: EvalPrediction) -> dict[str, float]:
        predictions, labels = eval_pred.predictions, eval_pred.label_ids
        if not isinstance(labels, (list, tuple)) or len(predictions) != len(labels):
            raise HfDetrInputError(
                "compute_metrics needs per-batch predictions and labels: set "
                "TrainingArguments(eval_do_concat_batches=False)."
            )
        preds, refs = [], []
        for batch_index, (batch_predictions, batch_labels) in enumerate(zip(predictions, labels)):
            if isinstance(batch_labels, (np.ndarray, torch.Tensor)):
                batch_labels = unpack_labels(np.asarray(batch_labels))
            where = f"label_ids[{batch_index}]"
            outputs = None if are_detections(batch_predictions) else logits_and_boxes(batch_predictions, batch_index)
            count = len(batch_predictions) if outputs is None else len(outputs[0])
            if len(batch_labels) != count:
                raise HfDetrInputError(f"Batch {batch_index}: {count} predictions but {len(batch_labels)} label dicts.")
            references = [reference_from_label(label, f"{where}[{i}]") for i, label in enumerate(batch_labels)]
            detections = (
                batch_predictions
                if outputs is None
                else detections_in_original_frame(image_processor, *outputs, batch_labels, threshold, where)
            )
            # post-processing's detections and the processor's labels: checked where they were made
            preds += [trusted_prediction_arrays(d) for d in detections]
            refs += [trusted_reference_arrays(r) for r in references]
        evaluation = _evaluate_boxes(preds, refs, per_class, id2label, return_evaluation, backend)
        duplicates = sum(map(count_duplicates, preds, refs), DuplicateCounts())
        evaluation = dataclasses.replace(evaluation, metrics={**evaluation.metrics, **duplicates.metrics()})
        evaluation = evaluation.rounded(4)
        return evaluation if return_evaluation else evaluation.metrics

    return compute_metrics
