"""Load object-detection data sets in the Hub's COCO detection schema.

Every loader here returns splits with exactly the features of :func:`coco_detection_features`::

    image      datasets.Image()
    image_id   int64
    width      int32                     (pixels)
    height     int32
    objects    {"id": int64, "area": float32, "bbox": [x, y, w, h] float32 pixels,
                "category": ClassLabel(label names), "iscrowd": int64 (0 or 1)}   (one list entry per object)

and, loaded with ``masks=True``, each object also has ``segmentation`` {"size": [height, width] int32, "counts":
string}: the object's pixels as COCO's compressed RLE of its image (see :mod:`hf_detr.data.masks`; polygons,
uncompressed RLEs and panoptic PNG segments are converted at load time, and every mask is checked against its image).

:func:`load_detection_dataset` reads (a) a Hub dataset id or a local data folder (``datasets.load_dataset``), (b) a
folder written by ``DatasetDict.save_to_disk``, (c) a COCO folder (``annotations/instances_<split>.json`` plus the
image files), a COCO panoptic folder (``annotations/panoptic_<split>.json``, its PNGs in ``panoptic_<split>/``, plus
the image files) or (d) a YOLO or Pascal VOC folder (parsed by :mod:`hf_detr.data.formats`), in memory-mapped or
streaming form. COCO's category ids, in any numbering (from 0 or 1, with gaps), become contiguous labels ``0..K-1`` in
increasing id order; :func:`coco_category_ids` reads the original ids back from the split's ``info.description``, and
:func:`coco_isthing` the panoptic categories' ``isthing`` (thing or stuff, which panoptic quality reports apart).

Boxes follow a ``box_policy`` (:func:`apply_box_policy`), the same in every loader: ``"clip"`` (the default) clips a
box that reaches outside its image to the image and drops the boxes that are left without area (entirely outside) or
have none (zero or negative width or height, NaN), ``"drop"`` drops every box that reaches outside its image or has no
area, ``"error"`` raises a ``ValueError`` naming the image and the box. A box reaching at most ``box_tolerance`` pixels
(default 1) outside its image is float slop: it counts as inside under every policy and is kept as written (the image
processor clips it to the image). Each split logs one warning line with what was clipped and dropped, e.g.
``instances_train.json: 412 images, 3 boxes clipped to their image, 2 dropped (1 zero-area, 1 outside the image) by
box_policy='clip'``; DEBUG logging lists every box.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import math
import os
import re
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

import datasets
import numpy as np
import PIL.Image
import torch

from ..modeling.boxes import BoxPolicy, box_flags, check_boxes, clip_boxes, denormalize_boxes
from ..modeling.errors import HfDetrInputError
from .formats import RawSplit, folder_format, read_voc, read_yolo
from .masks import panoptic_rles, segmentation_rle
from .prepared import PreparedRows, content_hash, open_prepared, parallel_chunks

logger = logging.getLogger(__name__)

AnyDataset = datasets.Dataset | datasets.IterableDataset
AnyDatasetDict = datasets.DatasetDict | datasets.IterableDatasetDict

# Keys of the JSON object stored in `info.description` of splits loaded from a COCO folder.
_DESCRIPTION_KEY = "hf_detr.coco_category_ids"
_ISTHING_KEY = "hf_detr.coco_isthing"
# COCO split files are named like `instances_val2017.json`; the Hub names splits train / validation / test.
_SPLIT_ALIASES = {"val": "validation", "valid": "validation"}
# the annotation files of a COCO folder, annotations/<kind>_<split>.json, in the order they are looked for
_COCO_KINDS = ("instances", "panoptic")
# Streamed splits are sharded into chunks of this many images (DataLoader workers and processes take whole shards).
_STREAM_SHARD_SIZE = 1000
# EXIF tag 0x0112; orientations 5-8 store the image transposed (a quarter turn, perhaps mirrored)
_EXIF_ORIENTATION = 0x0112
_QUARTER_TURNS = (5, 6, 7, 8)

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


def coco_detection_features(label_names: Sequence[str], masks: bool = False) -> datasets.Features:
    """The Hub's COCO detection schema with ``label_names`` as the ``objects.category`` class names (in label order);
    with ``masks``, each object also has its ``segmentation`` as a compressed RLE (see the module docstring)."""
    objects = {
        "id": datasets.Value("int64"),
        "area": datasets.Value("float32"),
        "bbox": datasets.Sequence(datasets.Value("float32"), length=4),
        "category": datasets.ClassLabel(names=list(label_names)),
        "iscrowd": datasets.Value("int64"),
    }
    if masks:
        objects["segmentation"] = {
            "size": datasets.Sequence(datasets.Value("int32"), length=2),
            "counts": datasets.Value("string"),
        }
    return datasets.Features(
        {
            "image": datasets.Image(),
            "image_id": datasets.Value("int64"),
            "width": datasets.Value("int32"),
            "height": datasets.Value("int32"),
            "objects": datasets.Sequence(objects),
        }
    )


def id2label(source: datasets.Features | AnyDataset) -> dict[int, str]:
    """``{label: name}`` of the ``objects.category`` ClassLabel, ready for ``HfDetrConfig(id2label=...)``."""
    features = source if isinstance(source, datasets.Features) else source.features
    return dict(enumerate(_category_feature(features, "the given features").names))


def coco_category_ids(dataset: AnyDataset) -> list[int] | None:
    """The original COCO category id of each label (``ids[label]``), or ``None`` if the split did not come from a COCO
    folder. Kept through ``save_to_disk`` / ``load_from_disk`` since it lives in ``dataset.info.description``."""
    return _described(dataset, _DESCRIPTION_KEY)


def coco_isthing(dataset: AnyDataset) -> list[bool] | None:
    """Whether each label is a thing (``True``: countable objects) or stuff (``False``: amorphous regions such as sky),
    from the ``isthing`` of a COCO (panoptic) json's categories (a category without it is a thing); ``None`` if no
    category of the split's json says. Kept through ``save_to_disk`` like :func:`coco_category_ids`."""
    return _described(dataset, _ISTHING_KEY)


def _described(dataset: AnyDataset, key: str) -> Any:
    try:
        stored = json.loads(dataset.info.description or "")
    except json.JSONDecodeError:
        return None
    return stored.get(key) if isinstance(stored, dict) else None


# why a box is dropped, in the order a box with several problems is counted under
_NOT_FINITE, _NEGATIVE, _ZERO_AREA, _OUTSIDE = "not finite", "negative size", "zero-area", "outside the image"
_REASONS = (_NOT_FINITE, _NEGATIVE, _ZERO_AREA, _OUTSIDE)


class BoxChange(NamedTuple):
    """A box a ``box_policy`` clipped or dropped: its position in the input, ``"clipped"`` or why it was dropped
    (``"not finite"``, ``"negative size"``, ``"zero-area"``, ``"outside the image"``) and a line naming the box, e.g.
    ``"instances_train.json: annotation id 3 (image_id 1, 'a.png'): bbox = [70.0, 5.0, 10.0, 10.0] dropped (outside
    the image)"``."""

    index: int
    outcome: str
    message: str


