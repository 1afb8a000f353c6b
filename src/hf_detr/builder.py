"""The one way to get a model, in timm's style: `create_model(name_or_path, task=None, **overrides)`.

`name_or_path` is a preset name (`presets.list_presets()`), a folder or Hub id written by `save_pretrained` (hf_detr's,
or transformers' own DETR, converted here), a folder with a config.json and no weights (a `hub_configs/` folder: a
new model of that architecture) or an `HfDetrConfig` (a new model of it). Every command, the Trainer example and the
tests build their models here, and `create_image_processor` gives the image processor that comes with the same
source::

    import hf_detr
    model = hf_detr.create_model("detr-resnet-50", id2label={0: "cat", 1: "dog"})
    model = hf_detr.create_model("facebook/detr-resnet-50-panoptic", task="detection")  # its detector
    processor = hf_detr.create_image_processor("detr-resnet-50")
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import presets
from .hub.convert import config_from_transformers
from .modeling import HfDetrConfig, HfDetrForObjectDetection, HfDetrForSegmentation, HfDetrImageProcessor
from .modeling.errors import HfDetrInputError
from .modeling.transformers_detr import (
    WEIGHT_FILES,
    load_transformers_weights,
    read_transformers_detr_config,
    state_dict_from_transformers,
)

logger = logging.getLogger(__name__)

__all__ = ["create_image_processor", "create_model", "has_weights", "model_class", "set_labels"]

# heads whose rows are classes: replaced together when the labels change (the second: the encoder's dense head)
_CLASS_HEADS = ("class_embed", "encoder_class_embed")
# overrides applied to a loaded checkpoint rather than to the config it loads with, so every saved weight fits
_LABEL_FIELDS = ("id2label", "label2id", "num_labels")


def model_class(config: HfDetrConfig) -> type[HfDetrForObjectDetection]:
    """The class that predicts what `config.task` says."""
    return HfDetrForSegmentation if config.predicts_masks else HfDetrForObjectDetection


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


def create_model(
    name_or_path: str | os.PathLike | HfDetrConfig,
    task: str | None = None,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    **overrides: Any,
) -> HfDetrForObjectDetection:
    """A model from a preset, a folder or a Hub id; see the module docstring. A new model is in training mode, as its
    class builds it; a loaded one in eval mode, as `from_pretrained` gives it.

    Args:
        task: `"detection"` (an `HfDetrForObjectDetection`; from a segmentation checkpoint, its detector),
            `"instance"` or `"panoptic"` (an `HfDetrForSegmentation`; from a detection checkpoint, its mask head new).
            Default: the source's own (`config.task`).
        revision, cache_dir: of a Hub repository (transformers' own lookup, which honours HF_HUB_OFFLINE).
        overrides: `HfDetrConfig` fields. A new model (a preset, a config-only folder) takes any; a checkpoint with
            weights those that keep every weight's shape (dropout, loss weights, ...), and `num_queries` (its query
            embeddings resized, see `resize_queries`) and `id2label` / `num_labels` (the class head replaced when the
            labels differ, see `set_labels`). Anything else that would reinitialize a weight is an error.
    """
    if task is not None:
        overrides["task"] = task
    if isinstance(name_or_path, HfDetrConfig) or str(name_or_path) in presets.list_presets():
        base = name_or_path if isinstance(name_or_path, HfDetrConfig) else presets.get(str(name_or_path)).config()
        return _new_model(base, overrides)
    source = str(name_or_path)
    hub = {name: value for name, value in (("revision", revision), ("cache_dir", cache_dir)) if value is not None}
    config, state_dict = _read_config(source, hub)
    if state_dict is None and not has_weights(source):
        logger.info("%s holds no weights: a new model of its architecture", source)
        return _new_model(config, overrides)
    labels = {name: overrides.pop(name) for name in _LABEL_FIELDS if name in overrides}
    num_queries = overrides.pop("num_queries", None)
    model = _load_weights(_with_overrides(config, overrides), source, state_dict, hub, overrides)
    if num_queries is not None:
        model.resize_queries(num_queries)
    if labels.get("id2label") is not None or labels.get("num_labels") is not None:
        id2label = labels.get("id2label") or {i: f"LABEL_{i}" for i in range(labels["num_labels"])}
        set_labels(model, id2label)
    return model


def _with_overrides(config: HfDetrConfig, overrides: Mapping[str, Any]) -> HfDetrConfig:
    """A new config: `config` with `overrides`, validated; new labels replace the old ones and their names."""
    fields = config.to_dict()
    if any(name in overrides for name in _LABEL_FIELDS):
        fields = {name: value for name, value in fields.items() if name not in _LABEL_FIELDS}
    return type(config).from_dict({**fields, **overrides})


def _new_model(config: HfDetrConfig, overrides: Mapping[str, Any]) -> HfDetrForObjectDetection:
    config = _with_overrides(config, overrides)
    return model_class(config)(config)


def _read_config(source: str, hub: Mapping[str, Any]) -> tuple[HfDetrConfig, dict[str, torch.Tensor] | None]:
    """The config of `source` and, for a transformers DETR checkpoint, its weights converted to hf_detr's names."""
    if not Path(source).is_dir() and "/" not in source:  # neither a preset, a folder nor an owner/name Hub id
        raise HfDetrInputError(
            f"no preset named {source!r} and no such folder; the presets are {presets.list_presets()}, or give a "
            "folder or Hub id written by save_pretrained"
        )
    detr_config = read_transformers_detr_config(source, **hub)
    if detr_config is not None:
        weights = load_transformers_weights(source, **hub)
        return config_from_transformers(detr_config), state_dict_from_transformers(weights)
    try:
        return HfDetrConfig.from_pretrained(source, **hub), None
    except OSError as error:
        raise HfDetrInputError(
            f"no preset named {source!r} and no such folder, and no config.json could be read from it as a Hub id "
            f"({error}); the presets are {presets.list_presets()}"
        ) from error


