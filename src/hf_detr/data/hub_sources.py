"""Hub and ``save_to_disk`` splits brought to the schema of :mod:`.schema` under the box policy: the one conversion,
:class:`SplitConformer`, run lazily on a streamed split and once, into the cache of :mod:`.prepared`, on a map-style
one (:func:`_conform`)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets

from ..modeling.errors import HfDetrInputError
from .box_policy import BoxChange, BoxCounts, BoxPolicy, _policy_line, apply_box_policy
from .image_files import _image_size
from .masks import segmentation_rle
from .prepared import PreparedRows, open_prepared, parallel_chunks
from .schema import AnyDataset, _category_feature, _object_fields, _select_splits, coco_detection_features, streamed

logger = logging.getLogger(__name__)

__all__ = ["SplitConformer", "is_saved_folder", "saved_or_hub_splits"]


def is_saved_folder(path: Path) -> bool:
    return (path / datasets.config.DATASETDICT_JSON_FILENAME).is_file() or (
        path / datasets.config.DATASET_STATE_JSON_FILENAME
    ).is_file()


def saved_or_hub_splits(
    source: str | os.PathLike,
    splits: Sequence[str] | None = None,
    *,
    streaming: bool = False,
    **load_dataset_kwargs: Any,
) -> dict[str, AnyDataset]:
    """As stored: not yet conformed to the schema nor under the box policy."""
    path = Path(source)
    if is_saved_folder(path):
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.Dataset):
            logger.info("%s holds a single saved Dataset: returning it as split 'train'.", path)
            loaded = datasets.DatasetDict({"train": loaded})
        loaded = _select_splits(loaded, splits, str(path))
        return {name: streamed(ds) for name, ds in loaded.items()} if streaming else loaded
    split_arg = list(splits) if splits is not None else None
    loaded = datasets.load_dataset(str(source), split=split_arg, streaming=streaming, **load_dataset_kwargs)
    return dict(zip(split_arg, loaded)) if split_arg is not None else dict(loaded)


class SplitConformer:
    """The one conversion of a Hub or ``save_to_disk`` split's examples to the schema under the box policy, for a
    streamed split (``IterableDataset.map``), a prepared one (:meth:`rows`) and ``hf-detr check-data``. The split's
    features are checked at construction; ``conformer(example, index)`` gives ``image_id``, ``width``, ``height`` and
    ``objects`` (with masks checked against the image). A class, not a closure, so that DataLoader workers can
    unpickle a streamed split's ``map``."""

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
        """Images not decoded."""
        part = dataset.select_columns(self.columns)
        if "image" in self.columns:
            part = part.cast_column("image", datasets.Image(decode=False))
        stop = len(part) if stop is None else stop
        for index, example in enumerate(part.select(range(start, stop)), start=start):
            yield self(example, index)


def _conform(
    dataset: AnyDataset,
    split: str,
    tolerance: float,
    policy: BoxPolicy = "clip",
    masks: bool = False,
    num_proc: int | None = None,
    decode: bool = True,
) -> AnyDataset:
    """Streamed: conformed as it is read. Map-style: the conformed columns prepared once into the cache, the image
    column joined back, never copied."""
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
    """The lossless defaults. Values get their schema's Python type here because ``IterableDataset.map(features=...)``
    labels the features without casting."""
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
    if isinstance(objects, list):
        return {key: [o[key] for o in objects] for key in (objects[0] if objects else ())}
    return objects


class _ExampleChecker:
    """The box policy on one example's objects (``{}`` if nothing changes, else ``{"objects": kept}``); a category
    outside ``0..num_labels-1`` raises. ``streamed``: logs the running counts at 1, 2, 4, ... changed boxes. A class
    (not a closure) so that ``IterableDataset.map`` can pickle it for DataLoader workers."""

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
