"""From examples in the Hub's COCO detection schema to model batches::

    train = DetectionDataset(dataset["train"], make_train_transform(), seed=0)
    loader = DataLoader(train, batch_size=4, collate_fn=DetectionCollator(HfDetrImageProcessor()))
    batch = next(iter(loader))  # pixel_values [4, 3, H, W], pixel_mask [4, H, W], labels: 4 dicts

A streamed split goes through the same per-example work in :mod:`.streaming`.
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
    """`image`: PIL, or an undecoded ``datasets.Image`` value (``{"bytes", "path"}``). A file gone or undecodable (e.g.
    deleted since the data set was prepared) is a ``ValueError`` naming ``where`` and the file."""
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
    """Well spread even for neighbouring keys."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1)[0])


class DetectionDataset(torch.utils.data.Dataset):
    """A Hub-COCO split seen through a ``torchvision.transforms.v2`` transform (or none); each item also gets
    ``orig_size``, the image's ``(height, width)`` before the transform, the frame evaluation scores in. The image is
    made upright 8-bit RGB (:func:`upright_rgb`) first, so the augmentation moves pixels and boxes of one frame.

    The transform runs under a ``torch`` generator seeded from ``(seed, epoch, index)`` and restored afterwards, so a
    resumed run sees the same augmented images whatever the DataLoader workers, and the training's random state is
    untouched. ``dataset[epoch, index]`` augments as in ``epoch``: what a sampler hands persistent workers, whose
    copies do not see :meth:`set_epoch`. ``label_map[c]`` replaces each category ``c``. A streamed split has no items
    by index: :mod:`.streaming` hands each example to :meth:`prepare`.
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
        """The item of `example`, row `index` of the data set, in `epoch`."""
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
                # the CPU generator alone (what fork_rng restores): torch.manual_seed would also seed every lazy
                # accelerator backend, each recording a stack trace, a third of the data time of a demo batch
                torch.default_generator.manual_seed(derived_seed(self.seed, epoch, index))
                example = transform_example(example, self.transform)
        example["orig_size"] = orig_size
        return example


class DetectionCollator:
    """Batches Hub-COCO examples through ``image_processor``: the processor's ``pixel_values``, ``pixel_mask`` and
    ``labels`` (with masks for examples with ``objects.segmentation``), ``orig_size`` taken from the example's when
    it has one, so evaluation maps predictions back to the original image. Images are padded, not resized (the
    transforms did), unless ``do_resize``.

    Args:
        keep_crowd: training drops ``iscrowd=1`` objects (as DETR does); COCO evaluation needs them.
        mask_references: also per image the mask metrics' ground truth at the original size
            (:func:`.masks.mask_references`, crowd included), for examples no transform changed, as evaluation's.
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
