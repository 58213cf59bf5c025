import pytest
import torch

from nanogptoss import GPT, GPT2Config, GPTOSS, generate_stream, next_token_probs, sample_next

from conftest import randomize_, tiny_gptoss


def models():
    yield "gptoss", randomize_(GPTOSS(tiny_gptoss())).eval()
    yield "gpt2", randomize_(GPT(GPT2Config(vocab_size=97, max_position_embeddings=64, num_hidden_layers=2, hidden_size=32, num_attention_heads=4))).eval()
    yield "all-banded", randomize_(GPTOSS(tiny_gptoss(layer_types=("sliding_attention",) * 3, num_key_value_heads=1))).eval()
    yield "plain-paths", randomize_(GPTOSS(tiny_gptoss(attn_impl="reference", moe_impl="reference"))).eval()


@pytest.mark.parametrize("name, model", list(models()), ids=lambda v: v if isinstance(v, str) else "")
def test_cached_decoding_gives_the_full_forward_logits(name, model):
    tokens = torch.randint(0, 97, (3, 30))
    with torch.no_grad():
        full = model(tokens).logits
        for prefill in (1, 5, 12):  # shorter and longer than the window of 8
            cache = model.new_kv_cache()
            pieces = [model(tokens[:, :prefill], kv_cache=cache).logits]
            t = prefill
            while t < 30:  # decode in chunks of 1 and 3 tokens
                step = 1 if t % 2 else 3
                pieces.append(model(tokens[:, t:t + step], kv_cache=cache).logits)
                t += step
            torch.testing.assert_close(torch.cat(pieces, 1)[:, :30], full, atol=1e-4, rtol=1e-4)


def test_banded_layers_keep_only_the_window():
    model = GPTOSS(tiny_gptoss()).eval()
    cache = model.new_kv_cache()
    with torch.no_grad():
        model(torch.randint(0, 97, (1, 40)), kv_cache=cache)
    sizes = [layer.k.shape[2] for layer in cache.layers]
    assert sizes == [8, 64, 8]  # window 8 on banded layers, the whole context on dense ones
    assert sorted(cache.layers[0].pos.tolist()) == list(range(32, 40))


