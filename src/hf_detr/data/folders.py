"""Splits of COCO, YOLO and VOC folders, parsed and under the box policy (:class:`FolderSplit`), and the ``Dataset``
of one (:func:`folder_dataset`), every image file (and mask) checked on the way. The COCO parser is :mod:`.coco`, the
YOLO and VOC ones :mod:`.formats`; this module brings YOLO and VOC splits to pixels under the box policy."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import torch

from ..modeling.boxes import denormalize_boxes
from ..modeling.errors import HfDetrInputError
from .box_policy import BoxChange, BoxPolicy, _policy_line, apply_box_policy
from .formats import RawSplit
from .image_files import checked_image_size
from .masks import panoptic_rles, segmentation_rle
from .schema import coco_detection_features

logger = logging.getLogger(__name__)

__all__ = ["FolderImage", "FolderSplit", "folder_dataset"]


def _no_objects() -> dict[str, list]:
    return {"id": [], "area": [], "bbox": [], "category": [], "iscrowd": []}


@dataclass(slots=True)
class FolderImage:
    """``objects``: the schema's struct of lists, the boxes the policy kept."""

    file_name: str  # found under one of the split's image_dirs
    image_id: int
    width: int | None  # None: the annotations do not say (a VOC file without <size>)
    height: int | None
    objects: dict[str, list] = field(default_factory=_no_objects)
    # with masks (COCO): the source of each kept object's mask, polygons or an RLE, or of a panoptic segment its
    # position in the image's segments_info
    mask_sources: list[Any] | None = None
    panoptic: Mapping[str, Any] | None = None  # with masks, a panoptic image's annotation (its PNG and segments)


@dataclass
class FolderSplit:
    """What :func:`folder_dataset` makes a split of, and what ``hf-detr check-data`` reports on."""

    name: str
    source: str  # the file that defines the split, as messages and the summary line name it
    label_names: list[str]
    images: list[FolderImage]
    image_dirs: tuple[Path, ...]
    changes: tuple[BoxChange, ...]  # what the box policy clipped and dropped
    image_errors: list[str] = field(default_factory=list)  # images that cannot be read (when asked to collect them)
    description: str = ""  # the split's info.description
    masks: bool = False  # the images carry their objects' mask sources
    png_folder: Path | None = None  # a panoptic split's PNGs (with masks)


def _raw_split(
    name: str, raw: RawSplit, label_names: list[str], policy: BoxPolicy, tolerance: float, collect: bool
) -> FolderSplit:
    """Each image's size read from its file, boxes in pixels. ``collect``: ``read_folder_splits``'s
    ``collect_image_errors``."""
    if raw.missing and not collect:
        more = f" ({len(raw.missing) - 1} more)" if len(raw.missing) > 1 else ""
        raise HfDetrInputError(raw.missing[0] + more)
    split = FolderSplit(name, raw.source, label_names, [], (raw.root,), (), list(raw.missing))
    found: list[tuple[FolderImage, int]] = []  # (image, box position in the image)
    boxes, names = [], []
    for image_id, parsed in enumerate(raw.images):
        image = FolderImage(parsed.file_name, image_id, parsed.width, parsed.height)
        try:
            _, image.width, image.height = _checked_image(image, split.image_dirs, raw.source, "the XML")
        except ValueError as error:
            if not collect:
                raise
            split.image_errors.append(str(error))
            if raw.box_format == "cxcywh" or image.width is None:  # boxes without their frame
                continue
        if raw.box_format == "cxcywh" and parsed.boxes:
            # YOLO's fractions of the image -> pixels, as the model's outputs are
            pixels = denormalize_boxes(
                torch.tensor(parsed.boxes, dtype=torch.float64), "xywh", (image.height, image.width)
            )
            boxes += pixels.tolist()
        else:
            boxes += parsed.boxes
        names += parsed.names
        found += [(image, j) for j in range(len(parsed.boxes))]
        split.images.append(image)
    kept = apply_box_policy(
        boxes,
        lambda k: names[k],
        within=[(image.width, image.height) for image, _ in found],
        policy=policy,
        tolerance=tolerance,
    )
    for k, bbox, area in zip(kept.index.tolist(), kept.boxes.tolist(), kept.areas.tolist()):
        image, j = found[k]
        parsed = raw.images[image.image_id]
        objects = image.objects
        objects["id"].append(k + 1)  # the object's position in the split
        objects["area"].append(area)
        objects["bbox"].append(bbox)
        objects["category"].append(parsed.categories[j])
        objects["iscrowd"].append(parsed.iscrowd[j])
    split.changes = kept.changes
    if kept.counts:
        logger.warning(_policy_line(raw.source, len(raw.images), kept.counts, policy))
    return split


def folder_dataset(split: FolderSplit) -> datasets.Dataset:
    """Each image file (and mask) checked."""
    features = coco_detection_features(split.label_names, masks=split.masks)
    columns: dict[str, list] = {column: [] for column in features}
    for row in _folder_rows(split.images, split.image_dirs, split.source, split.png_folder):
        for column, value in row.items():
            columns[column].append(value)
    info = datasets.DatasetInfo(description=split.description, features=features)
    return datasets.Dataset.from_dict(columns, features=features, info=info, split=split.name)


def _folder_rows(
    images: list[FolderImage],
    image_dirs: tuple[Path, ...],
    source: str,
    png_folder: Path | None = None,
    skip_missing: bool = False,
) -> Iterator[dict | str]:
    """``skip_missing``: a missing or unreadable image yields its error message instead of raising it."""
    for image in images:
        try:
            path = _checked_image(image, image_dirs, source)[0]
        except ValueError as error:
            if not skip_missing:
                raise
            yield str(error)
            continue
        objects = image.objects
        if image.mask_sources is not None:
            objects = {**objects, "segmentation": _image_masks(image, source, png_folder)}
        yield {
            "image": str(path),
            "image_id": image.image_id,
            "width": image.width,
            "height": image.height,
            "objects": objects,
        }


def _image_masks(image: FolderImage, json_name: str, png_folder: Path | None) -> list[dict[str, Any]]:
    """Of the kept objects, from the panoptic PNG or the annotations' ``segmentation``, checked against the image."""
    size = (image.height, image.width)
    if image.panoptic is not None:  # every panoptic image is decoded, also one whose segments were all dropped
        where = f"{json_name}: image '{image.file_name}'"
        return panoptic_rles(image.panoptic, where, size, png_folder, image.mask_sources)
    return [
        segmentation_rle(
            source,
            f"{json_name}: annotation id {object_id} (image_id {image.image_id}, '{image.file_name}'): segmentation",
            size,
        )
        for object_id, source in zip(image.objects["id"], image.mask_sources)
    ]


def _checked_image(
    image: FolderImage, image_dirs: Sequence[Path], source: str, declared_by: str = "the json"
) -> tuple[Path, int, int]:
    """The file and its upright (width, height), which must be the declared one unless that is ``None``."""
    file_name = image.file_name
    where = f"{source}: image_id {image.image_id} ('{file_name}')"
    path = next((d / file_name for d in image_dirs if (d / file_name).is_file()), None)
    if path is None:
        raise HfDetrInputError(f"{where}: image file not found; looked in {[str(d) for d in image_dirs]}.")
    width, height = checked_image_size(path, where, image.width, image.height, declared_by)
    return path, width, height
