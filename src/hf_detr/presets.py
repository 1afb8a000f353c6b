"""Named model configurations in timm's style: `register` a `Preset`; `hf_detr.create_model(name)` builds it.

A preset is an architecture (`HfDetrConfig` fields) together with the image size it is trained and run at, so the
image processor and the training transforms come from one source; a recipe preset also carries its training settings
(`TrainConfig` fields). The paper's detectors, the demo's small-compute recipe and the tests' tiny model are here
(`list_presets()`; building one: `hf_detr.builder`).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .hub.coco_labels import COCO_ID2LABEL, COCO_PANOPTIC_ID2LABEL
from .modeling import HfDetrConfig, HfDetrImageProcessor
from .modeling.errors import HfDetrInputError

__all__ = ["Preset", "default_max_size", "get", "list_presets", "register"]

# DETR's evaluation size: shorter side 800, longer side at most 1333
DETR_IMAGE_SIZE, DETR_MAX_SIZE = 800, 1333


def default_max_size(image_size: int) -> int:
    """DETR's longer-side cap (1333 for a shorter side of 800) scaled to `image_size`."""
    return round(DETR_MAX_SIZE * image_size / DETR_IMAGE_SIZE)


@dataclass(frozen=True)
class Preset:
    """A named configuration: `model` holds `HfDetrConfig` fields (`task` picks the class:
    `hf_detr.builder.model_class`), `training` the recipe's `TrainConfig` fields. `image_size` is the image processor's
    shorter side and the largest training scale, `max_size` its longer-side cap (default `default_max_size`); see
    `training.setup.with_image_size`."""

    name: str
    model: Mapping[str, Any]
    image_size: int = DETR_IMAGE_SIZE
    max_size: int | None = None
    training: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""

    def __post_init__(self) -> None:
        if self.max_size is None:
            object.__setattr__(self, "max_size", default_max_size(self.image_size))
        if self.max_size <= self.image_size:
            raise HfDetrInputError(
                f"preset {self.name!r}: max_size={self.max_size} must exceed image_size={self.image_size}"
            )
        # read-only views of private copies: a caller changing a preset's dict would change every later model
        object.__setattr__(self, "model", MappingProxyType(copy.deepcopy(dict(self.model))))
        object.__setattr__(self, "training", MappingProxyType(copy.deepcopy(dict(self.training))))

    def config(self, **overrides: Any) -> HfDetrConfig:
        """The preset's `HfDetrConfig`, with `overrides` (e.g. `id2label`) applied; it shares no dict with the
        preset (e.g. `backbone_kwargs`), so changing it leaves the preset as it was."""
        return HfDetrConfig(**copy.deepcopy({**self.model, **overrides}))

    def image_processor(self, **overrides: Any) -> HfDetrImageProcessor:
        """An image processor resizing to the preset's size (shorter side `image_size`, longer side `max_size`)."""
        size = {"shortest_edge": self.image_size, "longest_edge": self.max_size}
        # the paper's panoptic models train on COCO panoptic annotations, as transformers' panoptic processors read
        annotations = {"format": "coco_panoptic"} if self.config().task == "panoptic" else {}
        return HfDetrImageProcessor(**{"size": size, **annotations, **overrides})


_PRESETS: dict[str, Preset] = {}


def register(preset: Preset) -> Preset:
    """Add `preset` under its name (a name can be registered once)."""
    if preset.name in _PRESETS:
        raise HfDetrInputError(f"a preset named {preset.name!r} is already registered")
    _PRESETS[preset.name] = preset
    return preset


def get(name: str) -> Preset:
    """The preset registered as `name`."""
    try:
        return _PRESETS[name]
    except KeyError:
        raise HfDetrInputError(f"no preset named {name!r}; the presets are {list_presets()}") from None


def list_presets() -> list[str]:
    return sorted(_PRESETS)


