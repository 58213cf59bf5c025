import pytest
import torch
import torch.nn.functional as F
from transformers import GptOssConfig
from transformers.models.gpt_oss.modeling_gpt_oss import GptOssMLP

from nanogptoss import MLPBlock, moe_dispatch, moe_reference
from nanogptoss.moe import _ExpertBias, _GatherSlots, _PermuteRows, moe_gather, moe_grouped, resolve_moe_impl, sort_by_expert
from nanogptoss.swiglu import SwiGLUMLP

from conftest import randomize_, tiny_gptoss


def make_block(**overrides):
    block = MLPBlock(tiny_gptoss(**overrides))
    return randomize_(block, std=0.3)


def test_dispatch_equals_reference_with_gradients():
    block = make_block(n_experts=6, top_k=3)
    x = torch.randn(2, 7, 32, requires_grad=True)
    routing = block.router(x.view(-1, 32))
    grad_out = torch.randn(14, 32)
    ref = moe_reference(x.view(-1, 32), block.experts, routing)
    fast = moe_dispatch(x.view(-1, 32), block.experts, routing)
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)
    params = [x] + list(block.parameters())
    g_ref = torch.autograd.grad(ref, params, grad_out, retain_graph=True)
    g_fast = torch.autograd.grad(fast, params, grad_out)
    for a, b in zip(g_fast, g_ref):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


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


def test_output_is_the_weighted_sum_of_the_chosen_experts():
    block = make_block()
    x = torch.randn(5, 32)
    out = block(x[None])[0]
    r = block.last_routing
    for t in range(5):
        expected = sum(r.weights[t, j] * block.experts.expert(int(r.indices[t, j]), x[t:t + 1])[0]
                       for j in range(2))
        torch.testing.assert_close(out[t], expected, atol=1e-5, rtol=1e-5)


def test_one_expert_top1_equals_dense_swiglu():
    cfg = tiny_gptoss(n_experts=1, top_k=1)
    dense = randomize_(SwiGLUMLP(cfg), std=0.3)
    moe = MLPBlock(cfg)
    with torch.no_grad():
        moe.experts.gate_up_proj[0].copy_(dense.gate_up_proj.weight.T)
        moe.experts.gate_up_proj_bias[0].copy_(dense.gate_up_proj.bias)
        moe.experts.down_proj[0].copy_(dense.down_proj.weight.T)
        moe.experts.down_proj_bias[0].copy_(dense.down_proj.bias)
    x = torch.randn(3, 4, 32)
    torch.testing.assert_close(moe(x), dense(x), atol=1e-5, rtol=1e-5)


def test_dispatch_skips_experts_for_tokens_that_did_not_choose_them():
    block = make_block(n_experts=8, top_k=2)
    rows = []
    original = block.experts.expert
    block.experts.expert = lambda e, x: rows.append(x.shape[0]) or original(e, x)
    x = torch.randn(40, 32)
    routing = block.router(x)
    moe_dispatch(x, block.experts, routing)
    assert sum(rows) == 40 * 2  # exactly the chosen (token, expert) pairs
    rows.clear()
    moe_reference(x, block.experts, routing)
    assert sum(rows) == 40 * 8


def test_matches_transformers_moe_layer():
    hf_cfg = GptOssConfig(hidden_size=32, intermediate_size=24, num_local_experts=4, num_experts_per_tok=2)
    hf = randomize_(GptOssMLP(hf_cfg), std=0.3)
    ours = MLPBlock(tiny_gptoss())
    ours.load_state_dict(hf.state_dict())  # the same names and layout
    x = torch.randn(2, 6, 32)
    torch.testing.assert_close(ours(x), hf(x)[0], atol=1e-5, rtol=1e-5)


# -- the grouped-GEMM fast path -------------------------------------------------

