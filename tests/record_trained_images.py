"""`python -m hf_detr train` with the same arguments, recording which images each process trains on: one line
`{"epoch": e, "image_ids": [...]}` per batch in OUTPUT_DIR/images_<process index>.jsonl (`image_ids` null for the
stand-in batch of a process whose share of a streamed epoch has ended). Used by `test_streaming.py`:

    accelerate launch --multi_gpu --num_processes 2 tests/record_trained_images.py --output_dir ... --cpu
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from hf_detr.apps.cli import main
from hf_detr.training import loop

accumulate = loop._Loop._accumulate


def recording_accumulate(self, batch, group_size, sync) -> None:
    ids = None if batch is None else [int(label["image_id"][0]) for label in batch["labels"]]
    record = Path(self.config.output_dir, f"images_{self.accelerator.process_index}.jsonl")
    record.parent.mkdir(parents=True, exist_ok=True)
    with record.open("a") as stream:
        stream.write(json.dumps({"epoch": self.progress.epoch, "image_ids": ids}) + "\n")
    accumulate(self, batch, group_size, sync)


loop._Loop._accumulate = recording_accumulate

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