@dataclass
class BoxCounts:
    """How many boxes a ``box_policy`` clipped to their image and dropped (by reason)."""

    clipped: int = 0
    dropped: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, changes: Iterable[BoxChange]) -> BoxCounts:
        counts = cls()
        for change in changes:
            if change.outcome == "clipped":
                counts.clipped += 1
            else:
                counts.dropped[change.outcome] = counts.dropped.get(change.outcome, 0) + 1
        return counts

    def __bool__(self) -> bool:
        return bool(self.clipped or self.dropped)

    def __iadd__(self, other: BoxCounts) -> BoxCounts:
        self.clipped += other.clipped
        for reason, count in other.dropped.items():
            self.dropped[reason] = self.dropped.get(reason, 0) + count
        return self

    @property
    def num_dropped(self) -> int:
        return sum(self.dropped.values())

    @property
    def changed(self) -> int:
        return self.clipped + self.num_dropped

    def summary(self) -> str:
        """E.g. ``"3 boxes clipped to their image, 2 dropped (1 zero-area, 1 outside the image)"``."""
        parts = []
        if self.clipped:
            parts.append(
                f"{self.clipped} {'box' if self.clipped == 1 else 'boxes'} clipped to "
                f"{'its' if self.clipped == 1 else 'their'} image"
            )
        if self.dropped:
            reasons = ", ".join(f"{self.dropped[r]} {r}" for r in _REASONS if r in self.dropped)
            noun = "" if parts else (" box" if self.num_dropped == 1 else " boxes")
            parts.append(f"{self.num_dropped}{noun} dropped ({reasons})")
        return ", ".join(parts) or "no box clipped or dropped"


class BoxPolicyResult(NamedTuple):
    """What :func:`apply_box_policy` keeps: the boxes (float64 ``[k, 4]`` xywh pixels, clipped ones clipped), their
    positions in the input (``[k]`` int64: take every other per-object field with it), their areas, the counts, and
    every box it clipped or dropped (in input order)."""

    boxes: torch.Tensor
    index: torch.Tensor
    areas: torch.Tensor
    counts: BoxCounts
    changes: tuple[BoxChange, ...] = ()


def apply_box_policy(
    boxes: Any,
    name: Callable[[int], str],
    *,
    within: Sequence[float] | Sequence[Sequence[float]],
    policy: BoxPolicy = "clip",
    tolerance: float = 1.0,
    areas: Sequence[float] | None = None,
) -> BoxPolicyResult:
    """Apply ``policy`` to pixel ``[x, y, w, h]`` ``boxes`` of images of ``within`` = (width, height), or ``[n, 2]``
    one per box (see the module docstring).

    What is outside or empty is decided by :func:`hf_detr.modeling.boxes.box_flags`, the flags
    :func:`~hf_detr.modeling.boxes.check_boxes` raises on, so ``"error"`` rejects exactly what ``"clip"`` and ``"drop"``
    change. ``"clip"`` clips with :func:`~hf_detr.modeling.boxes.clip_boxes` the boxes that reach further than
    ``tolerance`` outside their image; a box left without width or height (entirely outside the image, or touching it
    only at an edge) is dropped as outside the image. ``"drop"`` drops those boxes instead. Both drop boxes with a NaN
    or infinite number, a negative width or height, or a zero one (zero-area). ``"error"`` raises the check's
    ``ValueError``, naming the box by ``name(j)``, for every one of these boxes (zero-area included).

    ``areas`` (COCO's ``area``; NaN: not given) are kept for the kept boxes; a clipped box's area shrinks with it (it
    keeps its ratio to the box area, as in a crop of the augmentation, and is at most the clipped box's area); a
    missing area is the (clipped) box area. Input that is not ``[n, 4]`` numbers raises under every policy.
    """
    _check_policy(policy)
    tensor, flags = box_flags(boxes, name, "xywh", within=within, tolerance=tolerance)
    n = len(tensor)
    given = (
        torch.full((n,), float("nan"), dtype=torch.float64)
        if areas is None
        else torch.as_tensor([float("nan") if a is None else float(a) for a in areas], dtype=torch.float64)
    )
    broken = flags.non_finite | flags.empty  # flags.empty includes flags.negative
    bad = broken | flags.outside
    if policy == "error" or not bad.any():  # the common case, every box fine, returns here
        if bad.any():
            try:
                check_boxes(tensor, name, "xywh", positive=True, within=within, tolerance=tolerance)
            except ValueError as error:
                raise HfDetrInputError(
                    f"{error} (box_policy='error'; box_policy='clip', the default, clips boxes to their image and "
                    "drops the ones without area)"
                ) from None
        return BoxPolicyResult(
            tensor, torch.arange(n), torch.where(given.isnan(), _box_areas(tensor), given), BoxCounts()
        )

    # why each box is dropped: 0 kept, else 1 + its position in _REASONS; the first problem of a box decides
    reason = torch.zeros(n, dtype=torch.int64)
    for code, flag in ((3, flags.empty), (2, flags.negative), (1, flags.non_finite)):
        reason[flag] = code
    result = tensor.clone()
    areas_out = torch.where(given.isnan(), _box_areas(tensor), given)
    to_clip = flags.outside & ~broken
    clipped = torch.zeros(n, dtype=torch.bool)
    if policy == "drop":
        reason[to_clip] = 1 + _REASONS.index(_OUTSIDE)
    elif to_clip.any():
        rows = to_clip.nonzero().flatten()
        limits = torch.as_tensor(within, dtype=torch.float64).reshape(-1, 2).expand(n, 2)[rows]
        new = clip_boxes(tensor[rows], "xywh", limits)
        result[rows] = new
        new_area, old_area = _box_areas(new), _box_areas(tensor[rows])
        areas_out[rows] = torch.where(
            given[rows].isnan(), new_area, torch.minimum(given[rows] * new_area / old_area, new_area)
        )
        left_empty = (new[:, 2:] <= 0).any(1)  # entirely outside, or touching the image only at an edge
        reason[rows[left_empty]] = 1 + _REASONS.index(_OUTSIDE)
        clipped[rows[~left_empty]] = True
    keep = reason == 0
    rows = (~keep | clipped).nonzero().flatten()
    changes = tuple(
        BoxChange(j, "clipped", f"{name(j)} = {box} clipped to {new}")
        if code == 0
        else BoxChange(j, _REASONS[code - 1], f"{name(j)} = {box} dropped ({_REASONS[code - 1]})")
        for j, code, box, new in zip(rows.tolist(), reason[rows].tolist(), tensor[rows].tolist(), result[rows].tolist())
    )
    for change in changes:
        logger.debug("%s by box_policy=%r", change.message, policy)
    index = keep.nonzero().flatten()
    return BoxPolicyResult(result[index], index, areas_out[index], BoxCounts.of(changes), changes)


def _box_areas(boxes: torch.Tensor) -> torch.Tensor:
    return boxes[:, 2] * boxes[:, 3]


