import math

import pytest
import torch
import torch.nn.functional as F

from nanogptoss import AttentionBlock, attention_mask, attention_reference, attention_sdpa
from nanogptoss.attention import attention_flex, flex_block_mask, repeat_kv, resolve_attn_impl, sink_gate

from conftest import tiny_gptoss


def qkv(B=2, H=4, G=2, T=10, h=8, requires_grad=False):
    q, k, v = torch.randn(B, H, T, h), torch.randn(B, G, T, h), torch.randn(B, G, T, h)
    return [t.requires_grad_(requires_grad) for t in (q, k, v)]


def test_reference_without_sinks_equals_torch_sdpa():
    q, k, v = qkv(G=4)
    allowed = attention_mask(torch.arange(10), torch.arange(10))
    torch.testing.assert_close(attention_reference(q, k, v, allowed),
                               F.scaled_dot_product_attention(q, k, v, is_causal=True), atol=1e-5, rtol=1e-5)


def test_gqa_equals_multihead_with_repeated_kv_heads():
    q, k, v = qkv(H=6, G=2)
    allowed = attention_mask(torch.arange(10), torch.arange(10))
    # query heads 0-2 share KV head 0, heads 3-5 share KV head 1
    k_full, v_full = k[:, [0, 0, 0, 1, 1, 1]], v[:, [0, 0, 0, 1, 1, 1]]
    torch.testing.assert_close(attention_reference(q, k, v, allowed),
                               F.scaled_dot_product_attention(q, k_full, v_full, is_causal=True),
                               atol=1e-5, rtol=1e-5)


def test_block_with_as_many_kv_heads_as_query_heads_is_multihead_attention():
    cfg = tiny_gptoss(n_kv_head=4, attn_sinks=False, sliding_window=None)
    block = AttentionBlock(cfg)
    x = torch.randn(2, 9, cfg.d_model)
    B, T, H, h = 2, 9, 4, 16
    split = lambda t: t.view(B, T, H, h).transpose(1, 2)  # noqa: E731
    q, k, v = split(block.q_proj(x)), split(block.k_proj(x)), split(block.v_proj(x))
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(h)
    scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    y = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, H * h)
    torch.testing.assert_close(block(x, torch.arange(T)), block.o_proj(y), atol=1e-5, rtol=1e-5)


def test_sliding_window_mask_counts():
    W, T = 4, 12
    allowed = attention_mask(torch.arange(T), torch.arange(T), window=W)
    assert allowed.sum(1).tolist() == [min(t + 1, W) for t in range(T)]
    # each query sees itself and the W - 1 keys before it, never the future
    for t in range(T):
        assert allowed[t].nonzero().flatten().tolist() == list(range(max(0, t - W + 1), t + 1))
    # a window at least as long as the sequence is plain causal attention
    assert torch.equal(attention_mask(torch.arange(T), torch.arange(T), window=T),
                       attention_mask(torch.arange(T), torch.arange(T)))


def test_empty_cache_slots_are_never_attended():
    allowed = attention_mask(torch.tensor([5]), torch.tensor([-1, 3, 4, 5, -1]))
    assert allowed.tolist() == [[False, True, True, True, False]]


def test_sink_probabilities_leave_mass_to_nowhere():
    q, k, v = qkv()
    sinks = torch.tensor([0.0, 1.0, -2.0, 5.0])
    allowed = attention_mask(torch.arange(10), torch.arange(10), window=3)
    _, probs = attention_reference(q, k, v, allowed, sinks, return_probs=True)
    row_sums = probs.sum(-1)
    assert torch.all(row_sums < 1) and torch.all(row_sums > 0)
    # the head with the largest sink gives away the most
    assert row_sums[:, 3].mean() < row_sums[:, 0].mean()
    # written out for one row: softmax over [scores, sink], sink dropped
    s = (q[0, 1, 6] @ k[0, 0, 4:7].T) / math.sqrt(8)
    p = torch.softmax(torch.cat([s, sinks[1:2]]), 0)[:-1]
    torch.testing.assert_close(probs[0, 1, 6, 4:7], p)


def test_sink_is_a_sigmoid_gate_on_the_sinkless_output():
    q, k, v = qkv()
    sinks = torch.randn(4)
    allowed = attention_mask(torch.arange(10), torch.arange(10), window=4)
    with_sink = attention_reference(q, k, v, allowed, sinks)
    without = attention_reference(q, k, v, allowed)
    scores = (q @ repeat_kv(k, 2).transpose(-2, -1)) / math.sqrt(8)
    lse = scores.masked_fill(~allowed, float("-inf")).logsumexp(-1)
    gate = torch.sigmoid(lse - sinks.view(1, 4, 1))
    torch.testing.assert_close(with_sink, without * gate[..., None], atol=1e-5, rtol=1e-5)
    # a sink at -inf is no sink; a huge sink swallows everything
    torch.testing.assert_close(attention_reference(q, k, v, allowed, torch.full((4,), -1e9)), without)
    assert attention_reference(q, k, v, allowed, torch.full((4,), 1e4)).abs().max() < 1e-6


