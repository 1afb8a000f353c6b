"""Load object-detection data sets in the Hub's COCO detection schema.

Every loader here returns splits with exactly the features of :func:`coco_detection_features`::

    image      datasets.Image()
    image_id   int64
    width      int32                     (pixels)
    height     int32
    objects    {"id": int64, "area": float32, "bbox": [x, y, w, h] float32 pixels,
                "category": ClassLabel(label names), "iscrowd": int64 (0 or 1)}   (one list entry per object)

:func:`load_detection_dataset` reads (a) a Hub dataset id or a local data folder (``datasets.load_dataset``), (b) a
folder written by ``DatasetDict.save_to_disk``, or (c) a COCO folder (``annotations/instances_<split>.json`` plus the
image files), in memory-mapped or streaming form. COCO's sparse category ids become contiguous labels ``0..K-1`` in
increasing id order; :func:`coco_category_ids` reads the original ids back from the split's ``info.description``.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Union

import datasets
import PIL.Image

from ..modeling.boxes import check_boxes

logger = logging.getLogger(__name__)

AnyDataset = Union[datasets.Dataset, datasets.IterableDataset]
AnyDatasetDict = Union[datasets.DatasetDict, datasets.IterableDatasetDict]

# Key of the JSON object stored in `info.description` of splits loaded from a COCO folder.
_DESCRIPTION_KEY = "hf_detr.coco_category_ids"
# COCO split files are named like `instances_val2017.json`; the Hub names splits train / validation / test.
_SPLIT_ALIASES = {"val": "validation", "valid": "validation"}
# Streamed COCO splits are sharded into chunks of this many images (DataLoader workers take whole shards).
_STREAM_SHARD_SIZE = 1000

__all__ = [
    "coco_category_ids",
    "coco_detection_features",
    "id2label",
    "load_coco_folder",
    "load_detection_dataset",
]


def coco_detection_features(label_names: Sequence[str]) -> datasets.Features:
    """The Hub's COCO detection schema with ``label_names`` as the ``objects.category`` class names (in label order)."""
    return datasets.Features(
        {
            "image": datasets.Image(),
            "image_id": datasets.Value("int64"),
            "width": datasets.Value("int32"),
            "height": datasets.Value("int32"),
            "objects": datasets.Sequence(
                {
                    "id": datasets.Value("int64"),
                    "area": datasets.Value("float32"),
                    "bbox": datasets.Sequence(datasets.Value("float32"), length=4),
                    "category": datasets.ClassLabel(names=list(label_names)),
                    "iscrowd": datasets.Value("int64"),
                }
            ),
        }
    )


def id2label(source: datasets.Features | AnyDataset) -> dict[int, str]:
    """``{label: name}`` of the ``objects.category`` ClassLabel, ready for ``HfDetrConfig(id2label=...)``."""
    features = source if isinstance(source, datasets.Features) else source.features
    return dict(enumerate(_category_feature(features, "the given features").names))


def coco_category_ids(dataset: AnyDataset) -> list[int] | None:
    """The original COCO category id of each label (``ids[label]``), or ``None`` if the split did not come from a COCO
    folder. Kept through ``save_to_disk`` / ``load_from_disk`` since it lives in ``dataset.info.description``."""
    try:
        stored = json.loads(dataset.info.description or "")
    except json.JSONDecodeError:
        return None
    return stored.get(_DESCRIPTION_KEY) if isinstance(stored, dict) else None


