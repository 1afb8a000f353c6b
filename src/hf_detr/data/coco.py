"""COCO folders: ``annotations/instances_<split>.json`` (or ``annotations/panoptic_<split>.json`` and its PNGs) plus
the image files, parsed, checked and prepared once into the cache of :mod:`.prepared` (:func:`load_coco_folder`)."""

from __future__ import annotations

import functools
import json
import logging
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import datasets
import numpy as np

from ..modeling.errors import HfDetrInputError
from .box_policy import BoxChange, BoxCounts, BoxPolicy, _check_policy, _policy_line, apply_box_policy
from .folders import FolderImage, FolderSplit, _folder_rows
from .prepared import PreparedRows, content_hash, open_prepared, parallel_chunks
from .schema import (
    _DESCRIPTION_KEY,
    _ISTHING_KEY,
    AnyDatasetDict,
    _select_splits,
    coco_category_ids,
    coco_detection_features,
    id2label,
    streamed,
)

logger = logging.getLogger(__name__)

# COCO split files are named like `instances_val2017.json`; the Hub names splits train / validation / test.
_SPLIT_ALIASES = {"val": "validation", "valid": "validation"}
# the annotation files of a COCO folder, annotations/<kind>_<split>.json, in the order they are looked for
_COCO_KINDS = ("instances", "panoptic")

__all__ = ["is_coco_folder", "load_coco_folder"]


def is_coco_folder(path: Path) -> bool:
    return path.is_dir() and any(any((path / "annotations").glob(f"{kind}_*.json")) for kind in _COCO_KINDS)


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
    """``annotations/instances_<split>.json`` (or ``annotations/panoptic_<split>.json``) plus the image files.

    Split names come from the file names with a trailing year removed and ``val`` spelled ``validation``
    (``instances_val2017.json`` -> ``"validation"``). Images are looked up by their ``file_name`` under, in order,
    ``<split>/``, ``images/<split>/``, ``<split without year>2017/``, ``images/`` and the root itself, where ``<split>``
    is the name in the json file name. ``annotations`` chooses the instances or the panoptic jsons; by default the
    instances ones, and the panoptic ones in a folder without instances jsons.

    A panoptic json gives one object per segment (its ``bbox`` required); its categories' ``isthing`` is kept for
    :func:`coco_isthing`. With ``masks=True`` the segments' masks are read from the PNG named by ``file_name`` in
    ``annotations/panoptic_<split>/`` or ``panoptic_<split>/``, an instances annotation's from its ``segmentation``
    (polygons, or an RLE as COCO gives crowd annotations); both become compressed RLEs (:mod:`.masks`).

    Categories are sorted by COCO id and numbered ``0..K-1``; the names become the ``ClassLabel`` and
    :func:`coco_category_ids` returns the COCO ids. Every split must list the same categories. Crowd annotations are
    kept with ``iscrowd=1``; images without annotations are kept with empty ``objects``. A missing ``area`` is the box
    area, a missing ``iscrowd`` 0, a missing annotation ``id`` its 1-based position in the json.

    Boxes follow ``box_policy`` (:mod:`.box_policy`); a dropped box's annotation is left out whole. An image's size
    is its upright size: a file with EXIF orientation 5-8 (a quarter turn) is compared with the json's
    ``width``/``height`` transposed, as annotation tools and ``datasets.Image`` see it.

    Raises ``ValueError`` naming the json file, annotation id, image id and file for: an unknown ``category_id`` or
    ``image_id``; a bbox that is not 4 numbers (or, with ``box_policy="error"``, that the policy would change); an
    image file that is missing, unreadable or of another size than the json's; with ``masks=True``, a mask of
    another size than its image, a polygon more than a pixel outside it, an RLE that does not decode, a panoptic PNG
    of another size or with unlisted segment ids, a missing folder of PNGs. Everything is checked once, when the split
    is prepared; with ``box_policy="drop"`` a missing or unreadable image is left out and counted instead. The other
    options: :func:`.loading.load_detection_dataset`.
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
    """For :func:`.prepared.open_prepared`: image files checked and masks encoded in chunks (in parallel at scale)."""
    split = _coco_split(root, name, file, kind, policy, tolerance, masks)
    images = split.images
    skipped: list[str] = []

    def chunk(start: int, stop: int) -> list[dict | str]:
        return list(
            _folder_rows(
                images[start:stop], split.image_dirs, split.source, split.png_folder, skip_missing=policy == "drop"
            )
        )

    def rows() -> Iterator[dict]:
        for part in parallel_chunks(chunk, len(images), num_proc):
            for row in part:
                if isinstance(row, str):  # a skipped image's message
                    skipped.append(row)
                    logger.debug("%s: left out by box_policy='drop'", row)
                else:
                    yield row

    def summary() -> str | None:
        counts = BoxCounts.of(split.changes)
        line = _policy_line(split.source, len(images), counts, policy) if counts else None
        if skipped:
            line = (f"{line}; " if line else f"{split.source}: ") + (
                f"{len(skipped)} of {len(images)} images left out (missing or unreadable) by box_policy='drop', "
                f"the first: {skipped[0]}"
            )
        return line

    features = coco_detection_features(split.label_names, masks=masks)
    return PreparedRows(features, split.description, rows(), summary)


def _check_same_categories(splits: list[tuple[str, list[int], list[str]]]) -> None:
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
    """Not prepared nor cached (``hf-detr check-data`` reports on them); image files are not opened."""
    kind, files = _coco_files(root, splits, kind)
    parsed = [_coco_split(root, name, file, kind, policy, tolerance, masks) for name, file in files.items()]
    _check_same_categories(
        [(split.source, json.loads(split.description)[_DESCRIPTION_KEY], split.label_names) for split in parsed]
    )
    return parsed


def _coco_files(root: Path, splits: Sequence[str] | None, kind: str | None) -> tuple[str, dict[str, Path]]:
    """The ``kind`` of json (default: the first of :data:`_COCO_KINDS` the folder has) and each split's file."""
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
    parsed = _read_coco_json(str(file), tolerance, policy, masks)
    raw_split = file.stem[len(kind) + 1 :]
    stored: dict[str, Any] = {_DESCRIPTION_KEY: parsed.category_ids, "annotation_file": str(file)}
    if parsed.isthing is not None:
        stored[_ISTHING_KEY] = parsed.isthing
    png_folder = _png_folder(root, raw_split, file) if masks and kind == "panoptic" else None
    return FolderSplit(
        name,
        file.name,
        parsed.label_names,
        parsed.images,
        tuple(dict.fromkeys(_image_dirs(root, raw_split))),
        parsed.changes,
        description=json.dumps(stored),
        masks=masks,
        png_folder=png_folder,
    )


