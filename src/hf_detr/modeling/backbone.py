"""CNN backbone: any timm model with `features_only` support, BatchNorm frozen, last feature map out (and, for the
segmentation head, the higher-resolution maps before it)."""

from __future__ import annotations

import logging

import timm
import torch
from timm.layers import FrozenBatchNormAct2d, freeze_batch_norm_2d
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from .configuration_hf_detr import HfDetrConfig
from .errors import HfDetrInputError

logger = logging.getLogger(__name__)


class _FoldedConv2d(nn.Conv2d):
    """A Conv2d that applies the frozen BatchNorm following it through its weights, in one pass over the activations:
    conv(x, w * s) + (b - mean) * s + beta, with s = gamma / sqrt(var + eps). Parameters and keys are unchanged."""

    _folded_bn: FrozenBatchNorm2d | FrozenBatchNormAct2d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bn = self._folded_bn
        scale = bn.weight * (bn.running_var + bn.eps).rsqrt()
        shift = bn.bias - bn.running_mean * scale
        if self.bias is not None:
            shift = shift + self.bias * scale
        return self._conv_forward(x, self.weight * scale.reshape(-1, 1, 1, 1), shift)


class _FoldedFrozenBatchNorm2d(FrozenBatchNorm2d):
    """A frozen BatchNorm whose affine map is applied by the preceding convolution; it keeps its buffers (and so the
    checkpoint layout) and passes its input through."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class _FoldedFrozenBatchNormAct2d(FrozenBatchNormAct2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.drop(x))


def fold_frozen_batchnorm(body: nn.Module, num_channels: int) -> int:
    """Fold every frozen BatchNorm that directly consumes a plain Conv2d's output into it; returns the pairs folded.
    The pairs are found by tracing a forward pass of a tiny image (on the meta device when the model is built there).
    Folding saves two elementwise passes over each activation and the activations the BatchNorm would keep for
    backward."""
    produced: dict[int, tuple[nn.Conv2d, torch.Tensor]] = {}
    pairs: list[tuple[nn.Conv2d, nn.Module]] = []

    def after_conv(module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        produced[id(output)] = (module, output)  # keep the tensor alive so its id is not reused

    def before_bn(module: nn.Module, inputs: tuple) -> None:
        source = produced.get(id(inputs[0]))
        if source is not None:
            pairs.append((source[0], module))

    hooks = [m.register_forward_hook(after_conv) for m in body.modules() if type(m) is nn.Conv2d]
    hooks += [
        m.register_forward_pre_hook(before_bn)
        for m in body.modules()
        if type(m) in (FrozenBatchNorm2d, FrozenBatchNormAct2d)
    ]
    try:
        device = next(body.parameters()).device
        with torch.no_grad():
            body(torch.zeros(1, num_channels, 64, 64, device=device))
    finally:
        for hook in hooks:
            hook.remove()
    # a convolution read by two BatchNorms (never seen in practice) cannot be folded into both
    convs = [conv for conv, _ in pairs]
    folded = [(conv, bn) for conv, bn in pairs if convs.count(conv) == 1]
    for conv, bn in folded:
        conv.__class__ = _FoldedConv2d
        object.__setattr__(conv, "_folded_bn", bn)  # a reference, not a submodule: the keys stay where they were
        bn.__class__ = _FoldedFrozenBatchNorm2d if type(bn) is FrozenBatchNorm2d else _FoldedFrozenBatchNormAct2d
    return len(folded)


def _initialized_on_meta() -> bool:
    # transformers builds models under a meta device while loading a checkpoint; downloading timm weights then is
    # both wasted (the checkpoint holds them) and impossible (meta tensors hold no data).
    return torch.empty(0).device.type == "meta"


def _with_finer_levels(name: str, out_indices: tuple[int, ...], count: int, kwargs: dict) -> tuple[int, ...]:
    """The last of `out_indices` plus up to `count` feature levels before it with stride >= 4, finest first: the maps
    the segmentation head's FPN reads (DETR-R50: layer1-3 at strides 4, 8, 16, then layer4 for the transformer)."""
    with torch.device("meta"):  # only the feature table is needed: no weights, no download
        info = timm.create_model(name, features_only=True, out_indices=out_indices, **kwargs).feature_info
    last = out_indices[-1] % len(info.info)
    finer = [i for i in range(last) if info.info[i]["reduction"] >= 4][-count:]
    return (*finer, last)


