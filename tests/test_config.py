import pytest

from nanogptoss import GPT, GPT2Config, GPTConfig, GPTOSSConfig, count_parameters, flops_per_token, get_config
from nanogptoss.model.params import preset_table

from conftest import tiny_gptoss


def test_the_two_ends():
    gpt2, oss = GPT2Config(), GPTOSSConfig()
    assert (gpt2.norm, gpt2.pos, gpt2.ffn, gpt2.num_key_value_heads, gpt2.tie_word_embeddings, gpt2.attn_sinks) == \
        ("layernorm", "learned", "gelu", 12, True, False)
    assert (oss.norm, oss.pos, oss.ffn, oss.attn_sinks, oss.tie_word_embeddings, oss.bias) == \
        ("rmsnorm", "rope", "swiglu", True, False, True)
    assert oss.is_moe and oss.num_key_value_heads < oss.num_attention_heads and oss.layer_types[:2] == ("sliding_attention", "full_attention")
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
    {"norm": "rmsnorm", "pos": "rope", "num_key_value_heads": 2},
    {"norm": "rmsnorm", "pos": "rope", "num_key_value_heads": 2, "sliding_window": 8},
    {"norm": "rmsnorm", "pos": "rope", "num_key_value_heads": 2, "sliding_window": 8, "attn_sinks": True},
    {"norm": "rmsnorm", "pos": "rope", "num_key_value_heads": 2, "sliding_window": 8, "attn_sinks": True, "ffn": "swiglu"},
    {"norm": "rmsnorm", "pos": "rope", "num_key_value_heads": 2, "sliding_window": 8, "attn_sinks": True, "ffn": "swiglu",
     "num_experts": 4, "experts_per_token": 2, "intermediate_size": 32},
    {"norm": "rmsnorm", "pos": "rope", "num_key_value_heads": 2, "sliding_window": 8, "attn_sinks": True, "ffn": "swiglu",
     "num_experts": 4, "experts_per_token": 2, "intermediate_size": 32, "tie_word_embeddings": False, "head_dim": 16},
    {"bias": False, "router_aux_loss_coef": 0.01, "ffn": "swiglu", "num_experts": 4, "experts_per_token": 2},
]


@pytest.mark.parametrize("changes", LADDER)
def test_count_parameters_matches_the_built_model(changes):
    cfg = GPT2Config(vocab_size=50, max_position_embeddings=16, num_hidden_layers=2, hidden_size=32, num_attention_heads=4, **changes)
    assert count_parameters(cfg).total == GPT(cfg).num_parameters()


def test_active_parameters_count_k_of_e_experts():
    cfg = tiny_gptoss(num_experts=8, experts_per_token=2)
    c = count_parameters(cfg)
    expert = 32 * 2 * 24 + 2 * 24 + 24 * 32 + 32
    assert c.per_layer - c.per_layer_active == 6 * expert
    assert c.total - c.active == cfg.num_hidden_layers * 6 * expert + cfg.vocab_size * 32  # and no input embedding


def test_flops_per_token_by_brute_force():
    cfg = tiny_gptoss(num_hidden_layers=2, max_position_embeddings=20, sliding_window=5)
    weights = 2 * (count_parameters(cfg).active - 2 * cfg.num_attention_heads)
    keys_banded = sum(min(t, 5) for t in range(1, 21)) / 20
    keys_dense = sum(range(1, 21)) / 20
    expected = weights + 4 * cfg.num_attention_heads * cfg.head_dim * (keys_banded + keys_dense)
    assert flops_per_token(cfg) == pytest.approx(expected)
    assert flops_per_token(cfg, training=True) == pytest.approx(3 * expected)


