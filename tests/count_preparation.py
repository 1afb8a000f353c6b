"""`python -m hf_detr train` with the same arguments, every process appending a line `<work> <pid>` to the file
`$HF_DETR_TEST_CALLS` each time it parses a COCO json or encodes a mask: what a prepared split saves. With
`--uncached` first, the data set is instead built as before the prepared cache (`folder_dataset` of each parsed
split, in memory). Used by `test_prepared.py`:

    accelerate launch --multi_gpu --num_processes 2 tests/count_preparation.py --dataset COCO_FOLDER --cpu ...
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import datasets

from hf_detr.apps.cli import main
from hf_detr.data import coco, folders, hub_sources
from hf_detr.training import loop


def counted(name: str, function):
    def wrapper(*args, **kwargs):
        with open(os.environ["HF_DETR_TEST_CALLS"], "a") as log:
            log.write(f"{name} {os.getpid()}\n")
        return function(*args, **kwargs)

    return wrapper


coco._read_coco_json = counted("parse", coco._read_coco_json)
for module in (folders, hub_sources):  # the two callers of the mask encoder
    module.segmentation_rle = counted("encode", module.segmentation_rle)


def uncached(source: str, splits, **options) -> datasets.DatasetDict:
    parsed = coco._coco_splits(Path(source), splits, options["box_policy"], 1.0, masks=options["masks"])
    return datasets.DatasetDict({split.name: folders.folder_dataset(split) for split in parsed})


if __name__ == "__main__":
    argv = sys.argv[1:]
    if argv[0] == "--uncached":
        argv = argv[1:]
        loop.load_data = uncached
    sys.exit(main(["train", *argv]))