def load_detection_dataset(
    source: str | os.PathLike,
    *,
    splits: Sequence[str] | None = None,
    streaming: bool = False,
    box_tolerance: float = 1.0,
    revision: str | None = None,
    cache_dir: str | None = None,
    **load_dataset_kwargs: Any,
) -> AnyDatasetDict:
    """Load a detection data set in the Hub's COCO schema (see the module docstring).

    ``source`` is tried in this order:

    1. a folder written by ``DatasetDict.save_to_disk`` (or ``Dataset.save_to_disk``, returned as split ``"train"``);
    2. a COCO folder, recognised by ``annotations/instances_*.json`` (see :func:`load_coco_folder`);
    3. anything else goes to ``datasets.load_dataset(source, revision=..., cache_dir=..., **load_dataset_kwargs)``:
       a Hub dataset id such as ``"cppe-5"``, or a local folder of parquet / image files.

    Splits from (1) and (3) are checked against the schema and converted where that is lossless: numeric types are cast,
    a missing ``objects.iscrowd`` becomes 0, a missing ``objects.area`` the box area, ``objects.bbox_id`` is renamed
    ``objects.id`` (a missing id becomes -1), objects stored as a list of structs are transposed, a missing ``image_id``
    becomes the row index, missing ``width``/``height`` are read from the images, and other columns are dropped (all
    logged). Boxes are taken to be ``[x, y, w, h]`` pixels, which the data cannot prove.

    Every box is checked: a negative width or height, a box further than ``box_tolerance`` pixels outside its image or a
    category outside the label range raises a ``ValueError`` naming the split, example and image id. With
    ``streaming=True`` the splits are ``IterableDataset``s (nothing is copied to the disk cache) and these checks run as
    the examples are read.

    Args:
        splits: split names to load (default: all).
        streaming: return an ``IterableDatasetDict``.
        box_tolerance: how far (pixels) a box may reach outside its image before it is an error.
        revision, cache_dir, load_dataset_kwargs: passed to ``datasets.load_dataset`` (source kind 3 only).
    """
    path = Path(source)
    if (path / datasets.config.DATASETDICT_JSON_FILENAME).is_file() or (
        path / datasets.config.DATASET_STATE_JSON_FILENAME
    ).is_file():
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.Dataset):
            logger.info("%s holds a single saved Dataset: returning it as split 'train'.", path)
            loaded = datasets.DatasetDict({"train": loaded})
        loaded = _select_splits(loaded, splits, str(path))
        if streaming:
            loaded = {name: ds.to_iterable_dataset() for name, ds in loaded.items()}
    elif path.is_dir() and any((path / "annotations").glob("instances_*.json")):
        return load_coco_folder(path, splits=splits, streaming=streaming, box_tolerance=box_tolerance)
    else:
        split_arg = list(splits) if splits is not None else None
        loaded = datasets.load_dataset(
            str(source), split=split_arg, streaming=streaming, revision=revision, cache_dir=cache_dir,
            **load_dataset_kwargs,
        )  # fmt: skip
        loaded = dict(zip(split_arg, loaded)) if split_arg is not None else dict(loaded)
    container = datasets.IterableDatasetDict if streaming else datasets.DatasetDict
    return container({name: _conform(ds, name, box_tolerance) for name, ds in loaded.items()})


def load_coco_folder(
    root: str | os.PathLike,
    *,
    splits: Sequence[str] | None = None,
    streaming: bool = False,
    box_tolerance: float = 1.0,
) -> AnyDatasetDict:
    """Load a COCO-format folder: ``annotations/instances_<split>.json`` plus the image files.

    Split names come from the file names with a trailing year removed and ``val`` spelled ``validation``
    (``instances_val2017.json`` -> ``"validation"``). Images are looked up by their ``file_name`` under, in order,
    ``<split>/``, ``images/<split>/``, ``<split without year>2017/``, ``images/`` and the root itself, where ``<split>``
    is the name in the json file name.

    Categories are sorted by COCO id and numbered ``0..K-1``; the names become the ``ClassLabel`` and
    :func:`coco_category_ids` returns the COCO ids. Every split must list the same categories. Crowd annotations are
    kept with ``iscrowd=1``; images without annotations are kept with empty ``objects``. A missing ``area`` is the box
    area, a missing ``iscrowd`` 0, a missing annotation ``id`` its 1-based position in the json.

    Raises ``ValueError`` naming the json file, annotation id, image id and file for: an annotation whose
    ``category_id`` is not in ``categories`` or whose ``image_id`` is not in ``images``; a bbox that is not 4 finite
    numbers, has a negative width or height, or reaches more than ``box_tolerance`` pixels outside its image; an image
    file that is missing, is not a readable image, or whose size differs from the json's ``width``/``height``. The image
    files are checked while loading, or as they are read when ``streaming=True``; annotations always while loading.
    """
    root = Path(root)
    files = sorted((root / "annotations").glob("instances_*.json"))
    if not files:
        raise ValueError(f"{root} is not a COCO folder: no annotations/instances_<split>.json file found.")
    by_split: dict[str, Path] = {}
    for file in files:
        name = _split_name(file.stem[len("instances_") :])
        if name in by_split:
            raise ValueError(
                f"{by_split[name].name} and {file.name} both give split '{name}' in {root / 'annotations'}; "
                "keep one of them."
            )
        by_split[name] = file
    by_split = _select_splits(by_split, splits, str(root))

    result: dict[str, AnyDataset] = {}
    reference: tuple[list[str], list[int], str] | None = None
    for name, file in by_split.items():
        mtime_ns = file.stat().st_mtime_ns
        read = _cached_coco_json if streaming else _read_coco_json
        label_names, category_ids, examples = read(str(file), mtime_ns, box_tolerance)
        if reference is not None and (label_names, category_ids) != reference[:2]:
            raise ValueError(
                f"{file.name} lists categories {list(zip(category_ids, label_names))} but {reference[2]} lists "
                f"{list(zip(reference[1], reference[0]))}; every split must share one category list."
            )
        reference = (label_names, category_ids, file.name)
        raw_split = file.stem[len("instances_") :]
        image_dirs = tuple(dict.fromkeys(_image_dirs(root, raw_split)))
        features = coco_detection_features(label_names)
        description = json.dumps({_DESCRIPTION_KEY: category_ids, "annotation_file": str(file)})
        if streaming:
            # gen_kwargs hold index ranges, not the parsed json: `datasets` hashes them, which would take minutes
            ranges = [(i, i + _STREAM_SHARD_SIZE) for i in range(0, len(examples), _STREAM_SHARD_SIZE)]
            dataset = datasets.IterableDataset.from_generator(
                _streamed_coco_rows,
                features=features,
                gen_kwargs={"ranges": ranges, "file": str(file), "mtime_ns": mtime_ns, "tolerance": box_tolerance,
                            "image_dirs": image_dirs},
            )  # fmt: skip
            dataset.info.description = description
        else:
            columns: dict[str, list] = {column: [] for column in features}
            for row in _coco_rows(examples, image_dirs, file.name):
                for column, value in row.items():
                    columns[column].append(value)
            info = datasets.DatasetInfo(description=description, features=features)
            dataset = datasets.Dataset.from_dict(columns, features=features, info=info, split=name)
        result[name] = dataset
    container = datasets.IterableDatasetDict if streaming else datasets.DatasetDict
    return container(result)


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


