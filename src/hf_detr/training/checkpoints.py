"""Resumable training states: `checkpoints/step_<n>` folders of accelerate's `save_state` plus the loop's position."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from accelerate import Accelerator

from .config import TrainConfig

logger = logging.getLogger(__name__)

__all__ = ["STATE_FILE", "Progress", "latest_checkpoint", "resume_point", "save_checkpoint"]

STATE_FILE = "trainer_state.json"  # written last into a checkpoint: its presence marks the checkpoint complete


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
    batches_in_epoch: int = 0  # batches of `epoch` already trained on
    elapsed: float = 0.0  # seconds of training before this session
    log_history: list = field(default_factory=list)


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
            raise ValueError(f"resume={config.resume!r} is not a complete checkpoint folder (no {STATE_FILE})")
        return Path(config.resume)
    if latest_checkpoint(output_dir) is not None:
        raise ValueError(
            f"{output_dir} already holds checkpoints: pass --resume to continue that run or choose another output_dir"
        )
    return None
