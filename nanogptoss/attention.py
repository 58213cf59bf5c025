"""Attention as gpt-oss does it: grouped-query, causal, optionally banded, with sinks.

* Grouped-query attention (GQA): `n_head` query heads share `n_kv_head` key/value
  heads, each K/V head serving a group of `n_head // n_kv_head` consecutive query heads.
* Sliding window: on a banded layer a query sees itself and the `window - 1` keys
  before it; gpt-oss alternates banded (W = 128) and dense layers.
* Sinks: one learned logit per head appended to every row of scores before the
  softmax and dropped after, so a row can send attention mass "to nowhere".

Two interchangeable paths compute the same thing: `attention_reference` writes the
score matrix out (the version to read), `attention_sdpa` calls
`F.scaled_dot_product_attention` (the version to run).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .rope import apply_rotary_emb


def attention_mask(q_pos: torch.Tensor, k_pos: torch.Tensor, window: int | None = None) -> torch.Tensor:
    """Which keys each query may attend to: a (Tq, Tk) boolean matrix, True = allowed.

    Positions are absolute token positions; a negative key position marks an empty
    cache slot. A key is visible if it is not in the future and, on a banded layer,
    fewer than `window` positions back.
    """
    q, k = q_pos[:, None], k_pos[None, :]
    allowed = (k <= q) & (k >= 0)
    if window is not None:
        allowed = allowed & (q - k < window)
    return allowed


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """(B, G, T, h) -> (B, G * n_rep, T, h): each K/V head copied for its group of query heads."""
    return x if n_rep == 1 else x.repeat_interleave(n_rep, dim=1)


def attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor,
                        sinks: torch.Tensor | None = None, scale: float | None = None,
                        return_probs: bool = False):
    """Attention written out. q (B, H, Tq, h); k, v (B, G, Tk, h); allowed (Tq, Tk).

    Returns the output (B, H, Tq, h) and, with `return_probs`, the attention
    probabilities (B, H, Tq, Tk) whose rows sum to less than 1 when sinks are on.
    """
    H, h = q.shape[1], q.shape[-1]
    n_rep = H // k.shape[1]
    k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)
    scale = 1.0 / math.sqrt(h) if scale is None else scale
    scores = (q.float() @ k.float().transpose(-2, -1)) * scale
    scores = scores.masked_fill(~allowed, float("-inf"))
    if sinks is not None:
        sink = sinks.float().view(1, H, 1, 1).expand(scores.shape[0], H, scores.shape[2], 1)
        scores = torch.cat([scores, sink], dim=-1)
    probs = torch.softmax(scores, dim=-1)
    if sinks is not None:
        probs = probs[..., :-1]  # the sink took its share; it has no value to contribute
    out = (probs.to(v.dtype) @ v)
    return (out, probs) if return_probs else out


def attention_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor,
                   sinks: torch.Tensor | None = None, scale: float | None = None,
                   is_causal: bool = False) -> torch.Tensor:
    """The same result through `F.scaled_dot_product_attention`.

    The sink becomes one extra key/value column of zeros: its score q·0 is 0, so a
    float mask entry equal to the sink logit makes that column's logit exactly the
    sink, and its zero value contributes nothing. Gradients reach the sinks through
    the mask. `is_causal` promises that `allowed` is the plain lower triangle, which
    lets the fused kernels skip the mask.
    """
    B, H, Tq, h = q.shape
    gqa = k.shape[1] != H
    if sinks is None:
        if is_causal:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=gqa)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, scale=scale, enable_gqa=gqa)
    zeros = k.new_zeros(B, k.shape[1], 1, h)
    k = torch.cat([k, zeros], dim=2)
    v = torch.cat([v, zeros], dim=2)
    bias = torch.zeros(allowed.shape, dtype=q.dtype, device=q.device).masked_fill(~allowed, float("-inf"))
    bias = torch.cat([bias.expand(1, H, *allowed.shape),
                      sinks.to(q.dtype).view(1, H, 1, 1).expand(1, H, Tq, 1)], dim=-1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale, enable_gqa=gqa)


class AttentionBlock(nn.Module):
    """q/k/v/o projections, rotary positions, GQA, an optional window and sinks."""

    def __init__(self, config, layer_idx: int = 0):
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = config.n_head, config.kv_heads, config.dim_head
        self.layer_type = config.layer_types[layer_idx]
        self.window = config.sliding_window if self.layer_type == "sliding" else None
        self.impl = config.attn_impl
        d, H, G, h = config.d_model, self.n_head, self.n_kv_head, self.head_dim
        self.q_proj = nn.Linear(d, H * h, bias=config.bias)
        self.k_proj = nn.Linear(d, G * h, bias=config.bias)
        self.v_proj = nn.Linear(d, G * h, bias=config.bias)
        self.o_proj = nn.Linear(H * h, d, bias=config.bias)
        # one logit per query head, float32 so a bf16 model still resolves small values
        self.sinks = nn.Parameter(torch.zeros(H, dtype=torch.float32)) if config.attn_sinks else None
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, positions: torch.Tensor,
                rope: tuple[torch.Tensor, torch.Tensor] | None = None, cache=None) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        if rope is not None:
            q, k = apply_rotary_emb(q, *rope), apply_rotary_emb(k, *rope)
        k_pos = positions
        if cache is not None:
            k, v, k_pos = cache.update(k, v, positions)
        allowed = attention_mask(positions, k_pos, self.window)
        if self.impl == "reference":
            y = attention_reference(q, k, v, allowed, self.sinks)
        else:
            # without a cache, a window at least as long as the sequence is plain causal
            plain_causal = cache is None and (self.window is None or self.window >= T)
            y = attention_sdpa(q, k, v, allowed, self.sinks, is_causal=plain_causal)
        y = y.transpose(1, 2).reshape(B, T, self.n_head * self.head_dim)
        return self.dropout(self.o_proj(y))
