"""Box-aware augmentation for DETR fine-tuning on examples in the Hub's COCO detection schema.

An example is a dict ``{"image": PIL.Image, "image_id": int, "width": int, "height": int, "objects": {"bbox": [[x, y,
w, h], ...] (pixels), "category": [...], "area": [...], "iscrowd": [...], "id": [...]}}``, with masks also
``"segmentation": [{"size": [h, w], "counts": str}, ...]`` (compressed RLEs, see :mod:`.masks`). The transforms are
plain ``torchvision.transforms.v2`` pipelines; :func:`transform_example` / :func:`transform_batch` run one on such
examples and return the same schema (masks moved with the image and boxes as ``tv_tensors.Mask``), so they plug into
``datasets.Dataset.with_transform``::

    train_ds = train_ds.with_transform(functools.partial(transform_batch, transform=make_train_transform()))
    streamed = streamed.map(functools.partial(transform_example, transform=make_train_transform()))  # IterableDataset

:func:`to_coco_annotations` then turns an example into the annotation dict the image processor takes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import PIL.Image
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from ..modeling.errors import HfDetrInputError, HfDetrInputTypeError
from .masks import decode_rles, encode_rles

# DETR's recipe (facebookresearch/detr, datasets/coco.py).
DETR_TRAIN_SCALES: tuple[int, ...] = tuple(range(480, 801, 32))
DETR_MAX_SIZE = 1333
DETR_CROP_RESIZE_SCALES: tuple[int, ...] = (400, 500, 600)
DETR_CROP_SIZE: tuple[int, int] = (384, 600)
DETR_EVAL_SIZE = 800

__all__ = [
    "DETR_CROP_RESIZE_SCALES",
    "DETR_CROP_SIZE",
    "DETR_EVAL_SIZE",
    "DETR_MAX_SIZE",
    "DETR_TRAIN_SCALES",
    "RandomSizeCrop",
    "make_train_transform",
    "to_coco_annotations",
    "training_transform",
    "transform_batch",
    "transform_example",
]


class RandomSizeCrop(v2.Transform):
    """Crop a window whose height and width are drawn independently and uniformly from ``[min_size, max_size]``.

    This is DETR's ``RandomSizeCrop``; torchvision has no equivalent (``RandomCrop`` has a fixed size,
    ``RandomResizedCrop`` resizes the crop). A side larger than the image is capped at the image side. Boxes are
    clipped to the window by torchvision's crop kernel; boxes left outside collapse to zero size, so follow with
    ``SanitizeBoundingBoxes``. Randomness comes from ``torch``'s generator, like every other v2 transform.
    """

    def __init__(self, min_size: int, max_size: int) -> None:
        super().__init__()
        if not 1 <= min_size <= max_size:
            raise HfDetrInputError(
                f"RandomSizeCrop needs 1 <= min_size <= max_size, got min_size={min_size}, max_size={max_size}."
            )
        self.min_size = min_size
        self.max_size = max_size

    def _random_side(self, side: int) -> int:
        high = min(self.max_size, side)
        low = min(self.min_size, high)
        return int(torch.randint(low, high + 1, ()))

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = v2.query_size(flat_inputs)
        crop_h, crop_w = self._random_side(height), self._random_side(width)
        top = int(torch.randint(0, height - crop_h + 1, ()))
        left = int(torch.randint(0, width - crop_w + 1, ()))
        return {"top": top, "left": left, "height": crop_h, "width": crop_w}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return self._call_kernel(F.crop, inpt, **params)


def _check_sizes(name: str, sizes: Sequence[int], max_size: int | None) -> list[int]:
    sizes = [sizes] if isinstance(sizes, int) else list(sizes)
    if not sizes or any(not isinstance(s, int) or s < 1 for s in sizes):
        raise HfDetrInputError(f"`{name}` must be a non-empty list of positive ints, got {sizes!r}.")
    if max_size is not None and max(sizes) >= max_size:
        # torchvision's Resize needs max_size strictly above the requested shorter side.
        raise HfDetrInputError(
            f"`max_size` ({max_size}) must be larger than every value of `{name}` (largest: {max(sizes)})."
        )
    return sizes


def _shorter_side_resize(sizes: list[int], max_size: int | None) -> v2.Transform:
    """Resize the shorter side to a size drawn from ``sizes``, keeping the longer side <= ``max_size``.

    ``v2.Resize`` is used instead of ``v2.RandomShortestSize`` because the latter truncates ``side * ratio`` and can
    land one pixel below the requested size (a 321-px side asked for 672 becomes 671).
    """
    resizes = [v2.Resize(size, max_size=max_size) for size in sizes]
    return resizes[0] if len(resizes) == 1 else v2.RandomChoice(resizes)


def make_train_transform(
    scales: Sequence[int] = DETR_TRAIN_SCALES,
    max_size: int = DETR_MAX_SIZE,
    crop_resize_scales: Sequence[int] = DETR_CROP_RESIZE_SCALES,
    crop_size: tuple[int, int] = DETR_CROP_SIZE,
    crop_prob: float = 0.5,
    flip_prob: float = 0.5,
) -> v2.Compose:
    """DETR's training augmentation, with its numbers as defaults.

    Horizontal flip (``flip_prob``), then either a multi-scale resize (shorter side drawn from ``scales``, longer side
    <= ``max_size``) or, with probability ``crop_prob``, a resize of the shorter side to one of ``crop_resize_scales``,
    a :class:`RandomSizeCrop` of ``crop_size = (min, max)`` and the same multi-scale resize. Boxes narrower or shorter
    than one pixel afterwards (including those the crop cut away) are removed with their object.

    For a 128-px data set, e.g. ``make_train_transform(scales=range(96, 161, 16), max_size=267,
    crop_resize_scales=(80, 100, 120), crop_size=(72, 120))``.
    """
    scales = _check_sizes("scales", scales, max_size)
    crop_resize_scales = _check_sizes("crop_resize_scales", crop_resize_scales, None)
    if len(crop_size) != 2:
        raise HfDetrInputError(f"`crop_size` must be a (min, max) pair, got {crop_size!r}.")
    for name, prob in (("crop_prob", crop_prob), ("flip_prob", flip_prob)):
        if not 0.0 <= prob <= 1.0:
            raise HfDetrInputError(f"`{name}` must be in [0, 1], got {prob}.")
    multi_scale = _shorter_side_resize(scales, max_size)
    crop_then_resize = v2.Compose(
        [_shorter_side_resize(crop_resize_scales, None), RandomSizeCrop(*crop_size), multi_scale]
    )
    return v2.Compose(
        [
            v2.RandomHorizontalFlip(flip_prob),
            v2.RandomChoice([multi_scale, crop_then_resize], p=[1.0 - crop_prob, crop_prob]),
            v2.ClampBoundingBoxes(),
            # The "labels" entry of the sample holds object indices (see transform_example), so every per-object
            # field is dropped together with its box.
            v2.SanitizeBoundingBoxes(),
        ]
    )


def _where(example: dict[str, Any]) -> str:
    image_id = example.get("image_id")
    return f"example with image_id={image_id}" if image_id is not None else "example"


def _object_fields(example: dict[str, Any]) -> tuple[torch.Tensor, dict[str, list]]:
    """``example["objects"]``'s boxes as an (N, 4) float64 tensor and its other per-object lists. The boxes are not
    checked again: the loaders checked them under the box policy (`hf_detr.data.box_policy`)."""
    objects = example.get("objects")
    if not isinstance(objects, dict) or "bbox" not in objects:
        raise HfDetrInputError(
            f"{_where(example)}: expected `objects` to be a dict with a `bbox` list (Hub COCO schema), got {objects!r}."
        )
    boxes = torch.as_tensor(objects["bbox"], dtype=torch.float64).reshape(-1, 4)
    others = {key: list(values) for key, values in objects.items() if key != "bbox"}
    for key, values in others.items():
        if len(values) != len(boxes):
            raise HfDetrInputError(
                f"{_where(example)}: `objects.{key}` has {len(values)} entries but `objects.bbox` has {len(boxes)}."
            )
    return boxes, others


def transform_example(example: dict[str, Any], transform: Callable[[Any], Any]) -> dict[str, Any]:
    """Apply a box-aware ``torchvision.transforms.v2`` transform to one Hub-COCO example.

    The transform receives ``{"image": PIL image, "boxes": BoundingBoxes (N, 4) XYWH, "labels": LongTensor (N,)}``
    where ``labels`` holds the object indices 0..N-1: a ``SanitizeBoundingBoxes`` in the pipeline drops them along
    with the boxes and every per-object field (``category``, ``area``, ``iscrowd``, ``id``, ...) follows. An example
    with ``objects.segmentation`` also gives ``"masks"``: its RLEs decoded to a uint8 ``Mask`` (N, H, W), which the v2
    transforms flip, resize (nearest) and crop with the image and ``SanitizeBoundingBoxes`` drops with its box; the
    result is encoded again as RLEs of the new image size.

    ``area`` (COCO's mask area, which decides small/medium/large) keeps its ratio to the box area, so a resize scales
    it exactly and a crop shrinks it with the box. ``width``/``height`` are updated when present.

    Returns a new example in the same schema; the input is not modified.
    """
    image = example.get("image")
    if not isinstance(image, (PIL.Image.Image, torch.Tensor)):
        raise HfDetrInputTypeError(
            f"{_where(example)}: `image` must be a PIL image or a (C, H, W) tensor, got {type(image).__name__}. "
            "Decode the column (datasets.Image feature) before transforming."
        )
    boxes, others = _object_fields(example)
    height, width = F.get_size(image)
    sample = {
        "image": image,
        "boxes": tv_tensors.BoundingBoxes(boxes, format="XYWH", canvas_size=(height, width)),
        "labels": torch.arange(len(boxes)),
    }
    rles = others.pop("segmentation", None)
    if rles is not None:
        masks = decode_rles(rles, f"{_where(example)}: `objects.segmentation`", (height, width))
        sample["masks"] = tv_tensors.Mask(torch.from_numpy(masks).to(torch.uint8))
    out = transform(sample)
    kept = out["labels"].tolist()
    new_boxes = out["boxes"].as_subclass(torch.Tensor)

    objects = {key: [values[i] for i in kept] for key, values in others.items()}
    objects["bbox"] = new_boxes.tolist()
    if rles is not None:
        if len(out["masks"]) != len(kept):  # a transform that drops boxes but not tv_tensors.Mask entries
            raise HfDetrInputError(
                f"{_where(example)}: the transform kept {len(kept)} of {len(boxes)} boxes but {len(out['masks'])} "
                "masks; drop boxes with v2.SanitizeBoundingBoxes, which drops their masks too."
            )
        objects["segmentation"] = encode_rles(out["masks"])
    if "area" in others:
        old_box_area = boxes[kept, 2] * boxes[kept, 3]
        new_box_area = new_boxes[:, 2] * new_boxes[:, 3]
        area = torch.as_tensor([float(a) for a in objects["area"]], dtype=torch.float64)
        objects["area"] = torch.where(old_box_area > 0, area * new_box_area / old_box_area, new_box_area).tolist()

    result = {**example, "image": out["image"], "objects": objects}
    new_height, new_width = F.get_size(out["image"])
    if "width" in example:
        result["width"] = new_width
    if "height" in example:
        result["height"] = new_height
    return result


def transform_batch(batch: dict[str, list], transform: Callable[[Any], Any]) -> dict[str, list]:
    """:func:`transform_example` over a column-major batch, as ``Dataset.with_transform`` / ``set_transform`` pass it.

    Bind the transform with ``functools.partial(transform_batch, transform=...)`` (picklable for DataLoader workers).
    """
    columns = list(batch)
    examples = [transform_example(dict(zip(columns, row)), transform) for row in zip(*batch.values())]
    return {column: [example[column] for example in examples] for column in columns}


def to_coco_annotations(example: dict[str, Any]) -> dict[str, Any]:
    """Convert a Hub-COCO example to the image processor's annotation format.

    Returns ``{"image_id": int, "annotations": [{"bbox": [x, y, w, h], "category_id": int, "area": float,
    "iscrowd": int}, ...]}``, with the RLE of ``objects.segmentation`` as each annotation's ``"segmentation"`` when the
    example has masks. Missing ``area`` falls back to the box area and missing ``iscrowd`` to 0.
    """
    if "image_id" not in example:
        raise HfDetrInputError("example has no `image_id`: the image processor needs one per image; add that column.")
    boxes, others = _object_fields(example)
    if "category" not in others:
        raise HfDetrInputError(f"{_where(example)}: `objects` has no `category` list.")
    num = len(boxes)
    areas = others.get("area", (boxes[:, 2] * boxes[:, 3]).tolist())
    iscrowd = others.get("iscrowd", [0] * num)
    annotations = [
        {
            "bbox": boxes[i].tolist(),
            "category_id": int(others["category"][i]),
            "area": float(areas[i]),
            "iscrowd": int(iscrowd[i]),
        }
        for i in range(num)
    ]
    for annotation, rle in zip(annotations, others.get("segmentation", ())):
        annotation["segmentation"] = rle
    return {"image_id": example["image_id"], "annotations": annotations}


def training_transform(augment: str, image_size: int, max_size: int) -> v2.Transform | None:
    """The training augmentation for images the image processor resizes to shorter side `image_size`, longer side
    at most `max_size`.

    `"detr"`: DETR's flip, multi-scale resize and random crop with every size scaled by `image_size / 800` (at
    (800, 1333) the paper's recipe: scales 480-800, crops 384-600; at (128, 213) scales 77-128, crops 61-96); it
    resizes itself, so batch it without the processor's resize. `"flip"`: the horizontal flip alone, `"none"`: no
    transform (None); batch both through the processor's resize, the one inference uses. Masks
    (``objects.segmentation``) follow the image and boxes through each (see :func:`transform_example`).
    """
    if augment == "flip":
        return v2.RandomHorizontalFlip(0.5)
    if augment == "none":
        return None
    if augment != "detr":
        raise HfDetrInputError(f"augment={augment!r}: choose 'detr' (flip, multi-scale resize, crop), 'flip' or 'none'")
    factor = image_size / DETR_EVAL_SIZE
    return make_train_transform(
        scales=sorted({round(s * factor) for s in DETR_TRAIN_SCALES}),
        max_size=max_size,
        crop_resize_scales=sorted({round(s * factor) for s in DETR_CROP_RESIZE_SCALES}),
        crop_size=(max(1, round(DETR_CROP_SIZE[0] * factor)), round(DETR_CROP_SIZE[1] * factor)),
    )
