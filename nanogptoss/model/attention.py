"""Attention as gpt-oss does it: grouped-query, causal, optionally banded, with sinks.

* Grouped-query attention (GQA): `num_attention_heads` query heads share
  `num_key_value_heads` key/value heads, each K/V head serving a group of consecutive
  query heads.
* Sliding window: on a banded layer (`layer_types[i] == "sliding_attention"`) a query
  sees itself and the `sliding_window - 1` keys before it; gpt-oss alternates banded
  (W = 128) and dense layers.
* Sinks: one learned logit per head appended to every row of scores before the
  softmax and dropped after, so a row can send attention mass "to nowhere".

`attention` is the readable reference: the mask from the one rule, the scores
written out. `nanogptoss.kernels` holds faster implementations of the same function
(SDPA, FlexAttention), tested equal to it; `GPT` puts the one `attn_impl` names in
every block's `attend`.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..config import SLIDING
from .rope import apply_rotary_emb


def is_visible(q_position, k_position, sliding_window: int | None = None):
    """The mask rule: may a query at `q_position` attend to a key at `k_position`?

    Elementwise, so it serves tensors of positions and FlexAttention's per-entry mask
    alike. A key is visible if it is not in the future, is a real token (a negative
    position marks an empty cache slot) and, on a banded layer, lies fewer than
    `sliding_window` positions back.
    """
    visible = (k_position <= q_position) & (k_position >= 0)
    if sliding_window is not None:
        visible = visible & (q_position - k_position < sliding_window)
    return visible


def attention_mask(q_positions: torch.Tensor, k_positions: torch.Tensor,
                   sliding_window: int | None = None) -> torch.Tensor:
    """Which keys each query may attend to: a (Tq, Tk) boolean matrix, True = allowed."""
    return is_visible(q_positions[:, None], k_positions[None, :], sliding_window)


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
    out = probs.to(v.dtype) @ v
    return (out, probs) if return_probs else out


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_positions: torch.Tensor,
              k_positions: torch.Tensor, sliding_window: int | None = None,
              sinks: torch.Tensor | None = None) -> torch.Tensor:
    """What every attention kernel computes: the rule's mask, then attention with sinks."""
    return attention_reference(q, k, v, attention_mask(q_positions, k_positions, sliding_window), sinks)


class AttentionBlock(nn.Module):
    """q/k/v/o projections, rotary positions, GQA, an optional window and sinks."""

    def __init__(self, config, layer_idx: int = 0):
        super().__init__()
        self.num_attention_heads, self.num_key_value_heads = config.num_attention_heads, config.num_key_value_heads
        self.head_dim = config.head_dim
        self.layer_type = config.layer_types[layer_idx]
        self.sliding_window = config.sliding_window if self.layer_type == SLIDING else None
        d, H, G, h = config.hidden_size, self.num_attention_heads, self.num_key_value_heads, self.head_dim
        self.q_proj = nn.Linear(d, H * h, bias=config.bias)
        self.k_proj = nn.Linear(d, G * h, bias=config.bias)
        self.v_proj = nn.Linear(d, G * h, bias=config.bias)
        self.o_proj = nn.Linear(H * h, d, bias=config.bias)
        # one logit per query head, kept in float32 whatever the model is cast to (see _apply)
        self.sinks = nn.Parameter(torch.zeros(H, dtype=torch.float32)) if config.attn_sinks else None
        self.dropout = nn.Dropout(config.dropout)
        self.attend = attention  # GPT swaps in the kernel its config's attn_impl names

    def forward(self, x: torch.Tensor, positions: torch.Tensor,
                rope: tuple[torch.Tensor, torch.Tensor] | None = None, cache=None) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.num_attention_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.num_key_value_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.num_key_value_heads, self.head_dim).transpose(1, 2)
        if rope is not None:  # positions enter here, rotating queries and keys (not values)
            q, k = apply_rotary_emb(q, *rope), apply_rotary_emb(k, *rope)
        k_positions = positions  # without a cache the keys are these tokens themselves
        if cache is not None:  # with one, the keys and values of earlier tokens come first
            k, v, k_positions = cache.update(k, v, positions)
        y = self.attend(q, k, v, positions, k_positions, self.sliding_window, self.sinks)
        y = y.transpose(1, 2).reshape(B, T, self.num_attention_heads * self.head_dim)
        return self.dropout(self.o_proj(y))

    def _apply(self, fn, recurse=True):
        # model.to(torch.bfloat16) would round the sinks: a logit of -3.1 and one of -3.0
        # are the same in bf16 far into a softmax. They follow the device, not the half dtype.
        old = self.sinks.data if self.sinks is not None else None
        super()._apply(fn, recurse)
        if old is not None and self.sinks.dtype in (torch.float16, torch.bfloat16):
            keep = old if old.dtype == torch.float32 else old.float()
            self.sinks.data = keep.to(self.sinks.device)
        return self
