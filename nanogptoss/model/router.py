"""The router: which experts each token goes to, and with what weights.

A linear layer (with bias) scores every expert; the top-k scores are kept and a
softmax over those k alone gives the mixing weights. With k = 1 that softmax is
always exactly 1, so the language-model loss sends no gradient to the router and
it never learns: use k >= 2 (gpt-oss uses 4) or add the load-balancing loss.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..config import check_experts_per_token


class RouterOutput(NamedTuple):
    weights: torch.Tensor  # (N, k) mixing weights, rows sum to 1
    indices: torch.Tensor  # (N, k) chosen experts, best first
    logits: torch.Tensor  # (N, E) all scores, for the load-balancing loss


class Router(nn.Module):
    def __init__(self, hidden_size: int, num_experts: int, experts_per_token: int):
        super().__init__()
        check_experts_per_token(experts_per_token, num_experts)
        self.num_experts, self.experts_per_token = num_experts, experts_per_token
        self.weight = nn.Parameter(torch.zeros(num_experts, hidden_size))
        self.bias = nn.Parameter(torch.zeros(num_experts))

    def forward(self, x: torch.Tensor) -> RouterOutput:
        logits = F.linear(x, self.weight, self.bias)
        top_logits, indices = torch.topk(logits, self.experts_per_token, dim=-1)
        weights = torch.softmax(top_logits.float(), dim=-1).to(top_logits.dtype)
        return RouterOutput(weights, indices, logits)


def load_balancing_loss(router_logits: Sequence[torch.Tensor] | torch.Tensor, num_experts: int,
                        experts_per_token: int) -> torch.Tensor:
    """The Switch/Mixtral auxiliary loss, as transformers computes it for gpt-oss.

    For each expert: (fraction of top-k assignments it received) × (mean router
    probability it was given), summed over experts and multiplied by E. Pooled over
    all layers' tokens. It is smallest when routing is uniform.
    """
    if isinstance(router_logits, torch.Tensor):
        router_logits = [router_logits]
    counts = torch.zeros(num_experts, device=router_logits[0].device)
    prob_sum = torch.zeros(num_experts, device=router_logits[0].device)
    rows = 0
    for logits in router_logits:
        probs = torch.softmax(logits.float(), dim=-1)
        chosen = torch.topk(probs, experts_per_token, dim=-1).indices
        counts = counts + F.one_hot(chosen.reshape(-1), num_experts).sum(0).float()
        prob_sum = prob_sum + probs.sum(0)
        rows += probs.shape[0]
    return num_experts * torch.sum((counts / rows) * (prob_sum / rows))


def expert_counts(indices: torch.Tensor, num_experts: int) -> torch.Tensor:
    """How many token-slots each expert received: (E,) integer counts."""
    return torch.bincount(indices.reshape(-1), minlength=num_experts)
