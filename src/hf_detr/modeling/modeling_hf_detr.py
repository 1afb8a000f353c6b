"""HfDetrModel and HfDetrForObjectDetection: DETR as a transformers `PreTrainedModel`."""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput, can_return_tuple

from .backbone import TimmBackbone
from .configuration_hf_detr import HfDetrConfig
from .errors import HfDetrInputError, HfDetrInputTypeError
from .loss import SetCriterion, build_criterion
from .position_encoding import LearnedPositionEmbedding, build_position_embedding
from .segmentation import AttentionMap, MaskHead
from .transformer import DecoderLayer, EncoderLayer, MultiHeadAttention, TransformerDecoder, TransformerEncoder

logger = logging.getLogger(__name__)


@dataclass
class HfDetrModelOutput(ModelOutput):
    """
    Args:
        last_hidden_state: `[batch, num_queries, d_model]`, the decoder output after its final LayerNorm.
        intermediate_hidden_states: `[decoder_layers, batch, num_queries, d_model]`, every decoder layer's output
            through the final LayerNorm (only when `config.auxiliary_loss`).
        encoder_last_hidden_state: `[batch, h * w, d_model]`, the encoder memory.
        encoder_hidden_states / decoder_hidden_states: input plus each layer's output, on request.
        encoder_attentions / decoder_attentions / cross_attentions: `[batch, heads, q_len, kv_len]` per layer,
            on request.
        feature_mask: `[batch, h, w]` bool, True on the feature-map cells of real (unpadded) pixels.
        projected_features: `[batch, h * w, d_model]`, the backbone map after the input projection (the encoder's
            input), for the segmentation head.
        finer_features: the backbone's higher-resolution maps, finest first (only in a model built with
            `finer_levels`, the segmentation model's).
    """

    last_hidden_state: torch.FloatTensor | None = None
    intermediate_hidden_states: torch.FloatTensor | None = None
    encoder_last_hidden_state: torch.FloatTensor | None = None
    encoder_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    encoder_attentions: tuple[torch.FloatTensor, ...] | None = None
    decoder_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    decoder_attentions: tuple[torch.FloatTensor, ...] | None = None
    cross_attentions: tuple[torch.FloatTensor, ...] | None = None
    feature_mask: torch.BoolTensor | None = None
    projected_features: torch.FloatTensor | None = None
    finer_features: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class HfDetrObjectDetectionOutput(ModelOutput):
    """
    Args:
        loss: weighted sum of the Hungarian loss terms (when `labels` are given).
        loss_dict: every loss term, `_{i}` suffixed for decoder layer i with the auxiliary loss (`one_to_many_*` and
            `encoder_*` terms with those training options).
        logits: `[batch, num_queries, num_labels + 1]`; the last class is "no object". In training with
            `num_query_groups > 1`, every group's queries: `[batch, num_queries * num_query_groups, ...]`.
        pred_boxes: `[batch, num_queries, 4]`, normalized (center_x, center_y, width, height) relative to each
            image's unpadded size.
        auxiliary_outputs: with `config.auxiliary_loss`, `logits` and `pred_boxes` of every decoder layer but the last.
        last_hidden_state, encoder_last_hidden_state, hidden states and attentions: as in [`HfDetrModelOutput`].
    """

    loss: torch.FloatTensor | None = None
    loss_dict: dict[str, torch.Tensor] | None = None
    logits: torch.FloatTensor | None = None
    pred_boxes: torch.FloatTensor | None = None
    auxiliary_outputs: list[dict[str, torch.Tensor]] | None = None
    last_hidden_state: torch.FloatTensor | None = None
    encoder_last_hidden_state: torch.FloatTensor | None = None
    encoder_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    encoder_attentions: tuple[torch.FloatTensor, ...] | None = None
    decoder_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    decoder_attentions: tuple[torch.FloatTensor, ...] | None = None
    cross_attentions: tuple[torch.FloatTensor, ...] | None = None


