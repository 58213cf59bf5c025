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


# -- the published MXFP4 layout ------------------------------------------------------------

def quantize_hf_checkpoint(src, dst):
    """Rewrite a transformers-saved gpt-oss checkpoint the way the hub's is stored: every
    expert matrix as MXFP4 *_blocks/*_scales (by our quantizer), shard for shard, plus a
    quantization_config. Written here at the file level, independently of our save_pretrained."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from nanogptoss.weights.mxfp4 import quantize_experts

    dst.mkdir(parents=True, exist_ok=True)
    weight_map = {}
    for shard in sorted(src.glob("*.safetensors")):
        out = {}
        with safe_open(str(shard), framework="pt") as f:
            for name in f.keys():
                t = f.get_tensor(name)
                if name.endswith(("experts.gate_up_proj", "experts.down_proj")):
                    out[f"{name}_blocks"], out[f"{name}_scales"] = quantize_experts(t)
                else:
                    out[name] = t
        save_file(out, str(dst / shard.name), metadata={"format": "pt"})
        weight_map.update({name: shard.name for name in out})
    if (src / "model.safetensors.index.json").exists():
        (dst / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    cfg = json.loads((src / "config.json").read_text())
    cfg["quantization_config"] = {"quant_method": "mxfp4", "modules_to_not_convert": [
        "model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"]}
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


def make_mxfp4_pair(tmp_path, **save):
    """(transformers model loaded from an MXFP4 checkpoint, dequantized; the checkpoint's folder)."""
    from transformers import Mxfp4Config

    cfg = GptOssConfig(
        vocab_size=101, hidden_size=64, intermediate_size=32, head_dim=16, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, num_local_experts=5, num_experts_per_tok=2,
        sliding_window=6, max_position_embeddings=64, rope_parameters=YARN,
    )
    torch.manual_seed(0)
    randomize_(GptOssForCausalLM(cfg)).save_pretrained(tmp_path / "plain", **save)
    folder = quantize_hf_checkpoint(tmp_path / "plain", tmp_path / "mxfp4")
    hf = GptOssForCausalLM.from_pretrained(folder, quantization_config=Mxfp4Config(dequantize=True),
                                           dtype=torch.float32).eval()
    hf.config._attn_implementation = "eager"
    return hf, folder


@pytest.mark.parametrize("experts", ["packed", "dequantized"])
def test_mxfp4_checkpoint_matches_transformers(tmp_path, experts):
    from nanogptoss.weights.mxfp4 import PackedExperts

    hf, folder = make_mxfp4_pair(tmp_path, max_shard_size="40KB")  # sharded: blocks and scales may part
    assert len(list(folder.glob("*.safetensors"))) > 2
    ours = from_pretrained(folder, experts=experts)
    assert isinstance(ours.blocks[0].mlp.experts, PackedExperts) == (experts == "packed")
    tokens = torch.randint(0, 101, (2, 20))  # longer than the window of 6
    with torch.no_grad():
        expected = hf(tokens).logits
        torch.testing.assert_close(ours(tokens).logits, expected, atol=1e-4, rtol=0)
        cache = ours.new_kv_cache()  # and decoding with the cache
        steps = [ours(tokens[:, :7], kv_cache=cache).logits]
        steps += [ours(tokens[:, t:t + 1], kv_cache=cache).logits for t in range(7, 20)]
        torch.testing.assert_close(torch.cat(steps, dim=1), expected, atol=1e-4, rtol=0)
        prompt = tokens[:1, :5]
        theirs = hf.generate(prompt, max_new_tokens=12, do_sample=False, min_new_tokens=12)
        assert torch.equal(ours.generate(prompt, 12, temperature=0.0), theirs)


def test_mxfp4_weights_are_transformers_dequantized_weights(tmp_path):
    hf, folder = make_mxfp4_pair(tmp_path)
    ours = from_pretrained(folder, experts="dequantized")
    for i in range(4):
        for proj in ("gate_up_proj", "down_proj"):
            theirs = getattr(hf.model.layers[i].mlp.experts, proj)
            assert torch.equal(getattr(ours.blocks[i].mlp.experts, proj), theirs), (i, proj)


def test_packed_model_saves_mxfp4_that_transformers_loads(tmp_path):
    from transformers import Mxfp4Config

    _, folder = make_mxfp4_pair(tmp_path)
    packed = from_pretrained(folder, experts="packed")
    packed.save_pretrained(tmp_path / "again")  # packed experts are written as they are
    assert json.loads((tmp_path / "again" / "config.json").read_text())["quantization_config"]["quant_method"] == "mxfp4"
    again = from_pretrained(tmp_path / "again", experts="packed")
    for (name, a), b in zip(packed.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name
    # and a dequantized model quantized on writing: transformers reads the same numbers
    from nanogptoss.weights.hf import save_pretrained

    plain = from_pretrained(folder, experts="dequantized")
    save_pretrained(plain, tmp_path / "requantized", mxfp4_experts=True)
    hf = GptOssForCausalLM.from_pretrained(tmp_path / "requantized", dtype=torch.float32,
                                           quantization_config=Mxfp4Config(dequantize=True))
    hf.config._attn_implementation = "eager"
    tokens = torch.randint(0, 101, (1, 16))
    with torch.no_grad():
        torch.testing.assert_close(hf(tokens).logits, plain(tokens).logits, atol=1e-4, rtol=0)


def test_packed_memory_is_about_a_quarter(tmp_path):
    from nanogptoss.weights.mxfp4 import tensor_bytes

    _, folder = make_mxfp4_pair(tmp_path)
    packed, plain = from_pretrained(folder, experts="packed"), from_pretrained(folder, experts="dequantized")
    experts = lambda m: sum(tensor_bytes(b.mlp.experts) for b in m.blocks)  # noqa: E731
    weights = 4 * 5 * (64 * 64 + 32 * 64)  # layers x experts x (gate_up + down)
    biases = 4 * 5 * (64 + 64) * 4
    assert experts(plain) == weights * 4 + biases
    assert experts(packed) == weights * 17 // 32 + biases  # 4.25 bits a weight


def test_mxfp4_errors_come_before_any_weight_is_read(tmp_path, monkeypatch):
    """A bad checkpoint is refused from the headers alone (tests/bad_inputs.py has the messages)."""
    import nanogptoss.weights.hf as hf_module
    from safetensors import safe_open as real_safe_open

    _, folder = make_mxfp4_pair(tmp_path)
    cfg = json.loads((folder / "config.json").read_text())

    class HeadersOnly:
        def __init__(self, *args, **kwargs):
            self.f = real_safe_open(*args, **kwargs)

        def __enter__(self):
            self.f.__enter__()
            return self

        def __exit__(self, *exc):
            return self.f.__exit__(*exc)

        def keys(self):
            return self.f.keys()

        def get_slice(self, name):
            return self.f.get_slice(name)

        def get_tensor(self, name):
            raise AssertionError(f"read {name} before the checks were done")

    monkeypatch.setattr(hf_module, "safe_open", HeadersOnly)
    bad_configs = {"bitsandbytes": {**cfg, "quantization_config": {"quant_method": "bitsandbytes"}},
                   "block_size": {**cfg, "quantization_config": {"quant_method": "mxfp4", "block_size": 16}},
                   "other arch": {**cfg, "model_type": "llama", "architectures": ["LlamaForCausalLM"]},
                   "wider": {**cfg, "intermediate_size": 64}}
    for what, bad in bad_configs.items():
        (folder / "config.json").write_text(json.dumps(bad))
        with pytest.raises(ValueError):
            from_pretrained(folder)
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(AssertionError, match="before the checks"):  # the good one gets to reading
        from_pretrained(folder)


def test_experts_mode_is_checked(tmp_path):
    hf = make_hf_model(PLAIN)
    hf.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="not quantized"):
        from_pretrained(tmp_path, experts="packed")
    with pytest.raises(ValueError, match="experts must be one of"):
        from_pretrained(tmp_path, experts="fp4")


# -- path safety: nothing is written through a link, nothing read from outside the folder ----

def test_save_pretrained_never_writes_through_a_link(tmp_path):
    import os

    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"precious")
    folder = tmp_path / "ckpt"
    folder.mkdir()
    # the names the save wrote through before: its fixed temporary names, then the final ones
    os.symlink(outside, folder / "model.safetensors.tmp")
    os.symlink(outside, folder / "config.json.tmp")
    model = GPTOSS(tiny_gptoss())
    model.save_pretrained(folder)
    assert outside.read_bytes() == b"precious"
    assert from_pretrained(folder).config.hidden_size == 32
    os.symlink(outside, folder / "link.safetensors")
    (folder / "model.safetensors").unlink()
    os.symlink(outside, folder / "model.safetensors")
    with pytest.raises(ValueError, match="model.safetensors is a symbolic link.*never writes through a link"):
        model.save_pretrained(folder)
    assert outside.read_bytes() == b"precious"


@pytest.mark.parametrize("shard", ["../x.safetensors", "sub/../../x.safetensors", "/tmp/x.safetensors"])
def test_from_pretrained_refuses_shards_outside_the_folder(tmp_path, shard):
    from safetensors.torch import save_file

    from nanogptoss.weights.hf import CheckpointFormatError

    folder = tmp_path / "ckpt"
    GPTOSS(tiny_gptoss()).save_pretrained(folder)
    save_file({"x": torch.zeros(1)}, str(tmp_path / "x.safetensors"))  # present, so only the name is wrong
    (folder / "model.safetensors").rename(folder / "model-00001.safetensors")
    index = {"metadata": {}, "weight_map": {"model.embed_tokens.weight": "model-00001.safetensors",
                                            "lm_head.weight": shard}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointFormatError, match=r"names shards outside .*fix the index's weight_map"):
        from_pretrained(folder)
