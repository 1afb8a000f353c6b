"""From examples in the Hub's COCO detection schema to model batches.

:class:`DetectionDataset` applies a box-aware transform of :mod:`.transforms` to a map-style ``datasets.Dataset``
reproducibly (the randomness of example ``i`` in epoch ``e`` depends only on ``(seed, e, i)``, so a run resumed in the
middle of an epoch sees the same augmented images as an uninterrupted one, whatever the number of DataLoader workers)
to the image made upright RGB (:func:`upright_rgb`), and records each image's original size; a streamed split
(``datasets.IterableDataset``) goes through the same per-example work (:meth:`DetectionDataset.prepare`, with each
example's row index in the source) in :mod:`.streaming`.
:class:`DetectionCollator` pads a list of such examples through :class:`HfDetrImageProcessor`::

    train = DetectionDataset(dataset["train"], make_train_transform(), seed=0)
    loader = DataLoader(train, batch_size=4, collate_fn=DetectionCollator(HfDetrImageProcessor()))
    batch = next(iter(loader))  # pixel_values [4, 3, H, W], pixel_mask [4, H, W], labels: 4 dicts

Examples with masks (``objects.segmentation``, see :mod:`.masks`) keep them aligned through the transform, and their
labels get ``masks`` at the padded size; evaluation batches can also carry each image's masks at its original size
(``DetectionCollator(..., mask_references=True)``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import datasets
import numpy as np
import PIL.Image
import torch
from torchvision.transforms.v2 import functional as F

from ..modeling.errors import HfDetrInputError, HfDetrInputTypeError
from ..modeling.image_processing_hf_detr import HfDetrImageProcessor, upright_rgb
from .masks import mask_references
from .transforms import to_coco_annotations, transform_example

__all__ = ["DetectionCollator", "DetectionDataset", "decoded_image", "derived_seed", "upright_rgb"]


def decoded_image(image: Any, where: str) -> PIL.Image.Image:
    """A PIL image, or an undecoded ``datasets.Image`` value (``{"bytes", "path"}``) decoded; a ``ValueError`` naming
    ``where`` and the file when it is gone or cannot be decoded (e.g. deleted since the data set was prepared)."""
    if isinstance(image, PIL.Image.Image):
        return image
    if not isinstance(image, Mapping) or not (image.get("bytes") or image.get("path")):
        raise HfDetrInputTypeError(
            f"{where}: `image` must be a PIL image or a datasets.Image value, got {type(image).__name__}; "
            "keep the column as a datasets.Image() feature."
        )
    try:
        return datasets.Image().decode_example(dict(image))
    except (OSError, PIL.UnidentifiedImageError, ValueError) as error:  # FileNotFoundError is an OSError
        shown = image.get("path") or "its embedded bytes"
        raise HfDetrInputError(
            f"{where}: cannot decode the image {shown} ({error}); restore or replace the file, or load the data set "
            "again (box_policy='drop' leaves out the images of a COCO folder that are missing or unreadable)."
        ) from error


def derived_seed(*keys: int) -> int:
    """A seed determined by `keys` alone (e.g. seed, epoch, index), well spread even for neighbouring keys."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1)[0])


