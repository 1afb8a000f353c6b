"""Training batches from a streamed split (a ``datasets.IterableDataset``, e.g. ``load_data(..., streaming=True)``):
the batches the map-style path gives, in the stream's order, resumable in the middle of an epoch exactly::

    train_set, collator = training_data(stream, processor, "detr", seed=42)  # hf_detr.training.setup
    batches = StreamedBatches(train_set, collator, batch_size=4, seed=42, shuffle_buffer_size=1000,
                              rank=accelerator.process_index, num_processes=accelerator.num_processes)
    for batch in batches.epoch(0, skip=0): ...  # this process's batches of epoch 0

Every process computes the same epoch, without communicating:

1. the split is read without decoding its images (``decode(False)``), each example given its row index in the source
   (column :data:`ROW`); ``skip(0)`` pins the order of the source's shards (datasets never reorders them after a
   ``skip``), which would otherwise make the index count another order;
2. datasets' shuffle buffer of ``shuffle_buffer_size`` examples mixes them, seeded by ``(seed, epoch)``;
3. the stream is cut into batches, and each process takes every ``num_processes``-th (``split_dataset_by_node`` with
   ``strategy="examples"``): process ``p`` trains on batches ``p, p + n, p + 2n, ...``, the batches accelerate gives it
   from a map-style loader of the same order, so a streamed run equals a non-streamed one given the same order;
4. DataLoader workers decode, augment (:meth:`.collate.DetectionDataset.prepare`, seeded by ``(seed, epoch, row)``
   as example ``row`` of a map-style run) and collate them. The stream runs in the training process and hands the
   workers whole raw batches (as the sampler's "indices"), so the batches and their order do not depend on the number
   of workers.

A resumed run makes the epoch's stream again from ``(seed, epoch)`` and drops the batches already trained on before
they are decoded; what follows is what the uninterrupted run saw. (``IterableDataset.state_dict()`` would restore the
shuffle buffer's position but not its contents.)

What it costs: every process reads the whole stream (its bytes, not its pixels: only its own batches are decoded),
since a split by shards would give shares as long as the shards and no row index of the source; a remote data set is
downloaded once per process. The shards keep their order, so the shuffle mixes within the buffer's reach.

The processes' shares differ by at most one batch. The training loop ends the epoch for all of them together, and a
process left without a batch steps on :attr:`StreamedBatches.stand_in` (a black image, with masks one object
covering it) with weight 0.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import datasets
import numpy as np
import PIL.Image
import torch
from datasets.distributed import split_dataset_by_node

from ..modeling.errors import HfDetrInputTypeError
from .collate import DetectionCollator, DetectionDataset
from .masks import encode_rles

__all__ = ["ROW", "StreamedBatches", "known_size"]

ROW = "row_index"  # each streamed example's row in the source: the index its augmentation is seeded with

# the stand-in's image: big enough for every backbone stride, small enough to cost nothing
_STAND_IN_SIZE = 64


def known_size(split: datasets.IterableDataset, name: str) -> int | None:
    """When the split's info records it (a Hub data set's card, a saved data set's info)."""
    recorded = split.info.splits.get(name) if split.info.splits else None
    return recorded.num_examples if recorded is not None and recorded.num_examples else None


def _row_index(example: dict[str, Any], index: int) -> dict[str, int]:
    return {ROW: index}


class _EpochStream(torch.utils.data.Sampler):
    """In the training process: this process's raw batches of `epoch` after the first `skip`, each with its epoch."""

    def __init__(self, batches: datasets.IterableDataset) -> None:
        self.batches, self.epoch, self.skip = batches, 0, 0

    def __iter__(self) -> Iterator[tuple[int, dict[str, list]]]:
        self.batches.set_epoch(self.epoch)
        for columns in itertools.islice(self.batches, self.skip, None):
            yield self.epoch, columns


class _Prepared(torch.utils.data.Dataset):
    """In a DataLoader worker: the examples of a raw batch, decoded and prepared (`DetectionDataset.prepare`)."""

    def __init__(self, examples: DetectionDataset) -> None:
        self.examples = examples

    def __getitem__(self, key: tuple[int, dict[str, list]]) -> list[dict[str, Any]]:
        epoch, columns = key
        prepared = []
        for values in zip(*columns.values()):
            example = dict(zip(columns, values))
            prepared.append(self.examples.prepare(example, example.pop(ROW), epoch))
        return prepared


def _stand_in_example(masks: bool) -> dict[str, Any]:
    """A black image; with masks, one object covering it, since the mask head runs only on matched queries and DDP
    needs every parameter in every backward pass."""
    size = _STAND_IN_SIZE
    objects: dict[str, list] = {"bbox": [], "category": []}
    if masks:
        whole = np.ones((1, size, size), dtype=bool)
        objects = {"bbox": [[0.0, 0.0, size, size]], "category": [0], "segmentation": encode_rles(whole)}
    return {"image": PIL.Image.new("RGB", (size, size)), "image_id": -1, "objects": objects}


class StreamedBatches:
    """This process's training batches of a streamed split (`examples.dataset`), epoch by epoch (see the module
    docstring). `shuffle_buffer_size=None` keeps the source's order; `loader_options` go to the DataLoader."""

    def __init__(
        self,
        examples: DetectionDataset,
        collator: DetectionCollator,
        *,
        batch_size: int,
        seed: int,
        shuffle_buffer_size: int | None,
        rank: int,
        num_processes: int,
        **loader_options: Any,
    ) -> None:
        split = examples.dataset
        if not isinstance(split, datasets.IterableDataset):
            raise HfDetrInputTypeError(
                f"StreamedBatches streams a datasets.IterableDataset, got {type(split).__name__}; train "
                "on a datasets.Dataset with a map-style DataLoader instead."
            )
        rows = split.decode(False).map(_row_index, with_indices=True).skip(0)
        if shuffle_buffer_size:
            rows = rows.shuffle(seed=seed, buffer_size=shuffle_buffer_size)
        batches = split_dataset_by_node(rows.batch(batch_size), rank, num_processes, strategy="examples")
        self._stream = _EpochStream(batches)
        self._loader = torch.utils.data.DataLoader(
            _Prepared(examples), batch_size=None, sampler=self._stream, collate_fn=collator, **loader_options
        )
        self.stand_in = collator([_stand_in_example("segmentation" in split.features["objects"])])

    def epoch(self, epoch: int, skip: int = 0) -> Iterator[dict[str, Any]]:
        """The first `skip` batches are never decoded."""
        self._stream.epoch, self._stream.skip = epoch, skip
        return iter(self._loader)
