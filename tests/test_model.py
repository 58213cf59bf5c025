import pytest
import torch
from transformers import GPT2Config as HFGPT2Config, GPT2LMHeadModel

from nanogptoss import GPT, GPT2, GPT2Config, GPTOSS, get_config, load_balancing_loss

from conftest import randomize_, tiny_gptoss
from test_config import LADDER


def small_gpt2(**changes):
    return GPT2Config(vocab_size=50, max_position_embeddings=32, num_hidden_layers=2, hidden_size=32, num_attention_heads=4, **changes)


def test_gpt2_end_matches_transformers_gpt2():
    cfg = small_gpt2()
    ours = randomize_(GPT2(cfg)).eval()
    hf = GPT2LMHeadModel(HFGPT2Config(vocab_size=50, n_positions=32, n_embd=32, num_hidden_layers=2, num_attention_heads=4,
                                      activation_function="gelu_new", resid_pdrop=0, embd_pdrop=0,
                                      attn_pdrop=0, layer_norm_epsilon=1e-5)).eval()
    sd, d = ours.state_dict(), 32
    mapped = {"transformer.wte.weight": sd["embedding.weight"], "transformer.wpe.weight": sd["pos_embedding.weight"],
              "transformer.ln_f.weight": sd["norm.weight"], "transformer.ln_f.bias": sd["norm.bias"]}
    for i in range(2):
        p, h = f"blocks.{i}.", f"transformer.h.{i}."
        mapped[h + "ln_1.weight"], mapped[h + "ln_1.bias"] = sd[p + "attn_norm.weight"], sd[p + "attn_norm.bias"]
        mapped[h + "ln_2.weight"], mapped[h + "ln_2.bias"] = sd[p + "mlp_norm.weight"], sd[p + "mlp_norm.bias"]
        # transformers' GPT-2 uses Conv1D: weights stored (in, out), q/k/v fused
        mapped[h + "attn.c_attn.weight"] = torch.cat([sd[p + f"attn.{n}_proj.weight"] for n in "qkv"]).T
        mapped[h + "attn.c_attn.bias"] = torch.cat([sd[p + f"attn.{n}_proj.bias"] for n in "qkv"])
        mapped[h + "attn.c_proj.weight"], mapped[h + "attn.c_proj.bias"] = sd[p + "attn.o_proj.weight"].T, sd[p + "attn.o_proj.bias"]
        mapped[h + "mlp.c_fc.weight"], mapped[h + "mlp.c_fc.bias"] = sd[p + "mlp.up_proj.weight"].T, sd[p + "mlp.up_proj.bias"]
        mapped[h + "mlp.c_proj.weight"], mapped[h + "mlp.c_proj.bias"] = sd[p + "mlp.down_proj.weight"].T, sd[p + "mlp.down_proj.bias"]
    missing, _ = hf.load_state_dict(mapped, strict=False)
    assert set(missing) <= {"lm_head.weight"}  # tied to wte
    hf.tie_weights()
    tokens = torch.randint(0, 50, (2, 20))
    with torch.no_grad():
        torch.testing.assert_close(ours(tokens).logits, hf(tokens).logits, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("changes", LADDER)
def test_every_rung_of_the_ladder_trains(changes):
    model = GPT(small_gpt2(**changes))
    x = torch.randint(0, 50, (2, 12))
    out = model(x, targets=x)
    assert out.logits.shape == (2, 12, 50) and out.loss.shape == ()
    out.objective.backward()
    missing_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing_grad


def test_tiny_model_overfits_one_batch():
    torch.manual_seed(0)
    model = GPTOSS(tiny_gptoss())
    x = torch.randint(0, 97, (4, 32))
    y = torch.roll(x, -1, dims=1)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(150):
        loss = model(x, targets=y).loss
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert first > 4.0 and loss.item() < 0.05


def test_loss_is_mean_cross_entropy_and_ignores_minus_100():
    model = GPTOSS(tiny_gptoss())
    x = torch.randint(0, 97, (2, 10))
    y = x.clone()
    y[:, :5] = -100
    out = model(x, targets=y)
    logp = out.logits.log_softmax(-1)[:, 5:].gather(-1, y[:, 5:, None])
    torch.testing.assert_close(out.loss, -logp.mean())


def test_aux_loss_reported_separately_with_router_gradient():
    model = GPTOSS(tiny_gptoss(router_aux_loss_coef=0.01))
    x = torch.randint(0, 97, (2, 10))
    out = model(x, targets=x)
    expected = 0.01 * load_balancing_loss(model.router_logits(), 4, 2)
    torch.testing.assert_close(out.aux_loss, expected)
    torch.testing.assert_close(out.objective, out.loss + out.aux_loss)
    out.aux_loss.backward()
    assert model.blocks[0].mlp.router.weight.grad.abs().sum() > 0
    assert GPTOSS(tiny_gptoss())(x, targets=x).aux_loss is None  # off in the gpt-oss presets
    counts = model.expert_counts()
    assert counts.shape == (3, 4) and counts.sum(1).tolist() == [2 * 10 * 2] * 3


def test_reference_and_fast_paths_give_the_same_model():
    fast = randomize_(GPTOSS(tiny_gptoss()))
    slow = GPTOSS(tiny_gptoss(attn_impl="reference", moe_impl="reference"))
    slow.load_state_dict(fast.state_dict())
    x = torch.randint(0, 97, (2, 24))
    a, b = fast(x, targets=x), slow(x, targets=x)
    torch.testing.assert_close(a.logits, b.logits, atol=1e-4, rtol=1e-4)
    a.loss.backward()
    b.loss.backward()
    for (name, p), q in zip(fast.named_parameters(), slow.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-4, rtol=1e-3, msg=name)


def test_embeddings_tied_or_not():
    tied = GPT2(small_gpt2())
    assert tied.unembedding.weight is tied.embedding.weight
    untied = GPTOSS(tiny_gptoss())
    assert untied.unembedding.weight is not untied.embedding.weight


def test_bf16_autocast_keeps_float32_master_weights():
    model = GPTOSS(tiny_gptoss())
    x = torch.randint(0, 97, (2, 16))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, targets=x)
    assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss)
    out.loss.backward()
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert model.blocks[0].attn.sinks.grad is not None


@pytest.mark.parametrize("bad, message", [
    (torch.randint(0, 97, (10,)), "batch dimension"),
    (torch.randint(0, 97, (1, 65)), "exceeds the context, max_position_embeddings = 64"),
    (torch.full((1, 4), 97), r"token ids must lie in \[0, 97\)"),
    (torch.full((1, 4), -3), "token ids"),
    (torch.randn(1, 4), "integer token ids"),
    (torch.zeros(1, 0, dtype=torch.long), "empty"),
])
def test_bad_inputs_raise_clear_errors(bad, message):
    model = GPTOSS(tiny_gptoss())
    with pytest.raises(ValueError, match=message):
        model(bad)


def test_targets_of_the_wrong_shape():
    model = GPTOSS(tiny_gptoss())
    with pytest.raises(ValueError, match="targets must have the shape"):
        model(torch.zeros(2, 8, dtype=torch.long), targets=torch.zeros(2, 7, dtype=torch.long))


def test_presets_build_at_nano_size():
    for model_kind in ("gptoss", "gpt2"):
        model = GPT(get_config("cpu-tiny", model=model_kind))
        assert model(torch.zeros(1, 8, dtype=torch.long)).logits.shape == (1, 8, 4096)
