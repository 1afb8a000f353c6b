"""Prepare once, share everywhere: a split parsed and checked once, stored as memory-mapped Arrow, opened ever after.

Preparing a split (its annotations parsed, boxes under the box policy, masks encoded as RLE, image files checked) costs
minutes at COCO's size. It is done once per key (the source's content: a json's hash or a data set's fingerprint and
files, plus every setting that changes the result) and written to ``<cache>/<key>/<split>.arrow``; any later load,
by this process, another process of the same run (accelerate, torchrun) or a later run, opens that file memory-mapped.
Concurrent processes serialize on a file lock: the first prepares, the others wait and open what it wrote, and if it
fails they try themselves and fail with the same error, so no process waits forever for another.

The image bytes are never copied: a COCO folder's rows hold the image paths, and a Hub or ``save_to_disk`` split keeps
its image column where it is, the prepared columns joined beside it (``concatenate_datasets(axis=1)``: no copy).

The cache is ``$HF_DETR_CACHE``, by default ``hf_detr_prepared`` in ``datasets``' cache (``$HF_DATASETS_CACHE``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import datasets
from datasets.arrow_writer import ArrowWriter
from filelock import FileLock

logger = logging.getLogger(__name__)
T = TypeVar("T")

__all__ = ["PreparedRows", "cache_root", "content_hash", "open_prepared", "parallel_chunks"]

# bump when the prepared rows change for the same key (a new check, another stored form)
_VERSION = 1
# a pool is worth its start-up only for this many examples
_POOL_THRESHOLD = 2000
# examples per unit of a pool's work
_CHUNK = 1000


def cache_root() -> Path:
    return Path(os.environ.get("HF_DETR_CACHE") or Path(datasets.config.HF_DATASETS_CACHE) / "hf_detr_prepared")


def content_hash(path: str | os.PathLike) -> str:
    """sha256, read in blocks (COCO's train2017 json is 450 MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while block := stream.read(1 << 24):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class PreparedRows:
    """``rows`` are written as they come, so the split is never held in memory; ``summary``, what the checks changed,
    is logged again at every load."""

    features: datasets.Features
    description: str
    rows: Iterable[dict[str, Any]]
    summary: Callable[[], str | None] = lambda: None  # read after the rows are consumed


def open_prepared(
    key: Mapping[str, Any],
    split: str,
    prepare: Callable[[], PreparedRows],
    stale: Callable[[datasets.Dataset], bool] | None = None,
) -> datasets.Dataset:
    """From the cache, or made by ``prepare`` and written there first; ``key``: the JSON-able settings that decide
    the content; ``stale``: the stored split no longer holds (e.g. an image file it lists is gone)."""
    digest = hashlib.sha256(json.dumps({**key, "version": _VERSION}, sort_keys=True).encode()).hexdigest()[:24]
    folder = cache_root() / digest
    folder.mkdir(parents=True, exist_ok=True)
    file, meta = folder / f"{split}.arrow", folder / f"{split}.json"
    with FileLock(str(folder / f"{split}.lock")):
        if not meta.is_file() or (stale is not None and stale(_open(file, meta, split)[0])):
            meta.unlink(missing_ok=True)  # written last: its presence marks a complete split
            _write(prepare(), file, meta)
    dataset, summary = _open(file, meta, split)
    if summary:
        logger.warning(summary)
    logger.info("split %r: prepared data in %s", split, folder)
    return dataset


def _open(file: Path, meta: Path, split: str) -> tuple[datasets.Dataset, str | None]:
    stored = json.loads(meta.read_text())
    features = datasets.Features.from_dict(stored["features"])
    info = datasets.DatasetInfo(description=stored["description"], features=features)
    return datasets.Dataset.from_file(str(file), info=info, split=split), stored["summary"]


def _write(prepared: PreparedRows, file: Path, meta: Path) -> None:
    partial = file.with_suffix(".arrow.partial")
    writer = ArrowWriter(features=prepared.features, path=str(partial))
    try:
        for row in prepared.rows:
            writer.write(prepared.features.encode_example(row))
        writer.finalize()
    finally:
        writer.close()
    os.replace(partial, file)
    content = {
        "features": prepared.features.to_dict(),
        "description": prepared.description,
        "summary": prepared.summary(),
    }
    meta.write_text(json.dumps(content))


# the work of a pool's chunks: set before the pool forks, so the workers inherit it instead of unpickling it
_chunk_work: Callable[[int, int], Any] | None = None


def _run_chunk(bounds: tuple[int, int]) -> Any:
    return _chunk_work(*bounds)


def parallel_chunks(work: Callable[[int, int], T], total: int, num_proc: int | None = None) -> Iterator[T]:
    """``work(start, stop)`` over chunks of at most 1,000, in order, by ``num_proc`` forked processes (default: the
    usable cores from a few thousand on; below, here). ``work`` may be a closure over parsed data: the workers
    inherit it by fork, and only the results are pickled."""
    global _chunk_work
    if num_proc is None:
        num_proc = len(os.sched_getaffinity(0)) if total >= _POOL_THRESHOLD else 1
    size = max(1, min(_CHUNK, -(-total // max(num_proc, 1))))
    bounds = [(start, min(total, start + size)) for start in range(0, total, size)]
    if min(num_proc, len(bounds)) <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        yield from (work(*b) for b in bounds)
        return
    _chunk_work = work
    try:
        with multiprocessing.get_context("fork").Pool(min(num_proc, len(bounds))) as pool:
            yield from pool.imap(_run_chunk, bounds)
    finally:
        _chunk_work = None
