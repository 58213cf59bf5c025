"""Every fast path in nanogptoss.kernels against the readable reference it replaces,
forward and gradients, and the one place that chooses among them."""

import math

import pytest
import torch
import torch.nn.functional as F

from nanogptoss import GPTOSS, MLPBlock, attention, attention_mask, attention_reference, moe_reference
from nanogptoss.config import ATTN_IMPLS, MOE_IMPLS
from nanogptoss.kernels import (ATTENTION_KERNELS, MOE_KERNELS, AttentionKernel, MoEKernel, choose_attention,
                                choose_moe, use_kernels)
from nanogptoss.kernels.attention import attention_flex, attention_sdpa, sink_gate
from nanogptoss.kernels.moe import _ExpertBias, _GatherSlots, _PermuteRows, moe_gather, moe_grouped, moe_sorted, \
    sort_by_expert
from nanogptoss.model.attention import repeat_kv

from conftest import randomize_, tiny_gptoss


def qkv(B=2, H=4, G=2, T=10, h=8, requires_grad=False):
    q, k, v = torch.randn(B, H, T, h), torch.randn(B, G, T, h), torch.randn(B, G, T, h)
    return [t.requires_grad_(requires_grad) for t in (q, k, v)]


def make_block(**overrides):
    return randomize_(MLPBlock(tiny_gptoss(**overrides)), std=0.3)


def assert_same_with_gradients(fast, ref, leaves, grad_out, atol=1e-5):
    torch.testing.assert_close(fast, ref, atol=atol, rtol=1e-5)
    g_ref = torch.autograd.grad(ref, leaves, grad_out, retain_graph=True)
    for a, b in zip(torch.autograd.grad(fast, leaves, grad_out), g_ref):
        torch.testing.assert_close(a, b, atol=atol, rtol=1e-5)


def test_registries_hold_exactly_the_config_s_names():
    assert ("auto", *ATTENTION_KERNELS) == ATTN_IMPLS
    assert ("auto", *MOE_KERNELS) == MOE_IMPLS
    assert ATTENTION_KERNELS["reference"] is attention and MOE_KERNELS["reference"] is moe_reference


# -- attention -------------------------------------------------------------------

@pytest.mark.parametrize("window", [None, 3, 10, 20])
@pytest.mark.parametrize("with_sinks", [False, True])
@pytest.mark.parametrize("same_positions", [True, False])
def test_sdpa_equals_reference_with_gradients(window, with_sinks, same_positions):
    # same_positions: the keys are the queries' own tokens (the causal shortcut may apply)
    q, k, v = qkv(requires_grad=True)
    sinks = torch.randn(4, requires_grad=True) if with_sinks else None
    q_pos = torch.arange(10)
    k_pos = q_pos if same_positions else torch.arange(10)
    leaves = [q, k, v] + ([sinks] if with_sinks else [])
    assert_same_with_gradients(attention_sdpa(q, k, v, q_pos, k_pos, window, sinks),
                               attention(q, k, v, q_pos, k_pos, window, sinks), leaves, torch.randn(2, 4, 10, 8))


def test_sdpa_follows_cache_positions():
    k_pos = torch.tensor([8, 9, 10, 3, 4, 5, 6, 7, -1, -1])  # a ring buffer, two slots still empty
    q_pos = torch.tensor([9, 10])
    q, (_, k, v) = torch.randn(1, 4, 2, 16), qkv(B=1, T=10, h=16)
    sinks = torch.randn(4)
    for window in (None, 4):
        for s in (None, sinks):
            torch.testing.assert_close(attention_sdpa(q, k, v, q_pos, k_pos, window, s),
                                       attention(q, k, v, q_pos, k_pos, window, s), atol=1e-5, rtol=1e-5)


def test_sink_gate_equals_the_appended_sink_logit_with_gradients():
    # the identity attention_flex relies on, with gradients flowing through lse too
    q, k, v = qkv(requires_grad=True)
    sinks = torch.randn(4, requires_grad=True)
    allowed = attention_mask(torch.arange(10), torch.arange(10), sliding_window=4)
    scores = (q @ repeat_kv(k, 2).transpose(-2, -1)) / math.sqrt(8)
    lse = scores.masked_fill(~allowed, float("-inf")).logsumexp(-1)
    gated = sink_gate(attention_reference(q, k, v, allowed), lse, sinks)
    assert_same_with_gradients(gated, attention_reference(q, k, v, allowed, sinks), [q, k, v, sinks],
                               torch.randn(2, 4, 10, 8))


@pytest.mark.parametrize("window", [None, 3, 20])
@pytest.mark.parametrize("with_sinks", [False, True])
def test_flex_equals_reference(window, with_sinks):
    # forward only: PyTorch's FlexAttention has no backward pass on a CPU (the gradients
    # of the sink part are checked above; benchmarks/check_gpu.py checks all on a GPU)
    q, k, v = qkv(H=6, G=2, T=37, h=16)
    sinks = torch.randn(6) if with_sinks else None
    pos = torch.arange(37)
    torch.testing.assert_close(attention_flex(q, k, v, pos, pos, window, sinks),
                               attention(q, k, v, pos, pos, window, sinks), atol=1e-5, rtol=1e-5)