def test_generate_with_and_without_cache_agree_greedily():
    model = randomize_(GPTOSS(tiny_gptoss()))
    prompt = torch.randint(0, 97, (2, 5))
    with_cache = model.generate(prompt, 30, temperature=0)
    without = model.generate(prompt, 30, temperature=0, use_cache=False)
    assert torch.equal(with_cache, without)
    assert torch.equal(with_cache[:, :5], prompt) and with_cache.shape == (2, 35)
    # greedy written out
    seq = prompt
    for _ in range(30):
        seq = torch.cat([seq, model(seq).logits[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(seq, with_cache)
    assert model.training  # generate restores the mode it found


def test_sampling_is_reproducible_with_a_generator():
    model = randomize_(GPTOSS(tiny_gptoss()))
    prompt = torch.randint(0, 97, (1, 3))
    a = model.generate(prompt, 20, temperature=1.0, top_k=10, generator=torch.Generator().manual_seed(1))
    b = model.generate(prompt, 20, temperature=1.0, top_k=10, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


def test_top_k_and_top_p_restrict_the_candidates():
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0, -1.0]]).repeat(2000, 1)
    gen = torch.Generator().manual_seed(0)
    assert set(sample_next(logits, 1.0, top_k=2, generator=gen).flatten().tolist()) == {0, 1}
    # probabilities are about .64 .23 .09 ...: top_p 0.8 keeps the first two, 0.5 only the first
    assert set(sample_next(logits, 1.0, top_p=0.8, generator=gen).flatten().tolist()) == {0, 1}
    assert set(sample_next(logits, 1.0, top_p=0.5, generator=gen).flatten().tolist()) == {0}
    assert set(sample_next(logits, 1.0, top_k=1, generator=gen).flatten().tolist()) == {0}
    unrestricted = sample_next(logits, 1.0, generator=gen).flatten()
    assert len(set(unrestricted.tolist())) >= 5
    # temperature sharpens: at 0.1 nearly everything is the top token
    assert (sample_next(logits, 0.1, generator=gen) == 0).float().mean() > 0.99


def test_next_token_probs_is_the_distribution_sample_next_draws_from():
    logits = torch.tensor([2.0, 1.5, 1.0, 0.0, -1.0, -3.0])
    p = torch.softmax(logits / 0.7, -1)  # written out: temperature, then top-k 4, then top-p 0.75
    p[4:] = 0
    p = p / p.sum()
    ranked = p.sort(descending=True).values
    n_keep = int(((ranked.cumsum(0) - ranked) < 0.75).sum())
    p[n_keep:] = 0  # logits are already in descending order
    expected = p / p.sum()
    probs = next_token_probs(logits, 0.7, top_k=4, top_p=0.75)
    torch.testing.assert_close(probs, expected)
    draws = sample_next(logits.expand(40_000, -1), 0.7, top_k=4, top_p=0.75, generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(draws.flatten(), minlength=6) / 40_000
    torch.testing.assert_close(freq, expected, atol=0.01, rtol=0)
    with pytest.raises(ValueError, match="greedy"):
        next_token_probs(logits, 0.0)


def test_streaming_yields_one_token_at_a_time():
    model = randomize_(GPTOSS(tiny_gptoss()))
    prompt = torch.randint(0, 97, (1, 4))
    pieces = list(generate_stream(model, prompt, 6, temperature=0))
    assert len(pieces) == 6 and all(p.shape == (1, 1) for p in pieces)
    assert torch.equal(torch.cat([prompt, *pieces], 1), model.generate(prompt, 6, temperature=0))


def test_bad_generation_requests():
    model = GPTOSS(tiny_gptoss())
    prompt = torch.zeros(1, 60, dtype=torch.long)
    with pytest.raises(ValueError, match=r"exceeds the model's context \(max_position_embeddings 64\)"):
        model.generate(prompt, 10)
    with pytest.raises(ValueError, match="temperature"):
        model.generate(prompt[:, :3], 2, temperature=-1)
    with pytest.raises(ValueError, match="top_p"):
        model.generate(prompt[:, :3], 2, top_p=1.5)
    cache = model.new_kv_cache(max_len=10)
    with pytest.raises(ValueError, match="KV cache holds at most 10"):
        model(torch.zeros(1, 12, dtype=torch.long), kv_cache=cache)


def test_fast_and_plain_paths_decode_the_same_tokens():
    fast = randomize_(GPTOSS(tiny_gptoss())).eval()
    plain = GPTOSS(tiny_gptoss(attn_impl="reference", moe_impl="reference")).eval()
    plain.load_state_dict(fast.state_dict())
    prompt = torch.randint(0, 97, (2, 5))
    assert torch.equal(fast.generate(prompt, 40, temperature=0), plain.generate(prompt, 40, temperature=0))


def test_flex_attention_decodes_with_the_ring_buffer():
    # fewer steps than above: eager FlexAttention on a CPU is slow, but the block mask
    # must follow the ring's out-of-order positions just the same
    model = randomize_(GPTOSS(tiny_gptoss(attn_impl="flex"))).eval()
    tokens = torch.randint(0, 97, (2, 17))
    with torch.no_grad():
        full = model(tokens).logits
        cache = model.new_kv_cache()
        pieces = [model(tokens[:, :12], kv_cache=cache).logits]  # longer than the window of 8
        pieces += [model(tokens[:, t:t + 1], kv_cache=cache).logits for t in (12, 13)]
        pieces.append(model(tokens[:, 14:], kv_cache=cache).logits)
    torch.testing.assert_close(torch.cat(pieces, 1), full, atol=1e-4, rtol=1e-4)


def test_a_tiny_temperature_is_greedy_not_an_error():
    logits = torch.tensor([[1.0, 3.0, 2.0], [0.5, -1.0, 0.25]])
    for temperature in (1e-45, 1e-30, 1e-6):
        assert sample_next(logits, temperature).view(-1).tolist() == [1, 0]
