"""MXFP4: the 4-bit format the published gpt-oss checkpoints store their experts in.

An MXFP4 tensor is cut, along its last dimension, into blocks of 32 values. Each value
is a 4-bit e2m1 float (1 sign bit, 2 exponent bits, 1 mantissa bit), which can be one
of only 16 numbers:

    code   0    1    2    3    4    5    6    7      8 ... 15
    value  0   0.5   1   1.5   2    3    4    6      the same, negated (8 is -0)

and each block shares one scale, an e8m0 byte s (an exponent only, no sign, no
mantissa) meaning 2^(s - 127). A value is `FP4_VALUES[code] * 2^(s - 127)`.

The checkpoints pack two codes per byte, the first value of a pair in the low nibble:
byte = code[2i] | code[2i+1] << 4. So a block of 32 values is 16 bytes, and a weight
matrix of shape (rows, K) is stored as

    *_blocks  uint8 (rows, K/32, 16)     the codes
    *_scales  uint8 (rows, K/32)         one exponent per block

4.25 bits per weight instead of bf16's 16. gpt-oss stores each expert's projection as
(out_features, in_features) before blocking, so the blocks run along the input
dimension: `gate_up_proj_blocks` is (E, 2f, d/32, 16) and `down_proj_blocks`
(E, d, f/32, 16); nanogptoss keeps experts as (E, in, out), hence the transposes in
`dequantize_experts` and `quantize_experts`.

`PackedExperts` keeps a layer's experts in this form in memory and turns one expert
into real numbers only while a token needs it, so gpt-oss-20b fits a 16 GB GPU.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..model.swiglu import swiglu

FP4_VALUES = (+0.0, +0.5, +1.0, +1.5, +2.0, +3.0, +4.0, +6.0,
              -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0)  # index = the 4-bit code
BLOCK_SIZE = 32  # values sharing one scale
SCALE_BIAS = 127  # e8m0: the byte s means 2^(s - 127)
BITS_PER_WEIGHT = 4 + 8 / BLOCK_SIZE  # a 4-bit code each, plus a shared byte per block: 4.25


class MXFP4Error(ValueError):
    """Blocks and scales that do not make an MXFP4 tensor."""


def _byte_table(dtype: torch.dtype, device) -> torch.Tensor:
    """(256, 2): for each byte, the values of its low and its high nibble (in that order)."""
    values = torch.tensor(FP4_VALUES, dtype=dtype, device=device)
    byte = torch.arange(256, device=device)
    return torch.stack([values[byte & 0x0F], values[byte >> 4]], dim=-1)


def check_mxfp4(blocks: torch.Tensor, scales: torch.Tensor, name: str = "tensor") -> None:
    """Raise MXFP4Error unless `blocks` (..., G, 16) and `scales` (..., G) are uint8 and agree."""
    if blocks.dtype != torch.uint8 or scales.dtype != torch.uint8:
        raise MXFP4Error(f"{name}: MXFP4 blocks and scales are uint8, got {blocks.dtype} and {scales.dtype}")
    if blocks.dim() < 2 or blocks.shape[-1] != BLOCK_SIZE // 2:
        raise MXFP4Error(f"{name}: MXFP4 blocks end in a dimension of {BLOCK_SIZE // 2} bytes "
                         f"({BLOCK_SIZE} values), got shape {tuple(blocks.shape)}")
    if tuple(scales.shape) != tuple(blocks.shape[:-1]):
        raise MXFP4Error(f"{name}: scales of shape {tuple(scales.shape)} do not match blocks of shape "
                         f"{tuple(blocks.shape)}: expected one scale per block, {tuple(blocks.shape[:-1])}")


def dequantize(blocks: torch.Tensor, scales: torch.Tensor, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """MXFP4 blocks (..., G, 16) and scales (..., G) -> values (..., G * 32) in `dtype`."""
    check_mxfp4(blocks, scales)
    # one lookup per byte gives both of its values, low nibble first
    pairs = _byte_table(dtype, blocks.device)[blocks.int()]  # (..., G, 16, 2)
    values = pairs.flatten(-2)  # (..., G, 32)
    # times 2^(s - 127), exactly: ldexp only moves the exponent. (The OCP spec makes
    # s = 255 a NaN; like transformers we read it as 2^128, and `quantize` never writes it.)
    exponent = scales.to(torch.int32)[..., None] - SCALE_BIAS
    return torch.ldexp(values, exponent).flatten(-2)


# the midpoints between neighbouring magnitudes 0, 0.5, 1, 1.5, 2, 3, 4, 6
_MIDPOINTS = (0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0)


def quantize(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Values (..., K), K a multiple of 32 -> MXFP4 (blocks (..., K/32, 16), scales (..., K/32)).

    Each block's scale is the smallest power of two that brings its largest magnitude
    within 6 (so nothing is clipped), and each value is rounded to the nearest of the 16
    codes at that scale, ties to the even code (as IEEE rounding does).
    """
    if w.shape[-1] % BLOCK_SIZE:
        raise MXFP4Error(f"MXFP4 blocks hold {BLOCK_SIZE} values: the last dimension, {w.shape[-1]}, "
                         f"must be a multiple of {BLOCK_SIZE}")
    w = w.float().contiguous()
    if not torch.isfinite(w).all():
        raise MXFP4Error("cannot quantize inf or nan to MXFP4")
    blocks = w.reshape(*w.shape[:-1], -1, BLOCK_SIZE)  # (..., G, 32)
    amax = blocks.abs().amax(dim=-1)
    # 2^e with e = ceil(log2(amax / 6)): the smallest scale at which amax / 2^e <= 6
    # (an all-zero block: log2(0) = -inf, clamped to the smallest scale)
    exponent = torch.ceil(torch.log2(amax / 6.0)).clamp(-SCALE_BIAS, 254 - SCALE_BIAS)
    magnitude = torch.ldexp(blocks.abs(), -exponent[..., None].int()).clamp(max=6.0)
    midpoints = torch.tensor(_MIDPOINTS, device=w.device)
    code = torch.bucketize(magnitude, midpoints)  # on a midpoint: the lower code
    on_midpoint = magnitude == midpoints[code.clamp(max=len(_MIDPOINTS) - 1)]
    code = code + (on_midpoint & (code % 2 == 1)).long()  # ties to even
    code = code | (torch.signbit(blocks).long() << 3)  # the sign bit
    codes = code.to(torch.uint8)
    packed = codes[..., 0::2] | (codes[..., 1::2] << 4)  # (..., G, 16), low nibble first
    return packed, (exponent + SCALE_BIAS).to(torch.uint8)


