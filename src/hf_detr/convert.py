"""Load checkpoints of other DETR implementations into `HfDetrForObjectDetection`."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .configuration_hf_detr import HfDetrConfig
from .modeling_hf_detr import HfDetrForObjectDetection

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

# transformers 5 names in memory -> the names it (and the Hub) store on disk
_TRANSFORMERS_V5_TO_HUB = (
    (r"^model\.backbone\.model\.", "model.backbone.conv_encoder.model."),
    (r"\.o_proj\.", ".out_proj."),
    (r"\.mlp\.fc([12])\.", r".fc\1."),
)


def config_from_transformers(detr_config: Mapping[str, Any] | Any) -> HfDetrConfig:
    """Translate a transformers `DetrConfig` (object or `config.json` dict, v4 or v5 layout) to `HfDetrConfig`."""
    config = dict(detr_config if isinstance(detr_config, Mapping) else detr_config.to_dict())
    if config.get("model_type") != "detr":
        raise ValueError(f"expected a transformers DETR config (model_type 'detr'), got {config.get('model_type')!r}")
    backbone_config = config.get("backbone_config") or {}
    uses_timm = backbone_config.get("model_type") == "timm_backbone" if backbone_config else config.get(
        "use_timm_backbone", True
    )
    if not uses_timm:
        raise ValueError(
            "this DETR checkpoint uses a transformers (non-timm) backbone; hf_detr loads timm backbones only"
        )
    kwargs = {name: config[name] for name in _SHARED_CONFIG_FIELDS if name in config}
    kwargs["backbone"] = backbone_config.get("backbone") or config.get("backbone") or "resnet50"
    kwargs["dilation"] = bool(config.get("dilation")) or backbone_config.get("output_stride") == 16
    kwargs["normalize_before"] = False  # transformers' DETR is post-norm only
    return HfDetrConfig(**kwargs)


def state_dict_from_transformers(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a transformers DETR state dict (Hub layout or transformers 5 in-memory layout) to ours, packing the
    separate q/k/v projections into `in_proj_weight` / `in_proj_bias`."""
    renamed: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key.endswith("num_batches_tracked"):
            continue  # frozen BatchNorm keeps no step counter
        for pattern, replacement in _TRANSFORMERS_V5_TO_HUB + _TRANSFORMERS_RENAMES:
            key = re.sub(pattern, replacement, key)
        renamed[key] = value
    return pack_attention_projections(renamed, ("q_proj", "k_proj", "v_proj"))


def pack_attention_projections(state_dict: dict[str, torch.Tensor], names: tuple[str, str, str]) -> dict[str, torch.Tensor]:
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
            raise ValueError(f"checkpoint has {prefix}.*.{kind} without {missing}; it is incomplete")
        packed[f"{prefix}.in_proj_{kind}"] = torch.cat([parts[name] for name in names])
    return packed


def load_converted(config: HfDetrConfig, state_dict: Mapping[str, torch.Tensor], source: str) -> HfDetrForObjectDetection:
    """Build the model and load a state dict already in our layout; mismatched keys fail with their list."""
    model = HfDetrForObjectDetection(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"the {source} checkpoint does not fit {config.backbone} (dilation={config.dilation}): "
            f"missing keys {missing}, unexpected keys {unexpected}"
        )
    wrong_shape = [k for k, v in state_dict.items() if tuple(v.shape) != tuple(expected[k].shape)]
    if wrong_shape:
        raise ValueError(
            f"the {source} checkpoint has tensors of unexpected shape: "
            + ", ".join(f"{k} {tuple(state_dict[k].shape)} != {tuple(expected[k].shape)}" for k in wrong_shape)
        )
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


def load_tensor_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a `.safetensors` or a pickled torch file without executing arbitrary pickled code."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises UnpicklingError or RuntimeError depending on the payload
        raise ValueError(
            f"{path} could not be loaded safely (weights_only=True): {error}. It holds objects other than tensors "
            "and plain containers; only checkpoints of tensors are accepted"
        ) from error


def _transformers_files(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    folder = Path(path)
    if not folder.is_dir():
        from huggingface_hub import hf_hub_download  # a Hub repository id such as "facebook/detr-resnet-50"

        repo = str(path)
        config_file = Path(hf_hub_download(repo, "config.json"))
        try:
            weights_file = Path(hf_hub_download(repo, "model.safetensors"))
        except Exception:  # older repositories only hold the pickled weights
            weights_file = Path(hf_hub_download(repo, "pytorch_model.bin"))
    else:
        config_file = folder / "config.json"
        candidates = [folder / "model.safetensors", folder / "pytorch_model.bin"]
        weights_file = next((c for c in candidates if c.exists()), None)
        if not config_file.exists() or weights_file is None:
            raise ValueError(f"{folder} must hold config.json and model.safetensors (or pytorch_model.bin)")
    return json.loads(config_file.read_text()), load_tensor_file(weights_file)


def from_transformers(
    path_or_state_dict: str | os.PathLike | Mapping[str, torch.Tensor],
    config: Mapping[str, Any] | Any | None = None,
) -> HfDetrForObjectDetection:
    """Load a checkpoint of `transformers`' `DetrForObjectDetection` as an equivalent `HfDetrForObjectDetection`.

    Args:
        path_or_state_dict: a folder written by `save_pretrained` (config.json + weights), a Hub repository id such
            as `"facebook/detr-resnet-50"`, or a state dict (then `config` is required).
        config: the transformers `DetrConfig` or its dict, when `path_or_state_dict` is a state dict.
    """
    if isinstance(path_or_state_dict, Mapping):
        if config is None:
            raise ValueError("from_transformers(state_dict) needs config=<the DetrConfig or its config.json dict>")
        detr_config, state_dict = config, path_or_state_dict
    else:
        detr_config, state_dict = _transformers_files(path_or_state_dict)
    hf_config = config_from_transformers(detr_config)
    return load_converted(hf_config, state_dict_from_transformers(state_dict), "transformers DETR")
