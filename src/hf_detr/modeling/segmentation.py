"""DETR's mask head (Carion et al. 2020, section 4.4): an attention map of every query over the encoder memory, and a
small FPN-style convolutional head that turns it, with the projected backbone map and the finer backbone maps, into
one mask logit map per query.

Computed as the original defines it, with three exact rewrites that spare the per-query work (the head runs on
`batch * num_queries` maps): the first convolution over `[projected map, attention maps]` is split into a
convolution of the projected map, done once per image, plus one of the attention maps per query (a convolution is
linear in its input channels); the FPN adapters run once per image, and their output is added to every query's map
by broadcasting instead of being copied per query.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .errors import HfDetrInputError


class AttentionMap(nn.Module):
    """Multi-head attention weights of each query over the memory, without values: softmax over heads and positions
    jointly, as in the original `MHAttentionMap`.

    Keys `q_proj` / `k_proj` (the original's `q_linear` / `k_linear`).
    """

    def __init__(self, d_model: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)

    def forward(self, queries: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor) -> torch.Tensor:
        """
        Args:
            queries: `[batch, num_queries, d_model]`, the last decoder layer's output.
            memory: `[batch, h * w, d_model]`, the encoder output.
            memory_mask: `[batch, h, w]` bool, True on real (unpadded) cells.

        Returns:
            `[batch, num_queries, num_heads, h, w]` attention weights; each query's weights sum to 1.
        """
        batch, num_queries, d_model = queries.shape
        height, width = memory_mask.shape[1:]
        head_dim = d_model // self.num_heads
        q = self.q_proj(queries).view(batch, num_queries, self.num_heads, head_dim) * head_dim**-0.5
        k = self.k_proj(memory).view(batch, height * width, self.num_heads, head_dim)
        weights = torch.einsum("bqnc,bpnc->bqnp", q, k)
        weights = weights.masked_fill(~memory_mask.view(batch, 1, 1, height * width), float("-inf"))
        weights = weights.flatten(2).softmax(-1)
        return weights.view(batch, num_queries, self.num_heads, height, width)


class ConvNormReLU(nn.Module):
    """3x3 convolution, GroupNorm, ReLU. 8 groups as in the original, or the largest divisor of the width below 8
    where 8 does not divide it (a width such as d_model + heads = 68)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm = nn.GroupNorm(math.gcd(8, out_channels), out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm(self.conv(x)))


class FpnStage(nn.Module):
    """Upsample (nearest) to the next finer backbone map, add its 1x1-adapted features, refine."""

    def __init__(self, fpn_channels: int, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.adapter = nn.Conv2d(fpn_channels, in_channels, 1)
        self.refine = ConvNormReLU(in_channels, out_channels)

    def forward(self, x: torch.Tensor, fpn: torch.Tensor, num_queries: int) -> torch.Tensor:
        """`x` `[batch * num_queries, c, h, w]`, `fpn` `[batch, fpn_channels, H, W]` -> `[batch * num_queries,
        out_channels, H, W]`."""
        lateral = self.adapter(fpn)  # once per image
        x = F.interpolate(x, size=lateral.shape[-2:], mode="nearest")
        x = (x.unflatten(0, (-1, num_queries)) + lateral[:, None]).flatten(0, 1)
        return self.refine(x)


class MaskHead(nn.Module):
    """The original `MaskHeadSmallConv`: `[projected map, attention maps]` through two conv blocks, then one FPN stage
    per finer backbone map (up to 3, finest last), halving the width each time, and a 3x3 convolution to one logit
    map per query at the finest map's resolution (stride 4 for DETR-R50).

    Args:
        d_model: width of the projected map (and the transformer).
        num_heads: attention maps per query.
        fpn_channels: channels of the finer backbone maps used, coarsest first.
    """

    finer_levels = 3  # the most finer backbone maps the FPN reads (strides 16, 8, 4 for DETR-R50)

    def __init__(self, d_model: int, num_heads: int, fpn_channels: list[int]) -> None:
        super().__init__()
        if d_model % 2 ** (len(fpn_channels) + 1):
            raise HfDetrInputError(
                f"the mask head halves d_model={d_model} {len(fpn_channels) + 1} times; choose a d_model divisible "
                f"by {2 ** (len(fpn_channels) + 1)}"
            )
        self.d_model = d_model
        widths = [d_model // 2 ** (i + 1) for i in range(len(fpn_channels) + 1)]
        self.conv1 = ConvNormReLU(d_model + num_heads, d_model + num_heads)
        self.conv2 = ConvNormReLU(d_model + num_heads, widths[0])
        self.fpn_stages = nn.ModuleList(
            FpnStage(channels, widths[i], widths[i + 1]) for i, channels in enumerate(fpn_channels)
        )
        self.output_conv = nn.Conv2d(widths[-1], 1, 3, padding=1)

    def forward(self, projected: torch.Tensor, attention: torch.Tensor, fpn: list[torch.Tensor]) -> torch.Tensor:
        """
        Args:
            projected: `[batch, d_model, h, w]`, the backbone map after the input projection.
            attention: `[batch, num_queries, num_heads, h, w]` from `AttentionMap`.
            fpn: the finer backbone maps, coarsest first, `[batch, fpn_channels[i], h_i, w_i]`.

        Returns:
            `[batch, num_queries, h_fine, w_fine]` mask logits.
        """
        batch, num_queries = attention.shape[:2]
        conv = self.conv1.conv
        # conv1 over the concatenation = conv of the image part (once per image) + conv of the attention part
        image_part = F.conv2d(projected, conv.weight[:, : self.d_model], conv.bias, padding=1)
        query_part = F.conv2d(attention.flatten(0, 1), conv.weight[:, self.d_model :], padding=1)
        x = (query_part.unflatten(0, (batch, num_queries)) + image_part[:, None]).flatten(0, 1)
        x = self.conv2(F.relu(self.conv1.norm(x)))
        for stage, level in zip(self.fpn_stages, fpn):
            x = stage(x, level, num_queries)
        return self.output_conv(x).view(batch, num_queries, *x.shape[-2:])