def _read_coco_json(path: str, mtime_ns: int, tolerance: float) -> tuple[list[str], list[int], list[dict[str, Any]]]:
    """Parse and check one instances json. Returns the label names, their COCO ids and one example dict per image
    (``objects`` filled, ``file_name`` in place of ``image``). ``mtime_ns`` only keys :func:`_cached_coco_json`."""
    file = Path(path)
    try:
        coco = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{file}: cannot read the annotation file as JSON ({error}).") from error
    for key in ("images", "categories"):
        if not isinstance(coco.get(key), list):
            raise ValueError(f"{file.name}: the top-level `{key}` list is missing; a COCO instances file needs it.")

    categories: dict[int, str] = {}
    for i, category in enumerate(coco["categories"]):
        if not isinstance(category.get("id"), int) or not isinstance(category.get("name"), str):
            raise ValueError(f"{file.name}: categories[{i}] = {category!r} needs an integer `id` and a string `name`.")
        if category["id"] in categories:
            raise ValueError(f"{file.name}: category id {category['id']} appears twice in `categories`.")
        categories[category["id"]] = category["name"]
    category_ids = sorted(categories)
    label_names = [categories[c] for c in category_ids]
    if len(set(label_names)) != len(label_names):
        raise ValueError(f"{file.name}: category names {label_names} repeat; ClassLabel names must be unique.")
    label_of = {c: label for label, c in enumerate(category_ids)}

    examples: dict[int, dict[str, Any]] = {}
    for i, image in enumerate(coco["images"]):
        missing = [key for key in ("id", "file_name", "width", "height") if key not in image]
        if missing:
            raise ValueError(f"{file.name}: images[{i}] has no {missing}; every COCO image needs them.")
        if image["id"] in examples:
            raise ValueError(f"{file.name}: image id {image['id']} appears twice in `images`.")
        examples[image["id"]] = {
            "file_name": image["file_name"],
            "image_id": image["id"],
            "width": image["width"],
            "height": image["height"],
            "objects": {"id": [], "area": [], "bbox": [], "category": [], "iscrowd": []},
        }

    def where(annotation_id: Any, image: dict[str, Any]) -> str:
        return f"{file.name}: annotation id {annotation_id} (image_id {image['image_id']}, '{image['file_name']}')"

    found = []  # (annotation id, annotation, image)
    for position, annotation in enumerate(coco.get("annotations", []), start=1):
        annotation_id = annotation.get("id", position)
        image = examples.get(annotation.get("image_id"))
        if image is None:
            raise ValueError(
                f"{file.name}: annotation id {annotation_id} refers to image_id {annotation.get('image_id')!r}, "
                "which is not in `images`."
            )
        if annotation.get("category_id") not in label_of:
            raise ValueError(
                f"{where(annotation_id, image)}: category_id {annotation.get('category_id')!r} is not in `categories` "
                f"(ids {category_ids}); add the category or fix the annotation."
            )
        found.append((annotation_id, annotation, image))
    # all boxes in one check: one call per annotation would be slow on COCO's ~900k
    bboxes = check_boxes(
        [annotation.get("bbox") for _, annotation, _ in found],
        lambda k: f"{where(found[k][0], found[k][2])}: bbox",
        "xywh",
        within=[(image["width"], image["height"]) for _, _, image in found],
        tolerance=tolerance,
    ).tolist()

    num_crowd = 0
    for (annotation_id, annotation, image), bbox in zip(found, bboxes):
        iscrowd = int(annotation.get("iscrowd", 0))
        num_crowd += iscrowd
        objects = image["objects"]
        objects["id"].append(annotation_id)
        objects["area"].append(float(annotation.get("area", bbox[2] * bbox[3])))
        objects["bbox"].append(bbox)
        objects["category"].append(label_of[annotation["category_id"]])
        objects["iscrowd"].append(iscrowd)

    empty = sum(not e["objects"]["id"] for e in examples.values())
    logger.info(
        "%s: %d images (%d without objects), %d annotations (%d crowd), %d categories.",
        file.name, len(examples), empty, sum(len(e["objects"]["id"]) for e in examples.values()), num_crowd,
        len(categories),
    )  # fmt: skip
    return label_names, category_ids, list(examples.values())


