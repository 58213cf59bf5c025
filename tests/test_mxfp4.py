"""MXFP4 against transformers' dequantizer and against the format written out by hand."""

import pytest
import torch
from transformers.integrations.mxfp4 import convert_moe_packed_tensors

from nanogptoss.weights.mxfp4 import (FP4_VALUES, MXFP4Error, PackedExperts, dequantize, dequantize_experts,
                                      moe_packed, quantize, quantize_experts)


def bits(t: torch.Tensor) -> torch.Tensor:
    """The raw bit patterns, so that equal NaNs, infs and signed zeros compare as equal."""
    return t.view(torch.int16 if t.element_size() == 2 else torch.int32)


def random_mxfp4(E=3, rows=40, groups=4):  # groups >= 4: room for the extremes
    blocks = torch.randint(0, 256, (E, rows, groups, 16), dtype=torch.uint8)
    scales = torch.randint(100, 140, (E, rows, groups), dtype=torch.uint8)
    blocks[0, 0, 0] = torch.arange(16, dtype=torch.uint8) * 17  # bytes 0x00, 0x11, ..., 0xff: both nibbles
    blocks[0, 0, 1] = torch.arange(16, dtype=torch.uint8) | (torch.arange(16, dtype=torch.uint8).flip(0) << 4)
    scales[0, 0, :4] = torch.tensor([0, 1, 254, 255], dtype=torch.uint8)  # the scale extremes
    scales[1, 1, :2] = torch.tensor([127, 128], dtype=torch.uint8)
    return blocks, scales


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_dequantize_matches_transformers_bit_for_bit(dtype):
    blocks, scales = random_mxfp4()
    theirs = convert_moe_packed_tensors(blocks, scales, dtype=dtype)  # (E, in, out)
    ours = dequantize_experts(blocks, scales, dtype)
    assert ours.shape == theirs.shape == (3, 4 * 32, 40)
    assert torch.equal(bits(ours), bits(theirs))


def test_dequantize_is_the_format_written_out():
    """Value 2i of a block is the low nibble of byte i, value 2i+1 the high one, times 2^(s-127)."""
    blocks, scales = random_mxfp4(E=2, rows=2, groups=4)
    out = dequantize(blocks, scales, torch.float32)
    for r in range(2):
        for g in range(4):
            for i in range(32):
                byte = int(blocks[0, r, g, i // 2])
                code = byte & 15 if i % 2 == 0 else byte >> 4
                expected = FP4_VALUES[code] * 2.0 ** (int(scales[0, r, g]) - 127)
                expected = torch.tensor(expected, dtype=torch.float32).item()  # 2^128 overflows to inf
                assert float(out[0, r, g * 32 + i]) == expected, (r, g, i)
    # every nibble value appears, in order, in the first block
    first = dequantize(blocks[:1, :1, :1], torch.full((1, 1, 1), 127, dtype=torch.uint8), torch.float32)
    assert first.flatten()[0::2].tolist() == list(FP4_VALUES)


def test_quantize_gives_the_nearest_representable_value():
    torch.manual_seed(0)
    w = torch.randn(6, 8 * 32) * torch.logspace(-3, 2, 6)[:, None]  # blocks at very different magnitudes
    w[0, :32] = 0.0  # an all-zero block
    w[1, :8] = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 6.0]) * 2.0 ** -4  # ties, exactly
    w[1, 8:32] = 0.01
    blocks, scales = quantize(w)
    assert blocks.shape == (6, 8, 16) and scales.shape == (6, 8) and blocks.dtype == scales.dtype == torch.uint8
    back = dequantize(blocks, scales, torch.float32)
    # brute force: every one of the 16 values at the block's scale
    scale = 2.0 ** (scales.float() - 127)
    grid = torch.tensor(FP4_VALUES)[None, None, :] * scale.repeat_interleave(32, dim=1)[..., None]
    distance = (grid - w[..., None]).abs()
    assert torch.equal((back - w).abs(), distance.min(dim=-1).values)
    # the scale is the smallest that holds the block's largest magnitude
    amax = w.reshape(6, 8, 32).abs().amax(-1)
    nonzero = amax > 0
    assert (amax[nonzero] <= 6 * scale[nonzero]).all() and (amax[nonzero] > 3 * scale[nonzero]).all()
    # ties go to the even code: 0.25 -> 0, 0.75 -> 1, 1.25 -> 1, 1.75 -> 2, 2.5 -> 2, 3.5 -> 4, 5 -> 4
    assert (back[1, :8] / 2.0 ** -4).tolist() == [0.0, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0, 6.0]
    # and the representable values come back exactly
    assert torch.equal(dequantize(*quantize(back), torch.float32), back)


def test_quantize_experts_round_trips_through_transformers():
    w = torch.randn(2, 64, 48) * 0.02  # (E, in, out)
    blocks, scales = quantize_experts(w)
    assert blocks.shape == (2, 48, 2, 16)
    back = convert_moe_packed_tensors(blocks, scales, dtype=torch.float32)
    assert back.shape == w.shape
    assert torch.equal(back, dequantize_experts(blocks, scales, torch.float32))
    # each error is at most half the widest step (2 x scale), and the scale is below amax / 3
    amax = w.transpose(1, 2).reshape(2, 48, 2, 32).abs().amax(-1).repeat_interleave(32, -1).transpose(1, 2)
    assert ((back - w).abs() <= amax / 3).all()


def test_packed_experts_equal_the_dequantized_ones():
    from nanogptoss.model.moe import moe_dispatch
    from nanogptoss.model.router import Router

    torch.manual_seed(1)
    packed = PackedExperts(4, 64, 32)
    for proj, (i, o) in {"gate_up_proj": (64, 64), "down_proj": (32, 64)}.items():
        b, s = quantize_experts(torch.randn(4, i, o) * 0.1)
        getattr(packed, f"{proj}_blocks").copy_(b)
        getattr(packed, f"{proj}_scales").copy_(s)
    with torch.no_grad():
        packed.gate_up_proj_bias.normal_()
        packed.down_proj_bias.normal_()
    plain = packed.unpack(torch.float32)
    x = torch.randn(10, 64)
    routing = Router(64, 4, 2)(x)
    torch.testing.assert_close(moe_packed(x, packed, routing), moe_dispatch(x, plain, routing), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="packed in MXFP4"):
        packed.gate_up_proj


def test_bad_blocks_and_scales_are_named():
    blocks, scales = random_mxfp4()
    with pytest.raises(MXFP4Error, match="one scale per block"):
        dequantize(blocks, scales[..., :-1])
    with pytest.raises(MXFP4Error, match="16 bytes"):
        dequantize(blocks[..., :8], scales)
    with pytest.raises(MXFP4Error, match="uint8"):
        dequantize(blocks.int(), scales)
    with pytest.raises(MXFP4Error, match="multiple of 32"):
        quantize(torch.randn(4, 40))
    with pytest.raises(MXFP4Error, match="inf or nan"):
        quantize(torch.full((1, 32), float("nan")))
