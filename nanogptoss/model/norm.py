"""RMSNorm: LayerNorm without the mean and without the bias.

gpt-oss normalises by the root-mean-square only, in float32 whatever the input
dtype, multiplies by a learned scale (initialised to 1) and casts back at the end.
"""

import torch
from torch import nn


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.weight.shape[0]:
            raise ValueError(f"RMSNorm expects a last dimension of {self.weight.shape[0]}, "
                             f"got input of shape {tuple(x.shape)}")
        # float32 even under bf16/fp16: squaring small activations underflows otherwise
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        # the scale is applied before the cast back, as transformers does
        return (self.weight.float() * x32).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"