@pytest.mark.parametrize("window", [None, 3, 20])
@pytest.mark.parametrize("with_sinks", [False, True])
def test_sdpa_path_equals_reference_with_gradients(window, with_sinks):
    q, k, v = qkv(requires_grad=True)
    sinks = torch.randn(4, requires_grad=True) if with_sinks else None
    allowed = attention_mask(torch.arange(10), torch.arange(10), window)
    leaves = [q, k, v] + ([sinks] if with_sinks else [])
    grad_out = torch.randn(2, 4, 10, 8)

    ref = attention_reference(q, k, v, allowed, sinks)
    ref_grads = torch.autograd.grad(ref, leaves, grad_out)
    fast = attention_sdpa(q, k, v, allowed, sinks, is_causal=window is None or window >= 10)
    fast_grads = torch.autograd.grad(fast, leaves, grad_out)
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)
    for a, b in zip(fast_grads, ref_grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_blocks_with_either_implementation_agree():
    cfg = tiny_gptoss()
    fast = AttentionBlock(cfg, layer_idx=0)
    slow = AttentionBlock(cfg.replace(attn_impl="reference"), layer_idx=0)
    slow.load_state_dict(fast.state_dict())
    with torch.no_grad():
        fast.sinks.normal_()
        slow.sinks.copy_(fast.sinks)
    assert fast.window == 8
    x = torch.randn(2, 20, cfg.d_model)
    torch.testing.assert_close(fast(x, torch.arange(20)), slow(x, torch.arange(20)), atol=1e-5, rtol=1e-5)


def test_layer_pattern_alternates_banded_and_dense():
    cfg = tiny_gptoss(n_layer=4)
    assert [AttentionBlock(cfg, i).window for i in range(4)] == [8, None, 8, None]
    cfg = tiny_gptoss(n_layer=4, window_pattern="SSF")
    assert [AttentionBlock(cfg, i).window for i in range(4)] == [8, 8, None, 8]


# -- FlexAttention and the sinks through the log-sum-exp -------------------------

def test_sink_gate_equals_the_appended_sink_logit_with_gradients():
    # the identity attention_flex relies on, with gradients flowing through lse too
    q, k, v = qkv(requires_grad=True)
    sinks = torch.randn(4, requires_grad=True)
    allowed = attention_mask(torch.arange(10), torch.arange(10), window=4)
    leaves, grad_out = [q, k, v, sinks], torch.randn(2, 4, 10, 8)
    scores = (q @ repeat_kv(k, 2).transpose(-2, -1)) / math.sqrt(8)
    lse = scores.masked_fill(~allowed, float("-inf")).logsumexp(-1)
    gated = sink_gate(attention_reference(q, k, v, allowed), lse, sinks)
    ref = attention_reference(q, k, v, allowed, sinks)
    torch.testing.assert_close(gated, ref, atol=1e-5, rtol=1e-5)
    for a, b in zip(torch.autograd.grad(gated, leaves, grad_out), torch.autograd.grad(ref, leaves, grad_out)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("window", [None, 3, 20])
@pytest.mark.parametrize("with_sinks", [False, True])
def test_flex_path_equals_reference(window, with_sinks):
    # forward only: PyTorch's FlexAttention has no backward pass on a CPU (the gradients
    # of the sink part are checked above; benchmarks/check_gpu.py checks all on a GPU)
    q, k, v = qkv(H=6, G=2, T=37, h=16)
    sinks = torch.randn(6) if with_sinks else None
    pos = torch.arange(37)
    expected = attention_reference(q, k, v, attention_mask(pos, pos, window), sinks)
    torch.testing.assert_close(attention_flex(q, k, v, flex_block_mask(pos, pos, window), sinks), expected,
                               atol=1e-5, rtol=1e-5)


def test_flex_mask_follows_cache_positions():
    # a ring buffer: slots hold positions out of order, some still empty (-1)
    k_pos = torch.tensor([8, 9, 10, 3, 4, 5, 6, 7, -1, -1])
    q_pos = torch.tensor([9, 10])
    q, (_, k, v) = torch.randn(1, 4, 2, 16), qkv(B=1, T=10, h=16)
    sinks = torch.randn(4)
    for window in (None, 4):
        expected = attention_reference(q, k, v, attention_mask(q_pos, k_pos, window), sinks)
        got = attention_flex(q, k, v, flex_block_mask(q_pos, k_pos, window), sinks)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_auto_picks_sdpa_on_cpu_and_flex_refuses_to_train_there():
    q = torch.randn(1, 4, 5, 16)
    assert resolve_attn_impl("auto", q, cached=False) == "sdpa"
    assert resolve_attn_impl("flex", q, cached=False) == "flex"
    with pytest.raises(ValueError, match="no backward pass on a CPU"):
        resolve_attn_impl("flex", q.requires_grad_(), cached=False)
    with pytest.raises(ValueError, match="head_dim that is a power of two"):
        resolve_attn_impl("flex", torch.randn(1, 4, 5, 12), cached=False)


def test_flex_block_equals_reference_block():
    cfg = tiny_gptoss()
    ref = AttentionBlock(cfg.replace(attn_impl="reference"), layer_idx=0)
    flex = AttentionBlock(cfg.replace(attn_impl="flex"), layer_idx=0)
    with torch.no_grad():
        ref.sinks.normal_()
        flex.load_state_dict(ref.state_dict())
        x = torch.randn(2, 20, cfg.d_model)
        torch.testing.assert_close(flex(x, torch.arange(20)), ref(x, torch.arange(20)), atol=1e-5, rtol=1e-5)


def test_layers_of_a_type_share_one_mask_per_forward():
    cfg = tiny_gptoss(n_layer=4)
    blocks = [AttentionBlock(cfg, i) for i in range(4)]
    masks = {}
    x = torch.randn(1, 12, cfg.d_model)
    for block in blocks:
        block(x, torch.arange(12), masks=masks)
    assert sorted(masks) == [("sdpa", "full"), ("sdpa", "sliding")]
    assert torch.equal(masks[("sdpa", "sliding")], attention_mask(torch.arange(12), torch.arange(12), 8))