class TimmBackbone(nn.Module):
    """A timm CNN's last feature map with the padding mask resized to it, and with `finer_levels=k` up to k finer maps
    before it (the segmentation head's FPN). BatchNorm becomes frozen affine maps (batch statistics are meaningless at
    DETR's batch sizes); the stem and first stage, up to stride 4, are not trained, as in the original recipe."""

    def __init__(self, config: HfDetrConfig, finer_levels: int = 0) -> None:
        super().__init__()
        kwargs = dict(config.backbone_kwargs)
        if config.dilation:
            kwargs.setdefault("output_stride", 16)
        out_indices = tuple(kwargs.pop("out_indices", (-1,)))
        try:
            if finer_levels:
                out_indices = _with_finer_levels(
                    config.backbone, out_indices, finer_levels, dict(kwargs, in_chans=config.num_channels)
                )
            body = timm.create_model(
                config.backbone,
                pretrained=config.use_pretrained_backbone and not _initialized_on_meta(),
                features_only=True,
                out_indices=out_indices,
                in_chans=config.num_channels,
                **kwargs,
            )
        except RuntimeError as error:
            if "Unknown model" in str(error):
                raise HfDetrInputError(
                    f"HfDetrConfig.backbone={config.backbone!r} is not a timm model; see timm.list_models()"
                ) from error
            raise
        except (TypeError, AssertionError, NotImplementedError) as error:
            raise HfDetrInputError(
                f"timm could not build backbone {config.backbone!r} with features_only=True and {kwargs} "
                f"(dilation={config.dilation}): {error}. Choose a timm CNN that supports these options."
            ) from error
        self.body = body
        self.num_channels = body.feature_info.channels()[-1]
        self.finer_channels: list[int] = body.feature_info.channels()[:-1]  # finest first
        self._input_channels = config.num_channels
        if config.freeze_backbone_batchnorm:
            self.freeze_batchnorm()
        self._stem_prefixes = self._stem_parameter_prefixes() if config.freeze_backbone_stem else ()
        self.unfreeze()
        self._mark_initialized()

    def _mark_initialized(self) -> None:
        # timm initialized (and possibly loaded) these weights; transformers' init pass must leave them alone.
        for module in self.body.modules():
            module._is_hf_initialized = True

    def freeze_batchnorm(self) -> None:
        """BatchNorm as its eval-mode affine map, folded into the convolutions. From ImageNet weights this happens at
        the start; training from scratch keeps BatchNorm trainable and freezes it afterwards for inference."""
        self.body = freeze_batch_norm_2d(self.body)
        fold_frozen_batchnorm(self.body, self._input_channels)
        self._mark_initialized()

    def _stem_parameter_prefixes(self) -> tuple[str, ...]:
        """The stem and the first stage: up to the first stride-4 feature level."""
        first_stage = next((info["module"] for info in self.body.feature_info.info if info["reduction"] >= 4), None)
        if first_stage is None:
            return ()
        # FeatureListNet flattens nested module names with "_" ("stages.0" becomes "stages_0").
        prefixes = (first_stage + ".", first_stage.replace(".", "_") + ".")
        names = [name for name, _ in self.body.named_parameters()]
        last = max((i for i, name in enumerate(names) if name.startswith(prefixes)), default=-1)
        return tuple(names[: last + 1])

    def freeze(self) -> None:
        for parameter in self.body.parameters():
            parameter.requires_grad_(False)

    def unfreeze(self) -> None:
        """All but the stem and the first stage, as in the original recipe, unless `freeze_backbone_stem=False`."""
        frozen = set(self._stem_prefixes)
        for name, parameter in self.body.named_parameters():
            parameter.requires_grad_(name not in frozen)

    def forward(
        self, pixel_values: torch.Tensor, pixel_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """The last feature map `[batch, num_channels, h, w]`, its bool mask `[batch, h, w]` (from `pixel_mask`, 1 on
        real pixels) and the finer maps, finest first."""
        # channels-last convolutions run markedly faster on CPUs (oneDNN) and on tensor-core GPUs
        *finer, features = self.body(pixel_values.contiguous(memory_format=torch.channels_last))
        mask = nn.functional.interpolate(pixel_mask[None].float(), size=features.shape[-2:])[0].to(torch.bool)
        return features, mask, finer