def _check_policy(box_policy: str) -> None:
    if box_policy not in typing.get_args(BoxPolicy):
        raise HfDetrInputError(f"box_policy={box_policy!r}: choose 'clip' (the default), 'drop' or 'error'.")


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
    """Load a detection data set in the Hub's COCO schema (see the module docstring), with ``masks=True`` the objects'
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

    Every box goes through ``box_policy`` (see the module docstring and :func:`apply_box_policy`): by default a box
    reaching outside its image is clipped to it and a box without area dropped with its object, and one warning line
    per split counts them; ``"error"`` raises a ``ValueError`` naming the split, example, image id and box. A category
    outside the label range is always an error.

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
    if (path / datasets.config.DATASETDICT_JSON_FILENAME).is_file() or (
        path / datasets.config.DATASET_STATE_JSON_FILENAME
    ).is_file():
        return "saved"
    if path.is_dir() and any(any((path / "annotations").glob(f"{kind}_*.json")) for kind in _COCO_KINDS):
        return "coco"
    return folder_format(path) or "hub"


def saved_or_hub_splits(
    source: str | os.PathLike,
    splits: Sequence[str] | None = None,
    *,
    streaming: bool = False,
    **load_dataset_kwargs: Any,
) -> dict[str, AnyDataset]:
    """The splits of a ``save_to_disk`` folder or a ``datasets.load_dataset`` source as stored (not yet conformed to
    the schema nor under a box policy)."""
    path = Path(source)
    if detect_format(path) == "saved":
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.Dataset):
            logger.info("%s holds a single saved Dataset: returning it as split 'train'.", path)
            loaded = datasets.DatasetDict({"train": loaded})
        loaded = _select_splits(loaded, splits, str(path))
        return {name: streamed(ds) for name, ds in loaded.items()} if streaming else loaded
    split_arg = list(splits) if splits is not None else None
    loaded = datasets.load_dataset(str(source), split=split_arg, streaming=streaming, **load_dataset_kwargs)
    return dict(zip(split_arg, loaded)) if split_arg is not None else dict(loaded)


@dataclass
class FolderSplit:
    """One split of a COCO, YOLO or VOC folder, parsed and under the box policy: what :func:`folder_dataset` makes a
    split of, and what ``hf-detr check-data`` reports on."""

    name: str
    source: str  # the file that defines the split, as messages and the summary line name it
    label_names: list[str]
    examples: list[dict[str, Any]]  # image_id, width, height, objects (the kept boxes) and file_name in image_dirs
    image_dirs: tuple[Path, ...]
    changes: tuple[BoxChange, ...]  # what the box policy clipped and dropped
    image_errors: list[str] = field(default_factory=list)  # images that cannot be read (when asked to collect them)
    description: str = ""  # the split's info.description
    masks: bool = False  # the examples carry their objects' masks (COCO: their sources, read by `_coco_rows`)
    png_folder: Path | None = None  # a panoptic split's PNGs (with masks)


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
            for example in split.examples:
                try:
                    _checked_image(example, split.image_dirs, split.source)
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


def _raw_split(
    name: str, raw: RawSplit, label_names: list[str], policy: BoxPolicy, tolerance: float, collect: bool
) -> FolderSplit:
    """A YOLO or VOC split under the box policy: each image's size read from its file, boxes in pixels."""
    if raw.missing and not collect:
        more = f" ({len(raw.missing) - 1} more)" if len(raw.missing) > 1 else ""
        raise HfDetrInputError(raw.missing[0] + more)
    split = FolderSplit(name, raw.source, label_names, [], (raw.root,), (), list(raw.missing))
    found = []  # (example, box position in the image)
    boxes, names = [], []
    for image_id, image in enumerate(raw.images):
        example = {
            "file_name": image.file_name,
            "image_id": image_id,
            "width": image.width,
            "height": image.height,
            "objects": {"id": [], "area": [], "bbox": [], "category": [], "iscrowd": []},
        }
        try:
            _, example["width"], example["height"] = _checked_image(example, split.image_dirs, raw.source, "the XML")
        except ValueError as error:
            if not collect:
                raise
            split.image_errors.append(str(error))
            if raw.box_format == "cxcywh" or example["width"] is None:  # boxes without their frame
                continue
        if raw.box_format == "cxcywh" and image.boxes:
            # YOLO's fractions of the image -> pixels, as the model's outputs are
            pixels = denormalize_boxes(
                torch.tensor(image.boxes, dtype=torch.float64), "xywh", (example["height"], example["width"])
            )
            boxes += pixels.tolist()
        else:
            boxes += image.boxes
        names += image.names
        found += [(example, j) for j in range(len(image.boxes))]
        split.examples.append(example)
    kept = apply_box_policy(
        boxes,
        lambda k: names[k],
        within=[(e["width"], e["height"]) for e, _ in found],
        policy=policy,
        tolerance=tolerance,
    )
    for k, bbox, area in zip(kept.index.tolist(), kept.boxes.tolist(), kept.areas.tolist()):
        example, j = found[k]
        image = raw.images[example["image_id"]]
        objects = example["objects"]
        objects["id"].append(k + 1)  # the object's position in the split
        objects["area"].append(area)
        objects["bbox"].append(bbox)
        objects["category"].append(image.categories[j])
        objects["iscrowd"].append(image.iscrowd[j])
    split.changes = kept.changes
    if kept.counts:
        logger.warning(_policy_line(raw.source, len(raw.images), kept.counts, policy))
    return split


def folder_dataset(split: FolderSplit) -> datasets.Dataset:
    """The ``Dataset`` of a folder split, each image file (and with masks each mask) checked (see
    :func:`load_coco_folder`)."""
    features = coco_detection_features(split.label_names, masks=split.masks)
    columns: dict[str, list] = {column: [] for column in features}
    for row in _coco_rows(split.examples, split.image_dirs, split.source, split.png_folder):
        for column, value in row.items():
            columns[column].append(value)
    info = datasets.DatasetInfo(description=split.description, features=features)
    return datasets.Dataset.from_dict(columns, features=features, info=info, split=split.name)


