"""Configuration of hf_detr: the single source of truth for building a model."""

from __future__ import annotations

from typing import Any

from transformers import PreTrainedConfig

from .errors import HfDetrInputError
from .transformers_detr import is_transformers_detr_config

_ACTIVATIONS = ("relu", "gelu", "silu")
# what a model predicts: boxes, or boxes and a mask per query (instance or panoptic segmentation)
TASKS = ("detection", "instance", "panoptic")
_POSITION_EMBEDDINGS = ("sine", "learned")


class HfDetrConfig(PreTrainedConfig):
    r"""
    Configuration of [`HfDetrModel`] and [`HfDetrForObjectDetection`]. The defaults build DETR-R50 as in the paper
    (Carion et al. 2020): a ResNet-50 from timm, 6 encoder and 6 decoder layers of width 256, 100 object queries.

    Args:
        backbone (`str`): any timm CNN that supports `features_only=True` (`"resnet50"`, `"resnet101"`,
            `"efficientnet_b0"`, ...). The last feature map is the encoder's input.
        use_pretrained_backbone (`bool`): load timm's ImageNet weights for the backbone when the model is built
            from this config (never when loading a checkpoint, which holds the backbone weights).
        backbone_kwargs (`dict`): extra keyword arguments for `timm.create_model`.
        dilation (`bool`): DC5, i.e. output stride 16 instead of 32 (dilate the last stage).
        freeze_backbone_batchnorm (`bool`): BatchNorm as frozen affine maps (the paper's choice for an ImageNet
            backbone). False keeps BatchNorm trainable with batch statistics, for a backbone trained from scratch;
            `to_plain_detr()` freezes it after training.
        freeze_backbone_stem (`bool`): do not train the stem and first stage (the paper's choice for an ImageNet
            backbone); False trains the whole backbone.
        num_channels (`int`): channels of `pixel_values`.
        num_queries (`int`): object queries, the most objects one image can yield.
        d_model (`int`): transformer width.
        encoder_layers / decoder_layers (`int`): transformer depth; `encoder_layers=0` feeds the projected backbone
            features straight to the decoder (the paper's encoder ablation; cheaper for small compute).
        encoder_attention_heads / decoder_attention_heads (`int`): heads; must divide `d_model`.
        encoder_ffn_dim / decoder_ffn_dim (`int`): width of the feed-forward blocks.
        dropout (`float`): dropout after attention and feed-forward blocks.
        attention_dropout (`float`): dropout on attention weights (0.1 in the original code).
        activation_dropout (`float`): dropout after the feed-forward activation (0.1 in the original code).
        activation_function (`str`): one of `"relu"`, `"gelu"`, `"silu"`.
        normalize_before (`bool`): pre-norm transformer layers; False is the paper's post-norm.
        position_embedding_type (`str`): `"sine"` (the paper's) or `"learned"` (row/column tables of 50 entries).
        auxiliary_loss (`bool`): apply the loss to every decoder layer's output.
        class_cost / bbox_cost / giou_cost (`float`): weights of the Hungarian matching cost.
        order_cost (`float`): added to the matching cost of query i (of its query group) as `order_cost * i /
            num_queries`, a tie-break: of two queries predicting nearly the same box, the earlier one is matched every
            time, instead of the two winning by turns, which teaches both to fire (duplicates; docs/RECIPE.md session
            5). Training only; 0 is DETR.
        bbox_loss_coefficient / giou_loss_coefficient (`float`): weights of the L1 and GIoU losses.
        eos_coefficient (`float`): weight of the "no object" class in the cross-entropy.
        duplicate_eos_coefficient (`float`): with a value > 0, the "no object" weight of an unmatched one-to-one query
            whose box overlaps a target box at IoU >= 0.5 (a query the Hungarian matching left out although it found
            an object that another query holds: a duplicate at inference), instead of `eos_coefficient`. It pushes
            the duplicates down without pushing down every query as a higher `eos_coefficient` does (docs/RECIPE.md
            session 6). Training only; 0 is DETR.
        mask_loss_coefficient / dice_loss_coefficient (`float`): weights of the focal and Dice losses of the
            segmentation head's masks (`HfDetrForSegmentation`; 1 and 1 as in the paper).
        num_query_groups (`int`): Group DETR (Chen et al. 2022): during training only, `num_query_groups` groups of
            `num_queries` queries each, which attend only within their group and are matched one-to-one to the
            targets separately; more positive queries per image speed up training. Inference uses the first group,
            so the model stays plain DETR (`drop_query_groups()` removes the others from a trained model). 1 is DETR.
        one_to_many_repeats (`int`): H-DETR's hybrid matching (Jia et al. 2023): with `k > 0`, the last query group
            is matched during training to every target repeated `k` times (many positive queries per object), its
            loss added to the one-to-one loss of the other groups. Needs `num_query_groups >= 2`; 0 is DETR.
        encoder_loss_coefficient (`float`): weight of a training-only dense head on the encoder tokens (one-to-many
            supervision of the encoder as in Co-DETR's auxiliary heads, Zong et al. 2023): every token near an object's
            centre predicts its class and box. It gives the backbone and encoder a direct signal while the decoder
            is still learning where to look; `to_plain_detr()` removes the head. 0 is DETR.
        task (`str`): what the model predicts, one of `TASKS`: `"detection"` (boxes: `HfDetrForObjectDetection`),
            `"instance"` or `"panoptic"` (boxes and a mask per query: `HfDetrForSegmentation`). Unset (a config.json
            written before the field existed), it follows `architectures`. `predicts_masks` is the one place that
            answers "is this a segmentation model".
    """

    model_type = "hf_detr"
    attribute_map = {
        "hidden_size": "d_model",
        "num_attention_heads": "encoder_attention_heads",
        "num_hidden_layers": "encoder_layers",
    }

    backbone: str = "resnet50"
    use_pretrained_backbone: bool = False
    backbone_kwargs: dict | None = None
    dilation: bool = False
    freeze_backbone_batchnorm: bool = True
    freeze_backbone_stem: bool = True
    num_channels: int = 3
    num_queries: int = 100
    d_model: int = 256
    encoder_layers: int = 6
    decoder_layers: int = 6
    encoder_attention_heads: int = 8
    decoder_attention_heads: int = 8
    encoder_ffn_dim: int = 2048
    decoder_ffn_dim: int = 2048
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.1
    activation_function: str = "relu"
    normalize_before: bool = False
    position_embedding_type: str = "sine"
    auxiliary_loss: bool = False
    class_cost: float = 1.0
    bbox_cost: float = 5.0
    giou_cost: float = 2.0
    order_cost: float = 0.0
    bbox_loss_coefficient: float = 5.0
    giou_loss_coefficient: float = 2.0
    eos_coefficient: float = 0.1
    duplicate_eos_coefficient: float = 0.0
    mask_loss_coefficient: float = 1.0
    dice_loss_coefficient: float = 1.0
    num_query_groups: int = 1
    one_to_many_repeats: int = 0
    encoder_loss_coefficient: float = 0.0
    task: str | None = None
    is_encoder_decoder: bool = True

    def __post_init__(self, **kwargs: Any) -> None:
        if self.backbone_kwargs is None:
            self.backbone_kwargs = {}
        super().__post_init__(**kwargs)
        if self.task is None:  # saved before the field existed: the segmentation class is the paper's panoptic model
            segmentation = any(name.endswith("ForSegmentation") for name in self.architectures or ())
            self.task = "panoptic" if segmentation else "detection"
        self._validate()

    @property
    def predicts_masks(self) -> bool:
        """Whether the model predicts a mask per query besides its box (instance or panoptic segmentation)."""
        return self.task != "detection"

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs: Any) -> Any:
        if is_transformers_detr_config(config_dict):  # its weights have other names: loading it here would drop them
            raise HfDetrInputError(
                "this is a transformers DETR config (model_type 'detr'): hf_detr.create_model(path) converts the "
                "checkpoint, weights included (or HfDetrConfig(**config_kwargs_from_transformers(config)) the config)"
            )
        # transformers sets keyword overrides (`from_pretrained(path, dropout=...)`) after construction, past
        # __post_init__'s checks: check them here too
        result = super().from_dict(config_dict, **kwargs)
        (result[0] if isinstance(result, tuple) else result)._validate()
        return result

    def _validate(self) -> None:
        def fail(field: str, value: Any, fix: str) -> None:
            raise HfDetrInputError(f"HfDetrConfig.{field}={value!r} is invalid: {fix}")

        if not isinstance(self.backbone, str) or not self.backbone:
            fail("backbone", self.backbone, "give the name of a timm CNN, e.g. 'resnet50'")
        if not isinstance(self.backbone_kwargs, dict):
            fail("backbone_kwargs", self.backbone_kwargs, "pass a dict of timm.create_model keyword arguments")
        for reserved in ("features_only", "pretrained", "in_chans"):
            if reserved in self.backbone_kwargs:
                fail(
                    "backbone_kwargs",
                    self.backbone_kwargs,
                    f"'{reserved}' is set by hf_detr; use num_channels / use_pretrained_backbone instead",
                )
        for name in (
            "num_channels",
            "num_queries",
            "d_model",
            "decoder_layers",
            "encoder_attention_heads",
            "decoder_attention_heads",
            "encoder_ffn_dim",
            "decoder_ffn_dim",
            "num_query_groups",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                fail(name, value, "it must be a positive integer")
        layers = self.encoder_layers
        if isinstance(layers, bool) or not isinstance(layers, int) or layers < 0:
            fail(
                "encoder_layers",
                layers,
                "it must be a non-negative integer (0: the decoder reads the projected "
                "backbone features, as in the paper's encoder ablation)",
            )
        for name in ("encoder_attention_heads", "decoder_attention_heads"):
            if self.d_model % getattr(self, name):
                fail(name, getattr(self, name), f"it must divide d_model={self.d_model}")
        if self.d_model % 2:
            fail("d_model", self.d_model, "it must be even (half rows, half columns in the position embedding)")
        for name in ("dropout", "attention_dropout", "activation_dropout"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                fail(name, value, "it must be a probability in [0, 1)")
        if self.activation_function not in _ACTIVATIONS:
            fail("activation_function", self.activation_function, f"choose one of {_ACTIVATIONS}")
        if self.position_embedding_type not in _POSITION_EMBEDDINGS:
            fail("position_embedding_type", self.position_embedding_type, f"choose one of {_POSITION_EMBEDDINGS}")
        for name in (
            "class_cost",
            "bbox_cost",
            "giou_cost",
            "order_cost",
            "bbox_loss_coefficient",
            "giou_loss_coefficient",
            "eos_coefficient",
            "duplicate_eos_coefficient",
            "mask_loss_coefficient",
            "dice_loss_coefficient",
            "encoder_loss_coefficient",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                fail(name, value, "it must be a non-negative number")
        repeats = self.one_to_many_repeats
        if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 0:
            fail("one_to_many_repeats", repeats, "it must be a non-negative integer (0 turns hybrid matching off)")
        if repeats and self.num_query_groups < 2:
            fail(
                "one_to_many_repeats",
                repeats,
                "the last query group is the one-to-many branch: set num_query_groups >= 2 (or one_to_many_repeats=0)",
            )
        if self.task not in TASKS:
            fail("task", self.task, f"choose one of {TASKS}")
        if self.class_cost == self.bbox_cost == self.giou_cost == 0:
            fail("class_cost", self.class_cost, "at least one matching cost must be positive")
        if self.num_labels < 1:
            fail("num_labels", self.num_labels, "a detector needs at least one class")


__all__ = ["TASKS", "HfDetrConfig"]
