"""Fast attention: the same function as `nanogptoss.model.attention.attention`, through
PyTorch's fused kernels.

* `attention_sdpa` calls `F.scaled_dot_product_attention`: the path to run on a CPU,
  and for cached decoding anywhere.
* `attention_flex` calls FlexAttention, whose compiled GPU kernel skips the blocks a
  sliding window masks out and returns the log-sum-exp, from which the sinks are
  applied afterwards (`sink_gate`).

Both take the arguments of the reference and build their masks from its rule
(`is_visible`); `tests/test_kernels.py` holds them equal to it, gradients included.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..model.attention import attention_mask, is_visible

FLEX_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# compiled FlexAttention (Triton) is known to work from Ampere on; on a T4 or V100 (compute
# capability 7.x) its kernels need more shared memory per SM than the 64 KB there
FLEX_MIN_CAPABILITY = (8, 0)


def flex_available() -> bool:
    """Does this torch have what `attention_flex` calls: FlexAttention with `return_aux` and
    `AuxRequest` (torch 2.9 and newer)?"""
    try:
        from torch.nn.attention.flex_attention import AuxRequest, flex_attention  # noqa: F401
    except ImportError:
        return False
    import inspect

    return "return_aux" in inspect.signature(flex_attention).parameters


def attention_sdpa(q, k, v, q_positions, k_positions, sliding_window=None, sinks=None, scale=None):
    """Attention with sinks through `F.scaled_dot_product_attention`.

    The sink becomes one extra key/value column of zeros: its score q·0 is 0, so a
    float mask entry equal to the sink logit makes that column's logit exactly the
    sink, and its zero value contributes nothing. Gradients reach the sinks through
    the mask. When the keys are the queries' own tokens (no cache) and any window
    covers the whole sequence, the mask is the plain lower triangle, which lets the
    fused kernels skip it.
    """
    B, H, Tq, h = q.shape
    gqa = k.shape[1] != H
    plain_causal = k_positions is q_positions and (sliding_window is None or sliding_window >= Tq)
    if sinks is None and plain_causal:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=gqa)
    allowed = attention_mask(q_positions, k_positions, sliding_window)
    if sinks is None:
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


def flex_block_mask(q_positions: torch.Tensor, k_positions: torch.Tensor, sliding_window: int | None = None):
    """The mask rule as a FlexAttention BlockMask, evaluated per block so that the kernel
    skips the blocks (e.g. far outside the window) with no visible key."""
    from torch.nn.attention.flex_attention import create_block_mask

    def mask_mod(b, h, q_idx, kv_idx):
        return is_visible(q_positions[q_idx], k_positions[kv_idx], sliding_window)

    return create_block_mask(mask_mod, None, None, len(q_positions), len(k_positions), device=q_positions.device)


_compiled_flex_attention = None
_block_masks: dict = {}  # (length, window, device) -> BlockMask of a whole sequence, built once


def attention_flex(q, k, v, q_positions, k_positions, sliding_window=None, sinks=None, scale=None):
    """Attention with sinks through FlexAttention, the sinks applied through the log-sum-exp.

    On a GPU the call is compiled (once) into a fused kernel; eager FlexAttention, as
    on a CPU, materialises the scores and runs forward only.
    """
    global _compiled_flex_attention
    from torch.nn.attention.flex_attention import AuxRequest, flex_attention

    # Keys that are the queries' own tokens (no cache) have consecutive positions, so the
    # rule depends only on the offsets t - u: one mask per (length, window) serves every step.
    if k_positions is q_positions:
        key = (len(q_positions), sliding_window, str(q_positions.device))
        if key not in _block_masks:
            _block_masks[key] = flex_block_mask(q_positions, k_positions, sliding_window)
        block_mask = _block_masks[key]
    else:
        block_mask = flex_block_mask(q_positions, k_positions, sliding_window)
    run = flex_attention
    if q.device.type == "cuda":
        if _compiled_flex_attention is None:
            # torch's default dynamic=None: one static kernel per shape for training, and on
            # the first change of length one recompile to a length-generic kernel
            _compiled_flex_attention = torch.compile(flex_attention)
        run = _compiled_flex_attention
    out, aux = run(q, k, v, block_mask=block_mask, scale=scale, enable_gqa=k.shape[1] != q.shape[1],
                   return_aux=AuxRequest(lse=True))
    return out if sinks is None else sink_gate(out, aux.lse, sinks)
