"""What changes as training advances: the learning-rate factor and the switch to the one-to-one queries alone."""

from __future__ import annotations

import math

from torch import nn

from .config import TrainConfig

__all__ = ["finish_one_to_one", "lr_factor"]


def lr_factor(progress: float, step: int, config: TrainConfig) -> float:
    """Multiplier of the base learning rates at optimizer step `step` (0-based), `progress` in [0, 1] of training.

    `step`: 1 before `lr_drop`, 0.1 after (DETR's StepLR); `cosine`: 0.5 (1 + cos(pi progress)); `constant`: 1.
    A linear warmup over the first `warmup_steps` multiplies any of them.
    """
    if config.lr_scheduler == "step":
        factor = 0.1 if progress >= config.lr_drop else 1.0
    elif config.lr_scheduler == "cosine":
        factor = 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    else:
        factor = 1.0
    if step < config.warmup_steps:
        factor *= (step + 1) / config.warmup_steps
    return factor


def finish_one_to_one(model: nn.Module, progress: float, finish: float) -> None:
    """From `1 - finish` of training on, only the first query group (the one inference uses) trains: H-DETR's
    one-to-many group, whose positives share the decoder and teach it several boxes per object, and Group DETR's
    extra groups stop, and the one-to-one loss alone unlearns the duplicates (docs/RECIPE.md). The extra queries stay
    in the weights until `to_plain_detr()`, so checkpoints keep their shapes; 0 never switches."""
    if finish > 0 and progress >= 1 - finish:
        model.model.extra_query_groups = False
