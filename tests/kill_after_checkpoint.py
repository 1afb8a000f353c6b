"""`python -m hf_detr train` with the same arguments, except that every process kills itself (SIGKILL: no cleanup, no
final save) right after the first checkpoint is complete. Used by `test_distributed.py` to interrupt a run at a known
step:

    accelerate launch --multi_gpu --num_processes 2 tests/kill_after_checkpoint.py --output_dir ... --cpu
"""

from __future__ import annotations

import os
import signal
import sys

from hf_detr.apps.cli import main
from hf_detr.training import loop

save_checkpoint = loop.save_checkpoint  # the loop's name for `hf_detr.training.checkpoints.save_checkpoint`


def save_then_die(*args, **kwargs) -> None:
    save_checkpoint(*args, **kwargs)  # returns once every process has written its part
    os.kill(os.getpid(), signal.SIGKILL)


loop.save_checkpoint = save_then_die

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
