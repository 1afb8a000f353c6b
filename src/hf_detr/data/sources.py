"""The one entry point from a data set name to splits in the Hub's COCO detection schema."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import datasets

from ..modeling.errors import HfDetrInputError
from .box_policy import BoxPolicy
from .loading import load_detection_dataset
from .schema import streamed
from .synthetic import SPLITS, make_synthetic_dataset

__all__ = ["SYNTHETIC", "load_data"]

# the name that selects the generated shapes instead of a Hub id or a folder
SYNTHETIC = "synthetic"


def load_data(
    source: str,
    splits: Sequence[str] | None = None,
    *,
    synthetic_sizes: Mapping[str, int] | None = None,
    synthetic_image_size: int = 128,
    seed: int = 0,
    box_policy: BoxPolicy = "clip",
    box_tolerance: float = 1.0,
    masks: bool = False,
    streaming: bool = False,
    decode: bool = True,
) -> datasets.DatasetDict | datasets.IterableDatasetDict:
    """`"synthetic"` for the generated shapes (default 1000 / 200 / 200 images), anything else through
    :func:`.loading.load_detection_dataset` (the options: there; the box policy: :mod:`.box_policy`)."""
    if source != SYNTHETIC:
        return load_detection_dataset(
            source,
            splits=splits,
            box_policy=box_policy,
            box_tolerance=box_tolerance,
            masks=masks,
            streaming=streaming,
            decode=decode,
        )
    wanted = list(splits or SPLITS)
    unknown = [name for name in wanted if name not in SPLITS]
    if unknown:
        raise HfDetrInputError(f"dataset {SYNTHETIC!r} has the splits {list(SPLITS)}, not {unknown}")
    sizes = {"train": 1000, "validation": 200, "test": 200, **(synthetic_sizes or {})}
    counts = {name: sizes[name] if name in wanted else 0 for name in SPLITS}
    generated = make_synthetic_dataset(
        counts["train"], counts["validation"], counts["test"], image_size=synthetic_image_size, seed=seed, masks=masks
    )
    if streaming:
        return datasets.IterableDatasetDict({name: streamed(generated[name], decode) for name in wanted})
    return datasets.DatasetDict({name: generated[name] for name in wanted})