def load_coco_folder(
    root: str | os.PathLike,
    *,
    splits: Sequence[str] | None = None,
    streaming: bool = False,
    box_policy: BoxPolicy = "clip",
    box_tolerance: float = 1.0,
    masks: bool = False,
    annotations: Literal["instances", "panoptic"] | None = None,
    num_proc: int | None = None,
    decode: bool = True,
) -> AnyDatasetDict:
    """Load a COCO-format folder: ``annotations/instances_<split>.json`` (or ``annotations/panoptic_<split>.json``)
    plus the image files.

    Split names come from the file names with a trailing year removed and ``val`` spelled ``validation``
    (``instances_val2017.json`` -> ``"validation"``). Images are looked up by their ``file_name`` under, in order,
    ``<split>/``, ``images/<split>/``, ``<split without year>2017/``, ``images/`` and the root itself, where ``<split>``
    is the name in the json file name. ``annotations`` chooses the instances or the panoptic jsons; by default the
    instances ones, and the panoptic ones in a folder without instances jsons.

    A panoptic json (COCO's panoptic format: ``annotations`` holds one ``{"image_id", "file_name", "segments_info":
    [{"id", "category_id", "bbox", "area", "iscrowd"}, ...]}`` per image) gives one object per segment, with its
    segment ``id``, category, ``bbox`` (required), area and iscrowd; its categories' ``isthing`` is kept for
    :func:`coco_isthing`. With ``masks=True`` the segments' masks are read from the PNG named by ``file_name`` (segment
    id R + 256 G + 256^2 B) in ``annotations/panoptic_<split>/`` or ``panoptic_<split>/``; of an instances json, each
    annotation's ``segmentation`` (polygons, or an RLE as COCO gives crowd annotations) is read. Both become compressed
    RLEs (see :mod:`hf_detr.data.masks`), checked as the image files are.

    Categories are sorted by COCO id and numbered ``0..K-1``; the names become the ``ClassLabel`` and
    :func:`coco_category_ids` returns the COCO ids. Every split must list the same categories. Crowd annotations are
    kept with ``iscrowd=1``; images without annotations are kept with empty ``objects``. A missing ``area`` is the box
    area, a missing ``iscrowd`` 0, a missing annotation ``id`` its 1-based position in the json.

    Boxes follow ``box_policy`` (see the module docstring): with ``"clip"`` (default) or ``"drop"`` an annotation whose
    box is dropped is left out (its id, category, area, iscrowd and mask with it), and one warning line per json counts
    the clipped and dropped boxes. An image's size is its upright size: a file with EXIF orientation 5-8 (a quarter
    turn) is compared with the json's ``width``/``height`` transposed, as annotation tools and ``datasets.Image`` see
    it.

    Raises ``ValueError`` naming the json file, annotation id, image id and file for: an annotation whose
    ``category_id`` is not in ``categories`` or whose ``image_id`` is not in ``images``; a bbox that is not 4 numbers;
    with ``box_policy="error"``, a bbox that is NaN, has a zero or negative width or height, or reaches more than
    ``box_tolerance`` pixels outside its image; an image file that is missing, is not a readable image, or whose size
    differs from the json's ``width``/``height``; with ``masks=True``, a mask whose size differs from its image, a
    polygon reaching more than a pixel outside it, an RLE that does not decode, a panoptic PNG of another size or with
    segment ids ``segments_info`` does not list, a missing folder of PNGs. Everything is checked once, when the split
    is prepared (see :func:`load_detection_dataset`); with ``box_policy="drop"`` a missing or unreadable image is left
    out instead and counted in the split's warning line. ``num_proc`` and ``decode``: see
    :func:`load_detection_dataset`.
    """
    _check_policy(box_policy)
    if annotations not in (None, *_COCO_KINDS):
        raise HfDetrInputError(
            f"annotations={annotations!r}: choose 'instances', 'panoptic' or None (whichever is there)."
        )
    root = Path(root)
    kind, files = _coco_files(root, splits, annotations)
    result: dict[str, datasets.Dataset] = {}
    for name, file in files.items():
        # the json's content, not its name or date, says whether the prepared split is still the json's
        key = {
            "source": "coco",
            "file": str(file.resolve()),
            "sha256": content_hash(file),
            "policy": box_policy,
            "tolerance": box_tolerance,
            "masks": masks,
        }
        prepare = functools.partial(
            _prepare_coco_split, root, name, file, kind, box_policy, box_tolerance, masks, num_proc
        )
        # an image file gone since the split was prepared: "drop" prepares it again without it, else an error
        stale = (lambda split: bool(_missing_images(split))) if box_policy == "drop" else None
        result[name] = open_prepared(key, name, prepare, stale)
        missing = _missing_images(result[name])
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise HfDetrInputError(
                f"{file.name}: image file {missing[0]}{more} is missing, though it was there when the split was "
                "prepared; restore it, or load with box_policy='drop' to leave out the images that are missing."
            )
    _check_same_categories(
        [
            (file.name, coco_category_ids(result[name]), list(id2label(result[name]).values()))
            for name, file in files.items()
        ]
    )
    if streaming:  # the prepared split holds paths, not pixels: it fits on any disk
        return datasets.IterableDatasetDict({name: streamed(split, decode) for name, split in result.items()})
    return datasets.DatasetDict(result)


def _missing_images(split: datasets.Dataset) -> list[str]:
    """The image paths of a prepared COCO split that are no file now (an existence check: ~3 us an image)."""
    paths = split.data.column("image").combine_chunks().field("path").to_pylist()
    return [path for path in paths if not os.path.isfile(path)]


def streamed(split: datasets.Dataset, decode: bool = True) -> datasets.IterableDataset:
    """A map-style split read as a stream, in shards of about 1,000 examples (which processes and DataLoader workers
    share out), its ``info.description`` (COCO category ids) kept; ``decode=False``: its images left undecoded."""
    stream = split.to_iterable_dataset(num_shards=max(1, min(len(split), math.ceil(len(split) / _STREAM_SHARD_SIZE))))
    stream.info.description = split.info.description
    if split.split is not None:  # its size, which an epoch count of a streamed training needs
        name = str(split.split)
        stream.info.splits = datasets.SplitDict({name: datasets.SplitInfo(name=name, num_examples=len(split))})
    return stream if decode else stream.decode(False)


def _prepare_coco_split(
    root: Path,
    name: str,
    file: Path,
    kind: str,
    policy: BoxPolicy,
    tolerance: float,
    masks: bool,
    num_proc: int | None,
) -> PreparedRows:
    """The rows of one COCO json for :func:`open_prepared`: parsed here, image files checked and masks encoded in
    chunks (in parallel at scale). With ``policy="drop"`` a missing or unreadable image is left out and counted."""
    split = _coco_split(root, name, file, kind, policy, tolerance, masks)
    examples = split.examples
    skipped: list[str] = []

    def chunk(start: int, stop: int) -> list[dict | str]:
        return list(
            _coco_rows(
                examples[start:stop], split.image_dirs, split.source, split.png_folder, skip_missing=policy == "drop"
            )
        )

    def rows() -> Iterator[dict]:
        for part in parallel_chunks(chunk, len(examples), num_proc):
            for row in part:
                if isinstance(row, str):  # a skipped image's message
                    skipped.append(row)
                    logger.debug("%s: left out by box_policy='drop'", row)
                else:
                    yield row

    def summary() -> str | None:
        counts = BoxCounts.of(split.changes)
        line = _policy_line(split.source, len(examples), counts, policy) if counts else None
        if skipped:
            line = (f"{line}; " if line else f"{split.source}: ") + (
                f"{len(skipped)} of {len(examples)} images left out (missing or unreadable) by box_policy='drop', "
                f"the first: {skipped[0]}"
            )
        return line

    features = coco_detection_features(split.label_names, masks=masks)
    return PreparedRows(features, split.description, rows(), summary)


def _policy_line(source: str, examples: int, counts: BoxCounts, policy: BoxPolicy, unit: str = "images") -> str:
    """The one warning line per split of what the box policy changed."""
    return f"{source}: {examples} {unit}, {counts.summary()} by box_policy={policy!r}"


