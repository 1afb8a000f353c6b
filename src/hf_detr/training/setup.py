"""Training setup, shared by `hf-detr train`, the Trainer example and the demo: the image processor's training size,
DETR's optimizer parameter groups, the training data and how many DataLoader workers prepare it. The model comes from
`hf_detr.create_model`."""

from __future__ import annotations

import logging
import os
from typing import Any

import torch

from ..data.collate import DetectionCollator, DetectionDataset
from ..data.transforms import training_transform
from ..modeling import HfDetrForObjectDetection, HfDetrImageProcessor
from ..modeling.errors import HfDetrInputError
from ..presets import default_max_size

logger = logging.getLogger(__name__)

__all__ = [
    "cpu_has_fast_bf16",
    "dataloader_workers",
    "loader_options",
    "parameter_groups",
    "training_data",
    "with_image_size",
]


def with_image_size(
    image_processor: HfDetrImageProcessor, image_size: int | None = None, max_size: int | None = None
) -> HfDetrImageProcessor:
    """`image_processor` itself, or a copy resizing to shorter side `image_size` and longer side at most `max_size`
    when either is given; the caller's processor is never changed.

    The image size, explained once (the `--image_size` / `--max_size` options of `hf-detr train` and the Trainer
    example link here): `image_size` is the shorter side the saved image processor resizes every evaluation and
    inference image to, and the largest training scale: DETR's multi-scale recipe (`--augment detr`: shorter sides
    480-800, random crops of 384-600) is scaled by `image_size / 800` (`data.transforms.training_transform`).
    `max_size` caps the longer side (default `image_size * 1333 / 800`, DETR's ratio: `presets.default_max_size`).
    Neither given: the starting model's processor as saved (a preset's own size; 800 and 1333 for DETR)."""
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


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU computes in bfloat16 natively (AVX512-BF16 or AMX): there, autocast in bf16 makes a demo
    training step 1.3x faster (docs/RECIPE.md session 6); elsewhere bf16 is emulated and slower. torch offers no
    public check, so this asks its private ones and answers False where they are missing."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


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
