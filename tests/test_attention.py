import math

import pytest
import torch
import torch.nn.functional as F

from nanogptoss import GPTOSS, AttentionBlock, attention, attention_mask, attention_reference
from nanogptoss.model.attention import is_visible, repeat_kv

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
    cfg = tiny_gptoss(num_key_value_heads=4, attn_sinks=False, sliding_window=None)
    block = AttentionBlock(cfg)
    x = torch.randn(2, 9, cfg.hidden_size)
    B, T, H, h = 2, 9, 4, 16
    split = lambda t: t.view(B, T, H, h).transpose(1, 2)  # noqa: E731
    q, k, v = split(block.q_proj(x)), split(block.k_proj(x)), split(block.v_proj(x))
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(h)
    scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    y = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, H * h)
    torch.testing.assert_close(block(x, torch.arange(T)), block.o_proj(y), atol=1e-5, rtol=1e-5)


def test_sliding_window_mask_counts():
    W, T = 4, 12
    allowed = attention_mask(torch.arange(T), torch.arange(T), sliding_window=W)
    assert allowed.sum(1).tolist() == [min(t + 1, W) for t in range(T)]
    # each query sees itself and the W - 1 keys before it, never the future
    for t in range(T):
        assert allowed[t].nonzero().flatten().tolist() == list(range(max(0, t - W + 1), t + 1))
    # a window at least as long as the sequence is plain causal attention
    assert torch.equal(attention_mask(torch.arange(T), torch.arange(T), sliding_window=T),
                       attention_mask(torch.arange(T), torch.arange(T)))


def test_empty_cache_slots_are_never_attended():
    allowed = attention_mask(torch.tensor([5]), torch.tensor([-1, 3, 4, 5, -1]))
    assert allowed.tolist() == [[False, True, True, True, False]]


def test_sink_probabilities_leave_mass_to_nowhere():
    q, k, v = qkv()
    sinks = torch.tensor([0.0, 1.0, -2.0, 5.0])
    allowed = attention_mask(torch.arange(10), torch.arange(10), sliding_window=3)
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
    allowed = attention_mask(torch.arange(10), torch.arange(10), sliding_window=4)
    with_sink = attention_reference(q, k, v, allowed, sinks)
    without = attention_reference(q, k, v, allowed)
    scores = (q @ repeat_kv(k, 2).transpose(-2, -1)) / math.sqrt(8)
    lse = scores.masked_fill(~allowed, float("-inf")).logsumexp(-1)
    gate = torch.sigmoid(lse - sinks.view(1, 4, 1))
    torch.testing.assert_close(with_sink, without * gate[..., None], atol=1e-5, rtol=1e-5)
    # a sink at -inf is no sink; a huge sink swallows everything
    torch.testing.assert_close(attention_reference(q, k, v, allowed, torch.full((4,), -1e9)), without)
    assert attention_reference(q, k, v, allowed, torch.full((4,), 1e4)).abs().max() < 1e-6


def test_the_rule_is_elementwise_and_attention_mask_is_its_outer_form():
    q_pos, k_pos = torch.tensor([0, 3, 7, 9]), torch.tensor([-1, 0, 2, 5, 7, 9])
    for window in (None, 1, 3):
        expected = [[bool(is_visible(torch.tensor(q), torch.tensor(k), window)) for k in k_pos.tolist()]
                    for q in q_pos.tolist()]
        assert attention_mask(q_pos, k_pos, window).tolist() == expected


def test_attention_is_the_reference_on_the_rule_s_mask():
    q, k, v = qkv()
    pos, sinks = torch.arange(10), torch.randn(4)
    torch.testing.assert_close(attention(q, k, v, pos, pos, 3, sinks),
                               attention_reference(q, k, v, attention_mask(pos, pos, 3), sinks))


def test_layer_types_set_each_block_s_window():
    cfg = tiny_gptoss(num_hidden_layers=4)
    assert cfg.layer_types == ("sliding_attention", "full_attention") * 2
    assert [AttentionBlock(cfg, i).sliding_window for i in range(4)] == [8, None, 8, None]
    cfg = tiny_gptoss(num_hidden_layers=4, layer_types=("sliding_attention", "sliding_attention",
                                                        "full_attention", "sliding_attention"))
    assert [AttentionBlock(cfg, i).sliding_window for i in range(4)] == [8, 8, None, 8]


def test_a_block_alone_computes_with_the_readable_reference():
    block = AttentionBlock(tiny_gptoss())
    assert block.attend is attention


@pytest.mark.parametrize("cast", ["to", "checkpoint", "pretrained"])
def test_sinks_stay_float32_whatever_the_model_is_cast_to(cast, tmp_path):
    from nanogptoss.weights.checkpoint import load_model, save_checkpoint

    from conftest import randomize_

    cfg = tiny_gptoss(experts_per_token=4)  # every expert: no routing flip from rounding in the comparison
    model = randomize_(GPTOSS(cfg)).eval()
    sinks = [b.attn.sinks.detach().clone() for b in model.blocks]
    if cast == "to":
        low = GPTOSS(cfg)
        low.load_state_dict(model.state_dict())
        low = low.to(torch.bfloat16)
    elif cast == "checkpoint":
        save_checkpoint(tmp_path / "ckpt.safetensors", model)
        low, _ = load_model(tmp_path / "ckpt.safetensors", dtype=torch.bfloat16)
    else:
        model.save_pretrained(tmp_path / "hf")
        low = GPTOSS.from_pretrained(tmp_path / "hf", dtype=torch.bfloat16)
    for block, before in zip(low.blocks, sinks):
        assert block.attn.sinks.dtype == torch.float32
        assert torch.equal(block.attn.sinks, before)  # not rounded through bf16 on the way
        assert block.attn.q_proj.weight.dtype == torch.bfloat16
    idx = torch.randint(0, 97, (2, 20))
    with torch.no_grad():
        torch.testing.assert_close(low(idx).logits.float(), model(idx).logits, atol=0.06, rtol=0.02)
