"""Attention as gpt-oss does it: grouped-query, causal, optionally banded, with sinks.

* Grouped-query attention (GQA): `n_head` query heads share `n_kv_head` key/value
  heads, each K/V head serving a group of `n_head // n_kv_head` consecutive query heads.
* Sliding window: on a banded layer a query sees itself and the `window - 1` keys
  before it; gpt-oss alternates banded (W = 128) and dense layers.
* Sinks: one learned logit per head appended to every row of scores before the
  softmax and dropped after, so a row can send attention mass "to nowhere".

Three interchangeable paths compute the same thing: `attention_reference` writes the
score matrix out (the version to read), `attention_sdpa` calls
`F.scaled_dot_product_attention` (the version to run on a CPU), and `attention_flex`
calls FlexAttention, whose compiled GPU kernel skips the blocks a sliding window
masks out and returns the log-sum-exp that applies the sinks afterwards.
`resolve_attn_impl` picks one by device and dtype.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .rope import apply_rotary_emb

ATTN_DTYPES_FLEX = (torch.float32, torch.bfloat16, torch.float16)


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


def sink_gate(out: torch.Tensor, lse: torch.Tensor, sinks: torch.Tensor) -> torch.Tensor:
    """Attention with sinks from attention without them: out · sigmoid(lse − sink).

    Appending the sink logit S to a row whose scores have log-sum-exp `lse` grows the
    softmax denominator from e^lse to e^lse + e^S, so every weight, and hence the
    output, shrinks by e^lse / (e^lse + e^S) = sigmoid(lse − S). out (B, H, T, h),
    lse (B, H, T), sinks (H,).
    """
    gate = torch.sigmoid(lse.float() - sinks.float().view(1, -1, 1))
    return (out.float() * gate[..., None]).to(out.dtype)


def flex_block_mask(q_pos: torch.Tensor, k_pos: torch.Tensor, window: int | None = None):
    """`attention_mask` as a FlexAttention BlockMask: the same rule, evaluated per block
    so that the kernel skips the blocks (e.g. far outside the window) with no allowed key."""
    from torch.nn.attention.flex_attention import create_block_mask

    def mask_mod(b, h, q_idx, kv_idx):
        q, k = q_pos[q_idx], k_pos[kv_idx]
        allowed = (k <= q) & (k >= 0)
        if window is not None:
            allowed = allowed & (q - k < window)
        return allowed

    return create_block_mask(mask_mod, None, None, len(q_pos), len(k_pos), device=q_pos.device)


_compiled_flex_attention = None


def attention_flex(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_mask,
                   sinks: torch.Tensor | None = None, scale: float | None = None) -> torch.Tensor:
    """The same result through FlexAttention, the sinks applied through the log-sum-exp.

    On a GPU the call is compiled (once) into a fused kernel; eager FlexAttention, as
    on a CPU, materialises the scores and runs forward only.
    """
    global _compiled_flex_attention
    from torch.nn.attention.flex_attention import AuxRequest, flex_attention

    run = flex_attention
    if q.device.type == "cuda":
        if _compiled_flex_attention is None:
            # torch's default dynamic=None: one static kernel per shape for training, and on
            # the first change of length (decoding without a cache grows it every step) one
            # recompile to a length-generic kernel instead of one compile per length
            _compiled_flex_attention = torch.compile(flex_attention)
        run = _compiled_flex_attention
    out, aux = run(q, k, v, block_mask=block_mask, scale=scale, enable_gqa=k.shape[1] != q.shape[1],
                   return_aux=AuxRequest(lse=True))
    return out if sinks is None else sink_gate(out, aux.lse, sinks)


def resolve_attn_impl(impl: str, q: torch.Tensor, cached: bool) -> str:
    """The path an attention layer takes.

    "auto" picks FlexAttention on a CUDA GPU for a whole sequence (training, a prompt
    without cache) in the dtypes and head sizes its kernel takes, and SDPA everywhere
    else: on a CPU (FlexAttention runs unfused there, without a backward pass) and for
    cached decoding, whose few query rows leave no blocks to skip and would rebuild the
    block mask at every step.
    """
    h = q.shape[-1]
    flex_ok = q.dtype in ATTN_DTYPES_FLEX and h >= 16 and h & (h - 1) == 0
    if impl == "auto":
        return "flex" if q.device.type == "cuda" and flex_ok and not cached else "sdpa"
    if impl == "flex":
        if q.device.type == "cpu" and q.requires_grad:
            raise ValueError("attn_impl='flex' has no backward pass on a CPU (PyTorch's FlexAttention "
                             "runs forward only there); train with attn_impl='auto' or 'sdpa', "
                             "or run under torch.no_grad()")
        if not flex_ok:
            raise ValueError(f"attn_impl='flex' needs float32/bfloat16/float16 and a head_dim that is a "
                             f"power of two >= 16, got {q.dtype} and head_dim {h}; use 'auto' or 'sdpa'")
    return impl


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
                rope: tuple[torch.Tensor, torch.Tensor] | None = None, cache=None,
                masks: dict | None = None) -> torch.Tensor:
        """`masks`, a dict shared by the layers of one forward pass, lets each mask be
        built once per layer type (banded or dense) instead of once per layer."""
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        if rope is not None:
            q, k = apply_rotary_emb(q, *rope), apply_rotary_emb(k, *rope)
        k_pos = positions
        if cache is not None:
            k, v, k_pos = cache.update(k, v, positions)
        impl = resolve_attn_impl(self.impl, q, cached=cache is not None)
        masks = {} if masks is None else masks
        key = (impl, self.layer_type)  # every layer of a type sees the same positions
        if impl == "flex":
            if key not in masks:
                masks[key] = flex_block_mask(positions, k_pos, self.window)
            y = attention_flex(q, k, v, masks[key], self.sinks)
        else:
            if key not in masks:
                masks[key] = attention_mask(positions, k_pos, self.window)
            if impl == "reference":
                y = attention_reference(q, k, v, masks[key], self.sinks)
            else:
                # without a cache, a window at least as long as the sequence is plain causal
                plain_causal = cache is None and (self.window is None or self.window >= T)
                y = attention_sdpa(q, k, v, masks[key], self.sinks, is_causal=plain_causal)
        y = y.transpose(1, 2).reshape(B, T, self.n_head * self.head_dim)
        return self.dropout(self.o_proj(y))