# A streamed split re-reads its json through this cache: once per process (DataLoader workers included).
_cached_coco_json = functools.lru_cache(maxsize=4)(_read_coco_json)


def _streamed_coco_rows(
    ranges: list[tuple[int, int]], file: str, mtime_ns: int, tolerance: float, image_dirs: tuple[Path, ...]
) -> Iterator[dict]:
    """Generator of a streamed COCO split: the rows of the images in ``ranges`` (index ranges into the json)."""
    if Path(file).stat().st_mtime_ns != mtime_ns:
        raise ValueError(f"{file} changed after the data set was loaded; load it again.")
    examples = _cached_coco_json(file, mtime_ns, tolerance)[2]
    for start, stop in ranges:
        yield from _coco_rows(examples[start:stop], image_dirs, Path(file).name)


def _coco_rows(examples: list[dict[str, Any]], image_dirs: tuple[Path, ...], json_name: str) -> Iterator[dict]:
    """Yield schema rows for parsed images, checking each image file on the way."""
    for example in examples:
        row = {"image": str(_checked_image_path(example, image_dirs, json_name))}
        row.update((key, value) for key, value in example.items() if key != "file_name")
        yield row


def _checked_image_path(example: dict[str, Any], image_dirs: Sequence[Path], json_name: str) -> Path:
    file_name = example["file_name"]
    where = f"{json_name}: image_id {example['image_id']} ('{file_name}')"
    path = next((d / file_name for d in image_dirs if (d / file_name).is_file()), None)
    if path is None:
        raise ValueError(f"{where}: image file not found; looked in {[str(d) for d in image_dirs]}.")
    try:
        with PIL.Image.open(path) as image:
            size = image.size
    except (OSError, PIL.UnidentifiedImageError) as error:
        raise ValueError(f"{where}: {path} is not a readable image ({error}).") from error
    if size != (example["width"], example["height"]):
        raise ValueError(
            f"{where}: {path} is {size[0]}x{size[1]} pixels but the json says width={example['width']}, "
            f"height={example['height']}; boxes would be in the wrong frame."
        )
    return path


# ---------------------------------------------------------------------------------------------------------------------
# Checks and conversion shared by every source


def _category_feature(features: datasets.Features, where: str) -> datasets.ClassLabel:
    objects = features.get("objects")
    fields = _object_fields(objects)
    category = fields.get("category") if fields is not None else None
    if not isinstance(category, datasets.ClassLabel):
        raise ValueError(
            f"{where}: `objects.category` must be a datasets.ClassLabel so that labels have names, got "
            f"{category!r}; cast it first, e.g. ds.cast_column('objects', ...) with ClassLabel(names=[...])."
        )
    return category


def _object_fields(objects: Any) -> dict[str, Any] | None:
    """The per-object feature of each ``objects`` field, for a struct of lists or a list of structs."""
    if isinstance(objects, dict):
        return {key: value.feature if isinstance(value, (datasets.List, datasets.LargeList)) else value
                for key, value in objects.items()}  # fmt: skip
    if isinstance(objects, (datasets.List, datasets.LargeList)) and isinstance(objects.feature, dict):
        return dict(objects.feature)
    return None


def _select_splits(loaded: Mapping[str, Any], splits: Sequence[str] | None, source: str) -> dict[str, Any]:
    if splits is None:
        return dict(loaded)
    unknown = [name for name in splits if name not in loaded]
    if unknown:
        raise ValueError(f"{source} has no split {unknown}; available splits: {list(loaded)}.")
    return {name: loaded[name] for name in splits}


