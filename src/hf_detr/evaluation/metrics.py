"""COCO box mAP with ``pycocotools``: an ``evaluate`` metric and a ``compute_metrics`` factory for ``Trainer``.

Results follow ``COCOeval.summarize()``: ``map`` (AP@[.50:.95]), ``map_50``, ``map_75``, ``map_small``,
``map_medium``, ``map_large``, ``mar_1``, ``mar_10``, ``mar_100``, ``mar_small``, ``mar_medium``, ``mar_large``, and
with ``per_class=True`` also ``map_class_<name>``, ``map_50_class_<name>`` and ``mar_100_class_<name>`` per category
(AP@[.50:.95], AP@.50 and AR@100 of that class). The ``_class_`` infix keeps the keys apart: no COCO stat name
contains it, and none of the three per-class prefixes is a prefix of another, so a class named like a COCO stat
(``"50"``, ``"small"``, ``"1"``, even ``"class_small"``) cannot collide with a stat or with another class's key, and
:func:`per_class_key` / ``key.startswith(prefix)`` read them back. A value COCO cannot define (no ground truth at
all, or none in that area range / category) is **-1.0**, COCO's own convention; it stays below every real score, so
``metric_for_best_model="eval_map"`` never prefers it.

:class:`CocoEvaluation` (``coco_evaluate(..., return_evaluation=True)``, ``hf_detr.evaluation.evaluate(...,
return_evaluation=True)``) carries, from the same single COCOeval run, the metrics, a per-class table (AP, AP50,
AR@100 and the number of ground-truth objects of each class), COCOeval's precision array for precision-recall
curves and the per-image detections and ground truth it scored (for :mod:`hf_detr.evaluation.diagnostics`).

At COCO's size (val2017: 5,000 images x 100 detections) the inputs stay compact: each image's detections are
validated into numpy arrays (float32 when given so, as post-processing gives them), the run reads them as columns
(:class:`hf_detr.evaluation.coco_arrays.Annotations`) and COCOeval goes one category at a time, so no dict per
detection and no per-image record of COCOeval exists for the whole split at once. ``backend="numpy"`` replaces
COCOeval's Python loops by array code with the same arithmetic (:func:`hf_detr.evaluation.coco_arrays.evaluate_arrays`:
the same precision and recall arrays bit for bit, several times faster); pycocotools stays the default.

The parts: :mod:`~hf_detr.evaluation.coco_inputs` checks each image's inputs into arrays,
:mod:`~hf_detr.evaluation.coco_evaluation` runs COCOeval and holds what it gives,
:mod:`~hf_detr.evaluation.eval_batches` reads ``Trainer``'s batches and labels; this module is the box metric's face
(a function, an ``evaluate.Metric``, ``compute_metrics``) and re-exports their public names.
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
    """The ground truth and the detections of normalized inputs as COCOeval's columns (boxes (x, y, w, h) float64,
    a detection's area its box's)."""
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
    """COCO bbox evaluation of ``predictions[i]`` against ``references[i]`` (images are matched by position).

    Args:
        predictions: per image ``{"scores": (N,), "labels": (N,), "boxes": (N, 4)}``, boxes absolute
            (x0, y0, x1, y1) pixels, as ``post_process_object_detection`` returns.
        references: per image ``{"boxes": (M, 4), "labels" | "class_labels": (M,), "iscrowd"?: (M,),
            "area"?: (M,)}``, boxes COCO (x, y, w, h) pixels in the same frame as the predictions.
        per_class: also return ``map_class_<name>``, ``map_50_class_<name>`` and ``mar_100_class_<name>`` for
            every category (:func:`per_class_key`).
        id2label: names for the per-class results (the integer label otherwise); its ids also join the category
            list.
        return_evaluation: return a :class:`CocoEvaluation` (the metrics, the per-class table and COCOeval's
            precision array, all from this one run) instead of the metrics dict.
        backend: "pycocotools" (``COCOeval`` itself) or "numpy" (the same numbers, bit for bit, several times
            faster on large sets: :mod:`hf_detr.evaluation.coco_arrays`).

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
    """:func:`coco_evaluate` on inputs already passed through ``prediction_arrays`` / ``reference_arrays`` (or
    their lists); with ``return_evaluation`` the evaluation carries them, as lists."""
    ground_truth, detections = _box_annotations(preds, refs)
    evaluation = run_cocoeval(len(refs), ground_truth, detections, "bbox", per_class, id2label, backend=backend)
    if not return_evaluation:
        return evaluation
    return dataclasses.replace(evaluation, predictions=[listed(p) for p in preds], references=[listed(r) for r in refs])


