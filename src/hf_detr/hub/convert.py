"""Load checkpoints of other DETR implementations into `HfDetrForObjectDetection` (or `HfDetrForSegmentation`, for
checkpoints with DETR's segmentation head), and write ours in the original's layout."""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from ..modeling.configuration_hf_detr import HfDetrConfig
from ..modeling.errors import HfDetrInputError
from ..modeling.modeling_hf_detr import HfDetrForObjectDetection, HfDetrForSegmentation

# the translation of transformers' DETR lives in the remote-code set, which converts such checkpoints on load
from ..modeling.transformers_detr import (
    config_kwargs_from_transformers,
    load_tensor_file,
    load_transformers_weights,
    read_transformers_detr_config,
    rename_mask_head,
    state_dict_from_transformers,
)
from .coco_labels import COCO_ID2LABEL


def config_from_transformers(detr_config: Mapping[str, Any] | Any) -> HfDetrConfig:
    """Translate a transformers `DetrConfig` (object or `config.json` dict, v4 or v5 layout) to `HfDetrConfig`."""
    return HfDetrConfig(**config_kwargs_from_transformers(detr_config))


def load_converted(
    config: HfDetrConfig,
    state_dict: Mapping[str, torch.Tensor],
    source: str,
    source_name: Callable[[str], str] | None = None,
) -> HfDetrForObjectDetection:
    """Build the model (`HfDetrForSegmentation` when the state dict holds a mask head) and load a state dict already
    in our layout; mismatched keys fail with their list, named as in the checkpoint when `source_name` maps our key
    names to the checkpoint's."""
    name = source_name or (lambda key: key)
    segmentation = any(key.startswith("mask_head.") for key in state_dict)
    model = (HfDetrForSegmentation if segmentation else HfDetrForObjectDetection)(config)
    expected = model.state_dict()
    missing = sorted(name(k) for k in set(expected) - set(state_dict))
    unexpected = sorted(name(k) for k in set(state_dict) - set(expected))
    if missing or unexpected:
        raise HfDetrInputError(
            f"the {source} checkpoint does not fit {config.backbone} (dilation={config.dilation}): "
            f"missing keys {missing}, unexpected keys {unexpected}"
        )
    wrong_shape = [k for k, v in state_dict.items() if tuple(v.shape) != tuple(expected[k].shape)]
    if wrong_shape:
        raise HfDetrInputError(
            f"the {source} checkpoint has tensors of unexpected shape: "
            + ", ".join(f"{name(k)} {tuple(state_dict[k].shape)} != {tuple(expected[k].shape)}" for k in wrong_shape)
        )
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


