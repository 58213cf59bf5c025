import pytest
import torch
import torch.nn.functional as F
from transformers import GptOssConfig
from transformers.models.gpt_oss.modeling_gpt_oss import GptOssMLP

from nanogptoss import MLPBlock, moe_dispatch, moe_reference
from nanogptoss.model.swiglu import SwiGLUMLP

from conftest import randomize_, tiny_gptoss


def make_block(**overrides):
    block = MLPBlock(tiny_gptoss(**overrides))
    return randomize_(block, std=0.3)


def test_readable_dispatch_equals_reference_with_gradients():
    block = make_block(num_experts=6, experts_per_token=3)
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
    cfg = tiny_gptoss(num_experts=1, experts_per_token=1)
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
    block = make_block(num_experts=8, experts_per_token=2)
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


def test_a_block_alone_computes_with_the_readable_dispatch():
    assert MLPBlock(tiny_gptoss()).moe is moe_dispatch
