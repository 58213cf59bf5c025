"""Rotary position embeddings (RoPE), with YaRN scaling as an option.

Each head's vector is split into two halves `[x1, x2]` (not interleaved pairs);
dimension i of x1 and dimension i of x2 form a 2-D point that is rotated by the
angle `position * inv_freq[i]`. A query at position m and a key at position n then
meet with a dot product that depends only on m - n.

YaRN (NTK-by-parts) stretches a model's context: slow dimensions (long
wavelengths) are interpolated by `factor`, fast ones keep their frequency, a
linear ramp blends the two, and cos/sin are scaled by `yarn_concentration(factor)`.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def rope_inv_freq(head_dim: int, theta: float) -> torch.Tensor:
    """inv_freq_i = theta^(-2i/h) for i = 0 .. h/2 - 1, computed as transformers does."""
    return 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float) / head_dim))


def yarn_correction_range(head_dim: int, theta: float, initial_context_length: int,
                          beta_fast: float, beta_slow: float, truncate: bool) -> tuple[float, float]:
    """The dimensions where the ramp starts (beta_fast rotations) and ends (beta_slow)."""
    def dim_for(rotations: float) -> float:
        # the dimension whose wavelength fits `rotations` times in the original context
        return head_dim * math.log(initial_context_length / (rotations * 2 * math.pi)) / (2 * math.log(theta))

    low, high = dim_for(beta_fast), dim_for(beta_slow)
    if truncate:
        low, high = math.floor(low), math.ceil(high)
    return max(low, 0), min(high, head_dim - 1)


def yarn_ramp(low: float, high: float, n: int) -> torch.Tensor:
    """0 below `low`, 1 above `high`, linear in between."""
    if low == high:
        high += 0.001  # avoid dividing by zero
    return torch.clamp((torch.arange(n, dtype=torch.float32) - low) / (high - low), 0, 1)


def yarn_inv_freq(head_dim: int, theta: float, factor: float, initial_context_length: int,
                  beta_fast: float = 32.0, beta_slow: float = 1.0, truncate: bool = False) -> torch.Tensor:
    """YaRN's blend of the original (extrapolated) and the interpolated frequencies."""
    extrapolated = rope_inv_freq(head_dim, theta)
    interpolated = extrapolated / factor
    low, high = yarn_correction_range(head_dim, theta, initial_context_length, beta_fast, beta_slow, truncate)
    keep = 1 - yarn_ramp(low, high, head_dim // 2)  # 1: keep the original frequency
    return interpolated * (1 - keep) + extrapolated * keep


def yarn_concentration(factor: float) -> float:
    """YaRN's attention temperature: cos and sin are both scaled by 0.1·ln(factor) + 1 (1 without YaRN)."""
    return 1.0 if factor <= 1.0 else 0.1 * math.log(factor) + 1.0


def apply_rotary_emb(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (..., T, head_dim) by angles whose cos/sin are (T, head_dim/2)."""
    x1, x2 = x.chunk(2, dim=-1)
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


class RotaryEmbedding(nn.Module):
    def __init__(self, head_dim: int, theta: float = 150_000.0, scaling_factor: float = 1.0,
                 initial_context_length: int = 4096, beta_fast: float = 32.0, beta_slow: float = 1.0,
                 truncate: bool = False):
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"RoPE needs an even head_dim, got {head_dim}")
        self.head_dim = head_dim
        if scaling_factor > 1.0:
            inv_freq = yarn_inv_freq(head_dim, theta, scaling_factor, initial_context_length,
                                     beta_fast, beta_slow, truncate)
        else:
            inv_freq = rope_inv_freq(head_dim, theta)
        self.concentration = yarn_concentration(scaling_factor)
        # not persistent: derived from the config, so checkpoints need not carry it
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def _apply(self, fn, recurse=True):
        # model.to(torch.bfloat16) would round the frequencies and blur positions far
        # into the context; they follow the model's device but stay float32
        inv_freq = self.inv_freq
        super()._apply(fn, recurse)
        self.inv_freq = inv_freq.to(self.inv_freq.device)
        return self

    @classmethod
    def from_config(cls, config) -> "RotaryEmbedding":
        return cls(config.head_dim, config.rope_theta, config.rope_scaling_factor,
                   config.initial_context_length, config.rope_beta_fast, config.rope_beta_slow,
                   config.rope_truncate)

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin, each (T, head_dim/2) in float32, for integer positions (T,)."""
        angles = positions.to(torch.float32)[:, None] * self.inv_freq.to(positions.device)[None, :]
        return angles.cos() * self.concentration, angles.sin() * self.concentration
