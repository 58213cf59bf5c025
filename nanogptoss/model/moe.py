"""Mixture of experts: each token runs through its router's top-k experts only.

The experts are stored as batched tensors, as in gpt-oss and transformers:
`gate_up_proj` (E, d, 2f), `gate_up_proj_bias` (E, 2f), `down_proj` (E, f, d),
`down_proj_bias` (E, d). Two readable versions compute the output:

* `moe_reference` runs every expert on every token and keeps the chosen results:
  obviously right, E/k times the work.
* `moe_dispatch` runs each expert once, on just the tokens that chose it, and adds
  the weighted results back to those tokens.

`nanogptoss.kernels` holds faster implementations of the same function (sorted by
expert, one grouped GEMM, gathered weights for decoding), tested equal to these;
`GPT` puts the one `moe_impl` names in every block's `moe`.
"""

from __future__ import annotations

import torch
from torch import nn

from .router import Router, RouterOutput
from .swiglu import swiglu


class Experts(nn.Module):
    def __init__(self, num_experts: int, hidden_size: int, intermediate_size: int, alpha: float = 1.702,
                 limit: float = 7.0):
        super().__init__()
        self.num_experts, self.alpha, self.limit = num_experts, alpha, limit
        self.gate_up_proj = nn.Parameter(torch.zeros(num_experts, hidden_size, 2 * intermediate_size))
        self.gate_up_proj_bias = nn.Parameter(torch.zeros(num_experts, 2 * intermediate_size))
        self.down_proj = nn.Parameter(torch.zeros(num_experts, intermediate_size, hidden_size))
        self.down_proj_bias = nn.Parameter(torch.zeros(num_experts, hidden_size))

    def expert(self, e: int, x: torch.Tensor) -> torch.Tensor:
        """Expert e on tokens x (n, d) -> (n, d)."""
        h = swiglu(x @ self.gate_up_proj[e] + self.gate_up_proj_bias[e], self.alpha, self.limit)
        return h @ self.down_proj[e] + self.down_proj_bias[e]


def moe_reference(x: torch.Tensor, experts: Experts, routing: RouterOutput) -> torch.Tensor:
    """Every expert on every token; each token keeps the weighted sum of its chosen ones."""
    out = torch.zeros_like(x)
    for e in range(experts.num_experts):
        weight = (routing.weights * (routing.indices == e)).sum(dim=-1, keepdim=True)  # 0 if not chosen
        out = out + weight * experts.expert(e, x)
    return out


def moe_dispatch(x: torch.Tensor, experts: Experts, routing: RouterOutput) -> torch.Tensor:
    """Each expert once, on only the tokens that chose it."""
    out = torch.zeros_like(x)
    for e in range(experts.num_experts):
        token, slot = torch.where(routing.indices == e)  # the tokens that chose e, and in which slot
        if len(token) == 0:
            continue
        weight = routing.weights[token, slot, None].to(x.dtype)
        out = out.index_add(0, token, weight * experts.expert(e, x[token]))
    return out


class MLPBlock(nn.Module):
    """The gpt-oss feed-forward: a router and a mixture of clamped-SwiGLU experts.

    The routing of the last forward pass is kept in `last_routing`, for the
    load-balancing loss and for expert-usage statistics.
    """

    def __init__(self, config):
        super().__init__()
        self.router = Router(config.hidden_size, config.num_experts, config.experts_per_token)
        self.experts = Experts(config.num_experts, config.hidden_size, config.intermediate_size,
                               config.swiglu_alpha, config.swiglu_limit)
        self.dropout = nn.Dropout(config.dropout)
        self.moe = moe_dispatch  # GPT swaps in the kernel its config's moe_impl names
        self.last_routing: RouterOutput | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.reshape(-1, x.shape[-1])  # (B*T, d): routing is per token, whatever the batch shape
        routing = self.router(tokens)
        self.last_routing = routing
        return self.dropout(self.moe(tokens, self.experts, routing).reshape(x.shape))