def _check_same_categories(splits: list[tuple[str, list[int], list[str]]]) -> None:
    """Every split of a COCO folder (its json's name, category ids and names) must list the same categories."""
    reference = None
    for file_name, category_ids, label_names in splits:
        categories = list(zip(category_ids, label_names))
        if reference is not None and categories != reference[1]:
            raise HfDetrInputError(
                f"{file_name} lists categories {categories} but {reference[0]} lists {reference[1]}; every split must "
                "share one category list."
            )
        reference = (file_name, categories)


def _coco_splits(
    root: Path,
    splits: Sequence[str] | None,
    policy: BoxPolicy,
    tolerance: float,
    masks: bool = False,
    kind: str | None = None,
) -> list[FolderSplit]:
    """The parsed splits of a COCO folder (see :func:`load_coco_folder`), not prepared nor cached (``hf-detr
    check-data`` reports on them); image files are not opened."""
    kind, files = _coco_files(root, splits, kind)
    parsed = [_coco_split(root, name, file, kind, policy, tolerance, masks) for name, file in files.items()]
    _check_same_categories(
        [(split.source, json.loads(split.description)[_DESCRIPTION_KEY], split.label_names) for split in parsed]
    )
    return parsed


def _coco_files(root: Path, splits: Sequence[str] | None, kind: str | None) -> tuple[str, dict[str, Path]]:
    """The ``kind`` of json a COCO folder is read from (default: the first of :data:`_COCO_KINDS` it has) and its
    json file of each split."""
    found = {k: sorted((root / "annotations").glob(f"{k}_*.json")) for k in _COCO_KINDS}
    kind = kind or next((k for k in _COCO_KINDS if found[k]), _COCO_KINDS[0])
    files = found[kind]
    if not files:
        raise HfDetrInputError(f"{root} is not a COCO folder: no annotations/{kind}_<split>.json file found.")
    prefix = f"{kind}_"
    by_split: dict[str, Path] = {}
    for file in files:
        name = _split_name(file.stem[len(prefix) :])
        if name in by_split:
            raise HfDetrInputError(
                f"{by_split[name].name} and {file.name} both give split '{name}' in {root / 'annotations'}; "
                "keep one of them."
            )
        by_split[name] = file
    return kind, _select_splits(by_split, splits, str(root))


def _coco_split(
    root: Path, name: str, file: Path, kind: str, policy: BoxPolicy, tolerance: float, masks: bool
) -> FolderSplit:
    """One json of a COCO folder parsed and under the box policy."""
    label_names, category_ids, isthing, examples, changes = _read_coco_json(str(file), tolerance, policy, masks)
    raw_split = file.stem[len(kind) + 1 :]
    stored: dict[str, Any] = {_DESCRIPTION_KEY: category_ids, "annotation_file": str(file)}
    if isthing is not None:
        stored[_ISTHING_KEY] = isthing
    png_folder = _png_folder(root, raw_split, file) if masks and kind == "panoptic" else None
    return FolderSplit(
        name,
        file.name,
        label_names,
        examples,
        tuple(dict.fromkeys(_image_dirs(root, raw_split))),
        changes,
        description=json.dumps(stored),
        masks=masks,
        png_folder=png_folder,
    )


def _png_folder(root: Path, raw_split: str, file: Path) -> Path:
    """The folder of a panoptic split's PNGs: ``annotations/panoptic_<split>/`` (where COCO puts it) or
    ``panoptic_<split>/``."""
    candidates = [root / "annotations" / f"panoptic_{raw_split}", root / f"panoptic_{raw_split}"]
    folder = next((c for c in candidates if c.is_dir()), None)
    if folder is None:
        raise HfDetrInputError(
            f"{file.name}: no folder of panoptic PNGs, which masks=True reads; looked for "
            f"{[str(c) for c in candidates]}."
        )
    return folder


# ---------------------------------------------------------------------------------------------------------------------
# COCO folders


def _without_year(raw_split: str) -> str:
    """``"val2017"`` -> ``"val"``."""
    return re.sub(r"\d{4}$", "", raw_split) or raw_split


def _split_name(raw_split: str) -> str:
    base = _without_year(raw_split)
    return _SPLIT_ALIASES.get(base, base)


def _image_dirs(root: Path, raw_split: str) -> list[Path]:
    year_folder = root / f"{_without_year(raw_split)}2017"
    return [root / raw_split, root / "images" / raw_split, year_folder, root / "images", root]


