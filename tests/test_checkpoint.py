"""Training checkpoints give back exactly what was saved."""

import torch

from nanogptoss import GPTOSS
from nanogptoss.training.train import param_groups
from nanogptoss.weights.checkpoint import Checkpoint, save_checkpoint

from conftest import tiny_gptoss


def test_optimizer_state_dict_after_resume_equals_the_saved_one(tmp_path):
    torch.manual_seed(0)
    model = GPTOSS(tiny_gptoss())
    optimizer = torch.optim.AdamW(param_groups(model, 0.1), lr=1e-3, betas=(0.9, 0.95))
    idx = torch.randint(0, model.config.vocab_size, (2, 8))
    model(idx, targets=idx).loss.backward()
    optimizer.step()
    saved = optimizer.state_dict()
    path = save_checkpoint(tmp_path / "c.safetensors", model, optimizer, step=1)

    fresh = torch.optim.AdamW(param_groups(model, 0.1), lr=1e-3, betas=(0.9, 0.95))
    Checkpoint(path).load_optimizer(fresh)
    restored = fresh.state_dict()
    assert restored["param_groups"] == saved["param_groups"]  # betas a tuple again, not a list
    assert all(type(a["betas"]) is tuple for a in restored["param_groups"])
    assert restored["state"].keys() == saved["state"].keys()
    for i, per_param in saved["state"].items():
        for key, value in per_param.items():
            assert torch.equal(restored["state"][i][key], value), (i, key)
