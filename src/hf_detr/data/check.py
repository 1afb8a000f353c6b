"""``hf-detr check-data``: what a detection data set holds and what is wrong with it, before training on it.

:func:`check_data` takes every source :func:`.sources.load_data` takes (COCO, YOLO or VOC folder, ``save_to_disk``
folder, Hub id, ``"synthetic"``) and reads it the loader's way, with the loader's checks: per split, the images and
boxes of each class and the box sizes of the data as loaded, and every problem, one line each naming its image:

- **warnings**, what the loader fixes: each box its ``box_policy`` clips or drops (the boxes of
  :func:`.box_policy.apply_box_policy`, in its words);
- **errors**, what the loader stops at: an image file that is missing or unreadable or whose size is not the one the
  annotations give (read from the file header, as the loader of folders does; a stored data set's images are checked
  the same way, though its loader only meets them in training, where an unreadable one stops it and a wrong size puts
  the boxes in the wrong frame), a YOLO label file without its image; with ``box_policy="error"`` every box the other
  policies would change.

A malformed annotation file (a bad YOLO line, a COCO annotation of an unknown category, ...) stops the check with the
loader's ``ValueError``. Counts and statistics are of the boxes the loader keeps; a YOLO image that cannot be read
(whose boxes have no frame) is not counted.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import datasets
import numpy as np

from .box_policy import BoxChange, BoxCounts, BoxPolicy, _check_policy
from .hub_sources import SplitConformer, saved_or_hub_splits
from .image_files import _image_size
from .loading import FORMAT_NAMES, detect_format, read_folder_splits
from .schema import id2label
from .sources import SYNTHETIC, load_data

__all__ = ["DataReport", "Problem", "SplitReport", "check_data"]


@dataclass(frozen=True)
class Problem:
    """``"error"``: the loader stops; ``"warning"``: the loader fixes it."""

    severity: Literal["error", "warning"]
    split: str
    message: str


@dataclass
class SplitReport:
    name: str
    label_names: list[str]
    images_per_class: list[int] = field(init=False)  # images with at least one box of the class
    boxes_per_class: list[int] = field(init=False)
    crowd_per_class: list[int] = field(init=False)
    boxes_per_image: list[int] = field(default_factory=list)
    widths: list[float] = field(default_factory=list)  # one per box
    heights: list[float] = field(default_factory=list)
    changes: BoxCounts = field(default_factory=BoxCounts)

    def __post_init__(self) -> None:
        k = len(self.label_names)
        self.images_per_class, self.boxes_per_class, self.crowd_per_class = [0] * k, [0] * k, [0] * k

    def add(self, objects: dict[str, list]) -> None:
        for label in set(objects["category"]):
            self.images_per_class[label] += 1
        for label, crowd, (_, _, w, h) in zip(objects["category"], objects["iscrowd"], objects["bbox"]):
            self.boxes_per_class[label] += 1
            self.crowd_per_class[label] += int(crowd)
            self.widths.append(w)
            self.heights.append(h)
        self.boxes_per_image.append(len(objects["bbox"]))

    @property
    def num_images(self) -> int:
        return len(self.boxes_per_image)

    @property
    def images_without_boxes(self) -> int:
        return self.boxes_per_image.count(0)

    def format(self, box_policy: str) -> str:
        crowd = sum(self.crowd_per_class)
        lines = [
            f"split '{self.name}': {self.num_images} images ({self.images_without_boxes} without boxes), "
            f"{len(self.widths)} boxes{f' ({crowd} crowd)' if crowd else ''}, {len(self.label_names)} classes"
        ]
        width = max([5, *map(len, self.label_names)])
        lines.append(f"  {'class':<{width}}  {'images':>7}  {'boxes':>7}  {'crowd':>7}")
        for name, images, boxes, crowds in zip(
            self.label_names, self.images_per_class, self.boxes_per_class, self.crowd_per_class
        ):
            lines.append(f"  {name:<{width}}  {images:>7}  {boxes:>7}  {crowds:>7}")
        widths, heights = np.asarray(self.widths, dtype=np.float64), np.asarray(self.heights, dtype=np.float64)
        rows = (
            ("box width (px)", widths),
            ("box height (px)", heights),
            ("box area (px^2)", widths * heights),
            ("boxes per image", self.boxes_per_image),
        )
        lines += [f"  {label:<16} {_statistics(values)}" for label, values in rows]
        lines.append(f"  box_policy={box_policy!r}: {self.changes.summary()}")
        return "\n".join(lines)


@dataclass
class DataReport:
    source: str
    kind: str  # a key of FORMAT_NAMES, or "synthetic"
    box_policy: str
    applied: str  # the policy the counts are of: box_policy, or "drop" for "error" (which loads nothing)
    splits: list[SplitReport]
    problems: list[Problem]

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    def format(self) -> str:
        kind = "generated shapes" if self.kind == SYNTHETIC else FORMAT_NAMES[self.kind]
        counted = f", counted as box_policy={self.applied!r} loads it" if self.applied != self.box_policy else ""
        lines = [f"{self.source} ({kind}), box_policy={self.box_policy!r}{counted}"]
        lines += [split.format(self.applied) for split in self.splits]
        for severity, problems in (("error", self.errors), ("warning", self.warnings)):
            lines += [f"{severity} [{p.split}]: {p.message}" for p in problems]
        if not self.problems:
            lines.append("no problems found")
        else:
            errors, warnings = len(self.errors), len(self.warnings)
            fixes = f" (box_policy={self.box_policy!r} clips or drops those boxes)" if warnings else ""
            lines.append(
                f"{errors} error{'' if errors == 1 else 's'} (the loader stops at them), {warnings} "
                f"warning{'' if warnings == 1 else 's'}{fixes}"
            )
        return "\n".join(lines)


def check_data(
    source: str | os.PathLike,
    splits: Sequence[str] | None = None,
    box_policy: BoxPolicy = "clip",
    box_tolerance: float = 1.0,
) -> DataReport:
    _check_policy(box_policy)
    # "error" rejects exactly the boxes "drop" drops: list those, as errors
    applied: BoxPolicy = "drop" if box_policy == "error" else box_policy
    box_severity = "error" if box_policy == "error" else "warning"
    kind = SYNTHETIC if str(source) == SYNTHETIC else detect_format(source)
    reports, problems = [], []

    def add_changes(split: str, changes: tuple[BoxChange, ...] | list[BoxChange]) -> BoxCounts:
        stops = "" if applied == box_policy else f" by box_policy={applied!r}; box_policy={box_policy!r} stops at it"
        problems.extend(Problem(box_severity, split, change.message + stops) for change in changes)
        return BoxCounts.of(changes)

    if kind in ("coco", "yolo", "voc"):
        for split in read_folder_splits(source, splits, applied, box_tolerance, collect_image_errors=True):
            report = SplitReport(split.name, split.label_names)
            for image in split.images:
                report.add(image.objects)
            problems.extend(Problem("error", split.name, message) for message in split.image_errors)
            report.changes = add_changes(split.name, split.changes)
            reports.append(report)
    else:
        stored = load_data(SYNTHETIC, splits) if kind == SYNTHETIC else saved_or_hub_splits(source, splits)
        for name, dataset in stored.items():
            changes: list[BoxChange] = []
            conformer = SplitConformer(dataset.features, name, box_tolerance, applied, changes=changes)
            report = SplitReport(name, list(id2label(conformer.target).values()))
            images = dataset.select_columns(["image"]).cast_column("image", datasets.Image(decode=False))
            for index, (example, image) in enumerate(zip(conformer.rows(dataset), images)):
                report.add(example["objects"])
                problems.extend(
                    Problem("error", name, message) for message in _image_error(example, image, index, name)
                )
            report.changes = add_changes(name, changes)
            reports.append(report)
    return DataReport(str(source), kind, box_policy, applied, reports, problems)


def _image_error(example: dict[str, Any], image: dict[str, Any], index: int, split: str) -> list[str]:
    where = f"split '{split}' example {index} (image_id {example['image_id']})"
    try:
        _image_size(image["image"], where, example["width"], example["height"], "the example's `width`/`height`")
    except ValueError as error:
        return [str(error)]
    return []


def _statistics(values: Any) -> str:
    values = np.asarray(values, dtype=np.float64)
    if not len(values):
        return "none"
    low, median, high = (_number(v) for v in (values.min(), np.median(values), values.max()))
    return f"min {low}  median {median}  max {high}"


def _number(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")