def _read_coco_json(
    path: str, tolerance: float, policy: BoxPolicy = "clip", masks: bool = False
) -> tuple[list[str], list[int], list[bool] | None, list[dict[str, Any]], tuple[BoxChange, ...]]:
    """Parse and check one instances or panoptic (``panoptic_*.json``) json, its boxes under ``policy``. Returns the
    label names, their COCO ids, their ``isthing`` (``None`` if no category has one), one example dict per image
    (``objects`` filled, ``file_name`` in place of ``image``; with ``masks``, ``_masks``: the source of each kept
    object's mask, and of a panoptic image ``_panoptic``: its annotation, both read by :func:`_coco_rows`) and what the
    policy changed (the caller sums it up)."""
    file = Path(path)
    try:
        coco = json.loads(file.read_bytes(), object_hook=_compact_polygons if masks else _without_masks)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise HfDetrInputError(f"{file}: cannot read the annotation file as JSON ({error}).") from error
    for key in ("images", "categories"):
        if not isinstance(coco.get(key), list):
            raise HfDetrInputError(
                f"{file.name}: the top-level `{key}` list is missing; a COCO instances file needs it."
            )

    categories: dict[int, dict[str, Any]] = {}
    for i, category in enumerate(coco["categories"]):
        if not isinstance(category.get("id"), int) or not isinstance(category.get("name"), str):
            raise HfDetrInputError(
                f"{file.name}: categories[{i}] = {category!r} needs an integer `id` and a string `name`."
            )
        if category["id"] in categories:
            raise HfDetrInputError(f"{file.name}: category id {category['id']} appears twice in `categories`.")
        categories[category["id"]] = category
    category_ids = sorted(categories)
    label_names = [categories[c]["name"] for c in category_ids]
    if len(set(label_names)) != len(label_names):
        raise HfDetrInputError(f"{file.name}: category names {label_names} repeat; ClassLabel names must be unique.")
    label_of = {c: label for label, c in enumerate(category_ids)}
    isthing = None
    if any("isthing" in category for category in categories.values()):
        isthing = [bool(categories[c].get("isthing", True)) for c in category_ids]

    examples: dict[int, dict[str, Any]] = {}
    for i, image in enumerate(coco["images"]):
        missing = [key for key in ("id", "file_name", "width", "height") if key not in image]
        if missing:
            raise HfDetrInputError(f"{file.name}: images[{i}] has no {missing}; every COCO image needs them.")
        if image["id"] in examples:
            raise HfDetrInputError(f"{file.name}: image id {image['id']} appears twice in `images`.")
        examples[image["id"]] = {
            "file_name": image["file_name"],
            "image_id": image["id"],
            "width": image["width"],
            "height": image["height"],
            "objects": {"id": [], "area": [], "bbox": [], "category": [], "iscrowd": []},
        }
        if masks:
            examples[image["id"]]["_masks"] = []

    def named(what: str, image: dict[str, Any]) -> str:
        return f"{file.name}: {what} (image_id {image['image_id']}, '{image['file_name']}')"

    def image_of(what: str, image_id: Any) -> dict[str, Any]:
        if image_id not in examples:
            raise HfDetrInputError(f"{file.name}: {what} refers to image_id {image_id!r}, which is not in `images`.")
        return examples[image_id]

    # (object id, its annotation or segment, its image, its name in messages, the source of its mask)
    found: list[tuple[Any, Mapping[str, Any], dict[str, Any], str, Any]] = []
    if file.name.startswith("panoptic_"):  # one annotation per image, one object per segment
        for position, annotation in enumerate(coco.get("annotations", [])):
            image = image_of(f"annotations[{position}]", annotation.get("image_id"))
            segments = annotation.get("segments_info")
            if not isinstance(segments, list):
                raise HfDetrInputError(
                    f"{named(f'annotations[{position}]', image)}: `segments_info` must be a list of "
                    f"segments, got {segments!r:.80}."
                )
            if "_panoptic" in image:
                raise HfDetrInputError(
                    f"{named(f'annotations[{position}]', image)}: a second annotation of the image; a "
                    "panoptic json has one per image."
                )
            if masks:
                image["_panoptic"] = annotation
            for j, segment in enumerate(segments):
                name = named(f"annotations[{position}] segments_info[{j}]", image)
                if not isinstance(segment, dict) or not isinstance(segment.get("id"), int):
                    raise HfDetrInputError(f"{name}: a segment needs an integer `id`, got {segment!r:.80}.")
                found.append((segment["id"], segment, image, f"{name} (segment id {segment['id']})", j))
    else:
        for position, annotation in enumerate(coco.get("annotations", []), start=1):
            annotation_id = annotation.get("id", position)
            image = image_of(f"annotation id {annotation_id}", annotation.get("image_id"))
            found.append(
                (
                    annotation_id,
                    annotation,
                    image,
                    named(f"annotation id {annotation_id}", image),
                    annotation.get("segmentation"),
                )
            )
    for _, record, _, name, _ in found:
        if record.get("category_id") not in label_of:
            raise HfDetrInputError(
                f"{name}: category_id {record.get('category_id')!r} is not in `categories` (ids {category_ids}); add "
                "the category or fix the annotation."
            )
    # all boxes in one call: one call per annotation would be slow on COCO's ~900k
    kept = apply_box_policy(
        [record.get("bbox") for _, record, _, _, _ in found],
        lambda k: f"{found[k][3]}: bbox",
        within=[(image["width"], image["height"]) for _, _, image, _, _ in found],
        policy=policy,
        tolerance=tolerance,
        areas=[record.get("area") for _, record, _, _, _ in found],
    )

    num_crowd = 0
    for k, bbox, area in zip(kept.index.tolist(), kept.boxes.tolist(), kept.areas.tolist()):
        object_id, record, image, _, mask_source = found[k]
        iscrowd = int(record.get("iscrowd", 0))
        num_crowd += iscrowd
        objects = image["objects"]
        objects["id"].append(object_id)
        objects["area"].append(area)
        objects["bbox"].append(bbox)
        objects["category"].append(label_of[record["category_id"]])
        objects["iscrowd"].append(iscrowd)
        if masks:
            image["_masks"].append(mask_source)

    empty = sum(not e["objects"]["id"] for e in examples.values())
    logger.info(
        "%s: %d images (%d without objects), %d annotations (%d crowd), %d categories.",
        file.name,
        len(examples),
        empty,
        sum(len(e["objects"]["id"]) for e in examples.values()),
        num_crowd,
        len(categories),
    )
    return label_names, category_ids, isthing, list(examples.values()), kept.changes


def _compact_polygons(record: dict[str, Any]) -> dict[str, Any]:
    """``json.loads`` hook: an annotation's polygons as float64 arrays, each made as soon as its list is parsed. A
    coordinate then takes 8 bytes instead of a list slot and a float object (40): a third of what COCO's train2017
    json parses to."""
    polygons = record.get("segmentation")
    if isinstance(polygons, list) and all(isinstance(p, list) for p in polygons):
        try:
            record["segmentation"] = [np.array(p, dtype=np.float64) for p in polygons]
        except (TypeError, ValueError):  # not numbers: left as written, for the check to name
            pass
    return record


def _without_masks(record: dict[str, Any]) -> dict[str, Any]:
    """``json.loads`` hook without masks: an annotation's ``segmentation`` dropped as soon as it is parsed (COCO's
    polygons are most of what train2017's json parses to)."""
    record.pop("segmentation", None)
    return record


def _coco_rows(
    examples: list[dict[str, Any]],
    image_dirs: tuple[Path, ...],
    json_name: str,
    png_folder: Path | None = None,
    skip_missing: bool = False,
) -> Iterator[dict | str]:
    """Yield schema rows for parsed images, checking each image file (and each mask the examples carry) on the way.
    ``skip_missing``: a missing or unreadable image yields its error message instead of raising it."""
    for example in examples:
        try:
            path = _checked_image(example, image_dirs, json_name)[0]
        except ValueError as error:
            if not skip_missing:
                raise
            yield str(error)
            continue
        row = {"image": str(path)}
        row.update((key, value) for key, value in example.items() if key != "file_name" and not key.startswith("_"))
        if "_masks" in example:
            row["objects"] = {**example["objects"], "segmentation": _example_masks(example, json_name, png_folder)}
        yield row


def _example_masks(example: dict[str, Any], json_name: str, png_folder: Path | None) -> list[dict[str, Any]]:
    """The stored masks of a parsed example's kept objects: segments of its panoptic PNG, or its annotations'
    ``segmentation``, each checked against the image."""
    size = (example["height"], example["width"])
    if "_panoptic" in example:  # every panoptic image is decoded, also one whose segments were all dropped
        where = f"{json_name}: image '{example['file_name']}'"
        return panoptic_rles(example["_panoptic"], where, size, png_folder, example["_masks"])
    return [
        segmentation_rle(
            source,
            f"{json_name}: annotation id {object_id} (image_id {example['image_id']}, "
            f"'{example['file_name']}'): segmentation",
            size,
        )
        for object_id, source in zip(example["objects"]["id"], example["_masks"])
    ]


def _checked_image(
    example: dict[str, Any], image_dirs: Sequence[Path], source: str, declared_by: str = "the json"
) -> tuple[Path, int, int]:
    """The path of an example's image file and its upright (width, height), which must be the example's unless that is
    ``None``; a ``ValueError`` naming ``source``, the image id and the file otherwise."""
    file_name = example["file_name"]
    where = f"{source}: image_id {example['image_id']} ('{file_name}')"
    path = next((d / file_name for d in image_dirs if (d / file_name).is_file()), None)
    if path is None:
        raise HfDetrInputError(f"{where}: image file not found; looked in {[str(d) for d in image_dirs]}.")
    width, height = checked_image_size(path, where, example["width"], example["height"], declared_by)
    return path, width, height


