"""transformers' own DETR checkpoints (`model_type: "detr"`) read as hf_detr's: the one translation of its config,
weight names and image processor settings.

`hf_detr.create_model` and `HfDetrImageProcessor.from_pretrained` use it to convert such a checkpoint on load (through
`hf_detr.hub.convert`, which also gives `from_transformers` / `hf-detr convert`).
Part of the remote-code set, so it imports no other module of it (nothing of hf_detr, no `transformers.models`).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .errors import HfDetrFileNotFoundError, HfDetrInputError

logger = logging.getLogger(__name__)

__all__ = [
    "DETR_IMAGE_PROCESSOR_TYPES",
    "MASK_HEAD_RENAMES",
    "WEIGHT_FILES",
    "config_kwargs_from_transformers",
    "image_processor_dict_from_transformers",
    "is_transformers_detr_config",
    "is_transformers_detr_image_processor",
    "load_tensor_file",
    "load_transformers_weights",
    "pack_attention_projections",
    "read_transformers_detr_config",
    "rename_mask_head",
    "state_dict_from_transformers",
]

# what `from_pretrained` reads weights from, in this order: safetensors or pickled, single file or sharded
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)

# transformers' DetrConfig fields that mean the same here
_SHARED_CONFIG_FIELDS = (
    "num_channels",
    "num_queries",
    "d_model",
    "encoder_layers",
    "decoder_layers",
    "encoder_attention_heads",
    "decoder_attention_heads",
    "encoder_ffn_dim",
    "decoder_ffn_dim",
    "dropout",
    "attention_dropout",
    "activation_dropout",
    "activation_function",
    "position_embedding_type",
    "auxiliary_loss",
    "class_cost",
    "bbox_cost",
    "giou_cost",
    "bbox_loss_coefficient",
    "giou_loss_coefficient",
    "eos_coefficient",
    "mask_loss_coefficient",
    "dice_loss_coefficient",
    "id2label",
    "label2id",
)

# transformers key fragment -> ours, applied in order after the layout is normalized to the Hub's (v4) names
_TRANSFORMERS_RENAMES = (
    (r"^model\.backbone\.conv_encoder\.model\.", "model.backbone.body."),
    (r"^model\.backbone\.position_embedding\.", "model.position_embedding."),
    (r"\.row_embeddings\.", ".row_embed."),
    (r"\.column_embeddings\.", ".col_embed."),
    (r"^model\.query_position_embeddings\.", "model.query_embed."),
    (r"^model\.input_projection\.", "model.input_proj."),
    (r"^model\.decoder\.layernorm\.", "model.decoder.norm."),
    (r"^class_labels_classifier\.", "class_embed."),
    (r"^bbox_predictor\.", "bbox_embed."),
    (r"\.self_attn_layer_norm\.", ".norm1."),
    (r"(decoder\.layers\.\d+)\.encoder_attn_layer_norm\.", r"\1.norm2."),
    (r"(decoder\.layers\.\d+)\.final_layer_norm\.", r"\1.norm3."),
    (r"(encoder\.layers\.\d+)\.final_layer_norm\.", r"\1.norm2."),
    (r"\.encoder_attn\.", ".cross_attn."),
    (r"\.fc1\.", ".linear1."),
    (r"\.fc2\.", ".linear2."),
)

# the segmentation head in the original DETR's names (also the Hub's, transformers 4) -> ours; plain prefixes
MASK_HEAD_RENAMES = (
    ("bbox_attention.q_linear.", "bbox_attention.q_proj."),
    ("bbox_attention.k_linear.", "bbox_attention.k_proj."),
    ("mask_head.lay1.", "mask_head.conv1.conv."),
    ("mask_head.gn1.", "mask_head.conv1.norm."),
    ("mask_head.lay2.", "mask_head.conv2.conv."),
    ("mask_head.gn2.", "mask_head.conv2.norm."),
    *((f"mask_head.adapter{i + 1}.", f"mask_head.fpn_stages.{i}.adapter.") for i in range(3)),
    *((f"mask_head.lay{i + 3}.", f"mask_head.fpn_stages.{i}.refine.conv.") for i in range(3)),
    *((f"mask_head.gn{i + 3}.", f"mask_head.fpn_stages.{i}.refine.norm.") for i in range(3)),
    ("mask_head.out_lay.", "mask_head.output_conv."),
)

# transformers 5 names in memory -> the names it (and the Hub) store on disk
_TRANSFORMERS_V5_TO_HUB = (
    (r"^detr\.", ""),  # DetrForSegmentation holds the detector as `detr`; ours shares the detector's names
    (r"^mask_head\.fpn_stages\.(\d)\.fpn_adapter\.", r"mask_head.fpn_stages.\1.adapter."),
    (r"^model\.backbone\.model\.", "model.backbone.conv_encoder.model."),
    (r"\.o_proj\.", ".out_proj."),
    (r"\.mlp\.fc([12])\.", r".fc\1."),
)

# --- config ----------------------------------------------------------------------------------------------------------


def is_transformers_detr_config(config_dict: Mapping[str, Any]) -> bool:
    return isinstance(config_dict, Mapping) and config_dict.get("model_type") == "detr"


def config_kwargs_from_transformers(detr_config: Mapping[str, Any] | Any) -> dict[str, Any]:
    """The `HfDetrConfig` keyword arguments of a transformers `DetrConfig` (object or `config.json` dict, v4 or v5
    layout): the same architecture, loss weights and labels."""
    config = dict(detr_config if isinstance(detr_config, Mapping) else detr_config.to_dict())
    if not is_transformers_detr_config(config):
        raise HfDetrInputError(
            f"expected a transformers DETR config (model_type 'detr'), got {config.get('model_type')!r}"
        )
    backbone_config = config.get("backbone_config") or {}
    if not isinstance(backbone_config, Mapping):  # a config object inside a dict
        backbone_config = backbone_config.to_dict()
    uses_timm = (
        backbone_config.get("model_type") == "timm_backbone"
        if backbone_config
        else config.get("use_timm_backbone", True)
    )
    if not uses_timm:
        raise HfDetrInputError(
            "this DETR checkpoint uses a transformers (non-timm) backbone; hf_detr loads timm backbones only"
        )
    kwargs = {name: config[name] for name in _SHARED_CONFIG_FIELDS if name in config}
    kwargs["backbone"] = backbone_config.get("backbone") or config.get("backbone") or "resnet50"
    kwargs["dilation"] = bool(config.get("dilation")) or backbone_config.get("output_stride") == 16
    kwargs["normalize_before"] = False  # transformers' DETR is post-norm only
    # DetrForSegmentation -> HfDetrForSegmentation: the converted config's task follows its architecture
    kwargs["architectures"] = [name.replace("Detr", "HfDetr", 1) for name in config.get("architectures") or ()]
    return kwargs


# --- files -----------------------------------------------------------------------------------------------------------


def _cached_file(source: str | os.PathLike, filename: str, download: Mapping[str, Any]) -> str | None:
    """The local path of `filename` in a folder or Hub repository (downloaded into the cache if needed: transformers'
    own lookup, which honours HF_HUB_OFFLINE, `cache_dir`, `revision`, `subfolder`, ...); None when it is absent."""
    from transformers.utils import cached_file

    return cached_file(
        str(source),
        filename,
        _raise_exceptions_for_missing_entries=False,
        _raise_exceptions_for_connection_errors=False,
        **download,
    )


def read_transformers_detr_config(source: str | os.PathLike, **download: Any) -> dict[str, Any] | None:
    """The `config.json` dict of `source` (folder or Hub id) when it is a transformers DETR checkpoint, else None
    (no config, an unreadable one, or another model type: the caller's ordinary loading path then applies)."""
    try:
        path = _cached_file(source, "config.json", download)
        config = None if path is None else json.loads(Path(path).read_text())
    except (OSError, ValueError):  # e.g. not a folder nor a valid repository id: the caller's path reports it
        return None
    return config if is_transformers_detr_config(config) else None


def load_tensor_file(path: str | os.PathLike, allowed_classes: tuple[type, ...] = ()) -> dict[str, Any]:
    """Read a `.safetensors` or a pickled torch file without executing arbitrary pickled code.

    `allowed_classes` are plain data classes the pickle may also rebuild (e.g. `argparse.Namespace`); nothing else
    than tensors, containers and numbers is unpickled.
    """
    path = Path(path)
    if not path.is_file():
        raise HfDetrFileNotFoundError(f"no checkpoint file at {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        with torch.serialization.safe_globals(list(allowed_classes)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises UnpicklingError or RuntimeError depending on the payload
        raise HfDetrInputError(
            f"{path} could not be loaded safely (weights_only=True): {error}. It holds objects other than tensors "
            "and plain containers; only checkpoints of tensors are accepted"
        ) from error


def load_transformers_weights(
    source: str | os.PathLike, use_safetensors: bool | None = None, **download: Any
) -> dict[str, torch.Tensor]:
    """The state dict saved in `source` (folder or Hub id): the first of `WEIGHT_FILES` it holds, all shards of a
    sharded one; pickled files are read with `weights_only=True`. Downloads only the weight files the folder names."""
    names = [name for name in WEIGHT_FILES if use_safetensors is None or name.startswith("model.") == use_safetensors]
    for name in names:
        path = _cached_file(source, name, download)
        if path is None:
            continue
        if not name.endswith(".index.json"):
            return load_tensor_file(path)
        try:
            weight_map = json.loads(Path(path).read_text())["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise HfDetrInputError(
                f"{path} is not a shard index (a JSON object with a 'weight_map'): {error}"
            ) from error
        state_dict: dict[str, torch.Tensor] = {}
        for shard in sorted(set(weight_map.values())):
            shard_path = _cached_file(source, shard, download)
            if shard_path is None:
                raise HfDetrInputError(f"{source} names the shard {shard} in {name} but does not hold it")
            state_dict.update(load_tensor_file(shard_path))
        return state_dict
    raise HfDetrInputError(f"{source} holds a config.json but no weights: none of {names}")


# --- weights ---------------------------------------------------------------------------------------------------------


def state_dict_from_transformers(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a transformers DETR state dict (`DetrForObjectDetection` or `DetrForSegmentation`; Hub layout or
    transformers 5 in-memory layout) to ours, packing the separate q/k/v projections into `in_proj_weight` /
    `in_proj_bias`."""
    renamed: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key.endswith("num_batches_tracked"):
            continue  # frozen BatchNorm keeps no step counter
        for pattern, replacement in _TRANSFORMERS_V5_TO_HUB + _TRANSFORMERS_RENAMES:
            key = re.sub(pattern, replacement, key)
        renamed[rename_mask_head(key)] = value
    # the attention map of the segmentation head has queries and keys only: nothing to pack
    attention_map = {k: v for k, v in renamed.items() if k.startswith("bbox_attention.")}
    packed = pack_attention_projections(
        {k: v for k, v in renamed.items() if k not in attention_map}, ("q_proj", "k_proj", "v_proj")
    )
    return {**packed, **attention_map}


def rename_mask_head(key: str, to_original: bool = False) -> str:
    """A segmentation-head key in the original DETR's (and the Hub's) names as ours, or back with `to_original`;
    any other key unchanged."""
    for original, ours in MASK_HEAD_RENAMES:
        source, target = (ours, original) if to_original else (original, ours)
        if key.startswith(source):
            return target + key[len(source) :]
    return key


def pack_attention_projections(
    state_dict: dict[str, torch.Tensor], names: tuple[str, str, str]
) -> dict[str, torch.Tensor]:
    """Concatenate separate query/key/value projections `<prefix>.<name>.{weight,bias}` into `<prefix>.in_proj_*`."""
    packed = {}
    pattern = re.compile(rf"^(.*)\.({'|'.join(names)})\.(weight|bias)$")
    groups: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, value in state_dict.items():
        match = pattern.match(key)
        if match:
            groups.setdefault((match[1], match[3]), {})[match[2]] = value
        else:
            packed[key] = value
    for (prefix, kind), parts in groups.items():
        missing = [name for name in names if name not in parts]
        if missing:
            raise HfDetrInputError(f"checkpoint has {prefix}.*.{kind} without {missing}; it is incomplete")
        packed[f"{prefix}.in_proj_{kind}"] = torch.cat([parts[name] for name in names])
    return packed


# --- image processor -------------------------------------------------------------------------------------------------

DETR_IMAGE_PROCESSOR_TYPES = ("DetrImageProcessor", "DetrImageProcessorFast", "DetrImageProcessorPil")
_DETR_FEATURE_EXTRACTOR_TYPES = ("DetrFeatureExtractor",)
# DetrImageProcessor settings that mean the same in HfDetrImageProcessor
_SHARED_PROCESSOR_FIELDS = (
    "do_resize",
    "resample",
    "do_rescale",
    "rescale_factor",
    "do_normalize",
    "image_mean",
    "image_std",
    "do_pad",
    "pad_size",
    "do_convert_annotations",
)
# keys every saved processor carries, dropped silently
_BOOKKEEPING = ("image_processor_type", "feature_extractor_type", "processor_class", "auto_map", "_processor_class")


def is_transformers_detr_image_processor(processor_dict: Mapping[str, Any]) -> bool:
    return isinstance(processor_dict, Mapping) and (
        processor_dict.get("image_processor_type") in DETR_IMAGE_PROCESSOR_TYPES
        or processor_dict.get("feature_extractor_type") in _DETR_FEATURE_EXTRACTOR_TYPES
    )


def image_processor_dict_from_transformers(processor_dict: dict[str, Any]) -> dict[str, Any]:
    """`processor_dict` itself, or for a transformers `DetrImageProcessor` (or the old `DetrFeatureExtractor`)
    `preprocessor_config.json` the `HfDetrImageProcessor` settings that preprocess the same way: size (also the old
    int `size` with `max_size`), resizing, rescaling, normalization, padding and the annotation format (COCO
    detection or, for the panoptic checkpoints, COCO panoptic). DETR-only keys without a meaning here are dropped
    (logged at debug level)."""
    if not is_transformers_detr_image_processor(processor_dict):
        return processor_dict
    from transformers.image_processing_utils import get_size_dict

    settings = dict(processor_dict)
    annotation_format = settings.pop("format", "coco_detection")
    if "pad_and_return_pixel_mask" in settings:  # the feature extractor's name of do_pad
        settings.setdefault("do_pad", settings.pop("pad_and_return_pixel_mask"))
    size, max_size = settings.pop("size", None), settings.pop("max_size", None)
    translated: dict[str, Any] = {
        "size": get_size_dict(size, max_size=max_size if max_size is not None else 1333, default_to_square=False)
        if size is not None
        else {"shortest_edge": 800, "longest_edge": 1333}  # DetrImageProcessor's default
    }
    for name in _SHARED_PROCESSOR_FIELDS:
        if settings.get(name) is not None:
            translated[name] = settings.pop(name)
    translated["format"] = getattr(annotation_format, "value", annotation_format)  # the processor checks the value
    if "do_convert_annotations" not in translated:  # DetrImageProcessor's default: as do_normalize
        translated["do_convert_annotations"] = translated.get("do_normalize", True)
    dropped = sorted(key for key in settings if key not in _BOOKKEEPING and key not in _SHARED_PROCESSOR_FIELDS)
    if dropped:
        logger.debug("DetrImageProcessor settings without a meaning for HfDetrImageProcessor, dropped: %s", dropped)
    return translated