def test_flex_follows_cache_positions():
    k_pos = torch.tensor([8, 9, 10, 3, 4, 5, 6, 7, -1, -1])
    q_pos = torch.tensor([9, 10])
    q, (_, k, v) = torch.randn(1, 4, 2, 16), qkv(B=1, T=10, h=16)
    sinks = torch.randn(4)
    for window in (None, 4):
        torch.testing.assert_close(attention_flex(q, k, v, q_pos, k_pos, window, sinks),
                                   attention(q, k, v, q_pos, k_pos, window, sinks), atol=1e-5, rtol=1e-5)


def test_auto_picks_sdpa_on_cpu_and_flex_refuses_to_train_there():
    q = torch.randn(1, 4, 5, 16)
    assert choose_attention("auto", q, k_positions_are_queries=True) == "sdpa"
    assert choose_attention("flex", q, k_positions_are_queries=True) == "flex"
    assert choose_attention("reference", q, k_positions_are_queries=False) == "reference"
    with pytest.raises(ValueError, match="no backward pass on a CPU"):
        choose_attention("flex", q.requires_grad_(), k_positions_are_queries=True)
    with pytest.raises(ValueError, match="head_dim that is a power of two"):
        choose_attention("flex", torch.randn(1, 4, 5, 12), k_positions_are_queries=True)


class OnGPU:
    """What choose_attention reads of q, as if q lived on a CUDA GPU (the test runs on a CPU)."""

    def __init__(self, shape=(1, 4, 5, 64), dtype=torch.bfloat16):
        self.shape, self.dtype, self.device, self.requires_grad = shape, dtype, torch.device("cuda", 0), True


@pytest.mark.parametrize("capability,has_aux,expected", [
    ((7, 5), True, "sdpa"),  # T4: 64 KB of shared memory per SM, Triton's FlexAttention kernels fail
    ((7, 0), True, "sdpa"),  # V100
    ((8, 0), True, "flex"),  # A100
    ((8, 9), True, "flex"),  # L4
    ((9, 0), True, "flex"),  # H100
    ((9, 0), False, "sdpa"),  # a torch older than AuxRequest
])
def test_auto_picks_flex_only_where_it_is_known_to_work(monkeypatch, capability, has_aux, expected):
    import nanogptoss.kernels as kernels

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(kernels, "flex_available", lambda: has_aux)
    assert choose_attention("auto", OnGPU(), k_positions_are_queries=True) == expected
    assert choose_attention("auto", OnGPU(), k_positions_are_queries=False) == "sdpa"  # cached decoding
    assert choose_attention("auto", OnGPU(shape=(1, 4, 5, 12)), k_positions_are_queries=True) == "sdpa"
    if not has_aux:
        with pytest.raises(ValueError, match="torch >= 2.9"):
            choose_attention("flex", OnGPU(), k_positions_are_queries=True)


def test_flex_available_follows_what_attention_flex_calls():
    import inspect

    from torch.nn.attention import flex_attention as fa

    from nanogptoss.kernels.attention import flex_available
    assert flex_available() == (hasattr(fa, "AuxRequest")
                                and "return_aux" in inspect.signature(fa.flex_attention).parameters)
    assert flex_available()  # the pinned torch 2.13 of CI has it


@pytest.mark.parametrize("impl", ["sdpa", "flex", "auto"])
def test_blocks_with_each_kernel_equal_the_reference(impl):
    model = randomize_(GPTOSS(tiny_gptoss(attn_impl="reference"))).eval()
    fast = GPTOSS(tiny_gptoss(attn_impl=impl)).eval()
    fast.load_state_dict(model.state_dict())
    idx = torch.randint(0, 97, (2, 20))
    with torch.no_grad():
        torch.testing.assert_close(fast(idx).logits, model(idx).logits, atol=1e-4, rtol=1e-4)


# -- mixture of experts ------------------------------------------------------------

@pytest.mark.parametrize("kernel", [moe_sorted, moe_grouped, moe_gather])
def test_moe_kernels_equal_reference_with_gradients(kernel):
    block = make_block(num_experts=6, experts_per_token=3)
    x = torch.randn(2, 9, 32, requires_grad=True)
    routing = block.router(x.view(-1, 32))
    ref = moe_reference(x.view(-1, 32), block.experts, routing)
    fast = kernel(x.view(-1, 32), block.experts, routing)
    assert_same_with_gradients(fast, ref, [x] + list(block.parameters()), torch.randn(18, 32))


