"""2-D position embeddings of the feature map, added to attention queries and keys (never to values)."""

from __future__ import annotations

import math

import torch
from torch import nn

from .configuration_hf_detr import HfDetrConfig
from .errors import HfDetrInputError


class SinePositionEmbedding(nn.Module):
    """The paper's fixed embedding: sine/cosine of the normalized row and column index, counted over real pixels only.

    The first half of the channels encodes the row (y), the second half the column (x). Coordinates are cumulative
    sums of the mask, so padding does not shift them, then scaled to [0, 2π].
    """

    def __init__(self, d_model: int, temperature: float = 10000.0, scale: float = 2 * math.pi) -> None:
        super().__init__()
        self.num_features = d_model // 2
        self.temperature = temperature
        self.scale = scale

    def forward(self, mask: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """`mask`: True on real pixels."""
        valid = mask.to(dtype)
        y = valid.cumsum(1)
        x = valid.cumsum(2)
        eps = 1e-6
        y = y / (y[:, -1:, :] + eps) * self.scale
        x = x / (x[:, :, -1:] + eps) * self.scale
        dim_t = torch.arange(self.num_features, dtype=torch.int64, device=mask.device).to(dtype)
        dim_t = self.temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / self.num_features)
        pos_x = x[..., None] / dim_t
        pos_y = y[..., None] / dim_t
        # interleave sin (even channels) and cos (odd channels)
        pos_x = torch.stack((pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()), dim=4).flatten(3)
        pos_y = torch.stack((pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()), dim=4).flatten(3)
        return torch.cat((pos_y, pos_x), dim=3).flatten(1, 2)


class LearnedPositionEmbedding(nn.Module):
    """Learned row and column tables; channels are [column embedding, row embedding] as in the original code."""

    max_size = 50

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.row_embed = nn.Embedding(self.max_size, d_model // 2)
        self.col_embed = nn.Embedding(self.max_size, d_model // 2)

    def forward(self, mask: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The mask only gives the shape."""
        batch, height, width = mask.shape
        if height > self.max_size or width > self.max_size:
            raise HfDetrInputError(
                f"the feature map is {height}x{width} but the learned position embedding has {self.max_size} rows "
                f"and columns; use smaller images (at most {self.max_size} x the backbone stride per side) or "
                "position_embedding_type='sine'"
            )
        cols = self.col_embed.weight[:width]
        rows = self.row_embed.weight[:height]
        pos = torch.cat(
            (cols[None, :, :].expand(height, width, -1), rows[:, None, :].expand(height, width, -1)), dim=-1
        )
        return pos.flatten(0, 1)[None].expand(batch, -1, -1).to(dtype)


def build_position_embedding(config: HfDetrConfig) -> nn.Module:
    if config.position_embedding_type == "sine":
        return SinePositionEmbedding(config.d_model)
    return LearnedPositionEmbedding(config.d_model)
