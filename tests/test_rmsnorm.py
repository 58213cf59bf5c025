import pytest
import torch
from torch import nn

from nanogptoss import RMSNorm


def test_matches_torch_rmsnorm_forward_and_backward():
    ours, ref = RMSNorm(16, eps=1e-5), nn.RMSNorm(16, eps=1e-5)
    with torch.no_grad():
        ours.weight.normal_()
        ref.weight.copy_(ours.weight)
    x = torch.randn(3, 5, 16, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    torch.testing.assert_close(ours(x), ref(x_ref))
    ours(x).pow(2).sum().backward()
    ref(x_ref).pow(2).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad)
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad)


def test_formula_written_out():
    norm = RMSNorm(4)
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([1.0, 2.0, 0.5, -1.0]))
    x = torch.tensor([[1.0, -2.0, 3.0, 4.0]])
    rms = ((1 + 4 + 9 + 16) / 4 + 1e-5) ** 0.5
    expected = torch.tensor([[1 / rms, -4 / rms, 1.5 / rms, -4 / rms]])
    torch.testing.assert_close(norm(x), expected)


def test_low_precision_input_is_normalised_in_float32():
    norm = RMSNorm(64)
    x = torch.randn(8, 64) * 1e-3  # small activations: their squares underflow in fp16
    out = norm(x.half())
    assert out.dtype == torch.float16
    torch.testing.assert_close(out.float(), norm(x.half().float()), atol=1e-3, rtol=1e-3)
    assert torch.isfinite(out).all()


def test_scale_invariance_and_unit_rms():
    norm = RMSNorm(32, eps=0.0)
    x = torch.randn(4, 32)
    torch.testing.assert_close(norm(x), norm(7.0 * x))
    torch.testing.assert_close(norm(x).pow(2).mean(-1), torch.ones(4))


def test_wrong_width_is_a_clear_error():
    with pytest.raises(ValueError, match="last dimension of 16"):
        RMSNorm(16)(torch.randn(2, 8))
