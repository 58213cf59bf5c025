import pytest

from nanogptoss import GPT, GPT2Config, GPTConfig, GPTOSSConfig, count_parameters, flops_per_token, get_config
from nanogptoss.params import preset_table

from conftest import tiny_gptoss


def test_the_two_ends():
    gpt2, oss = GPT2Config(), GPTOSSConfig()
    assert (gpt2.norm, gpt2.pos, gpt2.ffn, gpt2.kv_heads, gpt2.tie_embeddings, gpt2.attn_sinks) == \
        ("layernorm", "learned", "gelu", 12, True, False)
    assert (oss.norm, oss.pos, oss.ffn, oss.attn_sinks, oss.tie_embeddings, oss.bias) == \
        ("rmsnorm", "rope", "swiglu", True, False, True)
    assert oss.is_moe and oss.kv_heads < oss.n_head and oss.layer_types[:2] == ["sliding", "full"]
    assert count_parameters(gpt2).total == 124_439_808  # GPT-2 small with tied embeddings


@pytest.mark.parametrize("preset, total, active", [
    ("gpt-oss-20b", 20.9e9, 3.6e9),  # the model card's numbers
    ("gpt-oss-120b", 116.8e9, 5.1e9),
])
def test_official_parameter_counts_within_one_percent(preset, total, active):
    counts = count_parameters(get_config(preset))
    assert abs(counts.total - total) / total < 0.01
    assert abs(counts.active - active) / active < 0.01


LADDER = [
    {},
    {"norm": "rmsnorm"},
    {"norm": "rmsnorm", "pos": "rope"},
    {"norm": "rmsnorm", "pos": "rope", "n_kv_head": 2},
    {"norm": "rmsnorm", "pos": "rope", "n_kv_head": 2, "sliding_window": 8},
    {"norm": "rmsnorm", "pos": "rope", "n_kv_head": 2, "sliding_window": 8, "attn_sinks": True},
    {"norm": "rmsnorm", "pos": "rope", "n_kv_head": 2, "sliding_window": 8, "attn_sinks": True, "ffn": "swiglu"},
    {"norm": "rmsnorm", "pos": "rope", "n_kv_head": 2, "sliding_window": 8, "attn_sinks": True, "ffn": "swiglu",
     "n_experts": 4, "top_k": 2, "ffn_hidden": 32},
    {"norm": "rmsnorm", "pos": "rope", "n_kv_head": 2, "sliding_window": 8, "attn_sinks": True, "ffn": "swiglu",
     "n_experts": 4, "top_k": 2, "ffn_hidden": 32, "tie_embeddings": False, "head_dim": 16},
    {"bias": False, "router_aux_loss_coef": 0.01, "ffn": "swiglu", "n_experts": 4, "top_k": 2},
]


@pytest.mark.parametrize("changes", LADDER)
def test_count_parameters_matches_the_built_model(changes):
    cfg = GPT2Config(vocab_size=50, block_size=16, n_layer=2, d_model=32, n_head=4, **changes)
    assert count_parameters(cfg).total == GPT(cfg).num_parameters()


def test_active_parameters_count_k_of_e_experts():
    cfg = tiny_gptoss(n_experts=8, top_k=2)
    c = count_parameters(cfg)
    expert = 32 * 2 * 24 + 2 * 24 + 24 * 32 + 32
    assert c.per_layer - c.per_layer_active == 6 * expert
    assert c.total - c.active == cfg.n_layer * 6 * expert + cfg.vocab_size * 32  # and no input embedding


def test_flops_per_token_by_brute_force():
    cfg = tiny_gptoss(n_layer=2, block_size=20, sliding_window=5)
    weights = 2 * (count_parameters(cfg).active - 2 * cfg.n_head)
    keys_banded = sum(min(t, 5) for t in range(1, 21)) / 20
    keys_dense = sum(range(1, 21)) / 20
    expected = weights + 4 * cfg.n_head * cfg.dim_head * (keys_banded + keys_dense)
    assert flops_per_token(cfg) == pytest.approx(expected)
    assert flops_per_token(cfg, training=True) == pytest.approx(3 * expected)


@pytest.mark.parametrize("changes, field", [
    ({"n_head": 5}, "d_model"),
    ({"n_kv_head": 5}, "n_kv_head"),
    ({"n_layer": 0}, "n_layer"),
    ({"vocab_size": 1.5}, "vocab_size"),
    ({"norm": "batchnorm"}, "norm"),
    ({"pos": "alibi"}, "pos"),
    ({"ffn": "relu"}, "ffn"),
    ({"pos": "rope", "head_dim": 7}, "head_dim"),
    ({"rope_scaling_factor": 4.0}, "rope_scaling_factor"),
    ({"pos": "rope", "rope_scaling_factor": 0.5}, "rope_scaling_factor"),
    ({"n_experts": 4, "top_k": 2}, "ffn"),
    ({"ffn": "swiglu", "n_experts": 2, "top_k": 3}, "top_k"),
    ({"router_aux_loss_coef": 0.1}, "router_aux_loss_coef"),
    ({"window_pattern": "SXF"}, "window_pattern"),
    ({"sliding_window": 0}, "sliding_window"),
    ({"dropout": 1.0}, "dropout"),
    ({"attn_impl": "flash"}, "attn_impl"),
])
def test_impossible_configs_name_the_field_to_change(changes, field):
    with pytest.raises(ValueError, match=field):
        GPT2Config(**changes)


def test_replace_validates_again_and_model_rechecks_mutated_config():
    with pytest.raises(ValueError, match="n_kv_head"):
        GPTOSSConfig().replace(n_kv_head=5)
    cfg = tiny_gptoss()
    cfg.n_kv_head = 3
    with pytest.raises(ValueError, match="n_kv_head"):
        GPT(cfg)


def test_presets_and_table():
    for name in ("cpu-tiny", "colab-t4", "gpu"):
        oss, gpt2 = get_config(name), get_config(name, model="gpt2")
        assert oss.is_moe and oss.attn_sinks and not gpt2.is_moe and gpt2.pos == "learned"
        assert oss.vocab_size == gpt2.vocab_size and oss.block_size == gpt2.block_size
    assert get_config("cpu-tiny", n_layer=2).n_layer == 2
    with pytest.raises(ValueError, match="unknown preset"):
        get_config("gpt-5")
    with pytest.raises(ValueError, match="gpt2"):
        get_config("cpu-tiny", model="llama")
    table = preset_table()
    assert "20,914,757,184" in table and "116,829,156,672" in table