_BOXES = datasets.Sequence(datasets.Sequence(datasets.Value("float64"), length=4))


class CocoMetric(evaluate.Metric):
    """An ``evaluate.Metric`` over one COCOeval run: inputs validated and normalised as they arrive (errors name the
    offending image), scored at ``compute``. Subclasses name the three steps (boxes, masks)."""

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
        """Validate and store a batch: a list of per-image predictions and a list of per-image references.
        (``evaluate`` appends the input description to this docstring.)"""
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
        """Validate and store one image's prediction and reference."""
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
    """COCO bbox mAP as an ``evaluate.Metric`` (constructed directly: no Hub download).

    ``add_batch(predictions=[...], references=[...])`` / ``add(prediction=..., reference=...)`` take the formats of
    :func:`coco_evaluate`; ``compute(per_class=False, id2label=None, backend="pycocotools")`` returns its dict.
    Inputs are validated and normalised as they arrive, so errors name the offending image, and extra reference keys
    (``image_id``, ``orig_size``, ...) are accepted and ignored. ``compute(..., return_evaluation=True)`` returns the
    :class:`CocoEvaluation` instead of the dict.

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
    """``compute_metrics`` for ``Trainer(..., args=TrainingArguments(eval_do_concat_batches=False, ...))``.

    ``EvalPrediction.predictions`` is a list over batches of the model outputs (``logits`` (B, Q, C + 1) and
    ``pred_boxes`` (B, Q, 4), normalised cx, cy, w, h); ``label_ids`` a list over batches of the processor's label
    dicts (``boxes`` (M, 4) normalised cx, cy, w, h, ``class_labels``, ``orig_size`` (h, w), ``size``, ``area``,
    ``iscrowd``). Detections go to each image's original pixel frame through
    ``image_processor.post_process_object_detection(outputs, threshold, target_sizes=orig_sizes)``; the labels are
    scaled to the same frame. A batch of predictions may also be a list of such detections already, one
    ``{"scores", "labels", "boxes"}`` dict per image (:func:`detections_in_original_frame`, what
    ``hf_detr.evaluation.evaluate`` keeps): they are scored as they are. Each batch is reduced to compact arrays at
    once, so only the model outputs of the batch at hand are ever expanded. Returns :func:`coco_evaluate`'s dict
    (with ``backend``) rounded to 4 decimals (with ``return_evaluation=True``, for callers other than ``Trainer``:
    the rounded :class:`CocoEvaluation` of the same run, e.g. for the per-class table and precision-recall curves).
    For COCO's numbers the eval labels must keep crowd regions (``HfDetrImageProcessor(keep_crowd=True)``):
    detections on them are then ignored rather than counted as false positives.

    A batch of ``label_ids`` may also be the ``[batch, 1 + M, 7]`` array of :func:`pack_labels`, which is what
    :class:`hf_detr.training.DetrTrainer` hands over: with a list of dicts, accelerate's ``gather_for_metrics``
    (transformers 5.x) cuts *every tensor inside* the last uneven batch's dicts to the batch's remainder, silently
    dropping ground-truth objects (a cut ``orig_size`` raises here; the lost boxes cannot be detected).
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
        evaluation = _evaluate_boxes(preds, refs, per_class, id2label, return_evaluation, backend).rounded(4)
        return evaluation if return_evaluation else evaluation.metrics

    return compute_metrics
