"""Resumable training states: `checkpoints/step_<n>` folders of accelerate's `save_state` (with the weight average of
`--ema_decay`, registered for checkpointing) plus the loop's position and early-stopping record. The position (epoch,
batches into it) is all an epoch needs to continue exactly, map-style or streamed: both orders are functions of the
seed and the epoch, and the processes always stand at the same batch."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from accelerate import Accelerator

from ..modeling.errors import HfDetrInputError
from .config import TrainConfig

logger = logging.getLogger(__name__)

__all__ = [
    "EMA_FILE",
    "STATE_FILE",
    "Progress",
    "check_ema_state",
    "latest_checkpoint",
    "resume_point",
    "save_checkpoint",
]

STATE_FILE = "trainer_state.json"  # written last into a checkpoint: its presence marks the checkpoint complete
# accelerate's file for the first (here: the only) object of `register_for_checkpointing`, the weight average
EMA_FILE = "custom_checkpoint_0.pkl"


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The complete checkpoint (`checkpoints/step_<n>` with its trainer state) of the highest step, if any."""
    steps = []
    for folder in Path(output_dir, "checkpoints").glob("step_*"):
        match = re.fullmatch(r"step_(\d+)", folder.name)
        if match and (folder / STATE_FILE).is_file():
            steps.append((int(match.group(1)), folder))
    return max(steps)[1] if steps else None


@dataclass
class Progress:
    """The loop's position, saved in every checkpoint next to accelerate's state."""

    global_step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0  # batches of `epoch` already trained on (on a streamed share that ended early: stand-ins)
    elapsed: float = 0.0  # seconds of training before this session
    log_history: list = field(default_factory=list)
    # early stopping: the best value of metric_for_best_model so far, its step, and the evaluations since it
    best_metric: float | None = None
    best_step: int | None = None
    evaluations_since_best: int = 0


def save_checkpoint(accelerator: Accelerator, progress: Progress, config: TrainConfig) -> None:
    folder = Path(config.output_dir, "checkpoints", f"step_{progress.global_step}")
    accelerator.save_state(str(folder))  # model, optimizer, grad scaler and every process's RNG states
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (folder / STATE_FILE).write_text(json.dumps(dataclasses.asdict(progress), indent=1))
        complete = sorted(Path(config.output_dir, "checkpoints").glob("step_*"), key=lambda p: int(p.name[5:]))
        if config.save_total_limit:
            for old in complete[: -config.save_total_limit]:
                shutil.rmtree(old)
    accelerator.wait_for_everyone()


def resume_point(config: TrainConfig) -> Path | None:
    """The checkpoint to resume from, if any; refuses to start over in a folder that holds a run's checkpoints."""
    output_dir = Path(config.output_dir)
    if config.resume == "latest":
        found = latest_checkpoint(output_dir)
        if found is None:
            logger.warning("--resume: no checkpoint in %s/checkpoints, starting from scratch", output_dir)
        return found
    if config.resume:
        if not Path(config.resume, STATE_FILE).is_file():
            raise HfDetrInputError(f"resume={config.resume!r} is not a complete checkpoint folder (no {STATE_FILE})")
        return Path(config.resume)
    if latest_checkpoint(output_dir) is not None:
        raise HfDetrInputError(
            f"{output_dir} already holds checkpoints: pass --resume to continue that run or choose another output_dir"
        )
    return None


def check_ema_state(folder: Path, ema: bool) -> None:
    """A run resumes with the weight average it was saved with, or without one if it had none (accelerate would
    otherwise fail on the count of its saved objects, or an average would silently restart from the weights)."""
    saved = (folder / EMA_FILE).is_file()
    if ema and not saved:
        raise HfDetrInputError(
            f"ema_decay is set but the checkpoint {folder} holds no weight average (it was saved without "
            "--ema_decay): resume without --ema_decay, or start a new run with it"
        )
    if saved and not ema:
        raise HfDetrInputError(
            f"the checkpoint {folder} holds a weight average (saved with --ema_decay): pass --ema_decay "
            "again to continue it"
        )
