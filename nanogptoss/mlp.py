"""GPT-2's feed-forward: expand 4x, GELU, project back."""

import torch
from torch import nn


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.up_proj = nn.Linear(config.d_model, config.hidden, bias=config.bias)
        self.down_proj = nn.Linear(config.hidden, config.d_model, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # GPT-2 used the tanh approximation of GELU
        return self.dropout(self.down_proj(nn.functional.gelu(self.up_proj(x), approximate="tanh")))
