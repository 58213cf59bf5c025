"""The feed-forward: GPT-2's GELU MLP, and the clamped SwiGLU of gpt-oss.

GPT-2 expands the width 4x, applies GELU and projects back. gpt-oss uses a gated
linear unit: one projection gives a gate g and a value u (interleaved in gpt-oss's
weights: even columns are gates, odd columns values) and the output is

    g · sigmoid(α·g) · (u + 1),   g clamped above at `limit`, u clamped to ±limit.

`g·sigmoid(α·g)` with α = 1.702 is a SiLU sharpened towards GELU's shape (GELU(x) ≈
x·sigmoid(1.702x)); the clamps keep rare huge activations from blowing up in low
precision, and the `+ 1` lets the unit pass the gate through when u is near zero.
"""

import torch
from torch import nn


class MLP(nn.Module):
    """GPT-2's feed-forward: expand, GELU, project back."""

    def __init__(self, config):
        super().__init__()
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=config.bias)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # GPT-2 used the tanh approximation of GELU
        return self.dropout(self.down_proj(nn.functional.gelu(self.up_proj(x), approximate="tanh")))


def swiglu(gate_up: torch.Tensor, alpha: float = 1.702, limit: float = 7.0) -> torch.Tensor:
    """(..., 2f) interleaved gate/up -> (..., f)."""
    gate, up = gate_up[..., ::2], gate_up[..., 1::2]
    gate = gate.clamp(max=limit)
    up = up.clamp(min=-limit, max=limit)
    return gate * torch.sigmoid(alpha * gate) * (up + 1)


class SwiGLUMLP(nn.Module):
    """A dense (single-expert) clamped-SwiGLU feed-forward."""

    def __init__(self, config):
        super().__init__()
        self.alpha, self.limit = config.swiglu_alpha, config.swiglu_limit
        self.gate_up_proj = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=config.bias)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.down_proj(swiglu(self.gate_up_proj(x), self.alpha, self.limit)))
