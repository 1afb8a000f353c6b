"""Model setup, shared by `hf-detr train`, the Trainer example and the demo: which folders hold weights, when the
class head is replaced, which image processor comes with a checkpoint, DETR's optimizer parameter groups, the training
data and how many DataLoader workers prepare it."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.collate import DetectionCollator, DetectionDataset
from ..data.transforms import training_transform
from ..modeling import HfDetrConfig, HfDetrForObjectDetection, HfDetrForSegmentation, HfDetrImageProcessor
from ..modeling.errors import HfDetrInputError
from ..modeling.transformers_detr import WEIGHT_FILES
from ..presets import default_max_size

logger = logging.getLogger(__name__)

__all__ = [
    "WEIGHT_FILES",
    "build_model",
    "dataloader_workers",
    "has_weights",
    "load_image_processor",
    "loader_options",
    "parameter_groups",
    "set_labels",
    "training_data",
    "with_image_size",
]

# heads whose rows are classes: replaced together when the labels change (the second: the encoder's dense head)
_CLASS_HEADS = ("class_embed", "encoder_class_embed")


def has_weights(source: str | os.PathLike) -> bool:
    """Whether `source` holds weights: a local folder with one of `WEIGHT_FILES`; a Hub id is assumed to."""
    folder = Path(source)
    return not folder.is_dir() or any((folder / name).is_file() for name in WEIGHT_FILES)


def set_labels(model: HfDetrForObjectDetection, id2label: Mapping[int, str]) -> None:
    """Give `model` the labels `id2label`. The class head is kept only when they are its own labels (same names in the
    same order): otherwise its rows mean other classes, so it is replaced by a new, randomly initialized one."""
    id2label = {int(k): str(v) for k, v in id2label.items()}
    if model.config.id2label == id2label:
        return
    logger.info("labels differ from the model's %s: new class head for %s", model.config.id2label, id2label)
    for name in _CLASS_HEADS:
        old = getattr(model, name, None)
        if old is not None:
            setattr(model, name, nn.Linear(old.in_features, len(id2label) + 1).to(old.weight.device, old.weight.dtype))
    model.config.id2label = id2label
    model.config.label2id = {name: i for i, name in id2label.items()}


def build_model(
    model_name_or_path: str | os.PathLike | None,
    id2label: Mapping[int, str],
    overrides: Mapping[str, Any] | None = None,
    revision: str | None = None,
    segmentation: bool = False,
) -> tuple[HfDetrForObjectDetection, HfDetrImageProcessor]:
    """The model to train on data with labels `id2label`, and the image processor that comes with it: an
    `HfDetrForSegmentation` with `segmentation` (from a detection checkpoint, its mask head new), an
    `HfDetrForObjectDetection` otherwise (from a segmentation checkpoint, its detector).

    `model_name_or_path` is None (a new `HfDetrConfig(**overrides)`), a folder with a config but no weights (e.g.
    `hub_configs/detr-resnet-50`: a new model of that architecture), or a folder or Hub id with weights (fine-tuning;
    `overrides` may only change what keeps every weight's shape, such as dropout or loss weights, and `num_queries`,
    whose query embeddings `from_pretrained` resizes, see `resize_queries`): hf_detr's, or a checkpoint of
    transformers' own DETR such as `facebook/detr-resnet-50`, converted on load. The class head is replaced when the
    labels differ (`set_labels`). The processor is the checkpoint's when it has one (a
    transformers `DetrImageProcessor`'s settings carried over).
    """
    overrides = dict(overrides or {})
    model_class = HfDetrForSegmentation if segmentation else HfDetrForObjectDetection
    if model_name_or_path is None:
        model = model_class(HfDetrConfig(**overrides, id2label=dict(id2label)))
        return model, HfDetrImageProcessor()
    source = str(model_name_or_path)
    if not has_weights(source):
        if not Path(source, "config.json").is_file():
            raise HfDetrInputError(f"model_name_or_path={source!r} has neither config.json nor weights")
        logger.info("%s holds no weights: a new model of its architecture", source)
        model = model_class(HfDetrConfig.from_pretrained(source, revision=revision, **overrides))
    else:
        model = _load_weights(model_class, source, overrides, revision)
    set_labels(model, id2label)
    return model, load_image_processor(source, revision)


def _load_weights(
    model_class: type[HfDetrForObjectDetection], source: str, overrides: dict[str, Any], revision: str | None
) -> HfDetrForObjectDetection:
    config = HfDetrConfig.from_pretrained(source, revision=revision, **overrides)
    # the class head may not fit (the data set has another number of labels): set_labels replaces it afterwards; a
    # num_queries override loads the checkpoint at its own number of queries and resizes them (from_pretrained)
    model, info = model_class.from_pretrained(
        source, config=config, revision=revision, ignore_mismatched_sizes=True, output_loading_info=True
    )
    # the segmentation head is new when a segmentation model starts from a detector, and unused when a detector
    # starts from a segmentation checkpoint (the paper trains the detector first, then the head)
    expected = tuple(f"{head}." for head in (*_CLASS_HEADS, *HfDetrForSegmentation.head_modules))
    new_head = sorted(key for key in info["missing_keys"] if key.startswith(expected))
    if new_head:
        logger.info("%s: weights new (not in %s): %s", model_class.__name__, source, new_head)
    broken = {key for key, *_ in info["mismatched_keys"]} | set(info["missing_keys"]) | set(info["unexpected_keys"])
    broken = sorted(key for key in broken if not key.startswith(expected))
    if broken:
        raise HfDetrInputError(
            f"the weights of {source} do not fit the model built from its config with the overrides {overrides}: "
            f"{broken[:5]}{' ...' if len(broken) > 5 else ''} would be reinitialized. Only override options that keep "
            "the architecture (e.g. dropout, loss weights, num_queries) when starting from weights."
        )
    return model


def load_image_processor(source: str | os.PathLike, revision: str | None = None) -> HfDetrImageProcessor:
    """The image processor saved with a checkpoint; DETR's default one when the checkpoint has none."""
    folder = Path(source)
    if folder.is_dir() and not (folder / "preprocessor_config.json").is_file():
        logger.info("%s has no preprocessor_config.json: using HfDetrImageProcessor's defaults", source)
        return HfDetrImageProcessor()
    try:
        return HfDetrImageProcessor.from_pretrained(str(source), revision=revision)
    except OSError:  # a Hub repository without a preprocessor_config.json
        logger.info("%s has no preprocessor_config.json: using HfDetrImageProcessor's defaults", source)
        return HfDetrImageProcessor()