def test_grouped_equals_reference_with_gradients():
    block = make_block(n_experts=6, top_k=3)
    x = torch.randn(2, 9, 32, requires_grad=True)
    routing = block.router(x.view(-1, 32))
    grad_out = torch.randn(18, 32)
    ref = moe_reference(x.view(-1, 32), block.experts, routing)
    fast = moe_grouped(x.view(-1, 32), block.experts, routing)
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)
    params = [x] + list(block.parameters())
    g_ref = torch.autograd.grad(ref, params, grad_out, retain_graph=True)
    g_fast = torch.autograd.grad(fast, params, grad_out)
    for a, b in zip(g_fast, g_ref):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_grouped_handles_experts_nobody_chose():
    block = make_block(n_experts=8, top_k=2)
    x = torch.randn(3, 32)  # 6 slots over 8 experts: some experts get no rows
    routing = block.router(x)
    assert len(routing.indices.unique()) < 8
    torch.testing.assert_close(moe_grouped(x, block.experts, routing),
                               moe_reference(x, block.experts, routing), atol=1e-5, rtol=1e-5)


def test_grouped_runs_only_the_chosen_rows(monkeypatch):
    block = make_block(n_experts=8, top_k=2)
    rows = []
    original = F.grouped_mm
    monkeypatch.setattr(F, "grouped_mm", lambda a, b, offs: rows.append((a.shape[0], offs.tolist()))
                        or original(a, b, offs=offs))
    x = torch.randn(40, 32)
    routing = block.router(x)
    moe_grouped(x, block.experts, routing)
    counts = torch.bincount(routing.indices.flatten(), minlength=8).cumsum(0).tolist()
    assert rows == [(80, counts), (80, counts)]  # gate_up and down: 40 tokens x 2 experts each


def test_grouped_in_bfloat16_matches_dispatch():
    block = make_block().to(torch.bfloat16)
    x = torch.randn(30, 32, dtype=torch.bfloat16)
    routing = block.router(x)
    torch.testing.assert_close(moe_grouped(x, block.experts, routing).float(),
                               moe_dispatch(x, block.experts, routing).float(), atol=2e-2, rtol=2e-2)


def test_auto_picks_grouped_on_cpu_only_without_gradients():
    block = make_block()  # 4 experts, top 2
    x = torch.randn(4, 32)
    with torch.no_grad():
        assert resolve_moe_impl("auto", x, block.experts, 2) == "grouped"
        assert resolve_moe_impl("auto", x[:2], block.experts, 2) == "gather"  # 2 tokens x 2 experts <= 4
    assert resolve_moe_impl("auto", x, block.experts, 2) == "dispatch"  # parameters need gradients
    assert resolve_moe_impl("reference", x, block.experts, 2) == "reference"
    assert resolve_moe_impl("grouped", x, block.experts, 2) == "grouped"


def test_grouped_refuses_unaligned_sizes_with_a_clear_error():
    block = make_block(ffn_hidden=6)  # a 6-float row is 24 bytes, not a multiple of 16
    x = torch.randn(4, 32)
    with torch.no_grad():
        assert resolve_moe_impl("auto", x, block.experts, 2) == "dispatch"  # auto falls back quietly
    with pytest.raises(ValueError, match="moe_impl='auto' or 'dispatch'"):
        resolve_moe_impl("grouped", x, block.experts, 2)


@pytest.mark.parametrize("impl", ["dispatch", "grouped", "gather"])
def test_block_paths_agree_with_the_reference_block(impl):
    ref = make_block(moe_impl="reference")
    fast = MLPBlock(tiny_gptoss(moe_impl=impl))
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(2, 11, 32)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), ref(x), atol=1e-5, rtol=1e-5)


def test_gather_equals_reference_with_gradients():
    block = make_block(n_experts=6, top_k=3)
    x = torch.randn(3, 32, requires_grad=True)
    routing = block.router(x)
    grad_out = torch.randn(3, 32)
    ref = moe_reference(x, block.experts, routing)
    fast = moe_gather(x, block.experts, routing)
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)
    params = [x] + list(block.parameters())
    g_ref = torch.autograd.grad(ref, params, grad_out, retain_graph=True)
    for a, b in zip(torch.autograd.grad(fast, params, grad_out), g_ref):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