class HfDetrPreTrainedModel(PreTrainedModel):
    config: HfDetrConfig
    config_class = HfDetrConfig
    base_model_prefix = "model"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["TimmBackbone", "EncoderLayer", "DecoderLayer"]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """The original DETR initialization: xavier-uniform transformer weights, PyTorch defaults elsewhere.
        The timm backbone is initialized by timm and skipped here."""
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            if module.bias is not None:
                fan_in = module.weight[0].numel()
                init.uniform_(module.bias, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))
        elif isinstance(module, (nn.LayerNorm, nn.GroupNorm)):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight)
        elif isinstance(module, LearnedPositionEmbedding):
            init.uniform_(module.row_embed.weight)
            init.uniform_(module.col_embed.weight)
        elif isinstance(module, MultiHeadAttention):
            init.xavier_uniform_(module.in_proj_weight)
            init.zeros_(module.in_proj_bias)
            init.xavier_uniform_(module.out_proj.weight)
            init.zeros_(module.out_proj.bias)
        elif isinstance(module, (EncoderLayer, DecoderLayer)):
            init.xavier_uniform_(module.linear1.weight)
            init.xavier_uniform_(module.linear2.weight)
        elif isinstance(module, MaskHead):  # the original's mask head initialization
            for conv in module.modules():
                if isinstance(conv, nn.Conv2d):
                    init.kaiming_uniform_(conv.weight, a=1)
                    init.zeros_(conv.bias)
        elif isinstance(module, AttentionMap):
            for linear in (module.q_proj, module.k_proj):
                init.xavier_uniform_(linear.weight)
                init.zeros_(linear.bias)

    @torch.no_grad()
    def resize_queries(self, num_queries: int, generator: torch.Generator | None = None) -> None:
        """Change the number of object queries to `num_queries` in place, `config.num_queries` included.

        `query_embed.weight` is `[num_queries * num_query_groups, d_model]`, one group after the other. Query groups
        are independent sets of queries for training only (see `to_plain_detr`), so each one is resized alike:
        with fewer queries, the first `num_queries` of each group are kept (inference reads the first group); with
        more, all are kept and each group gets `num_queries - Q` new ones, each a copy of an existing query of its
        group (every one used once before any twice) plus Gaussian noise of 0.1 times the group's standard
        deviation, so they start near learnt queries yet distinct. Randomness comes from `generator` (default: a CPU
        generator seeded with 0), never the global RNG. Every other weight is untouched; one line is logged.
        `query_embed.weight` becomes a new parameter: build the optimizer afterwards.
        """
        _check_num_queries(num_queries)
        cfg, embed = self.config, self.base_model.query_embed
        old, groups = cfg.num_queries, cfg.num_query_groups
        if num_queries == old:
            return
        weight = embed.weight.reshape(groups, old, -1)  # [groups, old, d_model]
        if num_queries < old:
            resized = weight[:, :num_queries].clone()
            what, log = f"kept the first {num_queries}", logger.info
        else:
            generator = torch.Generator().manual_seed(0) if generator is None else generator
            extra = num_queries - old
            rounds = -(-extra // old)  # permutations of the existing queries, so each is copied once before twice
            picks = torch.stack(
                [
                    torch.cat([torch.randperm(old, generator=generator) for _ in range(rounds)])[:extra]
                    for _ in range(groups)
                ]
            )
            existing = weight.detach().float().cpu()
            scale = 0.1 * existing.std(dim=(1, 2), keepdim=True)
            noise = torch.randn(groups, extra, existing.shape[-1], generator=generator)
            new = existing[torch.arange(groups)[:, None], picks] + scale * noise
            resized = torch.cat([weight, new.to(weight)], dim=1)
            what, log = f"{extra} new ones from existing ones plus noise", logger.warning
        embed.weight = nn.Parameter(resized.flatten(0, 1), requires_grad=embed.weight.requires_grad)
        embed.num_embeddings = embed.weight.shape[0]
        cfg.num_queries = num_queries
        per_group = f" in each of the {groups} query groups" if groups > 1 else ""
        log("query_embed: %d -> %d queries (%s)%s", old, num_queries, what, per_group)


def _check_num_queries(num_queries: object) -> None:
    if isinstance(num_queries, bool) or not isinstance(num_queries, int) or num_queries < 1:
        raise HfDetrInputError(
            f"num_queries={num_queries!r} is invalid: it must be a positive integer, the number of object queries "
            "(e.g. num_queries=20)"
        )


def _tracing() -> bool:
    """True under torch.compile / torch.export / ONNX export, where data-dependent checks cannot run."""
    return torch.compiler.is_compiling() or torch.compiler.is_exporting() or torch.jit.is_tracing()


def _check_inputs(config: HfDetrConfig, pixel_values: object, pixel_mask: object) -> torch.Tensor:
    """Validate the model inputs; return the pixel mask (all ones when not given)."""
    if not torch.is_tensor(pixel_values) or pixel_values.ndim != 4:
        shape = tuple(pixel_values.shape) if torch.is_tensor(pixel_values) else type(pixel_values).__name__
        raise HfDetrInputError(
            f"pixel_values must be a [batch, channels, height, width] tensor, got {shape}; "
            "prepare images with HfDetrImageProcessor"
        )
    if not pixel_values.is_floating_point():
        raise HfDetrInputTypeError(
            f"pixel_values must be a float tensor (rescaled and normalized), got {pixel_values.dtype}; "
            "prepare images with HfDetrImageProcessor"
        )
    batch, channels, height, width = pixel_values.shape
    if channels != config.num_channels:
        raise HfDetrInputError(
            f"pixel_values has {channels} channels but config.num_channels={config.num_channels}; convert the "
            f"images (e.g. grayscale to RGB) or build the model with num_channels={channels}"
        )
    if pixel_mask is None:
        return torch.ones((batch, height, width), dtype=torch.bool, device=pixel_values.device)
    if not torch.is_tensor(pixel_mask) or tuple(pixel_mask.shape) != (batch, height, width):
        shape = tuple(pixel_mask.shape) if torch.is_tensor(pixel_mask) else type(pixel_mask).__name__
        raise HfDetrInputError(
            f"pixel_mask must have shape [batch, height, width] = {(batch, height, width)} to match pixel_values, "
            f"got {shape}"
        )
    return pixel_mask


class HfDetrModel(HfDetrPreTrainedModel):
    """Backbone, input projection, position embedding and the encoder-decoder transformer, without heads.
    `finer_levels=k` also returns up to k finer backbone maps (`finer_features`), for the segmentation head."""

    def __init__(self, config: HfDetrConfig, finer_levels: int = 0) -> None:
        super().__init__(config)
        self.backbone = TimmBackbone(config, finer_levels)
        self.input_proj = nn.Conv2d(self.backbone.num_channels, config.d_model, kernel_size=1)
        self.position_embedding = build_position_embedding(config)
        self.query_embed = nn.Embedding(config.num_queries * config.num_query_groups, config.d_model)
        self.encoder = TransformerEncoder(config)
        self.decoder = TransformerDecoder(config)
        # False: training runs the first query group alone, as inference does (a run-time switch, neither config nor
        # weights: `hf_detr.training.finish_one_to_one` sets it late in training)
        self.extra_query_groups = True
        self.post_init()

    def freeze_backbone(self) -> None:
        """Stop training the backbone (e.g. for a first phase of fine-tuning)."""
        self.backbone.freeze()

    def unfreeze_backbone(self) -> None:
        """Train the backbone again, all but its stem and first stage as in the original recipe."""
        self.backbone.unfreeze()

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor,
        pixel_mask: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
    ) -> HfDetrModelOutput:
        """
        Args:
            pixel_values: `[batch, num_channels, height, width]` normalized images, padded to a common size.
            pixel_mask: `[batch, height, width]`, 1 on real pixels and 0 on padding (default: all real).
            output_attentions / output_hidden_states: also return attentions / hidden states of every layer.
        """
        cfg = self.config
        output_attentions = cfg.output_attentions if output_attentions is None else output_attentions
        output_hidden_states = cfg.output_hidden_states if output_hidden_states is None else output_hidden_states
        pixel_mask = _check_inputs(cfg, pixel_values, pixel_mask)

        features, mask, finer = self.backbone(pixel_values, pixel_mask)
        if not _tracing() and not mask.flatten(1).any(1).all():
            empty = ~mask.flatten(1).any(1)
            raise HfDetrInputError(
                f"image {int(empty.nonzero()[0, 0])} of the batch has no real pixel on the feature map: its "
                "pixel_mask is all zero or its real region is smaller than the backbone stride"
            )
        # the 1x1 projection as a matmul on [batch, h, w, channels]: a free view of a channels-last feature map
        proj = self.input_proj
        src = nn.functional.linear(features.permute(0, 2, 3, 1), proj.weight.flatten(1), proj.bias).flatten(1, 2)
        pos = self.position_embedding(mask, src.dtype)
        feature_mask, mask = mask, mask.flatten(1)[:, None, None, :]  # broadcast over heads and queries
        memory, encoder_states, encoder_attentions = self.encoder(
            src, pos, mask, output_hidden_states, output_attentions
        )
        groups = cfg.num_query_groups if self.training and self.extra_query_groups else 1
        query_pos = self.query_embed.weight[: cfg.num_queries * groups][None].expand(src.shape[0], -1, -1)
        query_mask = None
        if groups > 1:  # Group DETR: queries attend only within their group
            group = torch.arange(groups, device=src.device).repeat_interleave(cfg.num_queries)
            query_mask = group[:, None] == group[None, :]
        decoded = self.decoder(
            torch.zeros_like(query_pos),
            memory,
            pos,
            query_pos,
            mask,
            query_mask,
            return_intermediate=cfg.auxiliary_loss,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
        )
        return HfDetrModelOutput(
            last_hidden_state=decoded["last_hidden_state"],
            intermediate_hidden_states=decoded["intermediate"],
            encoder_last_hidden_state=memory,
            feature_mask=feature_mask,
            projected_features=src,
            finer_features=tuple(finer) or None,
            encoder_hidden_states=encoder_states,
            encoder_attentions=encoder_attentions,
            decoder_hidden_states=decoded["hidden_states"],
            decoder_attentions=decoded["attentions"],
            cross_attentions=decoded["cross_attentions"],
        )