def with_image_size(
    image_processor: HfDetrImageProcessor, image_size: int | None = None, max_size: int | None = None
) -> HfDetrImageProcessor:
    """`image_processor` itself, or a copy resizing to shorter side `image_size` and longer side at most `max_size`
    (default: DETR's ratio to `image_size`) when either is given; the caller's processor is never changed."""
    if image_size is None and max_size is None:
        return image_processor
    image_size = image_size or image_processor.size.shortest_edge
    if image_size is None:
        raise HfDetrInputError(
            f"max_size alone needs a processor with a shortest_edge size, not {image_processor.size}"
        )
    size = {"shortest_edge": image_size, "longest_edge": max_size or default_max_size(image_size)}
    return type(image_processor).from_dict({**image_processor.to_dict(), "size": size})


def training_data(
    split: Any, image_processor: HfDetrImageProcessor, augment: str, seed: int
) -> tuple[DetectionDataset, DetectionCollator]:
    """The training set of `split` with `augment` ("detr", "flip" or "none", see `training_transform`) scaled to the
    image processor's size, and its collator; augmentation of example i in epoch e depends only on (seed, e, i). A
    streamed split (`datasets.IterableDataset`) gets the same per-example work, for `data.streaming.StreamedBatches`.
    """
    size = image_processor.size
    if augment == "detr" and size.shortest_edge is None:
        raise HfDetrInputError(
            f"augment='detr' scales DETR's recipe to a processor size with shortest_edge and longest_edge, not "
            f"{size}; use augment='flip' or such a processor size"
        )
    dataset = DetectionDataset(split, training_transform(augment, size.shortest_edge, size.longest_edge), seed=seed)
    return dataset, DetectionCollator(image_processor, do_resize=augment != "detr")  # "detr" resizes itself


def dataloader_workers(requested: int | None, device: torch.device, num_processes: int) -> int:
    """The DataLoader workers of each training process: `requested`, or by default (None) on an accelerator
    min(8, CPUs available // training processes on this machine), so that the whole augmentation runs beside the
    step; on the CPU 0 (see the comment)."""
    if requested is not None:
        return requested
    if device.type == "cpu":
        # the step itself keeps every core busy, so workers only add their start and the pickling of batches: measured
        # on 2 cores, the short trainings of tests/test_train.py, test_ema_early_stopping.py, test_setup.py and
        # test_streaming.py took 53-79 s with 0 workers and 106-117 s with the formula below (2 workers)
        return 0
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    # accelerate launch starts the processes with torchrun, which says how many run on this machine
    per_machine = int(os.environ.get("LOCAL_WORLD_SIZE", num_processes))
    return min(8, max(1, cpus // per_machine))


def loader_options(num_workers: int, device: torch.device, seed: int) -> dict[str, Any]:
    """The `torch.utils.data.DataLoader` options of the training batches, map-style or streamed."""
    return {
        "num_workers": num_workers,
        "persistent_workers": num_workers > 0,  # not forked again every epoch (the epoch travels with each index)
        "pin_memory": device.type == "cuda",
        # its own generator: creating an iterator then draws worker seeds from it, not from the global RNG whose state
        # the checkpoints restore
        "generator": torch.Generator().manual_seed(seed),
    }


def parameter_groups(
    model: HfDetrForObjectDetection, learning_rate: float, backbone_learning_rate: float
) -> list[dict[str, Any]]:
    """DETR's optimizer groups: the trainable backbone parameters at `backbone_learning_rate`, all other trainable
    parameters at `learning_rate`. Empty groups are left out, and so is the backbone at learning rate 0 (call
    `model.freeze_backbone()` too, so that its gradients are not computed). Each group has a `name`."""
    backbone = {id(p) for p in model.model.backbone.parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [
        ("transformer", [p for p in trainable if id(p) not in backbone], learning_rate),
        ("backbone", [p for p in trainable if id(p) in backbone], backbone_learning_rate),
    ]
    return [{"name": name, "params": params, "lr": lr} for name, params, lr in groups if params and lr > 0]