def checked_image_size(
    file: str | os.PathLike | typing.BinaryIO,
    where: str,
    width: int | None = None,
    height: int | None = None,
    declared_by: str = "the json",
) -> tuple[int, int]:
    """The upright (width, height) of an image file (what ``datasets.Image`` decodes: EXIF quarter turns applied), read
    from its header; a ``ValueError`` starting with ``where`` if it is not a readable image or its size is not the
    given ``width`` x ``height`` (``None``: not checked)."""
    shown = file if isinstance(file, (str, os.PathLike)) else "the image"
    try:
        with PIL.Image.open(file) as image:
            size = image.size
            orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
    except (OSError, PIL.UnidentifiedImageError) as error:
        raise HfDetrInputError(f"{where}: {shown} is not a readable image ({error}).") from error
    upright = ""
    if orientation in _QUARTER_TURNS:  # stored on its side: the upright image (what datasets.Image decodes) is turned
        size = size[::-1]
        upright = f" upright (EXIF orientation {orientation}; stored as {size[1]}x{size[0]})"
    if width is not None and size != (width, height):
        raise HfDetrInputError(
            f"{where}: {shown} is {size[0]}x{size[1]} pixels{upright} but {declared_by} says width={width}, "
            f"height={height}; boxes would be in the wrong frame."
        )
    return size


# ---------------------------------------------------------------------------------------------------------------------
# Checks and conversion shared by every source


def _category_feature(features: datasets.Features, where: str) -> datasets.ClassLabel:
    objects = features.get("objects")
    fields = _object_fields(objects)
    category = fields.get("category") if fields is not None else None
    if not isinstance(category, datasets.ClassLabel):
        raise HfDetrInputError(
            f"{where}: `objects.category` must be a datasets.ClassLabel so that labels have names, got "
            f"{category!r}; cast it first, e.g. ds.cast_column('objects', ...) with ClassLabel(names=[...])."
        )
    return category


def _object_fields(objects: Any) -> dict[str, Any] | None:
    """The per-object feature of each ``objects`` field, for a struct of lists or a list of structs."""
    if isinstance(objects, dict):
        return {
            key: value.feature if isinstance(value, (datasets.List, datasets.LargeList)) else value
            for key, value in objects.items()
        }
    if isinstance(objects, (datasets.List, datasets.LargeList)) and isinstance(objects.feature, dict):
        return dict(objects.feature)
    return None


def _select_splits(loaded: Mapping[str, Any], splits: Sequence[str] | None, source: str) -> dict[str, Any]:
    if splits is None:
        return dict(loaded)
    unknown = [name for name in splits if name not in loaded]
    if unknown:
        raise HfDetrInputError(f"{source} has no split {unknown}; available splits: {list(loaded)}.")
    return {name: loaded[name] for name in splits}


class SplitConformer:
    """Brings the examples of a Hub or ``save_to_disk`` split to :func:`coco_detection_features` (see
    :func:`load_detection_dataset`) under the box policy: checks the split's features and logs what it drops at
    construction, then ``conformer(example, index)`` gives one example's ``image_id``, ``width``, ``height`` and
    ``objects`` (with ``masks``, each object's ``segmentation`` as the stored RLE, checked against its image). The one
    conversion of a streamed split (``IterableDataset.map``), a prepared one (:meth:`rows`) and ``hf-detr check-data``.
    A class, not a closure, so that DataLoader workers can unpickle a streamed split's ``map``.

    ``counts`` / ``changes``: what the policy clipped and dropped (see :class:`_ExampleChecker`)."""

    def __init__(
        self,
        features: datasets.Features | None,
        split: str,
        tolerance: float = 1.0,
        policy: BoxPolicy = "clip",
        masks: bool = False,
        streamed: bool = False,
        changes: list[BoxChange] | None = None,
    ) -> None:
        where = f"split '{split}'"
        if features is None:
            raise HfDetrInputError(
                f"{where}: the streamed data set declares no features, so its label names are unknown; load it with "
                "streaming=False, or give the dataset card a `dataset_info.features` section."
            )
        if not isinstance(features.get("image"), datasets.Image):
            raise HfDetrInputError(
                f"{where}: needs an `image` column of type datasets.Image, got {features.get('image')!r}."
            )
        fields = _object_fields(features.get("objects"))
        missing = [key for key in ("bbox", "category") if fields is None or key not in fields]
        if missing:
            raise HfDetrInputError(
                f"{where}: `objects` needs the fields {missing} (Hub COCO schema), got {features.get('objects')!r}."
            )
        label_names = _category_feature(features, where).names
        if masks and "segmentation" not in fields:
            raise HfDetrInputError(
                f"{where}: `objects` has no `segmentation` field, which masks=True reads (COCO polygons or an RLE per "
                "object); load with masks=False for the boxes only."
            )
        self.where, self.masks = where, masks
        self.target = coco_detection_features(label_names, masks=masks)
        self.extra = [column for column in features if column not in self.target]
        if self.extra:
            logger.warning("%s: dropping columns %s, not in the COCO detection schema.", where, self.extra)
        self.has_ids, self.has_sizes = "image_id" in features, "width" in features and "height" in features
        if not self.has_ids:
            logger.warning("%s: no `image_id` column; using the row index.", where)
        if not self.has_sizes:
            logger.warning("%s: no `width`/`height` columns; reading them from the images.", where)
        extra_fields = sorted(set(fields) - set(self.target["objects"]) - {"bbox_id"})
        if extra_fields:
            keep = " (masks=True keeps `segmentation`)" if "segmentation" in extra_fields else ""
            logger.warning(
                "%s: dropping object fields %s, not in the COCO detection schema%s.", where, extra_fields, keep
            )
        if "id" not in fields and "bbox_id" not in fields:
            logger.warning("%s: no `objects.id`; every object gets id -1.", where)
        # the columns an example is conformed from: the image only for a split without sizes (its header is read)
        self.columns = [
            "objects",
            *(["image_id"] if self.has_ids else []),
            *(["width", "height"] if self.has_sizes else ["image"]),
        ]
        self.checker = _ExampleChecker(where, len(label_names), tolerance, policy, streamed=streamed, changes=changes)

    @property
    def counts(self) -> BoxCounts:
        return self.checker.counts

    def __call__(self, example: Mapping[str, Any], index: int) -> dict[str, Any]:
        image_id = example["image_id"] if self.has_ids else index
        if self.has_sizes:
            width, height = example["width"], example["height"]
        else:
            width, height = _image_size(example["image"], f"{self.where} example {index} (image_id {image_id})")
        objects = _struct_of_lists(example["objects"])
        conformed = _conform_objects(objects)
        if self.masks:
            where = f"{self.where} example {index} (image_id {image_id})"
            sources = objects.get("segmentation", [])
            if len(sources) != len(conformed["bbox"]):
                raise HfDetrInputError(
                    f"{where}: {len(sources)} `objects.segmentation` for {len(conformed['bbox'])} boxes; "
                    "every object needs its mask."
                )
            conformed["segmentation"] = [
                segmentation_rle(source, f"{where} object {j}: segmentation", (height, width))
                for j, source in enumerate(sources)
            ]
        kept = self.checker(image_id, width, height, conformed, index)
        return {"image_id": image_id, "width": width, "height": height, "objects": kept.get("objects", conformed)}

    def rows(self, dataset: datasets.Dataset, start: int = 0, stop: int | None = None) -> Iterator[dict[str, Any]]:
        """The conformed examples ``start:stop`` of a map-style split, its images not decoded."""
        part = dataset.select_columns(self.columns)
        if "image" in self.columns:
            part = part.cast_column("image", datasets.Image(decode=False))
        stop = len(part) if stop is None else stop
        for index, example in enumerate(part.select(range(start, stop)), start=start):
            yield self(example, index)


