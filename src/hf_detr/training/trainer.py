"""transformers `Trainer` for DETR: DETR's parameter groups, the evaluation batches of `hf_detr.evaluation`, labels
packed so that multi-process evaluation scores every image's boxes exactly once, a segmentation model's masks scored
as `hf_detr.evaluation.evaluate` scores them, and the epoch callback that draws new augmentations.
`examples/run_object_detection.py` is a complete script around it::

    trainer = DetrTrainer(model=model, args=TrainingArguments(..., eval_do_concat_batches=False,
                          remove_unused_columns=False), train_dataset=DetectionDataset(train, transform),
                          eval_dataset=evaluation_dataset(validation, model.config.id2label),
                          data_collator=DetectionCollator(processor), eval_data_collator=evaluation_collator(processor),
                          compute_metrics=make_compute_metrics(processor, id2label=model.config.id2label),
                          backbone_learning_rate=1e-5, callbacks=[EpochSetter(train_dataset)])

For an `HfDetrForSegmentation`, load the splits with `masks=True` and evaluate with
`evaluation_collator(processor, mask_references=True)`: the metrics then add mask mAP (`eval_segm_map`, ...) and
panoptic quality (`eval_pq`, `eval_sq`, `eval_rq`).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_utils import EvalLoopOutput

from ..data.collate import DetectionCollator, DetectionDataset
from ..evaluation.evaluate import MaskScorer, stuff_labels
from ..evaluation.metrics import PostProcessInputs, pack_labels
from ..modeling.errors import HfDetrInputError
from .schedule import finish_one_to_one
from .setup import parameter_groups

__all__ = ["EVAL_IGNORE_KEYS", "DetrTrainer", "EpochSetter", "OneToOneFinish"]

# Model outputs Trainer must not gather at evaluation: compute_metrics reads only `logits` and `pred_boxes`, and the
# hidden states would hold every evaluation image's features in memory.
EVAL_IGNORE_KEYS = [
    "loss_dict",
    "auxiliary_outputs",
    "last_hidden_state",
    "encoder_last_hidden_state",
    "encoder_hidden_states",
    "encoder_attentions",
    "decoder_hidden_states",
    "decoder_attentions",
    "cross_attentions",
]


class DetrTrainer(Trainer):
    """`Trainer` with DETR's backbone learning rate (`parameter_groups`; 0 leaves the backbone out of the optimizer,
    freeze it too), a separate evaluation collator (evaluation resizes with the image processor and keeps crowd boxes;
    training pads already augmented images and drops them) and evaluation labels packed into one tensor per batch
    (`pack_labels`, which `make_compute_metrics` reads), so accelerate's gathering keeps every ground-truth box.

    A segmentation model's masks are scored batch by batch (`MaskScorer`, the one `evaluate` uses) from the batches'
    `mask_references` and gathered as RLEs; `pred_masks` never reach `compute_metrics` (a whole evaluation set's would
    not fit in memory, and their sizes differ between batches). Their metrics join `compute_metrics`' under the same
    prefix; `per_class` adds each class's, as `make_compute_metrics(per_class=True)` does for the boxes.
    """

    def __init__(
        self,
        *args: Any,
        backbone_learning_rate: float = 1e-5,
        eval_data_collator: DetectionCollator | None = None,
        per_class: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.backbone_learning_rate = backbone_learning_rate
        self.eval_data_collator = eval_data_collator
        self.per_class = per_class
        self._mask_scorer: MaskScorer | None = None
        self._mask_scores: list[Any] = []

    def create_optimizer(self, model: torch.nn.Module | None = None) -> torch.optim.Optimizer:
        if self.optimizer is None:
            opt_model = self.model if model is None else model
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
            groups = parameter_groups(opt_model, optimizer_kwargs["lr"], self.backbone_learning_rate)
            self.optimizer = optimizer_cls(
                [{**group, "weight_decay": self.args.weight_decay} for group in groups], **optimizer_kwargs
            )
        return self.optimizer

    def prediction_step(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        prediction_loss_only: bool,
        ignore_keys: list[str] | None = None,
    ) -> tuple[torch.Tensor | None, Any, torch.Tensor | None]:
        references = inputs.pop("mask_references", None)
        loss, predictions, labels = super().prediction_step(
            model, inputs, prediction_loss_only, EVAL_IGNORE_KEYS if ignore_keys is None else ignore_keys
        )
        if predictions is not None and self._mask_scorer is not None:
            if references is None:
                raise HfDetrInputError(
                    "a segmentation model is evaluated on its masks: give DetrTrainer "
                    "eval_data_collator=evaluation_collator(processor, mask_references=True), on an "
                    "evaluation split loaded with masks=True"
                )
            # without the ignored keys, a segmentation output is (logits, pred_boxes, pred_masks)
            logits, pred_boxes, pred_masks = predictions
            outputs = PostProcessInputs(logits=logits, pred_boxes=pred_boxes, pred_masks=pred_masks)
            scored = self._mask_scorer.batch(outputs, inputs["pixel_mask"], references)
            self._mask_scores += self.accelerator.gather_for_metrics(scored, use_gather_object=True)
            predictions = (logits, pred_boxes)
        return loss, predictions, None if labels is None else pack_labels(labels)

    def evaluation_loop(
        self,
        dataloader: torch.utils.data.DataLoader,
        description: str,
        prediction_loss_only: bool | None = None,
        ignore_keys: list[str] | None = None,
        metric_key_prefix: str = "eval",
    ) -> EvalLoopOutput:
        model = self.accelerator.unwrap_model(self.model)
        self._mask_scorer, self._mask_scores = None, []
        if model.config.predicts_masks:
            if self.processing_class is None:
                raise HfDetrInputError(
                    "a segmentation model's masks are post-processed by its image processor: give "
                    "DetrTrainer processing_class=image_processor"
                )
            # the data set's stuff classes, fused for a panoptic model as `evaluate` does
            stuff = stuff_labels(getattr(dataloader.dataset, "dataset", None), model.config)
            self._mask_scorer = MaskScorer(self.processing_class, model.config.id2label, stuff=stuff)
        try:
            output = super().evaluation_loop(
                dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix
            )
            if self._mask_scores:
                masks = self._mask_scorer.compute(self._mask_scores, self.per_class, model.config.id2label)
                output.metrics.update({f"{metric_key_prefix}_{name}": value for name, value in masks.items()})
        finally:
            self._mask_scorer, self._mask_scores = None, []
        return output

    def get_eval_dataloader(self, eval_dataset: Any = None) -> torch.utils.data.DataLoader:
        if self.eval_data_collator is None:
            return super().get_eval_dataloader(eval_dataset)
        train_collator, self.data_collator = self.data_collator, self.eval_data_collator
        try:
            return super().get_eval_dataloader(eval_dataset)
        finally:
            self.data_collator = train_collator


class EpochSetter(TrainerCallback):
    """Gives the training set the epoch number, which draws its augmentations. (accelerate forwards the epoch to the
    dataset on one process only; with several it stops at the distributed sampler.)"""

    def __init__(self, dataset: DetectionDataset) -> None:
        self.dataset = dataset

    def on_epoch_begin(self, args: TrainingArguments, state: Any, control: Any, **kwargs: Any) -> None:
        self.dataset.set_epoch(int(state.epoch or 0))


class OneToOneFinish(TrainerCallback):
    """`TrainConfig.one_to_one_finish` for `Trainer`: the last `finish` of `max_steps` trains only the query group
    inference uses (`hf_detr.training.finish_one_to_one`)."""

    def __init__(self, finish: float) -> None:
        self.finish = finish

    def on_step_begin(
        self, args: TrainingArguments, state: Any, control: Any, model: Any = None, **kwargs: Any
    ) -> None:
        if model is not None and state.max_steps:
            finish_one_to_one(model, state.global_step / state.max_steps, self.finish)