class BoxHead(nn.Module):
    """3-layer MLP with ReLU, predicting unnormalized box logits (sigmoid gives cx, cy, w, h in [0, 1])."""

    def __init__(self, d_model: int, num_layers: int = 3) -> None:
        super().__init__()
        dims = [d_model] * num_layers + [4]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers[:-1]:
            x = nn.functional.relu(layer(x))
        return self.layers[-1](x)


class HfDetrForObjectDetection(HfDetrPreTrainedModel):
    """DETR with its class head (`num_labels + 1` logits, the last one "no object") and box head on every query."""

    # the `config.task` values this class predicts; a config of another task (a segmentation checkpoint loaded as its
    # detector, a detector starting the segmentation model) gets a copy with the first of them
    tasks: tuple[str, ...] = ("detection",)

    def __init__(self, config: HfDetrConfig) -> None:
        if config.task not in self.tasks:
            config = copy.deepcopy(config)  # the caller's config (another model's, perhaps) stays as it was
            config.task = self.tasks[0]
        super().__init__(config)
        # the mask head's FPN reads finer backbone maps besides the last one
        self.model = HfDetrModel(config, MaskHead.finer_levels if config.predicts_masks else 0)
        self.class_embed = nn.Linear(config.d_model, config.num_labels + 1)
        self.bbox_embed = BoxHead(config.d_model)
        if config.encoder_loss_coefficient > 0:  # training-only dense head; to_plain_detr() removes it
            self.encoder_class_embed = nn.Linear(config.d_model, config.num_labels + 1)
            self.encoder_bbox_embed = BoxHead(config.d_model)
        # None: the loss is built from the config at every forward with labels (no tensors, so cheap), because the
        # config is the source of truth and is edited after construction (eos_coefficient, auxiliary_loss, and
        # drop_query_groups() / to_plain_detr()); a criterion kept from __init__ would go stale. Assign a
        # SetCriterion to train with your own matcher or terms.
        self.criterion: SetCriterion | None = None
        self.post_init()

    def freeze_backbone(self) -> None:
        self.model.freeze_backbone()

    def to_plain_detr(self) -> HfDetrForObjectDetection:
        """Turn training-only options into their plain-DETR inference equivalents, in place: keep the first query
        group, remove the encoder's dense head and freeze trainable BatchNorm (its eval-mode function). Outputs in
        eval mode do not change."""
        self.drop_query_groups()
        if self.config.encoder_loss_coefficient > 0:
            del self.encoder_class_embed, self.encoder_bbox_embed
            self.config.encoder_loss_coefficient = 0.0
        if not self.config.freeze_backbone_batchnorm:
            self.model.backbone.freeze_batchnorm()
            self.config.freeze_backbone_batchnorm = True
        return self

    @torch.no_grad()
    def drop_query_groups(self) -> None:
        """Keep only the first query group (the one inference uses): the model becomes plain DETR."""
        cfg = self.config
        if cfg.num_query_groups == 1:
            return
        kept = self.model.query_embed.weight[: cfg.num_queries].clone()
        self.model.query_embed = nn.Embedding.from_pretrained(kept, freeze=False)
        cfg.num_query_groups, cfg.one_to_many_repeats = 1, 0

    def unfreeze_backbone(self) -> None:
        self.model.unfreeze_backbone()

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor,
        pixel_mask: torch.Tensor | None = None,
        labels: list[dict[str, torch.Tensor]] | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
    ) -> HfDetrObjectDetectionOutput:
        """
        Args:
            pixel_values: `[batch, num_channels, height, width]` normalized images, padded to a common size.
            pixel_mask: `[batch, height, width]`, 1 on real pixels and 0 on padding (default: all real).
            labels: one dict per image with `class_labels` int64 `[n]` and `boxes` float `[n, 4]` (normalized
                center_x, center_y, width, height). When given, the Hungarian loss is computed.

        Returns:
            [`HfDetrObjectDetectionOutput`]: `logits` `[batch, num_queries, num_labels + 1]` and `pred_boxes`
            `[batch, num_queries, 4]`, plus `loss` / `loss_dict` with labels.
        """
        outputs = self.model(
            pixel_values,
            pixel_mask,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        return HfDetrObjectDetectionOutput(**self._output_fields(outputs, self._heads(outputs), labels))

    def _heads(self, outputs: HfDetrModelOutput) -> dict[str, Any]:
        """`logits`, `pred_boxes` and `auxiliary_outputs` (None without the auxiliary loss) of the decoder output."""
        # with the auxiliary loss the heads read every layer at once; the last layer gives the predictions
        hidden = outputs.intermediate_hidden_states
        if hidden is None:
            hidden = outputs.last_hidden_state[None]
        all_logits = self.class_embed(hidden)
        all_boxes = self.bbox_embed(hidden).sigmoid()
        auxiliary_outputs = None
        if self.config.auxiliary_loss:
            auxiliary_outputs = [{"logits": c, "pred_boxes": b} for c, b in zip(all_logits[:-1], all_boxes[:-1])]
        return {"logits": all_logits[-1], "pred_boxes": all_boxes[-1], "auxiliary_outputs": auxiliary_outputs}

    def _output_fields(
        self, outputs: HfDetrModelOutput, heads: dict[str, Any], labels: list[dict[str, torch.Tensor]] | None
    ) -> dict[str, Any]:
        """The output's fields: `heads` (what the criterion reads), the loss with `labels`, the model's states."""
        loss = loss_dict = None
        if labels is not None:
            inputs = dict(heads, auxiliary_outputs=heads["auxiliary_outputs"] or [])
            if self.training and hasattr(self, "encoder_class_embed"):  # the training-only dense head
                memory = outputs.encoder_last_hidden_state
                inputs.update(
                    encoder_logits=self.encoder_class_embed(memory),
                    encoder_box_logits=self.encoder_bbox_embed(memory),
                    feature_mask=outputs.feature_mask,
                )
            criterion = self.criterion
            if criterion is None:
                criterion = build_criterion(self.config, masks=self.config.predicts_masks)
            loss, loss_dict = criterion(inputs, labels)
        return dict(
            loss=loss,
            loss_dict=loss_dict,
            logits=heads["logits"],
            pred_boxes=heads["pred_boxes"],
            auxiliary_outputs=heads["auxiliary_outputs"],
            last_hidden_state=outputs.last_hidden_state,
            encoder_last_hidden_state=outputs.encoder_last_hidden_state,
            encoder_hidden_states=outputs.encoder_hidden_states,
            encoder_attentions=outputs.encoder_attentions,
            decoder_hidden_states=outputs.decoder_hidden_states,
            decoder_attentions=outputs.decoder_attentions,
            cross_attentions=outputs.cross_attentions,
        )


@dataclass
class HfDetrSegmentationOutput(HfDetrObjectDetectionOutput):
    """
    [`HfDetrObjectDetectionOutput`] plus:

    Args:
        pred_masks: `[batch, num_queries, height / 4, width / 4]` mask logits, one map per query, at the finest
            backbone map the mask head reads (stride 4 for DETR-R50); `loss_dict` also holds `loss_mask` (focal)
            and `loss_dice` with labels. None in training mode with labels: the head then runs only on the queries
            the loss reads (those matched to an object; the head works on each query alone, so the loss is the same).
    """

    pred_masks: torch.FloatTensor | None = None


class HfDetrForSegmentation(HfDetrForObjectDetection):
    """DETR with the paper's segmentation head (section 4.4): the detector of [`HfDetrForObjectDetection`] (the same
    weights under the same names, so a detection checkpoint loads into it with only the head new), a multi-head
    attention map of every query over the encoder memory (`bbox_attention`) and an FPN-style mask head over up to
    three finer backbone maps (`mask_head`), giving one mask logit map per query. Panoptic and instance maps come
    from `HfDetrImageProcessor.post_process_panoptic_segmentation` / `post_process_instance_segmentation`.

    Train the detector first and then the head with `freeze_detection()` (the paper's recipe), or both jointly.
    """

    tasks = ("panoptic", "instance")  # the paper's segmentation model is its panoptic one
    # the modules the detector lacks: new when a detection checkpoint starts this model, trained by freeze_detection
    head_modules: tuple[str, ...] = ("bbox_attention", "mask_head")

    def __init__(self, config: HfDetrConfig) -> None:
        super().__init__(config)
        self.bbox_attention = AttentionMap(config.d_model, config.encoder_attention_heads)
        fpn_channels = self.model.backbone.finer_channels[::-1]  # coarsest first, the order the head upsamples in
        self.mask_head = MaskHead(config.d_model, config.encoder_attention_heads, fpn_channels)
        self.post_init()

    def freeze_detection(self) -> None:
        """Train only the segmentation head: every detector weight stops receiving gradients (the paper trains the
        mask head for 25 epochs on a frozen, trained detector)."""
        heads = {id(p) for name in self.head_modules for p in getattr(self, name).parameters()}
        for parameter in self.parameters():
            parameter.requires_grad_(id(parameter) in heads)

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor,
        pixel_mask: torch.Tensor | None = None,
        labels: list[dict[str, torch.Tensor]] | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
    ) -> HfDetrSegmentationOutput:
        """
        Args:
            pixel_values / pixel_mask: as for [`HfDetrForObjectDetection`].
            labels: as for [`HfDetrForObjectDetection`], plus `masks` `[n, height, width]` per image (one 0/1 mask
                per box at the padded `pixel_values` size, as `HfDetrImageProcessor(...,
                return_segmentation_masks=True)` gives them). The loss adds the focal and Dice losses of the masks
                matched one-to-one (padding pixels left out).

        Returns:
            [`HfDetrSegmentationOutput`]: `logits`, `pred_boxes` and `pred_masks` `[batch, num_queries, h, w]`.
        """
        outputs = self.model(
            pixel_values,
            pixel_mask,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        feature_mask = outputs.feature_mask
        batch, height, width = feature_mask.shape
        # the inference queries (the first group when training with several)
        queries = outputs.last_hidden_state[:, : self.config.num_queries]
        attention = self.bbox_attention(queries, outputs.encoder_last_hidden_state, feature_mask)
        projected = outputs.projected_features.transpose(1, 2).reshape(batch, -1, height, width)
        fpn = list(outputs.finer_features or ())[::-1]

        def masks_of(image: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
            """Mask logits `[n, h, w]` of the `n` (image, query) pairs, image indices ascending: the head runs on
            each image's chosen queries, padded to the most any image has."""
            counts = torch.bincount(image, minlength=batch)
            rank = torch.arange(len(image), device=image.device) - (counts.cumsum(0) - counts)[image]
            chosen = torch.zeros(batch, int(counts.max()), dtype=torch.long, device=image.device)
            chosen[image, rank] = query
            picked = attention[torch.arange(batch, device=image.device)[:, None], chosen]
            return self.mask_head(projected, picked, fpn)[image, rank]

        heads = self._heads(outputs)
        pred_masks = None
        if labels is None or not self.training:
            pred_masks = self.mask_head(projected, attention, fpn)
        if labels is not None:
            if pixel_mask is None:
                pixel_mask = torch.ones_like(pixel_values[:, 0], dtype=torch.bool)
            masks = {"pred_masks": pred_masks} if pred_masks is not None else {"masks_of": masks_of}
            heads = dict(heads, **masks, pixel_mask=pixel_mask)
        fields = self._output_fields(outputs, heads, labels)
        return HfDetrSegmentationOutput(**fields, pred_masks=pred_masks)


__all__ = [
    "HfDetrPreTrainedModel",
    "HfDetrModel",
    "HfDetrForObjectDetection",
    "HfDetrForSegmentation",
    "HfDetrSegmentationOutput",
]
