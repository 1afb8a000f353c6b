"""DETR's encoder-decoder transformer, batch-first, attention through `scaled_dot_product_attention`."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer

from .configuration_hf_detr import HfDetrConfig


class MultiHeadAttention(nn.Module):
    """Multi-head attention with packed q/k/v projections (the layout of `nn.MultiheadAttention` and the original
    checkpoints). When query and key are the same tensor (self-attention), their projections run as one matmul."""

    def __init__(self, d_model: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        self.dropout = dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * d_model, d_model))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * d_model))
        self.out_proj = nn.Linear(d_model, d_model)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        mask: torch.Tensor | None = None,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`mask`: bool, broadcastable to `[batch, heads, q_len, kv_len]`, True where the query may attend the key
        (a key padding mask as `[batch, 1, 1, kv_len]`). `need_weights` takes a slower path."""
        d_model = query.shape[-1]
        weight, bias = self.in_proj_weight, self.in_proj_bias
        if query is key:
            q, k = F.linear(query, weight[: 2 * d_model], bias[: 2 * d_model]).chunk(2, dim=-1)
        else:
            q = F.linear(query, weight[:d_model], bias[:d_model])
            k = F.linear(key, weight[d_model : 2 * d_model], bias[d_model : 2 * d_model])
        v = F.linear(value, weight[2 * d_model :], bias[2 * d_model :])
        q, k, v = self._split_heads(q), self._split_heads(k), self._split_heads(v)
        dropout = self.dropout if self.training else 0.0
        weights = None
        if need_weights:
            scores = (q @ k.transpose(-2, -1)) * self.head_dim**-0.5
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            weights = scores.softmax(dim=-1)
            out = F.dropout(weights, dropout, self.training) @ v
        else:
            out = _attention(q, k, v, mask, dropout)
        return self.out_proj(out.transpose(1, 2).flatten(2)), weights


def _attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, dropout: float
) -> torch.Tensor:
    """`scaled_dot_product_attention`; in bf16 on the CPU with gradients, through its float32 kernel: the CPU flash
    kernel's bf16 backward is several times slower than its float32 one at DETR's head sizes (torch 2.14: 33 ms
    against 6 ms for the demo's cross-attention; its whole step 192 -> 135 ms on 2 cores, docs/RECIPE.md session 7)."""
    if q.dtype == torch.bfloat16 and q.device.type == "cpu" and torch.is_grad_enabled() and q.requires_grad:
        with torch.autocast("cpu", enabled=False):
            out = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask, dropout_p=dropout)
        return out.to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)


class _FeedForwardMixin:
    def _feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.activation_dropout(self.activation(self.linear1(x))))


