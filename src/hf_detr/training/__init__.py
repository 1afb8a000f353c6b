"""Training: `TrainConfig` (`config`), the accelerate loop (`loop.train`), resumable states (`checkpoints`), training
setup shared by every entry point (`setup`) and the transformers `Trainer` integration (`trainer`).

Names are imported on first use, so that `hf-detr --help` (which reads `TrainConfig`) does not import the loop.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Augment": "config",
    "TrainConfig": "config",
    "add_arguments": "config",
    "config_from_args": "config",
    "latest_checkpoint": "checkpoints",
    "TrainResult": "loop",
    "TrainingDivergedError": "loop",
    "finish_one_to_one": "schedule",
    "lr_factor": "schedule",
    "train": "loop",
    "parameter_groups": "setup",
    "DetrTrainer": "trainer",
    "EpochSetter": "trainer",
    "OneToOneFinish": "trainer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
