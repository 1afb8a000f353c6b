"""The training batches of `loop.train`: the split to train on (`training_split`) and its loader (`training_loader`):
map-style through a DataLoader over `EpochSampler`, or a stream through `StreamedBatches`."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import datasets
import torch
from accelerate import Accelerator

from ..data.collate import derived_seed
from ..data.streaming import StreamedBatches, known_size
from ..modeling.errors import HfDetrInputError
from .config import TrainConfig
from .setup import loader_options

__all__ = ["EpochSampler", "training_loader", "training_split"]


class EpochSampler(torch.utils.data.Sampler[tuple[int, int]]):
    """A permutation of `range(size)` that depends only on `(seed, epoch)`, identical on every process (accelerate
    then gives each process its share) and reproducible after a resume. Each index comes with its epoch, the key of
    `DetectionDataset[epoch, index]`: persistent workers hold their own copies of the data set, which `set_epoch` in
    this process does not reach."""

    def __init__(self, size: int, seed: int, shuffle: bool) -> None:
        self.size, self.seed, self.shuffle, self.epoch = size, seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(derived_seed(self.seed, self.epoch))
            order = torch.randperm(self.size, generator=generator).tolist()
        else:
            order = range(self.size)
        return ((self.epoch, index) for index in order)


def training_split(config: TrainConfig, data: Mapping[str, Any]) -> tuple[Any, int | None]:
    """The train split (streamed with `config.streaming`, a given `datasets.Dataset` too) and its number of images
    (None for a stream that does not record it, which then needs max_steps or a time budget)."""
    split = data[config.train_split]
    if not config.streaming:
        if isinstance(split, datasets.IterableDataset):
            raise HfDetrInputError(
                f"split {config.train_split!r} is a datasets.IterableDataset: set TrainConfig.streaming="
                "True (hf-detr train --streaming) to train from a stream"
            )
        if len(split) == 0:
            raise HfDetrInputError(f"split {config.train_split!r} is empty")
        return split, len(split)
    if isinstance(split, datasets.Dataset):
        return split.to_iterable_dataset(), len(split)
    size = known_size(split, config.train_split)
    if size is None and config.max_steps is None and config.num_train_epochs is not None:
        raise HfDetrInputError(
            f"TrainConfig.num_train_epochs={config.num_train_epochs} with streaming: the stream of split "
            f"{config.train_split!r} does not record how many images it holds (its info.splits), so epochs cannot be "
            "counted in steps; bound the run with max_steps or time_budget instead"
        )
    return split, size


def training_loader(
    train_set: Any, collator: Any, config: TrainConfig, accelerator: Accelerator, num_workers: int
) -> torch.utils.data.DataLoader | StreamedBatches:
    """The training batches of `train_set` (`setup.training_data`) on this process: each process's share of a stream
    (`StreamedBatches`), or a DataLoader that `accelerator.prepare` shares among the processes."""
    options = loader_options(num_workers, accelerator.device, config.seed)
    if config.streaming:
        return StreamedBatches(
            train_set,
            collator,
            batch_size=config.per_device_train_batch_size,
            seed=config.seed,
            shuffle_buffer_size=config.shuffle_buffer_size if config.shuffle else None,
            rank=accelerator.process_index,
            num_processes=accelerator.num_processes,
            **options,
        )
    return torch.utils.data.DataLoader(
        train_set,
        batch_size=config.per_device_train_batch_size,
        collate_fn=collator,
        sampler=EpochSampler(len(train_set), config.seed, config.shuffle),
        **options,
    )