def _load_weights(
    config: HfDetrConfig,
    source: str,
    state_dict: dict[str, torch.Tensor] | None,
    hub: Mapping[str, Any],
    overrides: Mapping[str, Any],
) -> HfDetrForObjectDetection:
    """transformers' `from_pretrained` of `source` (or of the converted `state_dict`) with `config`; the heads a change
    of task adds or drops may be new or unused, any other weight that does not fit is an error."""
    model, info = model_class(config).from_pretrained(
        None if state_dict is not None else source,
        config=config,
        state_dict=state_dict,
        ignore_mismatched_sizes=True,
        output_loading_info=True,
        **({} if state_dict is not None else hub),
    )
    if state_dict is not None:
        model.config.name_or_path = source
    heads = tuple(f"{head}." for head in (*_CLASS_HEADS, *HfDetrForSegmentation.head_modules))
    new_heads = sorted(key for key in info["missing_keys"] if key.startswith(heads))
    if new_heads:
        logger.info("%s: weights new (not in %s): %s", type(model).__name__, source, new_heads)
    broken = {key for key, *_ in info["mismatched_keys"]} | set(info["missing_keys"]) | set(info["unexpected_keys"])
    broken = sorted(key for key in broken if not key.startswith(heads))
    if broken:
        raise HfDetrInputError(
            f"the weights of {source} do not fit the model built from its config with the overrides {dict(overrides)}: "
            f"{broken[:5]}{' ...' if len(broken) > 5 else ''} would be reinitialized. Only override options that keep "
            "the architecture (e.g. dropout, loss weights, num_queries, id2label) when starting from weights."
        )
    return model


def create_image_processor(
    name_or_path: str | os.PathLike,
    *,
    required: bool = False,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> HfDetrImageProcessor:
    """The image processor of a preset (its image size), or the one saved with a checkpoint (a transformers
    `DetrImageProcessor`'s settings carried over). Without one, DETR's defaults, or with `required` an error saying
    how to save one (inference must preprocess as training did)."""
    source = str(name_or_path)
    if source in presets.list_presets():
        return presets.get(source).image_processor()
    try:
        return HfDetrImageProcessor.from_pretrained(source, revision=revision, cache_dir=cache_dir)
    except OSError as error:
        if required:
            raise HfDetrInputError(
                f"no image processor in {source} ({error}); save it next to the model with "
                "HfDetrImageProcessor(...).save_pretrained(folder)."
            ) from error
        logger.info("%s has no preprocessor_config.json: using HfDetrImageProcessor's defaults", source)
        return HfDetrImageProcessor()