def _png_folder(root: Path, raw_split: str, file: Path) -> Path:
    """``annotations/panoptic_<split>/`` (where COCO puts it) or ``panoptic_<split>/``."""
    candidates = [root / "annotations" / f"panoptic_{raw_split}", root / f"panoptic_{raw_split}"]
    folder = next((c for c in candidates if c.is_dir()), None)
    if folder is None:
        raise HfDetrInputError(
            f"{file.name}: no folder of panoptic PNGs, which masks=True reads; looked for "
            f"{[str(c) for c in candidates]}."
        )
    return folder


def _without_year(raw_split: str) -> str:
    """``"val2017"`` -> ``"val"``."""
    return re.sub(r"\d{4}$", "", raw_split) or raw_split


def _split_name(raw_split: str) -> str:
    base = _without_year(raw_split)
    return _SPLIT_ALIASES.get(base, base)


def _image_dirs(root: Path, raw_split: str) -> list[Path]:
    year_folder = root / f"{_without_year(raw_split)}2017"
    return [root / raw_split, root / "images" / raw_split, year_folder, root / "images", root]


@dataclass(frozen=True)
class CocoJson:
    """One instances or panoptic json, parsed and checked, its boxes under the box policy."""

    label_names: list[str]
    category_ids: list[int]  # the COCO id of each label
    isthing: list[bool] | None  # of each label; None: no category says
    images: list[FolderImage]  # with masks, each carries its objects' mask sources
    changes: tuple[BoxChange, ...]  # what the policy clipped and dropped (the caller sums it up)


class _Annotation(NamedTuple):
    """One object of a json: an instances annotation, or a segment of a panoptic one."""

    object_id: Any
    record: Mapping[str, Any]  # the annotation or the segment
    image: FolderImage
    name: str  # in messages
    mask_source: Any  # polygons or an RLE; a segment's position in segments_info


