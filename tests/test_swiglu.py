import math

import torch

from nanogptoss import swiglu
from nanogptoss.model.swiglu import SwiGLUMLP

from conftest import tiny_gptoss


def test_formula_written_out_element_by_element():
    x = torch.randn(3, 10) * 6  # large enough that some values hit the clamps
    out = swiglu(x, alpha=1.702, limit=7.0)
    for r in range(3):
        for j in range(5):
            g, u = x[r, 2 * j].item(), x[r, 2 * j + 1].item()  # interleaved: gate, up, gate, up, ...
            g, u = min(g, 7.0), max(-7.0, min(u, 7.0))
            expected = g / (1 + math.exp(-1.702 * g)) * (u + 1)
            assert abs(out[r, j].item() - expected) < 1e-4 * max(1.0, abs(expected))


def test_clamps():
    big = torch.tensor([[100.0, 0.0]])
    torch.testing.assert_close(swiglu(big), swiglu(torch.tensor([[7.0, 0.0]])))
    up_big = torch.tensor([[1.0, 50.0]])
    torch.testing.assert_close(swiglu(up_big), swiglu(torch.tensor([[1.0, 7.0]])))
    up_small = torch.tensor([[1.0, -50.0]])
    torch.testing.assert_close(swiglu(up_small), swiglu(torch.tensor([[1.0, -7.0]])))
    # the gate is clamped only from above: very negative gates give ~0 through the sigmoid
    assert swiglu(torch.tensor([[-100.0, 3.0]])).abs().item() < 1e-30


def test_plus_one_passes_the_gate_through_when_up_is_zero():
    g = torch.linspace(-3, 3, 7)
    x = torch.stack([g, torch.zeros_like(g)], dim=-1).reshape(1, -1)
    torch.testing.assert_close(swiglu(x)[0], g * torch.sigmoid(1.702 * g))


def test_dense_module_uses_interleaved_projection():
    cfg = tiny_gptoss(num_experts=1, experts_per_token=1)
    mlp = SwiGLUMLP(cfg)
    x = torch.randn(2, 3, cfg.hidden_size)
    gate_up = x @ mlp.gate_up_proj.weight.T + mlp.gate_up_proj.bias
    expected = swiglu(gate_up) @ mlp.down_proj.weight.T + mlp.down_proj.bias
    torch.testing.assert_close(mlp(x), expected)
