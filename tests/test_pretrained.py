"""Parity with Hugging Face transformers' GptOssForCausalLM on the same random weights,
and the checkpoint round trip both ways."""

import inspect
import json

import pytest
import torch
from transformers import GptOssConfig, GptOssForCausalLM

from nanogptoss import GPTOSS, from_pretrained
from nanogptoss.weights.hf import config_from_hf

from conftest import randomize_, tiny_gptoss

YARN = {"rope_type": "yarn", "rope_theta": 150000.0, "factor": 8.0, "beta_fast": 32.0, "beta_slow": 1.0,
        "truncate": False, "original_max_position_embeddings": 16}
PLAIN = {"rope_type": "default", "rope_theta": 10000.0}


def make_hf_model(rope_parameters, tie=False, layer_types=None):
    cfg = GptOssConfig(
        vocab_size=101, hidden_size=48, intermediate_size=40, head_dim=16, num_hidden_layers=4,
        num_attention_heads=6, num_key_value_heads=2, num_local_experts=5, num_experts_per_tok=2,
        sliding_window=6, max_position_embeddings=64, rope_parameters=rope_parameters,
        layer_types=layer_types, tie_word_embeddings=tie,
    )
    cfg._attn_implementation = "eager"  # the sink-aware path
    torch.manual_seed(0)
    return randomize_(GptOssForCausalLM(cfg).eval())


@pytest.mark.parametrize("rope", [PLAIN, YARN], ids=["rope", "yarn"])
def test_logits_match_transformers_with_and_without_cache(tmp_path, rope):
    hf = make_hf_model(rope)
    hf.save_pretrained(tmp_path)
    ours = from_pretrained(tmp_path)
    assert ours.config.sliding_window == 6 and ours.config.layer_types[:2] == ("sliding_attention", "full_attention")

    tokens = torch.randint(0, 101, (2, 20))  # sequence longer than the window of 6
    with torch.no_grad():
        expected = hf(tokens).logits
        full = ours(tokens).logits
        torch.testing.assert_close(full, expected, atol=1e-4, rtol=0)

        # prefill 7 tokens (more than the window) then decode one at a time
        cache = ours.new_kv_cache()
        steps = [ours(tokens[:, :7], kv_cache=cache).logits]
        for t in range(7, 20):
            steps.append(ours(tokens[:, t:t + 1], kv_cache=cache).logits)
        torch.testing.assert_close(torch.cat(steps, dim=1), expected, atol=1e-4, rtol=0)

        # transformers' own cached decoding agrees with ours step by step
        # (the cache argument was renamed from past_key_values to cache in transformers 5)
        cache_arg = "cache" if "cache" in inspect.signature(hf.forward).parameters else "past_key_values"
        out = hf(tokens[:, :7], use_cache=True)
        hf_steps = [out.logits]
        for t in range(7, 20):
            out = hf(tokens[:, t:t + 1], use_cache=True, **{cache_arg: getattr(out, cache_arg)})
            hf_steps.append(out.logits)
        torch.testing.assert_close(torch.cat(hf_steps, dim=1), expected, atol=1e-4, rtol=0)


def test_loss_matches_transformers(tmp_path):
    hf = make_hf_model(PLAIN)
    hf.save_pretrained(tmp_path)
    ours = from_pretrained(tmp_path)
    tokens = torch.randint(0, 101, (2, 16))
    with torch.no_grad():
        hf_loss = hf(tokens, labels=tokens).loss  # transformers shifts labels inside
        our_loss = ours(tokens[:, :-1], targets=tokens[:, 1:]).loss
    torch.testing.assert_close(our_loss, hf_loss, atol=1e-5, rtol=0)


def test_save_pretrained_loads_in_transformers(tmp_path):
    model = randomize_(GPTOSS(tiny_gptoss(vocab_size=101, rope_scaling_factor=4.0,
                                          initial_context_length=16))).eval()
    model.save_pretrained(tmp_path)
    hf = GptOssForCausalLM.from_pretrained(tmp_path)
    hf.config._attn_implementation = "eager"
    tokens = torch.randint(0, 101, (1, 30))
    with torch.no_grad():
        torch.testing.assert_close(hf(tokens).logits, model(tokens).logits, atol=1e-4, rtol=0)
    # and back again: the same weights, the same config
    again = GPTOSS.from_pretrained(tmp_path)
    assert isinstance(again, GPTOSS)
    assert again.config == model.config
    for (name, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name


def test_tied_embeddings_round_trip(tmp_path):
    hf = make_hf_model(PLAIN, tie=True)
    hf.save_pretrained(tmp_path)
    ours = from_pretrained(tmp_path)
    assert ours.unembedding.weight is ours.embedding.weight
    tokens = torch.randint(0, 101, (1, 12))
    with torch.no_grad():
        torch.testing.assert_close(ours(tokens).logits, hf(tokens).logits, atol=1e-4, rtol=0)


def test_older_config_fields_are_read():
    old = {"model_type": "gpt_oss", "vocab_size": 10, "hidden_size": 8, "intermediate_size": 8,
           "head_dim": 4, "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
           "num_local_experts": 2, "num_experts_per_tok": 2, "sliding_window": 4,
           "rope_theta": 150000, "rope_scaling": {"rope_type": "yarn", "factor": 32.0, "beta_fast": 32.0,
                                                   "beta_slow": 1.0, "truncate": False,
                                                   "original_max_position_embeddings": 4096}}
    cfg = config_from_hf(old)
    assert cfg.rope_scaling_factor == 32.0 and cfg.rope_theta == 150000 and not cfg.rope_truncate
    assert cfg.layer_types == ("sliding_attention", "full_attention") and cfg.swiglu_alpha == 1.702


def test_clear_errors_for_unusable_checkpoints(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        from_pretrained(tmp_path)
    hf = make_hf_model(PLAIN)
    hf.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "quantization_config": {"quant_method": "mxfp4"}}))
    with pytest.raises(ValueError, match="quantized"):
        from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    for f in tmp_path.glob("*.safetensors"):
        f.rename(f.with_suffix(".bin"))
    with pytest.raises(FileNotFoundError, match="pickled weights are not loaded"):
        from_pretrained(tmp_path)


def test_save_pretrained_refuses_a_gpt2(tmp_path):
    from nanogptoss import GPT2, get_config
    with pytest.raises(ValueError, match="GPT-OSS architecture"):
        GPT2(get_config("cpu-tiny", model="gpt2")).save_pretrained(tmp_path)
