"""Load object-detection data sets in the Hub's COCO detection schema (:mod:`.schema`), their boxes under one
``box_policy`` (:mod:`.box_policy`).

:func:`load_detection_dataset` reads (a) a Hub dataset id or a local data folder (``datasets.load_dataset``), (b) a
folder written by ``DatasetDict.save_to_disk`` (both :mod:`.hub_sources`), (c) a COCO folder
(``annotations/instances_<split>.json`` plus the image files) or a COCO panoptic folder
(``annotations/panoptic_<split>.json``, its PNGs in ``panoptic_<split>/``, plus the image files; :mod:`.coco`) or (d)
a YOLO or Pascal VOC folder (parsed by :mod:`.formats`, brought to pixels by :mod:`.folders`), in memory-mapped or
streaming form.
"""

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
    """Load a detection data set in the Hub's COCO schema (see :mod:`.schema`), with ``masks=True`` the objects'
    masks too.

    ``source`` is tried in this order:

    1. a folder written by ``DatasetDict.save_to_disk`` (or ``Dataset.save_to_disk``, returned as split ``"train"``);
    2. a COCO folder, recognised by ``annotations/instances_*.json`` or ``annotations/panoptic_*.json`` (see
       :func:`load_coco_folder`);
    3. a YOLO ``data.yaml`` or a folder holding one, or a Pascal VOC folder, recognised by ``Annotations/*.xml`` (see
       :mod:`hf_detr.data.formats`; each image file is opened at loading for its size, and a streamed split is the
       loaded one read as an ``IterableDataset``);
    4. anything else goes to ``datasets.load_dataset(source, revision=..., cache_dir=..., **load_dataset_kwargs)``:
       a Hub dataset id such as ``"cppe-5"``, or a local folder of parquet / image files.

    :func:`detect_format` tells which. Splits from (1) and (4) are checked against the schema and converted where that
    is lossless: numeric types are cast, a missing ``objects.iscrowd`` becomes 0, a missing ``objects.area`` the box
    area, ``objects.bbox_id`` is renamed ``objects.id`` (a missing id becomes -1), objects stored as a list of structs
    are transposed, a missing ``image_id`` becomes the row index, missing ``width``/``height`` are read from the
    images, and other columns are dropped (all logged). Boxes are taken to be ``[x, y, w, h]`` pixels, which the data
    cannot prove.

    Every box goes through ``box_policy`` (see :mod:`.box_policy`): by default a box reaching outside its image is
    clipped to it and a box without area dropped with its object, and one warning line per split counts them;
    ``"error"`` raises a ``ValueError`` naming the split, example, image id and box. A category outside the label range
    is always an error.

    Prepared once (:mod:`hf_detr.data.prepared`): a COCO folder, and a Hub or ``save_to_disk`` split loaded without
    ``streaming``, is parsed, checked and (with masks) encoded once per content and settings, into a memory-mapped
    Arrow file in the cache of prepared splits that every later load and every other process opens; the image bytes
    are never copied (a COCO folder's rows hold paths, a Hub split's image column is joined back as it is). At
    COCO's size the work is spread over ``num_proc`` forked processes (default: the usable cores). With
    ``streaming=True`` the splits are ``IterableDataset``s: a COCO folder's prepared split read in shards; a Hub or
    ``save_to_disk`` split, nothing written, conformed and checked as it is read, so it logs its running counts each
    time they reach 1, 2, 4, 8, ... changed boxes (per process).

    With ``masks=True`` every object keeps its mask as ``objects.segmentation``, a compressed RLE of its image (see
    :mod:`hf_detr.data.masks`), checked at loading (as it is read when streamed; a COCO folder's polygons and RLEs and
    a panoptic folder's PNGs, see :func:`load_coco_folder`): a Hub or ``save_to_disk`` split needs an
    ``objects.segmentation`` field of COCO polygons ``[[x1, y1, x2, y2, ...], ...]`` or RLEs ``{"size": [height,
    width], "counts": str or [int, ...]}`` (one type per data set, as Arrow stores it), converted and checked as the
    split is prepared. A box the box policy drops drops its mask; a clipped box keeps its
    mask, which lies in the image anyway. A mask whose size is not its image's, a polygon reaching more than a pixel
    outside its image, an RLE that does not decode to its size and a panoptic PNG with segment ids ``segments_info``
    does not list raise a ``ValueError`` naming the image and the field. YOLO and VOC folders have no masks.

    Args:
        splits: split names to load (default: all).
        streaming: return an ``IterableDatasetDict``.
        box_policy: ``"clip"`` (default), ``"drop"`` or ``"error"``: what to do with a box that reaches outside its
            image or has no area.
        box_tolerance: how far (pixels) a box may reach outside its image and still count as inside (float slop;
            kept as written).
        masks: keep (or make) each object's ``segmentation`` (see above).
        revision, cache_dir, load_dataset_kwargs: passed to ``datasets.load_dataset`` (source kind 4 only).
        num_proc: processes that prepare a split (default: the usable cores from a few thousand examples on).
        decode: streamed splits only: ``False`` leaves each ``image`` undecoded (``{"bytes", "path"}``) and converts
            the rest without reading a pixel, for a reader that decodes only the images it needs (the training
            processes of a shared stream, ``hf_detr.data.streaming``).
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
    """Which kind of source :func:`load_detection_dataset` takes ``source`` for, in its order of trying."""
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
    """The splits of a COCO, YOLO or VOC folder. Without ``collect_image_errors``, a YOLO or VOC image that is missing
    or unreadable raises a ``ValueError`` (their sizes are read at once) and a COCO image is checked only when
    :func:`folder_dataset` reads it; with it, every image file is checked and each failure listed in ``image_errors``
    (a YOLO image, or a VOC image without ``<size>``, is then left out: its boxes have no frame). A COCO folder's
    masks are read by :func:`load_coco_folder`, not here."""
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
