"""Mixture of experts: each token runs through its router's top-k experts only.

The experts are stored as batched tensors, as in gpt-oss and transformers:
`gate_up_proj` (E, d, 2f), `gate_up_proj_bias` (E, 2f), `down_proj` (E, f, d),
`down_proj_bias` (E, d). Two paths compute the same output:

* `moe_reference` runs every expert on every token and keeps the chosen results:
  obviously right, E/k times the work.
* `moe_dispatch` sorts the (token, expert) pairs by expert, runs each expert once on
  just its tokens and scatters the weighted results back.
"""

from __future__ import annotations

import torch
from torch import nn

from .router import Router, RouterOutput
from .swiglu import swiglu


class Experts(nn.Module):
    def __init__(self, n_experts: int, d_model: int, hidden: int, alpha: float = 1.702, limit: float = 7.0):
        super().__init__()
        self.n_experts, self.alpha, self.limit = n_experts, alpha, limit
        self.gate_up_proj = nn.Parameter(torch.zeros(n_experts, d_model, 2 * hidden))
        self.gate_up_proj_bias = nn.Parameter(torch.zeros(n_experts, 2 * hidden))
        self.down_proj = nn.Parameter(torch.zeros(n_experts, hidden, d_model))
        self.down_proj_bias = nn.Parameter(torch.zeros(n_experts, d_model))

    def expert(self, e: int, x: torch.Tensor) -> torch.Tensor:
        """Expert e on tokens x (n, d) -> (n, d)."""
        h = swiglu(x @ self.gate_up_proj[e] + self.gate_up_proj_bias[e], self.alpha, self.limit)
        return h @ self.down_proj[e] + self.down_proj_bias[e]


def moe_reference(x: torch.Tensor, experts: Experts, routing: RouterOutput) -> torch.Tensor:
    """Every expert on every token; each token keeps the weighted sum of its chosen ones."""
    out = torch.zeros_like(x)
    for e in range(experts.n_experts):
        weight = (routing.weights * (routing.indices == e)).sum(dim=-1, keepdim=True)  # 0 if not chosen
        out = out + weight * experts.expert(e, x)
    return out


def moe_dispatch(x: torch.Tensor, experts: Experts, routing: RouterOutput) -> torch.Tensor:
    """Each expert once, on only the tokens that chose it."""
    N, k = routing.indices.shape
    flat_experts = routing.indices.reshape(-1)  # (N*k,) slot j belongs to token j // k
    order = torch.argsort(flat_experts, stable=True)
    token_of = order // k
    counts = torch.bincount(flat_experts, minlength=experts.n_experts).tolist()
    outputs = [experts.expert(e, chunk)
               for e, chunk in enumerate(x[token_of].split(counts)) if counts[e] > 0]
    weighted = torch.cat(outputs) * routing.weights.reshape(-1)[order, None].to(outputs[0].dtype)
    return torch.zeros(N, x.shape[-1], dtype=weighted.dtype, device=x.device).index_add_(0, token_of, weighted)


class MLPBlock(nn.Module):
    """The gpt-oss feed-forward: a router and a mixture of clamped-SwiGLU experts.

    The routing of the last forward pass is kept in `last_routing`, for the
    load-balancing loss and for expert-usage statistics.
    """

    def __init__(self, config):
        super().__init__()
        self.router = Router(config.d_model, config.n_experts, config.top_k)
        self.experts = Experts(config.n_experts, config.d_model, config.hidden,
                               config.swiglu_alpha, config.swiglu_limit)
        self.impl = config.moe_impl
        self.dropout = nn.Dropout(config.dropout)
        self.last_routing: RouterOutput | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        routing = self.router(flat)
        self.last_routing = routing
        run = moe_reference if self.impl == "reference" else moe_dispatch
        return self.dropout(run(flat, self.experts, routing).reshape(shape))
