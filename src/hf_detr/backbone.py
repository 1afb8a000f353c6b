"""CNN backbone: any timm model with `features_only` support, BatchNorm frozen, last feature map out."""

from __future__ import annotations

import timm
import torch
from timm.layers import freeze_batch_norm_2d
from torch import nn

from .configuration_hf_detr import HfDetrConfig


def _initialized_on_meta() -> bool:
    # transformers builds models under a meta device while loading a checkpoint; downloading timm weights then is
    # both wasted (the checkpoint holds them) and impossible (meta tensors hold no data).
    return torch.empty(0).device.type == "meta"


class TimmBackbone(nn.Module):
    """Runs a timm CNN and returns its last feature map with the padding mask resized to it.

    BatchNorm layers become frozen affine maps (batch statistics are meaningless at DETR's batch sizes). The stem and
    the first stage, up to the stride-4 feature level, are not trained, as in the original recipe.
    """

    def __init__(self, config: HfDetrConfig) -> None:
        super().__init__()
        kwargs = dict(config.backbone_kwargs)
        if config.dilation:
            kwargs.setdefault("output_stride", 16)
        try:
            body = timm.create_model(
                config.backbone,
                pretrained=config.use_pretrained_backbone and not _initialized_on_meta(),
                features_only=True,
                out_indices=kwargs.pop("out_indices", (-1,)),
                in_chans=config.num_channels,
                **kwargs,
            )
        except RuntimeError as error:
            if "Unknown model" in str(error):
                raise ValueError(
                    f"HfDetrConfig.backbone={config.backbone!r} is not a timm model; see timm.list_models()"
                ) from error
            raise
        except (TypeError, AssertionError, NotImplementedError) as error:
            raise ValueError(
                f"timm could not build backbone {config.backbone!r} with features_only=True and {kwargs} "
                f"(dilation={config.dilation}): {error}. Choose a timm CNN that supports these options."
            ) from error
        self.body = freeze_batch_norm_2d(body)
        self.num_channels = body.feature_info.channels()[-1]
        self._stem_prefixes = self._stem_parameter_prefixes()
        self.unfreeze()
        # timm initialized (and possibly loaded) these weights; transformers' init pass must leave them alone.
        for module in self.body.modules():
            module._is_hf_initialized = True

    def _stem_parameter_prefixes(self) -> tuple[str, ...]:
        """Names of the parameters up to the first stride-4 feature level (the stem and the first stage)."""
        first_stage = next((info["module"] for info in self.body.feature_info.info if info["reduction"] >= 4), None)
        if first_stage is None:
            return ()
        # FeatureListNet flattens nested module names with "_" ("stages.0" becomes "stages_0").
        prefixes = (first_stage + ".", first_stage.replace(".", "_") + ".")
        names = [name for name, _ in self.body.named_parameters()]
        last = max((i for i, name in enumerate(names) if name.startswith(prefixes)), default=-1)
        return tuple(names[: last + 1])

    def freeze(self) -> None:
        """Stop training the whole backbone."""
        for parameter in self.body.parameters():
            parameter.requires_grad_(False)

    def unfreeze(self) -> None:
        """Train the backbone as the original recipe does: everything but the stem and the first stage."""
        frozen = set(self._stem_prefixes)
        for name, parameter in self.body.named_parameters():
            parameter.requires_grad_(name not in frozen)

    def forward(self, pixel_values: torch.Tensor, pixel_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            pixel_values: `[batch, channels, height, width]` images.
            pixel_mask: `[batch, height, width]`, 1 on real pixels and 0 on padding.

        Returns:
            The last feature map `[batch, num_channels, h, w]` and its boolean mask `[batch, h, w]`.
        """
        features = self.body(pixel_values)[-1]
        mask = nn.functional.interpolate(pixel_mask[None].float(), size=features.shape[-2:])[0].to(torch.bool)
        return features, mask
