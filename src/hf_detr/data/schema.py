"""The Hub's COCO detection schema every loader returns (:func:`coco_detection_features`)::

    image      datasets.Image()
    image_id   int64
    width      int32                     (pixels)
    height     int32
    objects    {"id": int64, "area": float32, "bbox": [x, y, w, h] float32 pixels,
                "category": ClassLabel(label names), "iscrowd": int64 (0 or 1)}   (one list entry per object)

and, loaded with ``masks=True``, each object also has ``segmentation`` {"size": [height, width] int32, "counts":
string}: the object's pixels as COCO's compressed RLE of its image (see :mod:`hf_detr.data.masks`; polygons,
uncompressed RLEs and panoptic PNG segments are converted at load time, and every mask is checked against its image).

COCO's category ids, in any numbering (from 0 or 1, with gaps), become contiguous labels ``0..K-1`` in increasing id
order; :func:`coco_category_ids` reads the original ids back from the split's ``info.description``, and
:func:`coco_isthing` the panoptic categories' ``isthing`` (thing or stuff, which panoptic quality reports apart).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import datasets

from ..modeling.errors import HfDetrInputError

AnyDataset = datasets.Dataset | datasets.IterableDataset
AnyDatasetDict = datasets.DatasetDict | datasets.IterableDatasetDict

# Keys of the JSON object stored in `info.description` of splits loaded from a COCO folder.
_DESCRIPTION_KEY = "hf_detr.coco_category_ids"
_ISTHING_KEY = "hf_detr.coco_isthing"
# Streamed splits are sharded into chunks of this many images (DataLoader workers and processes take whole shards).
_STREAM_SHARD_SIZE = 1000

__all__ = [
    "AnyDataset",
    "AnyDatasetDict",
    "coco_category_ids",
    "coco_detection_features",
    "coco_isthing",
    "id2label",
    "streamed",
]


def coco_detection_features(label_names: Sequence[str], masks: bool = False) -> datasets.Features:
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
    """Of the ``objects.category`` ClassLabel, ready for ``HfDetrConfig(id2label=...)``."""
    features = source if isinstance(source, datasets.Features) else source.features
    return dict(enumerate(_category_feature(features, "the given features").names))


def coco_category_ids(dataset: AnyDataset) -> list[int] | None:
    """``ids[label]``; ``None`` if the split did not come from a COCO folder. Kept through ``save_to_disk`` since it
    lives in ``dataset.info.description``."""
    return _described(dataset, _DESCRIPTION_KEY)


def coco_isthing(dataset: AnyDataset) -> list[bool] | None:
    """Thing (countable objects) or stuff (amorphous regions such as sky) per label, from a COCO json's ``isthing`` (a
    category without it is a thing); ``None`` if no category says. Kept like :func:`coco_category_ids`."""
    return _described(dataset, _ISTHING_KEY)


def _described(dataset: AnyDataset, key: str) -> Any:
    try:
        stored = json.loads(dataset.info.description or "")
    except json.JSONDecodeError:
        return None
    return stored.get(key) if isinstance(stored, dict) else None


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


def streamed(split: datasets.Dataset, decode: bool = True) -> datasets.IterableDataset:
    """In shards of about 1,000 examples (which processes and DataLoader workers share out), ``info.description``
    kept."""
    stream = split.to_iterable_dataset(num_shards=max(1, min(len(split), math.ceil(len(split) / _STREAM_SHARD_SIZE))))
    stream.info.description = split.info.description
    if split.split is not None:  # its size, which an epoch count of a streamed training needs
        name = str(split.split)
        stream.info.splits = datasets.SplitDict({name: datasets.SplitInfo(name=name, num_examples=len(split))})
    return stream if decode else stream.decode(False)