# The paper's COCO detectors (Table 1), all trained with the auxiliary decoding loss; hub_configs/ holds their folders.
for _backbone, _depth in (("resnet50", "50"), ("resnet101", "101")):
    for _dilation in (False, True):
        register(
            Preset(
                name=f"detr-resnet-{_depth}{'-dc5' if _dilation else ''}",
                model={"backbone": _backbone, "dilation": _dilation, "id2label": COCO_ID2LABEL, "auxiliary_loss": True},
                description=f"DETR-R{_depth}{'-DC5' if _dilation else ''} of the paper (COCO, 91 labels)",
            )
        )

# The paper's panoptic models (Table 5): the detectors above with the mask head, COCO panoptic's 250 classes
for _backbone, _depth in (("resnet50", "50"), ("resnet101", "101")):
    register(
        Preset(
            name=f"detr-resnet-{_depth}-panoptic",
            model={
                "backbone": _backbone,
                "id2label": COCO_PANOPTIC_ID2LABEL,
                "auxiliary_loss": True,
                "task": "panoptic",
            },
            description=f"DETR-R{_depth} panoptic segmentation of the paper (COCO panoptic, 250 labels)",
        )
    )

# The small-compute recipe of `make demo` (docs/RECIPE.md): steps are worth more than capacity on 2 CPU cores.
register(
    Preset(
        name="demo",
        model={
            "backbone": "resnet18",
            # stride 8 (layer2: a 16x16 map for 128-pixel images); residual blocks start as in torchvision, not as
            # identities: from scratch with AdamW, timm's zero-initialized last BatchNorm scales need hundreds of steps
            "backbone_kwargs": {"out_indices": (2,), "zero_init_last": False},
            "freeze_backbone_batchnorm": False,  # no ImageNet weights here: BatchNorm and stem train from scratch
            "freeze_backbone_stem": False,
            "d_model": 128,
            "encoder_layers": 0,  # no encoder: its steps were worth more than its layers at this budget
            "decoder_layers": 3,
            "encoder_attention_heads": 8,
            "decoder_attention_heads": 8,
            "encoder_ffn_dim": 512,
            "decoder_ffn_dim": 512,
            "num_queries": 20,
            "num_query_groups": 2,  # the second group only trains, matched one-to-many (H-DETR)
            "one_to_many_repeats": 3,
            "encoder_loss_coefficient": 4.0,  # training-only dense head on the encoder tokens
            "order_cost": 0.5,  # a matching tie-break: of two near-equal queries the earlier wins (fewer duplicates)
            "duplicate_eos_coefficient": 1.0,  # "no object" weighs 1.0, not 0.1, on an unmatched query on an object
            "auxiliary_loss": True,
            "dropout": 0.0,
            "attention_dropout": 0.0,
            "activation_dropout": 0.0,
        },
        image_size=128,
        training={
            "per_device_train_batch_size": 16,
            "per_device_eval_batch_size": 50,
            "learning_rate": 1.2e-3,
            "backbone_learning_rate": 6e-3,
            "lr_scheduler": "cosine",
            "warmup_steps": 50,
            "augment": "flip",  # DETR's scale and crop augmentation slows learning at this budget
            "logging_steps": 20,
        },
        description="ResNet-18 from scratch, no encoder, H-DETR group and dense encoder head: `make demo` on 2 CPU "
        "cores",
    )
)

# A model small enough for CPU tests in well under a second per forward.
register(
    Preset(
        name="tiny",
        model={
            "backbone": "resnet18",
            "d_model": 64,
            "encoder_layers": 1,
            "decoder_layers": 2,
            "encoder_attention_heads": 4,
            "decoder_attention_heads": 4,
            "encoder_ffn_dim": 128,
            "decoder_ffn_dim": 128,
            "num_queries": 10,
            "id2label": {0: "circle", 1: "square", 2: "triangle"},
        },
        image_size=64,
        description="ResNet-18, 1 + 2 layers of width 64, 10 queries: tests and smoke runs",
    )
)
