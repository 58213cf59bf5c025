"""Speed code, kept apart from the teaching code: fast implementations of the model's
operations, one registry per operation, and the one place that chooses among them.

Each kernel computes exactly what the readable version in `nanogptoss.model` computes,
with the same signature, and `tests/test_kernels.py` holds them equal (forward and
gradients). `GPT` asks `attention_kernel(config.attn_impl)` and
`moe_kernel(config.moe_impl)` for the callables its blocks use; "auto" picks per call,
by device, dtype, gradients and token count.
"""

from __future__ import annotations

import torch

from ..model import attention as readable_attention
from ..model.moe import moe_dispatch, moe_reference
from .attention import FLEX_DTYPES, FLEX_MIN_CAPABILITY, attention_flex, attention_sdpa, flex_available
from .moe import grouped_mm_dtype, grouped_mm_supported, moe_gather, moe_grouped, moe_sorted

# name -> function(q, k, v, q_positions, k_positions, sliding_window, sinks)
ATTENTION_KERNELS = {"reference": readable_attention.attention, "sdpa": attention_sdpa, "flex": attention_flex}
# name -> function(x, experts, routing)
MOE_KERNELS = {"reference": moe_reference, "dispatch": moe_dispatch, "sorted": moe_sorted,
               "grouped": moe_grouped, "gather": moe_gather}


def _flex_ok(q: torch.Tensor) -> bool:
    h = q.shape[-1]
    return q.dtype in FLEX_DTYPES and h >= 16 and h & (h - 1) == 0


def flex_suits(device: torch.device) -> bool:
    """Is compiled FlexAttention known to work here: a CUDA GPU of compute capability 8.0 or
    more (not a T4 or V100) and a torch that has what attention_flex calls?"""
    return (device.type == "cuda" and tuple(torch.cuda.get_device_capability(device)) >= FLEX_MIN_CAPABILITY
            and flex_available())


def choose_attention(impl: str, q: torch.Tensor, k_positions_are_queries: bool) -> str:
    """The attention kernel for one call.

    "auto" picks FlexAttention for a whole sequence (training, a prompt without cache) in
    the dtypes and head sizes its kernel takes, on a GPU where it is known to work
    (`flex_suits`), and SDPA everywhere else: on older GPUs and torches, on a CPU
    (FlexAttention runs unfused there, without a backward pass) and for cached decoding,
    whose few query rows leave no blocks to skip.
    """
    if impl == "auto":
        whole_sequence = k_positions_are_queries
        return "flex" if whole_sequence and _flex_ok(q) and flex_suits(q.device) else "sdpa"
    if impl == "flex":
        if not flex_available():
            raise ValueError(f"attn_impl='flex' needs FlexAttention with AuxRequest (torch >= 2.9), this is torch "
                             f"{torch.__version__}; use attn_impl='auto' or 'sdpa'")
        if q.device.type == "cpu" and q.requires_grad:
            raise ValueError("attn_impl='flex' has no backward pass on a CPU (PyTorch's FlexAttention "
                             "runs forward only there); train with attn_impl='auto' or 'sdpa', "
                             "or run under torch.no_grad()")
        if not _flex_ok(q):
            raise ValueError(f"attn_impl='flex' needs float32/bfloat16/float16 and a head_dim that is a "
                             f"power of two >= 16, got {q.dtype} and head_dim {q.shape[-1]}; use 'auto' or 'sdpa'")
    return impl


def choose_moe(impl: str, x: torch.Tensor, experts, experts_per_token: int) -> str:
    """The MoE kernel for one call.

    "auto": inference on so few tokens that their chosen experts number no more than
    all experts (decoding) gathers their weights; otherwise grouped GEMM where it is
    supported and faster, else the sorted dispatch. On a CPU the grouped GEMM only
    serves inference: there torch's grouped_mm backward (a loop of strided matmuls
    over one large buffer) measured slower than the sorted dispatch's per-expert
    chunks, which stay in cache.
    """
    if impl == "auto":
        training = torch.is_grad_enabled() and (x.requires_grad or experts.gate_up_proj.requires_grad)
        if not training and x.shape[0] * experts_per_token <= experts.num_experts:
            return "gather"
        if grouped_mm_supported(x, experts) and not (x.device.type == "cpu" and training):
            return "grouped"
        return "sorted"
    if impl == "grouped" and not grouped_mm_supported(x, experts):
        raise ValueError(f"moe_impl='grouped' is not supported for {x.device.type} tensors in "
                         f"{grouped_mm_dtype(x, experts)} with these sizes (needs torch >= 2.10, a CPU or "
                         "a bf16 CUDA GPU of compute capability >= 8.0, and hidden_size and intermediate_size "
                         "rows of a multiple of 16 bytes); use moe_impl='auto' or 'sorted'")
    return impl


class AttentionKernel:
    """The attention callable a block uses: the kernel `impl` names, chosen again at every call."""

    def __init__(self, impl: str = "auto"):
        if impl != "auto" and impl not in ATTENTION_KERNELS:
            raise ValueError(f"attn_impl must be 'auto' or one of {tuple(ATTENTION_KERNELS)}, got {impl!r}")
        self.impl = impl

    def __call__(self, q, k, v, q_positions, k_positions, sliding_window=None, sinks=None):
        name = choose_attention(self.impl, q, k_positions is q_positions)
        return ATTENTION_KERNELS[name](q, k, v, q_positions, k_positions, sliding_window, sinks)

    def __repr__(self) -> str:
        return f"AttentionKernel({self.impl!r})"


class MoEKernel:
    """The MoE callable a block uses: the kernel `impl` names, chosen again at every call."""

    def __init__(self, impl: str = "auto"):
        if impl != "auto" and impl not in MOE_KERNELS:
            raise ValueError(f"moe_impl must be 'auto' or one of {tuple(MOE_KERNELS)}, got {impl!r}")
        self.impl = impl

    def __call__(self, x, experts, routing):
        name = choose_moe(self.impl, x, experts, routing.indices.shape[1])
        return MOE_KERNELS[name](x, experts, routing)

    def __repr__(self) -> str:
        return f"MoEKernel({self.impl!r})"


def use_kernels(model, attn_impl: str | None = None, moe_impl: str | None = None) -> None:
    """Give every block of a built model the kernels these names choose (default: its config's)."""
    attend = AttentionKernel(model.config.attn_impl if attn_impl is None else attn_impl)
    moe = MoEKernel(model.config.moe_impl if moe_impl is None else moe_impl)
    for block in model.blocks:
        block.attn.attend = attend
        if hasattr(block.mlp, "moe"):
            block.mlp.moe = moe