def _conform(dataset: AnyDataset, split: str, tolerance: float) -> AnyDataset:
    """Bring a split's features to :func:`coco_detection_features` (see :func:`load_detection_dataset`) and check its
    boxes: at once for a ``Dataset``, lazily for an ``IterableDataset``."""
    where = f"split '{split}'"
    features = dataset.features
    if features is None:
        raise ValueError(
            f"{where}: the streamed data set declares no features, so its label names are unknown; load it with "
            "streaming=False, or give the dataset card a `dataset_info.features` section."
        )
    if not isinstance(features.get("image"), datasets.Image):
        raise ValueError(f"{where}: needs an `image` column of type datasets.Image, got {features.get('image')!r}.")
    fields = _object_fields(features.get("objects"))
    missing = [key for key in ("bbox", "category") if fields is None or key not in fields]
    if missing:
        raise ValueError(
            f"{where}: `objects` needs the fields {missing} (Hub COCO schema), got {features.get('objects')!r}."
        )
    label_names = _category_feature(features, where).names
    target = coco_detection_features(label_names)

    if features != target:
        extra = [column for column in features if column not in target]
        if extra:
            logger.warning("%s: dropping columns %s, not in the COCO detection schema.", where, extra)
            dataset = dataset.remove_columns(extra)
        if "image_id" not in features:
            logger.warning("%s: no `image_id` column; using the row index.", where)
            dataset = dataset.map(lambda _, index: {"image_id": index}, with_indices=True, input_columns=["objects"])
        if "width" not in features or "height" not in features:
            logger.warning("%s: no `width`/`height` columns; reading them from the decoded images.", where)
            dataset = dataset.map(lambda image: {"width": image.width, "height": image.height}, input_columns=["image"])
        extra_fields = sorted(set(fields) - set(target["objects"]) - {"bbox_id"})
        if extra_fields:
            logger.warning("%s: dropping object fields %s, not in the COCO detection schema.", where, extra_fields)
        if "id" not in fields and "bbox_id" not in fields:
            logger.warning("%s: no `objects.id`; every object gets id -1.", where)
        dataset = dataset.map(_conform_objects, input_columns=["objects"], features=target)

    check = _ExampleChecker(where, len(label_names), tolerance)
    columns = ["image_id", "width", "height", "objects"]
    if isinstance(dataset, datasets.IterableDataset):
        # the validating pass must keep the features, which IterableDataset.map otherwise forgets
        return dataset.map(check, input_columns=columns, with_indices=True, features=target)
    index = 0
    for batch in dataset.select_columns(columns).iter(batch_size=1000):
        for values in zip(*(batch[column] for column in columns)):
            check(*values, index)
            index += 1
    return dataset


def _conform_objects(objects: Any) -> dict[str, Any]:
    """Fill the lossless defaults of one example's ``objects`` (see :func:`load_detection_dataset`). Values get their
    schema's Python type here because ``IterableDataset.map(features=...)`` labels the features without casting."""
    if isinstance(objects, list):  # list of structs -> struct of lists
        objects = {key: [o[key] for o in objects] for key in (objects[0] if objects else ())}
    boxes = [[float(v) for v in box] for box in objects.get("bbox", [])]
    return {
        "objects": {
            "id": [int(i) for i in objects.get("id", objects.get("bbox_id", [-1] * len(boxes)))],
            "area": [float(a) for a in objects.get("area", [w * h for _, _, w, h in boxes])],
            "bbox": boxes,
            "category": objects.get("category", []),
            "iscrowd": [int(c) for c in objects.get("iscrowd", [0] * len(boxes))],
        }
    }


class _ExampleChecker:
    """Raise on a box outside its image or a category outside ``0..num_labels-1``. A class (not a closure) so that
    ``IterableDataset.map`` can pickle it for DataLoader workers."""

    def __init__(self, where: str, num_labels: int, tolerance: float) -> None:
        self.where, self.num_labels, self.tolerance = where, num_labels, tolerance

    def __call__(self, image_id: int, width: int, height: int, objects: dict[str, list], index: int) -> dict:
        where = f"{self.where} example {index} (image_id {image_id})"
        check_boxes(objects["bbox"], lambda j: f"{where} object {j}: bbox", "xywh", within=(width, height),
                    tolerance=self.tolerance)  # fmt: skip
        for j, (_, category) in enumerate(zip(objects["bbox"], objects["category"])):
            if not 0 <= category < self.num_labels:
                raise ValueError(f"{where} object {j}: category {category} is not a label in 0..{self.num_labels - 1}.")
        return {}