@pytest.mark.parametrize("changes, field", [
    ({"num_attention_heads": 5}, "hidden_size"),
    ({"num_key_value_heads": 5}, "num_key_value_heads"),
    ({"num_hidden_layers": 0}, "num_hidden_layers"),
    ({"vocab_size": 1.5}, "vocab_size"),
    ({"norm": "batchnorm"}, "norm"),
    ({"pos": "alibi"}, "pos"),
    ({"ffn": "relu"}, "ffn"),
    ({"pos": "rope", "head_dim": 7}, "head_dim"),
    ({"rope_scaling_factor": 4.0}, "rope_scaling_factor"),
    ({"pos": "rope", "rope_scaling_factor": 0.5}, "rope_scaling_factor"),
    ({"num_experts": 4, "experts_per_token": 2}, "ffn"),
    ({"ffn": "swiglu", "num_experts": 2, "experts_per_token": 3}, "experts_per_token"),
    ({"router_aux_loss_coef": 0.1}, "router_aux_loss_coef"),
    ({"layer_types": ("sliding", "full") * 6, "sliding_window": 8}, "layer_types"),
    ({"num_hidden_layers": 2, "layer_types": ("full_attention",)}, "layer_types"),
    ({"num_hidden_layers": 2, "layer_types": ("sliding_attention", "full_attention")}, "sliding_window"),
    ({"norm_eps": float("nan")}, "norm_eps"),
    ({"attn_sinks": "no"}, "attn_sinks"),
    ({"norm_eps": "1e-5"}, "norm_eps"),
    ({"initializer_range": float("nan")}, "initializer_range"),
    ({"sliding_window": 0}, "sliding_window"),
    ({"dropout": 1.0}, "dropout"),
    ({"attn_impl": "flash"}, "attn_impl"),
])
def test_impossible_configs_name_the_field_to_change(changes, field):
    with pytest.raises(ValueError, match=field):
        GPT2Config(**changes)


def test_replace_validates_again_and_model_rechecks_mutated_config():
    with pytest.raises(ValueError, match="num_key_value_heads"):
        GPTOSSConfig().replace(num_key_value_heads=5)
    cfg = tiny_gptoss()
    cfg.num_key_value_heads = 3
    with pytest.raises(ValueError, match="num_key_value_heads"):
        GPT(cfg)


def test_derived_fields_are_resolved_once_and_derived_again_by_replace():
    gpt2 = GPT2Config(hidden_size=64, num_attention_heads=4, num_hidden_layers=2)
    assert (gpt2.num_key_value_heads, gpt2.head_dim, gpt2.intermediate_size) == (4, 16, 256)
    assert gpt2.layer_types == ("full_attention",) * 2
    wider = gpt2.replace(num_attention_heads=8, num_hidden_layers=3, sliding_window=4)
    assert (wider.num_key_value_heads, wider.head_dim, wider.layer_types) == \
        (8, 8, ("sliding_attention", "full_attention", "sliding_attention"))
    assert gpt2.replace(ffn="swiglu").intermediate_size == 64
    # a field given explicitly stays as given
    oss = tiny_gptoss()
    assert oss.replace(num_attention_heads=8).head_dim == 16
    assert oss.replace(num_hidden_layers=5).layer_types[-1] == "sliding_attention"


def test_unknown_fields_are_refused_by_name():
    with pytest.raises(ValueError, match="n_layer"):
        get_config("cpu-tiny", n_layer=2)


def test_presets_and_table():
    for name in ("cpu-tiny", "colab-t4", "gpu"):
        oss, gpt2 = get_config(name), get_config(name, model="gpt2")
        assert oss.is_moe and oss.attn_sinks and not gpt2.is_moe and gpt2.pos == "learned"
        assert oss.vocab_size == gpt2.vocab_size and oss.max_position_embeddings == gpt2.max_position_embeddings
    assert get_config("cpu-tiny", num_hidden_layers=2).num_hidden_layers == 2
    with pytest.raises(ValueError, match="unknown preset"):
        get_config("gpt-5")
    with pytest.raises(ValueError, match="gpt2"):
        get_config("cpu-tiny", model="llama")
    table = preset_table()
    assert "20,914,757,184" in table and "116,829,156,672" in table
