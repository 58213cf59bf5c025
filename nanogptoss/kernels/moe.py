"""Fast mixture of experts: the same function as `nanogptoss.model.moe.moe_dispatch`.

* `moe_sorted` sorts the (token, expert) slots by expert, runs each expert once on its
  contiguous chunk and un-sorts, with hand-written gather gradients (no atomic
  scatter-adds): the training path on a CPU.
* `moe_grouped` is the same sort with every expert's matmul in one grouped GEMM
  (`torch.nn.functional.grouped_mm`): no Python loop over experts and no wait for the
  per-expert counts to reach the host.
* `moe_gather` gathers each token's chosen expert weights: the decoding path.

`grouped_mm_supported` says where the grouped GEMM runs. `tests/test_kernels.py`
holds every path equal to the reference, gradients included.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..model.moe import Experts
from ..model.router import RouterOutput
from ..model.swiglu import swiglu


# -- sorting tokens by expert and back ------------------------------------------
# A token's k choices are its k "slots"; slot j belongs to token j // k. Sorting the
# slots by expert is a permutation `order` (sorted position i holds slot order[i]), and
# `inverse` undoes it. Both directions are plain gathers; so are their gradients, written
# out below because indexing's own backward scatter-adds with atomic operations, which
# took a third of a compiled training step on an H100 (index_add and index_put kernels).

def sort_by_expert(indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(order, inverse) for routing indices (N, k): the slots sorted by expert, stably."""
    order = torch.argsort(indices.reshape(-1), stable=True)
    inverse = torch.empty_like(order).scatter_(0, order, torch.arange(order.numel(), device=order.device))
    return order, inverse