def test_sorting_by_expert_and_back_with_hand_written_gradients():
    indices = torch.randint(0, 5, (9, 3))
    order, inverse = sort_by_expert(indices)
    flat = indices.reshape(-1)
    assert torch.equal(flat[order], flat.sort(stable=True).values)  # grouped by expert, stable
    assert torch.equal(order[inverse], torch.arange(27)) and torch.equal(inverse[order], torch.arange(27))
    x = torch.randn(9, 4, dtype=torch.float64, requires_grad=True)
    # the forward is the plain gather; gradcheck holds the written-out backward to finite differences
    assert torch.equal(_GatherSlots.apply(x, order, inverse, 3), x[order // 3])
    torch.autograd.gradcheck(lambda t: _GatherSlots.apply(t, order, inverse, 3), (x,))
    y = torch.randn(27, 4, dtype=torch.float64, requires_grad=True)
    assert torch.equal(_PermuteRows.apply(y, inverse, order), y[inverse])
    torch.autograd.gradcheck(lambda t: _PermuteRows.apply(t, inverse, order), (y,))


def test_expert_bias_repeats_each_bias_over_its_rows_with_a_matmul_gradient():
    sorted_experts = torch.tensor([0, 0, 2, 2, 2, 3])  # expert 1 chosen by no slot
    counts = torch.bincount(sorted_experts, minlength=4)
    b = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.equal(_ExpertBias.apply(b, counts, sorted_experts, 6), b[sorted_experts])
    torch.autograd.gradcheck(lambda t: _ExpertBias.apply(t, counts, sorted_experts, 6), (b,))


def test_grouped_handles_experts_nobody_chose():
    block = make_block(num_experts=8, experts_per_token=2)
    x = torch.randn(3, 32)  # 6 slots over 8 experts: some experts get no rows
    routing = block.router(x)
    assert len(routing.indices.unique()) < 8
    torch.testing.assert_close(moe_grouped(x, block.experts, routing),
                               moe_reference(x, block.experts, routing), atol=1e-5, rtol=1e-5)


def test_grouped_runs_only_the_chosen_rows(monkeypatch):
    block = make_block(num_experts=8, experts_per_token=2)
    rows = []
    original = F.grouped_mm
    monkeypatch.setattr(F, "grouped_mm", lambda a, b, offs: rows.append((a.shape[0], offs.tolist()))
                        or original(a, b, offs=offs))
    x = torch.randn(40, 32)
    routing = block.router(x)
    moe_grouped(x, block.experts, routing)
    counts = torch.bincount(routing.indices.flatten(), minlength=8).cumsum(0).tolist()
    assert rows == [(80, counts), (80, counts)]  # gate_up and down: 40 tokens x 2 experts each


def test_grouped_in_bfloat16_matches_the_sorted_dispatch():
    block = make_block().to(torch.bfloat16)
    x = torch.randn(30, 32, dtype=torch.bfloat16)
    routing = block.router(x)
    torch.testing.assert_close(moe_grouped(x, block.experts, routing).float(),
                               moe_sorted(x, block.experts, routing).float(), atol=2e-2, rtol=2e-2)


def test_auto_picks_grouped_on_cpu_only_without_gradients():
    block = make_block()  # 4 experts, 2 per token
    x = torch.randn(4, 32)
    with torch.no_grad():
        assert choose_moe("auto", x, block.experts, 2) == "grouped"
        assert choose_moe("auto", x[:2], block.experts, 2) == "gather"  # 2 tokens x 2 experts <= 4
    assert choose_moe("auto", x, block.experts, 2) == "sorted"  # parameters need gradients
    assert choose_moe("reference", x, block.experts, 2) == "reference"
    assert choose_moe("grouped", x, block.experts, 2) == "grouped"


def test_grouped_refuses_unaligned_sizes_with_a_clear_error():
    block = make_block(intermediate_size=6)  # a 6-float row is 24 bytes, not a multiple of 16
    x = torch.randn(4, 32)
    with torch.no_grad():
        assert choose_moe("auto", x, block.experts, 2) == "sorted"  # auto falls back quietly
    with pytest.raises(ValueError, match="moe_impl='auto' or 'sorted'"):
        choose_moe("grouped", x, block.experts, 2)


@pytest.mark.parametrize("impl", ["dispatch", "sorted", "grouped", "gather", "auto"])
def test_models_with_each_moe_kernel_equal_the_reference(impl):
    model = randomize_(GPTOSS(tiny_gptoss(moe_impl="reference"))).eval()
    fast = GPTOSS(tiny_gptoss(moe_impl=impl)).eval()
    fast.load_state_dict(model.state_dict())
    idx = torch.randint(0, 97, (2, 11))
    with torch.no_grad():
        torch.testing.assert_close(fast(idx).logits, model(idx).logits, atol=1e-4, rtol=1e-4)


# -- installing them ------------------------------------------------------------------

def test_gpt_installs_the_kernels_its_config_names_and_use_kernels_switches_them():
    model = GPTOSS(tiny_gptoss(attn_impl="sdpa", moe_impl="sorted"))
    assert all(b.attn.attend.impl == "sdpa" and b.mlp.moe.impl == "sorted" for b in model.blocks)
    use_kernels(model, attn_impl="reference", moe_impl="grouped")
    assert all(b.attn.attend.impl == "reference" and b.mlp.moe.impl == "grouped" for b in model.blocks)
    with pytest.raises(ValueError, match="attn_impl must be"):
        AttentionKernel("fastest")
    with pytest.raises(ValueError, match="moe_impl must be"):
        MoEKernel("fastest")