class DetectionDataset(torch.utils.data.Dataset):
    """A Hub-COCO ``datasets.Dataset`` seen through a ``torchvision.transforms.v2`` transform (or none).

    Each item is the transformed example (see :func:`.transforms.transform_example`) plus ``orig_size``: the
    ``(height, width)`` of the image before the transform, the frame evaluation scores predictions in. The image is
    made upright 8-bit RGB (:func:`upright_rgb`: EXIF orientation, grayscale, palette, transparency, 16-bit) before the
    transform sees it, so the augmentation moves pixels and boxes of the same upright frame.

    The transform draws from ``torch``'s global generator; it runs under a generator seeded from ``(seed, epoch,
    index)`` and restored afterwards, so augmentation neither depends on nor disturbs the training's random state.
    ``dataset[index]`` augments as in the epoch of the last :meth:`set_epoch`; ``dataset[epoch, index]`` as in
    ``epoch``, which is what a sampler hands persistent DataLoader workers (their copies of the data set do not see
    ``set_epoch``). An example's masks (``objects.segmentation``) are decoded for the transform and encoded again
    after it (see :func:`.transforms.transform_example`). ``label_map[c]`` replaces each category ``c`` (e.g. the
    model's label of each data set label, see :func:`.evaluation.evaluate.model_labels`).

    ``dataset`` may also be a streamed split (``datasets.IterableDataset``): it has no items by index, and
    :mod:`.streaming` reads it and hands each example to :meth:`prepare`.
    """

    def __init__(
        self,
        dataset: Any,
        transform: Callable[[Any], Any] | None = None,
        seed: int = 0,
        label_map: Sequence[int] | None = None,
    ) -> None:
        streamed = isinstance(dataset, torch.utils.data.IterableDataset)
        if not streamed and not (hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")):
            raise HfDetrInputTypeError(
                f"DetectionDataset needs a datasets.Dataset (or a streamed datasets.IterableDataset), got "
                f"{type(dataset).__name__}."
            )
        if isinstance(dataset, datasets.Dataset) and isinstance(dataset.features.get("image"), datasets.Image):
            # decoded in `prepare`, where a file gone or broken since loading can be named (free: no data is copied)
            dataset = dataset.cast_column("image", datasets.Image(mode=dataset.features["image"].mode, decode=False))
        self.dataset = dataset
        self.transform = transform
        self.seed = seed
        self.label_map = label_map
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        return self.prepare(self.dataset[index], index, epoch)

    def prepare(self, example: Mapping[str, Any], index: int, epoch: int) -> dict[str, Any]:
        """The item of `example`, row `index` of the data set, in `epoch`: upright RGB, relabelled, augmented with
        the randomness of `(seed, epoch, index)`, with its `orig_size`."""
        example = dict(example)
        image = example["image"] = upright_rgb(
            decoded_image(example.get("image"), f"example {index} (image_id={example.get('image_id')})")
        )
        orig_size = (image.height, image.width)
        if self.label_map is not None:
            objects = example["objects"]
            example["objects"] = {**objects, "category": [self.label_map[c] for c in objects["category"]]}
        if self.transform is not None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(derived_seed(self.seed, epoch, index))
                example = transform_example(example, self.transform)
        example["orig_size"] = orig_size
        return example


class DetectionCollator:
    """Batches Hub-COCO examples for [`HfDetrForObjectDetection`] and, with masks, [`HfDetrForSegmentation`].

    Annotations are converted with :func:`.transforms.to_coco_annotations` and images padded (not resized: the
    transforms already did) by ``image_processor``. Returns ``pixel_values`` float32 `[batch, 3, H, W]`,
    ``pixel_mask`` int64 `[batch, H, W]` and ``labels``: one dict per image with ``class_labels`` `[n]`, ``boxes``
    `[n, 4]` (normalized cx, cy, w, h), ``area``, ``iscrowd``, ``image_id`` `[1]`, ``size`` (the padded-over image's
    height, width) and ``orig_size``, taken from the example's ``orig_size`` when it has one (see
    :class:`DetectionDataset`) so evaluation can map predictions back to the original image. Examples with
    ``objects.segmentation`` also give ``masks`` float32 `[n, H, W]` (0 or 1, one per box, at the padded size, zero
    on the padding: the processor's ``return_segmentation_masks``).

    Args:
        image_processor: pads and normalizes; its ``size`` is not used unless ``do_resize``.
        do_resize: also resize with the processor (for examples that did not go through a resizing transform).
        keep_crowd: keep ``iscrowd=1`` objects; training drops them (as DETR does), COCO evaluation needs them.
        mask_references: also return ``mask_references``, per image the ground truth of the mask metrics at the
            original image size (:func:`.masks.mask_references`: ``masks`` bool `[m, height, width]`, ``labels``,
            ``iscrowd``, crowd objects included); for examples no transform changed, as evaluation's.
    """

    def __init__(
        self,
        image_processor: HfDetrImageProcessor,
        do_resize: bool = False,
        keep_crowd: bool = False,
        mask_references: bool = False,
    ) -> None:
        self.image_processor = image_processor
        self.do_resize = do_resize
        self.keep_crowd = keep_crowd
        self.mask_references = mask_references

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        if not examples:
            raise HfDetrInputError("DetectionCollator got an empty batch.")
        annotations = [to_coco_annotations(example) for example in examples]
        encoded = self.image_processor(
            images=[example["image"] for example in examples],
            annotations=annotations,
            do_resize=self.do_resize,
            keep_crowd=self.keep_crowd,
            format="coco_detection",  # what to_coco_annotations gives, also for a processor saved for panoptic data
            return_segmentation_masks=any("segmentation" in example["objects"] for example in examples),
            return_tensors="pt",
        )
        labels = []
        for example, label in zip(examples, encoded["labels"]):
            label = dict(label)
            if "orig_size" in example:
                label["orig_size"] = torch.as_tensor(example["orig_size"], dtype=torch.int64)
            labels.append(label)
        batch = {"pixel_values": encoded["pixel_values"], "pixel_mask": encoded["pixel_mask"], "labels": labels}
        if self.mask_references:
            batch["mask_references"] = [self._reference(example) for example in examples]
        return batch

    @staticmethod
    def _reference(example: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        size = tuple(F.get_size(example["image"]))
        if tuple(example.get("orig_size", size)) != size:
            raise HfDetrInputError(
                f"example with image_id={example.get('image_id')}: mask references are at the original image size "
                f"{tuple(example['orig_size'])}, but a transform made the image {size}; collate evaluation examples "
                "without a transform (DetectionDataset(split), as evaluation_dataset does)."
            )
        return mask_references(example)
