"""YOLO and Pascal VOC folders parsed into raw splits without opening an image; :mod:`.folders` reads the sizes
(YOLO boxes are fractions of them) and applies the ``box_policy``.

**YOLO** (ultralytics' layout): a ``data.yaml`` (or the folder holding it) with ``names`` (a list, or ``{id: name}``
with the ids ``0..K-1``) and ``train`` / ``val`` / ``test`` entries, each an image folder (searched recursively), a
text file listing image paths (relative ones from the list's folder) or a list of these, relative to ``path`` (itself
relative to the yaml's folder; default: the yaml's folder). An entry ``../x`` that does not exist is also tried as
``x``, as ultralytics does for Roboflow's exports. The labels of ``.../images/.../a.jpg`` are in
``.../labels/.../a.txt`` (the last ``images`` folder of the path replaced by ``labels``; no ``images`` folder: next to
the image), one ``class cx cy w h`` line per box, normalized to the image size; an image without a label file, or
with an empty one, has no objects. Splits: ``train``, ``validation`` (``val``), ``test``. Label ``j`` is YOLO class
``j``. A label file without its image is a missing image.

**Pascal VOC**: ``Annotations/<id>.xml``, the images in ``JPEGImages/`` (the XML's ``<filename>``, else
``<id>.jpg``) and one split per ``ImageSets/Main/<split>.txt`` (one image id per line; the per-class lists
``<class>_<split>.txt`` are skipped). ``val`` is split ``validation``. The label names are the object names of every
listed XML, sorted (VOC's 20 classes are in their usual order). ``<bndbox>`` holds 1-based, inclusive pixel indices:
pixel ``i`` covers ``[i - 1, i]``, so the box is ``[xmin - 1, ymin - 1, xmax - xmin + 1, ymax - ymin + 1]`` in COCO's
``[x, y, w, h]``, and a box of the whole image is ``[0, 0, width, height]``. An object marked ``<difficult>1`` gets
``iscrowd=1``: like VOC's evaluation, COCO's ignores it (a detection on it is neither a true nor a false positive), and
training leaves it out (``DetectionCollator`` drops crowd boxes), as VOC detectors do. ``<size>`` gives the image's
width and height (checked against the file; read from it if absent).

In both formats image ``i`` of a split (YOLO: in sorted path order; VOC: in the order of the split's list) gets
``image_id`` ``i`` and the objects get the ids ``1, 2, ...`` in reading order. A malformed line or XML raises a
``ValueError`` naming the file and the line or object.
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from ..modeling.errors import HfDetrInputError

__all__ = ["IMAGE_SUFFIXES", "RawImage", "RawSplit", "folder_format", "read_voc", "read_yolo"]

# the image files a YOLO folder is searched for (what PIL reads)
IMAGE_SUFFIXES = frozenset({".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp"})
_YOLO_SPLITS = {"train": "train", "val": "validation", "test": "test"}
# labelImg writes the class list into the labels folder; it labels no image
_YOLO_CLASS_LIST = "classes.txt"


@dataclass
class RawImage:
    file_name: str  # the image file, relative to the split's root (or absolute)
    width: int | None  # the size the annotation declares (VOC <size>); None: read it from the image
    height: int | None
    boxes: list[list[float]] = field(default_factory=list)  # [n][4] in the split's box_format
    categories: list[int] = field(default_factory=list)  # label of each box
    iscrowd: list[int] = field(default_factory=list)
    names: list[str] = field(default_factory=list)  # how messages name each box


@dataclass
class RawSplit:
    source: str  # the file the split is defined in, as messages name it ("data.yaml: val", "ImageSets/Main/val.txt")
    root: Path  # what the images' file names are relative to
    box_format: Literal["xywh", "cxcywh"]  # "xywh": pixels; "cxcywh": YOLO's, normalized to the image size
    images: list[RawImage]
    missing: list[str] = field(default_factory=list)  # annotations whose image does not exist (one message each)


@dataclass
class RawFolder:
    """A reader per split (reading a split parses its label files)."""

    label_names: list[str]
    splits: dict[str, Callable[[], RawSplit]]


def folder_format(path: str | os.PathLike) -> Literal["yolo", "voc"] | None:
    path = Path(path)
    if path.is_file() and path.suffix in (".yaml", ".yml") or (path / "data.yaml").is_file():
        return "yolo"
    if (path / "Annotations").is_dir() and any((path / "Annotations").glob("*.xml")):
        return "voc"
    return None


# ---------------------------------------------------------------------------------------------------------------------
# YOLO


def read_yolo(path: str | os.PathLike) -> RawFolder:
    path = Path(path)
    yaml_file = path if path.is_file() else path / "data.yaml"
    try:
        config = yaml.safe_load(yaml_file.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise HfDetrInputError(f"{yaml_file}: cannot read it as YAML ({error}).") from error
    if not isinstance(config, dict):
        raise HfDetrInputError(
            f"{yaml_file}: expected a mapping with `names` and `train` / `val` / `test`, got {config!r}."
        )
    label_names = _yolo_names(config, yaml_file.name)
    root = Path(config.get("path") or ".")
    root = root if root.is_absolute() else yaml_file.parent / root
    splits = {
        name: (lambda key=key: _read_yolo_split(config[key], key, root, yaml_file.name, len(label_names)))
        for key, name in _YOLO_SPLITS.items()
        if config.get(key) not in (None, "", [])
    }
    if not splits:
        raise HfDetrInputError(f"{yaml_file}: no `train`, `val` or `test` entry; give each split's image folder.")
    return RawFolder(label_names, splits)


def _yolo_names(config: dict[str, Any], yaml_name: str) -> list[str]:
    names = config.get("names")
    if isinstance(names, dict):
        if sorted(names) != list(range(len(names))):
            raise HfDetrInputError(
                f"{yaml_name}: the ids of `names` are {sorted(names, key=str)}; YOLO class ids are 0..K-1, one each."
            )
        names = [names[i] for i in range(len(names))]
    if not isinstance(names, list) or not names:
        raise HfDetrInputError(
            f"{yaml_name}: `names` must be a non-empty list of class names or {{id: name}}, got {names!r}."
        )
    names = [str(name) for name in names]  # YAML reads `0: 1` as a number; ClassLabel names are strings
    if len(set(names)) != len(names):
        raise HfDetrInputError(f"{yaml_name}: class names {names} repeat; ClassLabel names must be unique.")
    if config.get("nc") is not None and config["nc"] != len(names):
        raise HfDetrInputError(
            f"{yaml_name}: nc = {config['nc']} but `names` lists {len(names)} classes; make them agree."
        )
    return names


def _read_yolo_split(entry: Any, key: str, root: Path, yaml_name: str, num_classes: int) -> RawSplit:
    source = f"{yaml_name}: {key}"
    images: list[Path] = []
    label_dirs: list[Path] = []
    for item in entry if isinstance(entry, list) else [entry]:
        if not isinstance(item, str):
            raise HfDetrInputError(f"{source}: {item!r} is not a path; give an image folder or a list file.")
        location = root / item
        if not location.exists() and item.startswith("../") and (root / item[3:]).exists():
            location = root / item[3:]  # Roboflow's exports point one folder too high
        if location.is_dir():
            images += sorted(f for f in location.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
            if _label_file(location / "x").parent != location:  # labels in their own folder: look for orphans there
                label_dirs.append(_label_file(location / "x").parent)
        elif location.is_file():
            for line in location.read_text().splitlines():
                if line.strip():
                    images.append(location.parent / line.strip())  # absolute lines stay absolute
        else:
            raise HfDetrInputError(f"{source}: {location} is neither an image folder nor a list file of image paths.")

    raw = RawSplit(source, root, "cxcywh", [])
    labelled = set()
    for image in images:
        label_file = _label_file(image)
        labelled.add(label_file)
        item = RawImage(_relative(image, root), None, None)
        if label_file.is_file():
            _read_yolo_labels(label_file, _relative(label_file, root), num_classes, yaml_name, item)
        raw.images.append(item)
    for folder in label_dirs:
        for label_file in sorted(folder.rglob("*.txt")):
            if label_file not in labelled and label_file.name != _YOLO_CLASS_LIST:
                raw.missing.append(
                    f"{source}: {_relative(label_file, root)} labels an image that is missing (no image of that name "
                    "in the split's image folders); add the image or delete the label file."
                )
    return raw


def _label_file(image: Path) -> Path:
    parts = list(image.parts)
    folders = [i for i, part in enumerate(parts[:-1]) if part == "images"]
    if folders:
        parts[folders[-1]] = "labels"
    return Path(*parts).with_suffix(".txt")


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _read_yolo_labels(file: Path, shown: str, num_classes: int, yaml_name: str, image: RawImage) -> None:
    try:
        text = file.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise HfDetrInputError(f"{shown}: cannot read the label file ({error}).") from error
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{shown} line {number}"
        if len(fields) != 5:
            raise HfDetrInputError(
                f"{where}: {line.strip()!r} has {len(fields)} fields; a YOLO detection label is `class cx cy w h` "
                "(5 fields; polygon and keypoint labels are not read)."
            )
        try:
            category = int(fields[0])
        except ValueError:
            raise HfDetrInputError(f"{where}: the class {fields[0]!r} is not an integer class id.") from None
        if not 0 <= category < num_classes:
            raise HfDetrInputError(
                f"{where}: class {category} is not in `names` of {yaml_name} (ids 0..{num_classes - 1}); fix the "
                "line or add the class."
            )
        try:
            box = [float(value) for value in fields[1:]]
        except ValueError:
            message = f"{where}: {line.strip()!r}: cx cy w h must be numbers (fractions of the image)."
            raise HfDetrInputError(message) from None
        image.boxes.append(box)
        image.categories.append(category)
        image.iscrowd.append(0)
        image.names.append(f"{where}: box in pixels")


# ---------------------------------------------------------------------------------------------------------------------
# Pascal VOC


def read_voc(path: str | os.PathLike) -> RawFolder:
    """Parses every listed XML at once, since the label names come from all of them."""
    root = Path(path)
    lists = sorted(f for f in (root / "ImageSets" / "Main").glob("*.txt") if "_" not in f.stem)
    if not lists:
        raise HfDetrInputError(
            f"{root} has Annotations/ but no ImageSets/Main/<split>.txt; list each split's image ids there (train.txt, "
            "val.txt, ...), one per line."
        )
    ids_of: dict[str, list[str]] = {}
    for file in lists:
        ids = []
        for number, line in enumerate(file.read_text().splitlines(), start=1):
            fields = line.split()
            if len(fields) > 1:
                raise HfDetrInputError(
                    f"ImageSets/Main/{file.name} line {number}: {line.strip()!r} is not one image id."
                )
            ids += fields
        ids_of[file.stem] = ids
    parsed = {image_id: _read_voc_xml(root, image_id) for ids in ids_of.values() for image_id in ids}
    label_names = sorted({name for objects in parsed.values() for name in objects[1]})
    label_of = {name: label for label, name in enumerate(label_names)}

    def split(stem: str) -> RawSplit:
        raw = RawSplit(f"ImageSets/Main/{stem}.txt", root, "xywh", [])
        for image_id in ids_of[stem]:
            image, names = parsed[image_id]
            raw.images.append(
                RawImage(
                    image.file_name,
                    image.width,
                    image.height,
                    image.boxes,
                    [label_of[name] for name in names],
                    image.iscrowd,
                    image.names,
                )
            )
        return raw

    return RawFolder(label_names, {_YOLO_SPLITS.get(stem, stem): (lambda stem=stem: split(stem)) for stem in ids_of})


def _read_voc_xml(root: Path, image_id: str) -> tuple[RawImage, list[str]]:
    """The image (categories left empty) and the class name of each box."""
    shown = f"Annotations/{image_id}.xml"
    try:
        tree = ElementTree.parse(root / shown).getroot()
    except OSError as error:
        raise HfDetrInputError(f"{shown}: cannot read the annotation of image {image_id!r} ({error}).") from error
    except ElementTree.ParseError as error:
        raise HfDetrInputError(f"{shown}: not valid XML ({error}).") from error
    size = tree.find("size")
    width, height = (
        (None, None) if size is None else (_voc_number(size, key, shown, "<size>", int) for key in ("width", "height"))
    )
    image = RawImage(f"JPEGImages/{(tree.findtext('filename') or '').strip() or image_id + '.jpg'}", width, height)
    names = []
    for k, obj in enumerate(tree.findall("object"), start=1):  # direct children: <part>s of a person have boxes too
        name = (obj.findtext("name") or "").strip()
        where = f"{shown} object {k}"
        if not name:
            raise HfDetrInputError(f"{where}: no <name>; every VOC object needs its class name.")
        box = obj.find("bndbox")
        if box is None:
            raise HfDetrInputError(f"{where} ({name!r}): no <bndbox>.")
        xmin, ymin, xmax, ymax = (
            _voc_number(box, key, f"{where} ({name!r})", "<bndbox>", float) for key in ("xmin", "ymin", "xmax", "ymax")
        )
        difficult = obj.find("difficult")
        image.boxes.append([xmin - 1, ymin - 1, xmax - xmin + 1, ymax - ymin + 1])
        image.iscrowd.append(int(difficult is not None and _voc_number(obj, "difficult", where, "<object>", int) != 0))
        image.names.append(f"{where} ({name!r}): bndbox as [x, y, w, h]")
        names.append(name)
    return image, names


def _voc_number(element: ElementTree.Element, key: str, where: str, parent: str, kind: type) -> Any:
    text = (element.findtext(key) or "").strip()
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if kind is int and not value.is_integer():
        raise HfDetrInputError(f"{where}: {parent} needs an integer <{key}>, got {text!r}.")
    if not math.isfinite(value):
        raise HfDetrInputError(f"{where}: {parent} needs a number <{key}>, got {text!r}.")
    return kind(value)