def _transformers_files(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The config.json dict and the state dict of a transformers DETR folder or Hub id (every weights layout)."""
    config = read_transformers_detr_config(path)
    if config is None:
        where = Path(path) / "config.json" if Path(path).is_dir() else f"the Hub repository {path}"
        raise HfDetrInputError(f"{where} is missing or not a transformers DETR config (model_type 'detr')")
    return config, load_transformers_weights(path)


def from_transformers(
    path_or_state_dict: str | os.PathLike | Mapping[str, torch.Tensor],
    config: Mapping[str, Any] | Any | None = None,
) -> HfDetrForObjectDetection:
    """Load a checkpoint of `transformers`' `DetrForObjectDetection` as an equivalent `HfDetrForObjectDetection`, or
    of its `DetrForSegmentation` (e.g. `"facebook/detr-resnet-50-panoptic"`) as an `HfDetrForSegmentation`.

    `path_or_state_dict`: a `save_pretrained` folder, a Hub id such as `"facebook/detr-resnet-50"`, or a state dict,
    which needs `config` (the transformers `DetrConfig` or its dict).
    """
    if isinstance(path_or_state_dict, Mapping):
        if config is None:
            raise HfDetrInputError(
                "from_transformers(state_dict) needs config=<the DetrConfig or its config.json dict>"
            )
        detr_config, state_dict = config, path_or_state_dict
    else:
        detr_config, state_dict = _transformers_files(path_or_state_dict)
    hf_config = config_from_transformers(detr_config)
    return load_converted(hf_config, state_dict_from_transformers(state_dict), "transformers DETR")


# --- the original facebookresearch/detr layout -----------------------------------------------------------------------

# the torchvision ResNets the original code builds; timm's models of the same names have the same modules and weights
ORIGINAL_BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101")

# original key prefix -> ours; plain string prefixes, so the same table maps both ways
_ORIGINAL_PREFIXES = (
    ("backbone.0.body.", "model.backbone.body."),
    ("backbone.1.", "model.position_embedding."),  # the learned position embedding's row/col tables
    ("transformer.encoder.", "model.encoder."),
    ("transformer.decoder.", "model.decoder."),
    ("query_embed.", "model.query_embed."),
    ("input_proj.", "model.input_proj."),
)
_ORIGINAL_CROSS_ATTENTION, _CROSS_ATTENTION = ".multihead_attn.", ".cross_attn."


_ORIGINAL_DETECTOR = "detr."  # the original DETRsegm holds the detector as `detr`


def _rename_original(key: str, to_original: bool = False) -> str:
    """An original DETR key as ours (or back); the keys of the original's panoptic model (`DETRsegm`) too: the
    detector under `detr.`, the head in the names of `MASK_HEAD_RENAMES`."""
    if rename_mask_head(key, to_original) != key:
        return rename_mask_head(key, to_original)
    if not to_original and key.startswith(_ORIGINAL_DETECTOR):
        key = key[len(_ORIGINAL_DETECTOR) :]
    pairs = ((ours, original) for original, ours in _ORIGINAL_PREFIXES) if to_original else _ORIGINAL_PREFIXES
    for source, target in pairs:
        if key.startswith(source):
            key = target + key[len(source) :]
            break
    if to_original:
        return key.replace(_CROSS_ATTENTION, _ORIGINAL_CROSS_ATTENTION)
    return key.replace(_ORIGINAL_CROSS_ATTENTION, _CROSS_ATTENTION)


def _count_layers(state_dict: Mapping[str, torch.Tensor], prefix: str) -> int | None:
    indices = {int(m[1]) for k in state_dict if (m := re.match(rf"{re.escape(prefix)}(\d+)\.", k))}
    return max(indices) + 1 if indices else None


def config_from_original(
    state_dict: Mapping[str, torch.Tensor], backbone: str = "resnet50", dilation: bool = False, **config_kwargs: Any
) -> HfDetrConfig:
    """The `HfDetrConfig` of an original DETR state dict.

    Sizes (queries, classes, width, depth, feed-forward width), pre-/post-norm and the position embedding type are
    read from the tensors (of the detector under `detr.` in a panoptic checkpoint); the backbone, DC5 `dilation` and
    the number of attention heads (8 unless given in `config_kwargs`) cannot be, so they must be passed.
    A 91-class head gets COCO's label map. The auxiliary decoding loss is on, as in the original's training (it does
    not change predictions).
    """
    if backbone not in ORIGINAL_BACKBONES:
        raise HfDetrInputError(f"backbone={backbone!r}: the original DETR code builds one of {ORIGINAL_BACKBONES}")
    inferred: dict[str, Any] = {"auxiliary_loss": True}
    if any(key.startswith("mask_head.") for key in state_dict):  # DETRsegm: the detector's keys under `detr.`
        detector = _ORIGINAL_DETECTOR
        state_dict = {k[len(detector) :]: v for k, v in state_dict.items() if k.startswith(detector)}
    if "query_embed.weight" in state_dict:
        inferred["num_queries"], inferred["d_model"] = state_dict["query_embed.weight"].shape
    if "class_embed.weight" in state_dict:
        num_labels = state_dict["class_embed.weight"].shape[0] - 1  # the last logit is "no object"
        inferred["id2label"] = (
            COCO_ID2LABEL if num_labels == len(COCO_ID2LABEL) else {i: f"LABEL_{i}" for i in range(num_labels)}
        )
    for side in ("encoder", "decoder"):
        layers = _count_layers(state_dict, f"transformer.{side}.layers.")
        if layers is not None:
            inferred[f"{side}_layers"] = layers
        ffn = state_dict.get(f"transformer.{side}.layers.0.linear1.weight")
        if ffn is not None:
            inferred[f"{side}_ffn_dim"] = ffn.shape[0]
    # only pre-norm models end the encoder with a LayerNorm; only the learned embedding has weights
    inferred["normalize_before"] = "transformer.encoder.norm.weight" in state_dict
    inferred["position_embedding_type"] = "learned" if "backbone.1.row_embed.weight" in state_dict else "sine"
    return HfDetrConfig(**{"backbone": backbone, "dilation": dilation, **inferred, **config_kwargs})


def _original_state_dict(path_or_state_dict: str | os.PathLike | Mapping[str, Any]) -> tuple[dict[str, Any], Any]:
    """The model state dict of an original checkpoint (file or loaded dict) and its training `args`, if saved."""
    if isinstance(path_or_state_dict, Mapping):
        checkpoint, source = path_or_state_dict, "the given dict"
    else:
        # training checkpoints of the original main.py also pickle its argparse.Namespace of arguments
        checkpoint = load_tensor_file(path_or_state_dict, allowed_classes=(argparse.Namespace,))
        source = str(path_or_state_dict)
        if not isinstance(checkpoint, Mapping):
            raise HfDetrInputError(f"{source} holds a {type(checkpoint).__name__}, not a DETR checkpoint dict")
    state_dict = checkpoint.get("model", checkpoint)
    if not isinstance(state_dict, Mapping):
        raise HfDetrInputError(f"the 'model' entry of {source} is a {type(state_dict).__name__}, not a state dict")
    not_tensors = sorted(k for k, v in state_dict.items() if not torch.is_tensor(v))
    if not_tensors:
        raise HfDetrInputError(f"the state dict in {source} has entries that are not tensors: {not_tensors}")
    return dict(state_dict), checkpoint.get("args")


def _check_training_args(args: Any, config: HfDetrConfig) -> None:
    """A training checkpoint records the architecture it was trained with; refuse a config that contradicts it,
    since the weights alone cannot tell a DC5 model or another head count apart."""
    expected = {
        "backbone": getattr(args, "backbone", config.backbone),
        "dilation": bool(getattr(args, "dilation", config.dilation)),
        "encoder_attention_heads": getattr(args, "nheads", config.encoder_attention_heads),
        "decoder_attention_heads": getattr(args, "nheads", config.decoder_attention_heads),
    }
    wrong = {name: value for name, value in expected.items() if getattr(config, name) != value}
    if wrong:
        got = {name: getattr(config, name) for name in wrong}
        raise HfDetrInputError(
            f"the checkpoint was trained with {wrong} but the conversion was asked for {got}; pass the training values"
        )


def from_original(
    path_or_state_dict: str | os.PathLike | Mapping[str, Any],
    backbone: str = "resnet50",
    dilation: bool = False,
    **config_kwargs: Any,
) -> HfDetrForObjectDetection:
    """Load a checkpoint of the original facebookresearch/detr code as an equivalent `HfDetrForObjectDetection` in
    eval mode, or, for its panoptic model (`DETRsegm`, e.g. detr-r50-panoptic-00ce5173.pth), as an
    `HfDetrForSegmentation`; a 91-class (COCO) checkpoint gets COCO's label map.

    `path_or_state_dict`: a `.pth` file (a dict whose `"model"` entry is the state dict, as the released
    detr-r50-e632da11.pth or a `checkpoint.pth` of its training script), or such a dict / state dict; files are read
    with `weights_only=True` (nothing but tensors, containers and the training arguments are unpickled). `backbone`
    and `dilation` are the original's `--backbone` (`"resnet50"` or `"resnet101"` for the released models) and
    `--dilation` (True for DC5); `config_kwargs` further `HfDetrConfig` fields (e.g. `encoder_attention_heads` if not
    8).
    """
    state_dict, args = _original_state_dict(path_or_state_dict)
    config = config_from_original(state_dict, backbone, dilation, **config_kwargs)
    if args is not None:
        _check_training_args(args, config)
    # the original's FrozenBatchNorm2d drops the step counters of BatchNorm weights it was initialized from
    original_names = {_rename_original(k): k for k in state_dict if not k.endswith("num_batches_tracked")}
    renamed = {ours: state_dict[original] for ours, original in original_names.items()}

    def original_name(key: str) -> str:
        return original_names.get(key) or _rename_original(key, to_original=True)

    return load_converted(config, renamed, "original DETR", original_name)


def to_original(model: HfDetrForObjectDetection) -> dict[str, torch.Tensor]:
    """The state dict of `model` in the original facebookresearch/detr layout (`torch.save({"model": ...})` makes
    a checkpoint its code loads with `--resume`; an `HfDetrForSegmentation` in its `DETRsegm` layout). Only the
    original's ResNet backbones have such a layout."""
    if model.config.backbone not in ORIGINAL_BACKBONES:
        raise HfDetrInputError(
            f"the original DETR code has no {model.config.backbone!r} backbone (only {ORIGINAL_BACKBONES}); this "
            "model cannot be written in its layout"
        )
    state_dict = {_rename_original(k, to_original=True): v for k, v in model.state_dict().items()}
    if not model.config.predicts_masks:
        return state_dict
    head = tuple(f"{name}." for name in HfDetrForSegmentation.head_modules)  # DETRsegm's own, next to `detr`
    return {k if k.startswith(head) else _ORIGINAL_DETECTOR + k: v for k, v in state_dict.items()}