class EncoderLayer(_FeedForwardMixin, GradientCheckpointingLayer):
    """Self-attention over the flattened feature map (q = k = x + pos, v = x), then a feed-forward block."""

    def __init__(self, config: HfDetrConfig) -> None:
        super().__init__()
        d = config.d_model
        self.self_attn = MultiHeadAttention(d, config.encoder_attention_heads, config.attention_dropout)
        self.linear1 = nn.Linear(d, config.encoder_ffn_dim)
        self.linear2 = nn.Linear(config.encoder_ffn_dim, d)
        self.norm1 = nn.LayerNorm(d)
        self.norm2 = nn.LayerNorm(d)
        self.activation = ACT2FN[config.activation_function]
        self.activation_dropout = nn.Dropout(config.activation_dropout)
        self.dropout = nn.Dropout(config.dropout)
        self.normalize_before = config.normalize_before

    def forward(
        self, src: torch.Tensor, pos: torch.Tensor, mask: torch.Tensor, need_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`src`, `pos`: `[batch, hw, d_model]`; `mask`: `[batch, 1, 1, hw]` True on real pixels."""
        x = self.norm1(src) if self.normalize_before else src
        qk = x + pos
        attn, weights = self.self_attn(qk, qk, x, mask, need_weights)
        src = src + self.dropout(attn)
        if not self.normalize_before:
            src = self.norm1(src)
        x = self.norm2(src) if self.normalize_before else src
        src = src + self.dropout(self._feed_forward(x))
        if not self.normalize_before:
            src = self.norm2(src)
        return src, weights


class DecoderLayer(_FeedForwardMixin, GradientCheckpointingLayer):
    """Self-attention among the queries (q = k = tgt + query_pos, v = tgt), cross-attention to the encoder memory
    (q = tgt + query_pos, k = memory + pos, v = memory), then a feed-forward block."""

    def __init__(self, config: HfDetrConfig) -> None:
        super().__init__()
        d = config.d_model
        heads = config.decoder_attention_heads
        self.self_attn = MultiHeadAttention(d, heads, config.attention_dropout)
        self.cross_attn = MultiHeadAttention(d, heads, config.attention_dropout)
        self.linear1 = nn.Linear(d, config.decoder_ffn_dim)
        self.linear2 = nn.Linear(config.decoder_ffn_dim, d)
        self.norm1 = nn.LayerNorm(d)
        self.norm2 = nn.LayerNorm(d)
        self.norm3 = nn.LayerNorm(d)
        self.activation = ACT2FN[config.activation_function]
        self.activation_dropout = nn.Dropout(config.activation_dropout)
        self.dropout = nn.Dropout(config.dropout)
        self.normalize_before = config.normalize_before

    def forward(
        self,
        tgt: torch.Tensor,
        memory: torch.Tensor,
        pos: torch.Tensor,
        query_pos: torch.Tensor,
        memory_mask: torch.Tensor,
        query_mask: torch.Tensor | None = None,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """`tgt`, `query_pos`: `[batch, queries, d_model]`; `memory`, `pos`: `[batch, hw, d_model]`;
        `memory_mask`: `[batch, 1, 1, hw]` True on real pixels; `query_mask`: `[queries, queries]`, which queries
        may attend which (query groups), or None for all."""
        pre = self.normalize_before
        x = self.norm1(tgt) if pre else tgt
        qk = x + query_pos
        attn, self_weights = self.self_attn(qk, qk, x, query_mask, need_weights)
        tgt = tgt + self.dropout(attn)
        if not pre:
            tgt = self.norm1(tgt)
        x = self.norm2(tgt) if pre else tgt
        attn, cross_weights = self.cross_attn(x + query_pos, memory + pos, memory, memory_mask, need_weights)
        tgt = tgt + self.dropout(attn)
        if not pre:
            tgt = self.norm2(tgt)
        x = self.norm3(tgt) if pre else tgt
        tgt = tgt + self.dropout(self._feed_forward(x))
        if not pre:
            tgt = self.norm3(tgt)
        return tgt, self_weights, cross_weights


class TransformerEncoder(nn.Module):
    def __init__(self, config: HfDetrConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.encoder_layers))
        # pre-norm layers leave their output un-normalized, so the stack ends with one LayerNorm
        self.norm = nn.LayerNorm(config.d_model) if config.normalize_before else None

    def forward(
        self,
        src: torch.Tensor,
        pos: torch.Tensor,
        mask: torch.Tensor,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None, tuple[torch.Tensor, ...] | None]:
        """Returns memory `[batch, hw, d_model]`, the hidden states (input + each layer) and attentions on request."""
        hidden_states = (src,) if output_hidden_states else None
        attentions = () if output_attentions else None
        for layer in self.layers:
            src, weights = layer(src, pos, mask, output_attentions)
            if output_hidden_states:
                hidden_states += (src,)
            if output_attentions:
                attentions += (weights,)
        if self.norm is not None:
            src = self.norm(src)
        return src, hidden_states, attentions


class TransformerDecoder(nn.Module):
    def __init__(self, config: HfDetrConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.decoder_layers))
        self.norm = nn.LayerNorm(config.d_model)

    def forward(
        self,
        tgt: torch.Tensor,
        memory: torch.Tensor,
        pos: torch.Tensor,
        query_pos: torch.Tensor,
        memory_mask: torch.Tensor,
        query_mask: torch.Tensor | None = None,
        return_intermediate: bool = False,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> dict[str, torch.Tensor | tuple[torch.Tensor, ...] | None]:
        """`last_hidden_state` after the final LayerNorm; `intermediate` `[layers, batch, queries, d_model]`, each
        layer's output through the final LayerNorm for the auxiliary loss (the last equals `last_hidden_state`)."""
        intermediate = []
        hidden_states = (tgt,) if output_hidden_states else None
        self_attentions = () if output_attentions else None
        cross_attentions = () if output_attentions else None
        for layer in self.layers:
            tgt, self_weights, cross_weights = layer(
                tgt, memory, pos, query_pos, memory_mask, query_mask, output_attentions
            )
            # normalize a copy: the next layer reads the un-normalized output, as in the original DETR
            if return_intermediate:
                intermediate.append(self.norm(tgt))
            if output_hidden_states:
                hidden_states += (tgt,)
            if output_attentions:
                self_attentions += (self_weights,)
                cross_attentions += (cross_weights,)
        last = intermediate[-1] if return_intermediate else self.norm(tgt)
        return {
            "last_hidden_state": last,
            "intermediate": torch.stack(intermediate) if return_intermediate else None,
            "hidden_states": hidden_states,
            "attentions": self_attentions,
            "cross_attentions": cross_attentions,
        }