def _read_coco_json(path: str, tolerance: float, policy: BoxPolicy = "clip", masks: bool = False) -> CocoJson:
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

    images: dict[int, FolderImage] = {}
    for i, image in enumerate(coco["images"]):
        missing = [key for key in ("id", "file_name", "width", "height") if key not in image]
        if missing:
            raise HfDetrInputError(f"{file.name}: images[{i}] has no {missing}; every COCO image needs them.")
        if image["id"] in images:
            raise HfDetrInputError(f"{file.name}: image id {image['id']} appears twice in `images`.")
        images[image["id"]] = FolderImage(
            image["file_name"], image["id"], image["width"], image["height"], mask_sources=[] if masks else None
        )

    def named(what: str, image: FolderImage) -> str:
        return f"{file.name}: {what} (image_id {image.image_id}, '{image.file_name}')"

    def image_of(what: str, image_id: Any) -> FolderImage:
        if image_id not in images:
            raise HfDetrInputError(f"{file.name}: {what} refers to image_id {image_id!r}, which is not in `images`.")
        return images[image_id]

    found: list[_Annotation] = []
    if file.name.startswith("panoptic_"):  # one annotation per image, one object per segment
        for position, annotation in enumerate(coco.get("annotations", [])):
            image = image_of(f"annotations[{position}]", annotation.get("image_id"))
            segments = annotation.get("segments_info")
            if not isinstance(segments, list):
                raise HfDetrInputError(
                    f"{named(f'annotations[{position}]', image)}: `segments_info` must be a list of "
                    f"segments, got {segments!r:.80}."
                )
            if image.panoptic is not None:
                raise HfDetrInputError(
                    f"{named(f'annotations[{position}]', image)}: a second annotation of the image; a "
                    "panoptic json has one per image."
                )
            if masks:
                image.panoptic = annotation
            for j, segment in enumerate(segments):
                name = named(f"annotations[{position}] segments_info[{j}]", image)
                if not isinstance(segment, dict) or not isinstance(segment.get("id"), int):
                    raise HfDetrInputError(f"{name}: a segment needs an integer `id`, got {segment!r:.80}.")
                found.append(_Annotation(segment["id"], segment, image, f"{name} (segment id {segment['id']})", j))
    else:
        for position, annotation in enumerate(coco.get("annotations", []), start=1):
            annotation_id = annotation.get("id", position)
            image = image_of(f"annotation id {annotation_id}", annotation.get("image_id"))
            found.append(
                _Annotation(
                    annotation_id,
                    annotation,
                    image,
                    named(f"annotation id {annotation_id}", image),
                    annotation.get("segmentation"),
                )
            )
    for annotation in found:
        category_id = annotation.record.get("category_id")
        if category_id not in label_of:
            raise HfDetrInputError(
                f"{annotation.name}: category_id {category_id!r} is not in `categories` (ids {category_ids}); add "
                "the category or fix the annotation."
            )
    # all boxes in one call: one call per annotation would be slow on COCO's ~900k
    kept = apply_box_policy(
        [a.record.get("bbox") for a in found],
        lambda k: f"{found[k].name}: bbox",
        within=[(a.image.width, a.image.height) for a in found],
        policy=policy,
        tolerance=tolerance,
        areas=[a.record.get("area") for a in found],
    )

    num_crowd = 0
    for k, bbox, area in zip(kept.index.tolist(), kept.boxes.tolist(), kept.areas.tolist()):
        annotation = found[k]
        iscrowd = int(annotation.record.get("iscrowd", 0))
        num_crowd += iscrowd
        objects = annotation.image.objects
        objects["id"].append(annotation.object_id)
        objects["area"].append(area)
        objects["bbox"].append(bbox)
        objects["category"].append(label_of[annotation.record["category_id"]])
        objects["iscrowd"].append(iscrowd)
        if masks:
            annotation.image.mask_sources.append(annotation.mask_source)

    empty = sum(not image.objects["id"] for image in images.values())
    logger.info(
        "%s: %d images (%d without objects), %d annotations (%d crowd), %d categories.",
        file.name,
        len(images),
        empty,
        sum(len(image.objects["id"]) for image in images.values()),
        num_crowd,
        len(categories),
    )
    return CocoJson(label_names, category_ids, isthing, list(images.values()), kept.changes)


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
