"""transformers `Trainer` for DETR: DETR's parameter groups, the evaluation batches of `hf_detr.evaluation`, labels
packed so that multi-process evaluation scores every image's boxes exactly once, and the epoch callback that draws new
augmentations. `examples/run_object_detection.py` is a complete script around it::

    trainer = DetrTrainer(model=model, args=TrainingArguments(..., eval_do_concat_batches=False,
                          remove_unused_columns=False), train_dataset=DetectionDataset(train, transform),
                          eval_dataset=evaluation_dataset(validation, model.config.id2label),
                          data_collator=DetectionCollator(processor), eval_data_collator=evaluation_collator(processor),
                          compute_metrics=make_compute_metrics(processor, id2label=model.config.id2label),
                          backbone_learning_rate=1e-5, callbacks=[EpochSetter(train_dataset)])
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from ..data.collate import DetectionCollator, DetectionDataset
from ..evaluation.metrics import pack_labels
from .setup import parameter_groups

__all__ = ["EVAL_IGNORE_KEYS", "DetrTrainer", "EpochSetter"]

# Model outputs Trainer must not gather at evaluation: compute_metrics reads only `logits` and `pred_boxes`, and the
# hidden states would hold every evaluation image's features in memory.
EVAL_IGNORE_KEYS = [
    "loss_dict", "auxiliary_outputs", "last_hidden_state", "encoder_last_hidden_state", "encoder_hidden_states",
    "encoder_attentions", "decoder_hidden_states", "decoder_attentions", "cross_attentions",
]  # fmt: skip


class DetrTrainer(Trainer):
    """`Trainer` with DETR's backbone learning rate (`parameter_groups`; 0 leaves the backbone out of the optimizer,
    freeze it too), a separate evaluation collator (evaluation resizes with the image processor and keeps crowd boxes;
    training pads already augmented images and drops them) and evaluation labels packed into one tensor per batch
    (`pack_labels`, which `make_compute_metrics` reads), so accelerate's gathering keeps every ground-truth box."""

    def __init__(
        self,
        *args: Any,
        backbone_learning_rate: float = 1e-5,
        eval_data_collator: DetectionCollator | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.backbone_learning_rate = backbone_learning_rate
        self.eval_data_collator = eval_data_collator

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
        self, model: torch.nn.Module, inputs: dict[str, Any], prediction_loss_only: bool,
        ignore_keys: list[str] | None = None,
    ) -> tuple[torch.Tensor | None, Any, torch.Tensor | None]:  # fmt: skip
        loss, predictions, labels = super().prediction_step(
            model, inputs, prediction_loss_only, EVAL_IGNORE_KEYS if ignore_keys is None else ignore_keys
        )
        return loss, predictions, None if labels is None else pack_labels(labels)

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
