import math

import pytest
import torch
from transformers import GptOssConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from nanogptoss import GPTOSS, RotaryEmbedding, apply_rotary_emb
from nanogptoss.model.rope import rope_inv_freq, yarn_inv_freq

from conftest import tiny_gptoss


def rotate_written_out(x, positions, inv_freq):
    """Each pair (x[i], x[i + h/2]) rotated by the angle position * inv_freq[i], with a 2x2 matrix."""
    out = torch.empty_like(x)
    half = x.shape[-1] // 2
    for t, p in enumerate(positions.tolist()):
        for i in range(half):
            a = p * inv_freq[i].item()
            rot = torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
            pair = torch.stack([x[..., t, i], x[..., t, i + half]], dim=-1)
            turned = pair @ rot.T
            out[..., t, i], out[..., t, i + half] = turned[..., 0], turned[..., 1]
    return out


def test_rotation_matches_written_out_two_by_two_rotations():
    rope = RotaryEmbedding(8, theta=10_000.0)
    x = torch.randn(2, 3, 5, 8)
    positions = torch.tensor([0, 1, 2, 7, 30])
    cos, sin = rope(positions)
    torch.testing.assert_close(apply_rotary_emb(x, cos, sin), rotate_written_out(x, positions, rope.inv_freq))


def test_inverse_frequencies():
    torch.testing.assert_close(rope_inv_freq(8, 100.0), torch.tensor([1.0, 100 ** -0.25, 100 ** -0.5, 100 ** -0.75]))


def test_dot_product_depends_only_on_relative_position():
    rope = RotaryEmbedding(16, theta=150_000.0)
    q, k = torch.randn(16), torch.randn(16)

    def score(m, n):
        cq, sq = rope(torch.tensor([m]))
        ck, sk = rope(torch.tensor([n]))
        return (apply_rotary_emb(q[None], cq, sq) * apply_rotary_emb(k[None], ck, sk)).sum()

    torch.testing.assert_close(score(5, 2), score(105, 102), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(score(40, 40), (q * k).sum(), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(score(5, 2), score(5, 3))


def test_rotation_preserves_length_without_yarn():
    rope = RotaryEmbedding(32)
    x = torch.randn(4, 10, 32)
    cos, sin = rope(torch.arange(10))
    torch.testing.assert_close(apply_rotary_emb(x, cos, sin).norm(dim=-1), x.norm(dim=-1))


@pytest.mark.parametrize("truncate", [False, True])
def test_yarn_matches_transformers(truncate):
    params = {"rope_type": "yarn", "rope_theta": 150000.0, "factor": 32.0, "beta_fast": 32.0,
              "beta_slow": 1.0, "truncate": truncate, "original_max_position_embeddings": 4096}
    hf_config = GptOssConfig(head_dim=64, hidden_size=2880, num_attention_heads=64, rope_parameters=params)
    expected, attention_factor = ROPE_INIT_FUNCTIONS["yarn"](hf_config, "cpu")
    ours = RotaryEmbedding(64, 150000.0, 32.0, 4096, 32.0, 1.0, truncate)
    torch.testing.assert_close(ours.inv_freq, expected)
    assert ours.concentration == pytest.approx(attention_factor)
    assert ours.concentration == pytest.approx(0.1 * math.log(32) + 1)  # about 1.3466


def test_yarn_keeps_fast_dimensions_and_interpolates_slow_ones():
    plain, yarn = rope_inv_freq(64, 150000.0), yarn_inv_freq(64, 150000.0, 32.0, 4096)
    torch.testing.assert_close(yarn[:5], plain[:5])  # many rotations in 4096 tokens: untouched
    torch.testing.assert_close(yarn[-5:], plain[-5:] / 32)  # less than one rotation: stretched 32x
    assert torch.all(yarn <= plain + 1e-12)
    torch.testing.assert_close(yarn_inv_freq(64, 150000.0, 1.0, 4096), plain)


def test_cos_sin_scaled_by_concentration():
    rope = RotaryEmbedding(16, scaling_factor=32.0, initial_context_length=64)
    cos, sin = rope(torch.arange(5))
    torch.testing.assert_close(cos ** 2 + sin ** 2, torch.full_like(cos, rope.concentration ** 2))


def test_frequencies_stay_float32_when_the_model_is_cast():
    model = GPTOSS(tiny_gptoss()).to(torch.bfloat16)
    assert model.rope.inv_freq.dtype == torch.float32
    torch.testing.assert_close(model.rope.inv_freq, rope_inv_freq(16, 150000.0))


def test_odd_head_dim_is_refused():
    with pytest.raises(ValueError, match="even"):
        RotaryEmbedding(7)