def dequantize_experts(blocks: torch.Tensor, scales: torch.Tensor,
                       dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """A checkpoint's expert weights (E, out, in/32, 16) -> nanogptoss' (E, in, out)."""
    return dequantize(blocks, scales, dtype).transpose(1, 2).contiguous()


def quantize_experts(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """nanogptoss' expert weights (E, in, out) -> the checkpoint's blocks (E, out, in/32, 16) and scales."""
    return quantize(w.transpose(1, 2))


# -- experts kept packed in memory ---------------------------------------------------

class PackedExperts(nn.Module):
    """`Experts` with the weight matrices left in MXFP4: each expert is dequantized only
    when a token is routed to it, into the dtype of the tokens, and dropped after use.

    The buffers are named and shaped as in the checkpoint; the biases are ordinary
    parameters (bf16 in the checkpoint). `moe_packed` is the MoE that runs them.
    """

    packed = True

    def __init__(self, num_experts: int, hidden_size: int, intermediate_size: int, alpha: float = 1.702,
                 limit: float = 7.0):
        super().__init__()
        self.num_experts, self.alpha, self.limit = num_experts, alpha, limit
        d, f, b = hidden_size, intermediate_size, BLOCK_SIZE
        self.register_buffer("gate_up_proj_blocks", torch.zeros(num_experts, 2 * f, d // b, b // 2, dtype=torch.uint8))
        self.register_buffer("gate_up_proj_scales", torch.zeros(num_experts, 2 * f, d // b, dtype=torch.uint8))
        self.register_buffer("down_proj_blocks", torch.zeros(num_experts, d, f // b, b // 2, dtype=torch.uint8))
        self.register_buffer("down_proj_scales", torch.zeros(num_experts, d, f // b, dtype=torch.uint8))
        self.gate_up_proj_bias = nn.Parameter(torch.zeros(num_experts, 2 * f))
        self.down_proj_bias = nn.Parameter(torch.zeros(num_experts, d))

    def expert(self, e: int, x: torch.Tensor) -> torch.Tensor:
        """Expert e on tokens x (n, d) -> (n, d), its weights dequantized for this call only."""
        gate_up = dequantize(self.gate_up_proj_blocks[e], self.gate_up_proj_scales[e], x.dtype)  # (2f, d)
        h = swiglu(F.linear(x, gate_up, self.gate_up_proj_bias[e].to(x.dtype)), self.alpha, self.limit)
        del gate_up
        down = dequantize(self.down_proj_blocks[e], self.down_proj_scales[e], x.dtype)  # (d, f)
        return F.linear(h, down, self.down_proj_bias[e].to(x.dtype))

    def unpack(self, dtype: torch.dtype = torch.float32):
        """The same experts as an ordinary (dequantized) `Experts` module."""
        from ..model.moe import Experts

        E, two_f, g, _ = self.gate_up_proj_blocks.shape
        experts = Experts(E, g * BLOCK_SIZE, two_f // 2, self.alpha, self.limit).to(self.gate_up_proj_bias.device)
        with torch.no_grad():
            experts.gate_up_proj.copy_(dequantize_experts(self.gate_up_proj_blocks, self.gate_up_proj_scales, dtype))
            experts.down_proj.copy_(dequantize_experts(self.down_proj_blocks, self.down_proj_scales, dtype))
            experts.gate_up_proj_bias.copy_(self.gate_up_proj_bias)
            experts.down_proj_bias.copy_(self.down_proj_bias)
        return experts.to(dtype)

    # The fast MoE kernels read whole weight tensors; packed experts have none to read.
    @property
    def gate_up_proj(self):
        raise ValueError("these experts are packed in MXFP4 and run with their own MoE (moe_packed); "
                         "load with experts='dequantized' to use the other moe_impl kernels")

    down_proj = gate_up_proj

    def extra_repr(self) -> str:
        E, two_f, g, _ = self.gate_up_proj_blocks.shape
        return f"num_experts={E}, hidden_size={g * BLOCK_SIZE}, intermediate_size={two_f // 2}, mxfp4"


def moe_packed(x: torch.Tensor, experts: PackedExperts, routing) -> torch.Tensor:
    """`moe_dispatch` for packed experts: only the experts some token chose are dequantized,
    one at a time, so at most one expert's weights exist in full at any moment."""
    out = torch.zeros_like(x)
    for e in torch.unique(routing.indices).tolist():  # one wait for the host per layer
        token, slot = torch.where(routing.indices == e)
        weight = routing.weights[token, slot, None].to(x.dtype)
        out = out.index_add(0, token, weight * experts.expert(e, x[token]))
    return out


# -- memory arithmetic -----------------------------------------------------------------

def expert_weight_count(config) -> int:
    """Weights that the checkpoints store in MXFP4: every expert's two projection matrices."""
    d, f = config.hidden_size, config.intermediate_size
    return config.num_hidden_layers * config.num_experts * (d * 2 * f + f * d)


def weight_bytes(config, experts: str = "mxfp4", other_bytes: int = 2) -> int:
    """Bytes of a model's weights: the expert matrices in MXFP4 (experts="mxfp4") or at
    `experts` bytes per weight (2: bf16, 4: fp32), everything else at `other_bytes`."""
    from ..model.params import count_parameters

    n_experts = expert_weight_count(config)
    n_other = count_parameters(config).total - n_experts
    per_expert_weight = BITS_PER_WEIGHT / 8 if experts == "mxfp4" else float(experts)
    return math.ceil(n_experts * per_expert_weight) + n_other * other_bytes


def kv_cache_bytes(config, tokens: int, bytes_per_value: int = 2) -> int:
    """The KV cache for `tokens` tokens: sliding-window layers keep only their window."""
    per_layer_token = 2 * config.num_key_value_heads * config.head_dim * bytes_per_value  # a key and a value
    kept = [min(tokens, config.sliding_window) if t == "sliding_attention" else tokens for t in config.layer_types]
    return per_layer_token * sum(kept)


def tensor_bytes(module: nn.Module) -> int:
    """Bytes held by a module's parameters and buffers (shared tensors counted once)."""
    seen, total = set(), 0
    for t in list(module.parameters()) + list(module.buffers()):
        if t.data_ptr() not in seen and t.device.type != "meta":
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return total
