"""`nanogptoss.pretrained` (the book's shipped models) reads the files `nanogptoss.book.export` writes: the same model
(config, weights, tied unembedding) for both architectures; bad names and foreign files
answered in one line; the export command writes what a training checkpoint holds."""

import pytest
import torch

from nanogptoss import GPT, GPT2Config, GPTOSSConfig
from nanogptoss.weights import shipped
from nanogptoss.book.export import export_model, main as export_main
from nanogptoss.weights.checkpoint import save_checkpoint

TINY = dict(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=32)
CONFIGS = {"gptoss": GPTOSSConfig(**TINY, num_key_value_heads=2, num_experts=4, experts_per_token=2,
                                  sliding_window=8),
           "gpt2": GPT2Config(**TINY)}


@pytest.mark.parametrize("kind", CONFIGS)
@pytest.mark.parametrize("dtype, tol", [("fp32", 0.0), ("fp16", 2e-2)])
def test_an_exported_model_reads_back_as_the_same_model(tmp_path, kind, dtype, tol):
    torch.manual_seed(0)
    model = GPT(CONFIGS[kind]).eval()
    export_model(model, tmp_path / "m.safetensors", dtype, tokenizer="gpt2-4k")
    back, meta = shipped.read_exported(tmp_path / "m.safetensors")
    assert back.config == model.config and meta["tokenizer"] == "gpt2-4k"
    if model.config.tie_word_embeddings:
        assert back.unembedding.weight is back.embedding.weight
    ids = torch.randint(0, 64, (2, 20))
    with torch.no_grad():
        diff = (back(ids).logits - model(ids).logits).abs().max().item()
    assert diff <= tol, diff


def test_pretrained_names_and_missing_files(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="no pretrained model 'tinystories'; choose one of tinystories-gptoss"):
        shipped.pretrained("tinystories")
    monkeypatch.setattr(shipped, "PRETRAINED_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match="is missing from this install of nanogptoss"):
        shipped.pretrained("tinystories-gpt2")
    torch.manual_seed(0)
    export_model(GPT(CONFIGS["gpt2"]), tmp_path / "tinystories-gpt2.safetensors", "fp16")
    model = shipped.pretrained("tinystories-gpt2")
    assert model.tokenizer_name == "tinystories-4k" and not model.training
    assert next(model.parameters()).dtype == torch.float32  # stored in fp16, computed in float32


def test_a_file_not_from_the_exporter_is_refused(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="was not written by nanogptoss.book.export"):
        shipped.read_exported(tmp_path / "other.safetensors")


def test_the_export_command_writes_a_training_checkpoints_model(tmp_path):
    torch.manual_seed(0)
    model = GPT(CONFIGS["gptoss"]).eval()
    save_checkpoint(tmp_path / "checkpoint.safetensors", model, step=3)
    export_main([str(tmp_path / "checkpoint.safetensors"), str(tmp_path / "out.safetensors"), "--dtype", "fp32"])
    back, _ = shipped.read_exported(tmp_path / "out.safetensors")
    ids = torch.randint(0, 64, (1, 12))
    with torch.no_grad():
        assert torch.equal(back(ids).logits, model(ids).logits)


def test_the_shipped_models_load_fit_the_budget_and_are_the_ones_their_readme_describes():
    import hashlib
    import re

    readme = (shipped.PRETRAINED_DIR / "README.md").read_text()
    total = 0
    for name in shipped.NAMES:
        path = shipped.pretrained_path(name)
        total += path.stat().st_size
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert f"`{path.name}` {digest}" in readme, f"{path.name} is not the file its README describes"
        model = shipped.pretrained(name)
        params = sum(p.numel() for p in model.parameters())
        assert re.search(rf"\| {name} \| `{path.name}` \| [\d.]+ \| {params:,} \|", readme), name
        ids = model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=5, temperature=0.0)
        assert ids.shape == (1, 8)
    assert total <= 8_000_000  # the budget for both, as shipped