def _image_size(
    image: Any, where: str, width: int | None = None, height: int | None = None, declared_by: str = "the json"
) -> tuple[int, int]:
    """The upright (width, height) of a decoded image, or of an undecoded one's bytes or path (its header only,
    checked against ``width`` x ``height`` when given, see :func:`checked_image_size`)."""
    if hasattr(image, "size") and hasattr(image, "mode"):  # decoded: datasets.Image applied the EXIF turn already
        return image.size
    file = io.BytesIO(image["bytes"]) if image and image.get("bytes") else (image or {}).get("path")
    if file is None:
        raise HfDetrInputError(f"{where}: no image (neither bytes nor a path).")
    return checked_image_size(file, where, width, height, declared_by)


def _conform(
    dataset: AnyDataset,
    split: str,
    tolerance: float,
    policy: BoxPolicy = "clip",
    masks: bool = False,
    num_proc: int | None = None,
    decode: bool = True,
) -> AnyDataset:
    """A Hub or ``save_to_disk`` split in the schema under the box policy (see :func:`load_detection_dataset`): a
    streamed one conformed lazily, as it is read; a map-style one prepared once into the cache (:func:`open_prepared`:
    the conformed columns only), its image column joined back unchanged, never copied."""
    streamed = isinstance(dataset, datasets.IterableDataset)
    conformer = SplitConformer(dataset.features, split, tolerance, policy, masks=masks, streamed=streamed)
    if streamed:
        # a map decodes every image it is handed, whatever is decided downstream: undecoded, nothing is read of them
        source = dataset if decode else dataset.decode(False)
        # the features must be given: IterableDataset.map otherwise forgets them
        return source.map(conformer, with_indices=True, features=conformer.target, remove_columns=conformer.extra)
    files = [Path(f["filename"]) for f in dataset.cache_files]
    key = {
        "source": "datasets",
        "fingerprint": dataset._fingerprint,
        "split": split,
        "policy": policy,
        "tolerance": tolerance,
        "masks": masks,
        "files": [(str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files],
    }
    columns = datasets.Features({k: v for k, v in conformer.target.items() if k != "image"})

    def prepare() -> PreparedRows:
        def chunk(start: int, stop: int) -> tuple[list[dict], BoxCounts]:
            conformer.checker.counts = BoxCounts()  # this chunk's alone: a forked worker runs several
            rows = list(conformer.rows(dataset, start, stop))
            return rows, conformer.counts  # a forked worker's counts travel back with its rows

        counts = BoxCounts()

        def rows() -> Iterator[dict]:
            for part, part_counts in parallel_chunks(chunk, len(dataset), num_proc):
                counts.__iadd__(part_counts)
                yield from part

        return PreparedRows(
            columns,
            dataset.info.description or "",
            rows(),
            lambda: _policy_line(conformer.where, len(dataset), counts, policy, "examples") if counts else None,
        )

    prepared = open_prepared(key, split, prepare)
    joined = datasets.concatenate_datasets([dataset.select_columns(["image"]), prepared], axis=1)
    joined.info.description = dataset.info.description
    return joined


def _conform_objects(objects: Any) -> dict[str, Any]:
    """Fill the lossless defaults of one example's ``objects`` (see :func:`load_detection_dataset`). Values get their
    schema's Python type here because ``IterableDataset.map(features=...)`` labels the features without casting."""
    objects = _struct_of_lists(objects)
    boxes = [[float(v) for v in box] for box in objects.get("bbox", [])]
    return {
        "id": [int(i) for i in objects.get("id", objects.get("bbox_id", [-1] * len(boxes)))],
        "area": [float(a) for a in objects.get("area", [w * h for _, _, w, h in boxes])],
        "bbox": boxes,
        "category": objects.get("category", []),
        "iscrowd": [int(c) for c in objects.get("iscrowd", [0] * len(boxes))],
    }


def _struct_of_lists(objects: Any) -> dict[str, list]:
    """One example's ``objects`` as a dict of per-object lists (also when stored as a list of structs)."""
    if isinstance(objects, list):
        return {key: [o[key] for o in objects] for key in (objects[0] if objects else ())}
    return objects


class _ExampleChecker:
    """Apply the box policy to one example's objects (``{}`` if nothing changes, else ``{"objects": kept}``) and raise
    on a category outside ``0..num_labels-1``. Counts what it clipped and dropped in ``counts``; ``streamed``: logs the
    running counts each time they reach 1, 2, 4, ... changed boxes; ``changes``: a list it appends every clipped or
    dropped box to. A class (not a closure) so that ``IterableDataset.map`` can pickle it for DataLoader workers."""

    def __init__(
        self,
        where: str,
        num_labels: int,
        tolerance: float,
        policy: BoxPolicy = "clip",
        streamed: bool = False,
        changes: list[BoxChange] | None = None,
    ) -> None:
        self.where, self.num_labels, self.tolerance, self.policy = where, num_labels, tolerance, policy
        self.streamed, self.changes = streamed, changes
        self.counts = BoxCounts()
        self.examples = 0
        self._next_report = 1

    def __call__(self, image_id: int, width: int, height: int, objects: dict[str, list], index: int) -> dict:
        where = f"{self.where} example {index} (image_id {image_id})"
        kept = apply_box_policy(
            objects["bbox"],
            lambda j: f"{where} object {j}: bbox",
            within=(width, height),
            policy=self.policy,
            tolerance=self.tolerance,
            areas=objects.get("area"),
        )
        for j, (_, category) in enumerate(zip(objects["bbox"], objects["category"])):
            if not 0 <= category < self.num_labels:
                raise HfDetrInputError(
                    f"{where} object {j}: category {category} is not a label in 0..{self.num_labels - 1}."
                )
        self.examples += 1
        if not kept.counts:
            return {}
        self.counts += kept.counts
        if self.changes is not None:
            self.changes.extend(kept.changes)
        if self.streamed and self.counts.changed >= self._next_report:
            while self._next_report <= self.counts.changed:
                self._next_report *= 2
            logger.warning(
                "%s (streamed, counted as read): %s in the first %d examples read by box_policy=%r",
                self.where,
                self.counts.summary(),
                self.examples,
                self.policy,
            )
        keep = kept.index.tolist()
        fixed = {key: [values[i] for i in keep] for key, values in objects.items() if key not in ("bbox", "area")}
        return {"objects": {**fixed, "bbox": kept.boxes.tolist(), "area": kept.areas.tolist()}}
