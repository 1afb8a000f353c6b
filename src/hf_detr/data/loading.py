"""The entry of the data loaders: any source to splits in the Hub's COCO detection schema (:mod:`.schema`), every
box under the one ``box_policy`` (:mod:`.box_policy`). Each format has its module: :mod:`.hub_sources`
(Hub ids, local data folders, ``save_to_disk`` folders), :mod:`.coco`, :mod:`.formats` and :mod:`.folders` (YOLO,
Pascal VOC)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import datasets

from ..modeling.errors import HfDetrInputError
from .box_policy import BoxChange, BoxCounts, BoxPolicy, BoxPolicyResult, _check_policy, apply_box_policy
from .coco import _coco_splits, is_coco_folder, load_coco_folder
from .folders import FolderSplit, _checked_image, _raw_split, folder_dataset
from .formats import folder_format, read_voc, read_yolo
from .hub_sources import _conform, is_saved_folder, saved_or_hub_splits
from .schema import (
    AnyDatasetDict,
    _select_splits,
    coco_category_ids,
    coco_detection_features,
    coco_isthing,
    id2label,
    streamed,
)

# the names this module gave before the data package was split by concern, still importable from here
__all__ = [
    "BoxChange",
    "BoxCounts",
    "BoxPolicy",
    "BoxPolicyResult",
    "apply_box_policy",
    "coco_category_ids",
    "coco_detection_features",
    "coco_isthing",
    "detect_format",
    "id2label",
    "load_coco_folder",
    "load_detection_dataset",
]


def load_detection_dataset(
    source: str | os.PathLike,
    *,
    splits: Sequence[str] | None = None,
    streaming: bool = False,
    box_policy: BoxPolicy = "clip",
    box_tolerance: float = 1.0,
    masks: bool = False,
    revision: str | None = None,
    cache_dir: str | None = None,
    num_proc: int | None = None,
    decode: bool = True,
    **load_dataset_kwargs: Any,
) -> AnyDatasetDict:
    """A detection data set in the Hub's COCO schema (:mod:`.schema`), with ``masks=True`` the objects' masks too.

    ``source`` is tried in this order (:func:`detect_format`):

    1. a folder written by ``DatasetDict.save_to_disk`` (or ``Dataset.save_to_disk``, returned as split ``"train"``);
    2. a COCO folder, ``annotations/instances_*.json`` or ``annotations/panoptic_*.json`` (:func:`load_coco_folder`);
    3. a YOLO ``data.yaml`` or a folder holding one, or a Pascal VOC folder (``Annotations/*.xml``; each image file is
       opened for its size; streamed, the loaded split is read as an ``IterableDataset``);
    4. anything else goes to ``datasets.load_dataset(source, revision=..., cache_dir=..., **load_dataset_kwargs)``:
       a Hub id such as ``"cppe-5"``, or a local folder of parquet or image files.

    Splits of (1) and (4) are conformed to the schema where that is lossless (numeric casts; ``iscrowd`` 0, ``area``
    the box's, ``id`` -1 and ``image_id`` the row index when missing; ``objects.bbox_id`` renamed ``objects.id``;
    objects as a list of structs transposed; missing ``width``/``height`` read from the images; other columns
    dropped; all logged). Boxes are taken to be ``[x, y, w, h]`` pixels, which the data cannot prove. Every box goes
    through ``box_policy`` with ``box_tolerance`` pixels of slop (:mod:`.box_policy`); a category outside the label
    range is always an error.

    Without ``streaming``, a COCO folder and a Hub or ``save_to_disk`` split are prepared once per content and
    settings (:mod:`.prepared`) over ``num_proc`` forked processes (default: the usable cores) and opened
    memory-mapped. Streamed, a COCO folder's prepared split is read in shards, and a Hub or ``save_to_disk`` split
    is conformed and checked as it is read, logging its running counts at 1, 2, 4, 8, ... changed boxes; with
    ``decode=False`` its images stay undecoded (``{"bytes", "path"}``) for a reader that decodes only what it needs
    (:mod:`.streaming`).

    ``masks=True`` keeps each object's mask as ``objects.segmentation``, a compressed RLE (:mod:`.masks`), checked at
    loading: a Hub or ``save_to_disk`` split needs that field as COCO polygons or RLEs (one type per data set, as
    Arrow stores it). A dropped box drops its mask. A mask not of its image's size, a polygon more than a pixel
    outside its image, an RLE that does not decode to its size and a panoptic id ``segments_info`` does not list
    raise a ``ValueError`` naming the image and the field. YOLO and VOC folders have no masks.
    """
    _check_policy(box_policy)
    kind = detect_format(source)
    if kind == "coco":
        return load_coco_folder(
            source,
            splits=splits,
            streaming=streaming,
            box_policy=box_policy,
            box_tolerance=box_tolerance,
            masks=masks,
            num_proc=num_proc,
            decode=decode,
        )
    container = datasets.IterableDatasetDict if streaming else datasets.DatasetDict
    if kind in ("yolo", "voc"):
        if masks:
            raise HfDetrInputError(
                f"{source} is a {FORMAT_NAMES[kind]}, which holds boxes only, but masks=True was asked for; load it "
                "with masks=False, or convert it to a COCO folder with `segmentation` polygons."
            )
        loaded = {
            split.name: folder_dataset(split) for split in read_folder_splits(source, splits, box_policy, box_tolerance)
        }
        return container({name: streamed(ds, decode) if streaming else ds for name, ds in loaded.items()})
    loaded = saved_or_hub_splits(
        source, splits, streaming=streaming, revision=revision, cache_dir=cache_dir, **load_dataset_kwargs
    )
    return container(
        {name: _conform(ds, name, box_tolerance, box_policy, masks, num_proc, decode) for name, ds in loaded.items()}
    )


SourceFormat = Literal["saved", "coco", "yolo", "voc", "hub"]
FORMAT_NAMES: dict[str, str] = {
    "saved": "save_to_disk folder",
    "coco": "COCO folder",
    "yolo": "YOLO data set",
    "voc": "Pascal VOC folder",
    "hub": "datasets.load_dataset source",
}


def detect_format(source: str | os.PathLike) -> SourceFormat:
    """In :func:`load_detection_dataset`'s order of trying."""
    path = Path(source)
    if is_saved_folder(path):
        return "saved"
    if is_coco_folder(path):
        return "coco"
    return folder_format(path) or "hub"


def read_folder_splits(
    source: str | os.PathLike,
    splits: Sequence[str] | None = None,
    policy: BoxPolicy = "clip",
    tolerance: float = 1.0,
    *,
    collect_image_errors: bool = False,
) -> list[FolderSplit]:
    """Without ``collect_image_errors``, a missing or unreadable YOLO or VOC image raises (their sizes are read at
    once) and a COCO image is checked only when :func:`folder_dataset` reads it; with it, every image file is checked
    and each failure listed in ``image_errors`` (a YOLO image, or a VOC image without ``<size>``, is then left out:
    its boxes have no frame). Masks are not read here."""
    _check_policy(policy)
    kind = detect_format(source)
    if kind == "coco":
        parsed = _coco_splits(Path(source), splits, policy, tolerance)
        for split in parsed if collect_image_errors else ():
            for image in split.images:
                try:
                    _checked_image(image, split.image_dirs, split.source)
                except ValueError as error:
                    split.image_errors.append(str(error))
        return parsed
    if kind not in ("yolo", "voc"):
        raise HfDetrInputError(f"{source} is not a COCO, YOLO or VOC folder but a {FORMAT_NAMES[kind]}.")
    folder = read_yolo(source) if kind == "yolo" else read_voc(source)
    chosen = _select_splits(folder.splits, splits, str(source))
    return [
        _raw_split(name, read(), folder.label_names, policy, tolerance, collect_image_errors)
        for name, read in chosen.items()
    ]