class _GatherSlots(torch.autograd.Function):
    """x (N, d) -> (N*k, d) in sorted order: x[order // k]. Backward: un-sort the
    gradient with `inverse` and add up each token's k slots."""

    @staticmethod
    def forward(ctx, x, order, inverse, k):
        ctx.save_for_backward(inverse)
        ctx.k = k
        return x[order // k]

    @staticmethod
    def backward(ctx, grad):
        (inverse,) = ctx.saved_tensors
        return grad[inverse].view(-1, ctx.k, grad.shape[-1]).sum(dim=1), None, None, None


class _PermuteRows(torch.autograd.Function):
    """x[perm] for a permutation `perm` whose inverse is `inverse`; backward: grad[inverse]."""

    @staticmethod
    def forward(ctx, x, perm, inverse):
        ctx.save_for_backward(inverse)
        return x[perm]

    @staticmethod
    def backward(ctx, grad):
        (inverse,) = ctx.saved_tensors
        return grad[inverse], None, None


class _ExpertBias(torch.autograd.Function):
    """Each expert's bias (E, n) repeated over its rows of the sorted slots (N*k, n).

    The backward adds up each expert's rows. Autograd's own (an index_add into E rows)
    makes tens of thousands of rows collide on a handful of addresses: on an H100 the
    bias gradients took a quarter of a compiled training step. The same sums as a
    one-hot matrix product take the tensor cores microseconds.
    """

    @staticmethod
    def forward(ctx, b, counts, sorted_experts, rows):
        ctx.save_for_backward(sorted_experts)
        ctx.num_experts = b.shape[0]
        # output_size: no wait for the counts to reach the host
        return b.repeat_interleave(counts, dim=0, output_size=rows)

    @staticmethod
    def backward(ctx, grad):
        (sorted_experts,) = ctx.saved_tensors
        one_hot = F.one_hot(sorted_experts, ctx.num_experts).to(grad.dtype)  # (N*k, E)
        return one_hot.transpose(0, 1) @ grad, None, None, None


def combine_slots(out_sorted: torch.Tensor, routing: RouterOutput, order: torch.Tensor,
                  inverse: torch.Tensor) -> torch.Tensor:
    """Expert outputs in sorted order (N*k, d) -> each token's weighted sum (N, d)."""
    N, k = routing.indices.shape
    per_token = _PermuteRows.apply(out_sorted, inverse, order).view(N, k, -1)
    return (per_token * routing.weights[..., None].to(per_token.dtype)).sum(dim=1)


def moe_sorted(x: torch.Tensor, experts: Experts, routing: RouterOutput) -> torch.Tensor:
    """`moe_dispatch` with the slots sorted by expert: each expert once, on one contiguous chunk."""
    k = routing.indices.shape[1]
    order, inverse = sort_by_expert(routing.indices)
    counts = torch.bincount(routing.indices.reshape(-1), minlength=experts.num_experts).tolist()
    outputs = [experts.expert(e, chunk)
               for e, chunk in enumerate(_GatherSlots.apply(x, order, inverse, k).split(counts)) if counts[e] > 0]
    return combine_slots(torch.cat(outputs), routing, order, inverse)


def grouped_mm_dtype(x: torch.Tensor, experts: Experts) -> torch.dtype:
    """The dtype the expert matmuls run in: autocast's when it is on, else the weights'."""
    device = x.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return experts.gate_up_proj.dtype


def grouped_mm_supported(x: torch.Tensor, experts: Experts) -> bool:
    """Whether `moe_grouped` can run here: torch has the kernel for this device and dtype,
    and every row of the operands starts on a 16-byte boundary, as the kernel requires."""
    if not hasattr(F, "grouped_mm"):  # torch < 2.10
        return False
    dtype = grouped_mm_dtype(x, experts)
    if torch.compiler.is_compiling() and dtype != torch.bfloat16:
        return False  # torch.compile lowers grouped_mm for bf16 only
    if x.device.type == "cuda":
        # the CUDA kernel is bf16-only and needs compute capability 8.0 (Ampere) or newer
        if dtype != torch.bfloat16 or torch.cuda.get_device_capability(x.device) < (8, 0):
            return False
    elif x.device.type != "cpu":
        return False
    d, two_f = experts.gate_up_proj.shape[1:]
    if any(n * dtype.itemsize % 16 for n in (d, two_f, two_f // 2)):
        return False
    # the CUDA kernel also needs 16-byte-aligned weights, which a tensor read in place
    # from a safetensors file need not be (the CPU kernel does not); a traced graph has no
    # pointers to look at (and asking would break the graph): weights moved to a GPU are
    # fresh allocations, aligned
    if torch.compiler.is_compiling():
        return True
    return x.device.type != "cuda" or all(w.data_ptr() % 16 == 0
                                          for w in (experts.gate_up_proj, experts.down_proj))


def moe_grouped(x: torch.Tensor, experts: Experts, routing: RouterOutput) -> torch.Tensor:
    """`moe_sorted` with all experts in one grouped GEMM per projection."""
    N, k = routing.indices.shape
    flat_experts = routing.indices.reshape(-1)
    order, inverse = sort_by_expert(routing.indices)
    # rows offs[e-1]:offs[e] of the sorted tokens belong to expert e; computed on the
    # device, so unlike moe_sorted nothing waits for the counts
    # a scatter, not bincount: its output size never depends on the data, which keeps
    # the path traceable by torch.compile
    counts = flat_experts.new_zeros(experts.num_experts).index_add_(0, flat_experts, torch.ones_like(flat_experts))
    offs = counts.cumsum(0).to(torch.int32)
    dtype = grouped_mm_dtype(x, experts)

    sorted_experts = flat_experts[order]

    def bias(b: torch.Tensor) -> torch.Tensor:
        # grouped_mm takes no per-expert bias yet: each expert's bias repeated over its rows
        return _ExpertBias.apply(b, counts, sorted_experts, N * k)

    x_sorted = _GatherSlots.apply(x, order, inverse, k)
    gate_up = F.grouped_mm(x_sorted.to(dtype), experts.gate_up_proj.to(dtype), offs=offs)
    h = swiglu(gate_up + bias(experts.gate_up_proj_bias), experts.alpha, experts.limit)
    out = F.grouped_mm(h.to(dtype), experts.down_proj.to(dtype), offs=offs) + bias(experts.down_proj_bias)
    return combine_slots(out, routing, order, inverse)


def moe_gather(x: torch.Tensor, experts: Experts, routing: RouterOutput) -> torch.Tensor:
    """Each token gathers its k experts' weights and applies them in batched matmuls.

    As the official gpt-oss reference does. No sort and no loop, and every shape is fixed
    by (N, k), so a compiled decode step traces it whole; but it reads N·k expert
    matrices, so it pays off only for a few tokens (decoding), not for a batch.
    """
    idx = routing.indices  # (N, k)
    # (N, 1, 1, d) @ (N, k, d, 2f): each token's row times each of its k experts' matrices
    h = (x[:, None, None, :] @ experts.gate_up_proj[idx]).squeeze(2) + experts.gate_up_proj_bias[idx]
    h = swiglu(h, experts.alpha, experts.limit)
    out = (h[:, :, None, :] @ experts.down_proj[idx]).squeeze(2) + experts.down_proj_bias[idx]
    return (out * routing.weights[..., None].to(out.dtype)).sum(dim=1)
