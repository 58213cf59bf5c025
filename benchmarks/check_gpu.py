"""Correctness checks of the GPU-only fast paths, to run on a CUDA machine before trusting
its benchmark numbers:

    python benchmarks/check_gpu.py

The CPU test suite covers what a CPU can run (FlexAttention forward, the sink gate's
gradients, grouped GEMM in float32 and bfloat16); this adds what only a GPU runs:
compiled FlexAttention with gradients, the bf16 grouped GEMM with gradients, the
automatic choice, and a compiled decode step. Each check prints ok or raises.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nanogptoss import GPTOSS, GPTOSSConfig, generate  # noqa: E402
from nanogptoss.attention import (attention_flex, attention_mask, attention_reference,  # noqa: E402
                                  flex_block_mask, resolve_attn_impl)
from nanogptoss.moe import MLPBlock, moe_dispatch, moe_grouped, resolve_moe_impl  # noqa: E402


def check_flex(device, dtype, atol):
    torch.manual_seed(0)
    B, H, G, T, h = 2, 8, 2, 300, 64
    q = torch.randn(B, H, T, h, device=device, dtype=dtype, requires_grad=True)
    k = torch.randn(B, G, T, h, device=device, dtype=dtype, requires_grad=True)
    v = torch.randn(B, G, T, h, device=device, dtype=dtype, requires_grad=True)
    sinks = torch.randn(H, device=device, requires_grad=True)
    pos = torch.arange(T, device=device)
    grad_out = torch.randn(B, H, T, h, device=device, dtype=dtype)
    for window in (None, 128):
        ref = attention_reference(q, k, v, attention_mask(pos, pos, window), sinks)
        fast = attention_flex(q, k, v, flex_block_mask(pos, pos, window), sinks)
        torch.testing.assert_close(fast.float(), ref.float(), atol=atol, rtol=atol)
        g_ref = torch.autograd.grad(ref, [q, k, v, sinks], grad_out)
        g_fast = torch.autograd.grad(fast, [q, k, v, sinks], grad_out)
        for name, a, b in zip("q k v sinks".split(), g_fast, g_ref):
            torch.testing.assert_close(a.float(), b.float(), atol=atol * 4, rtol=atol * 4, msg=name)
    print(f"ok  flex attention equals the reference, values and gradients ({dtype})")


def check_grouped(device):
    torch.manual_seed(0)
    cfg = GPTOSSConfig(d_model=256, ffn_hidden=256, n_experts=16, top_k=4)
    block = MLPBlock(cfg).to(device, torch.bfloat16)
    with torch.no_grad():
        for p in block.parameters():
            p.normal_(0, 0.05)
    x = torch.randn(512, 256, device=device, dtype=torch.bfloat16, requires_grad=True)
    assert resolve_moe_impl("auto", x, block.experts, cfg.top_k) == "grouped"
    routing = block.router(x)
    grad_out = torch.randn(512, 256, device=device, dtype=torch.bfloat16)
    ref = moe_dispatch(x, block.experts, routing)
    fast = moe_grouped(x, block.experts, routing)
    torch.testing.assert_close(fast.float(), ref.float(), atol=2e-2, rtol=2e-2)
    params = [x] + list(block.experts.parameters())
    for a, b in zip(torch.autograd.grad(fast, params, grad_out), torch.autograd.grad(ref, params, grad_out)):
        torch.testing.assert_close(a.float(), b.float(), atol=5e-2, rtol=5e-2)
    print("ok  grouped GEMM equals dispatch, values and gradients (bfloat16), and auto picks it")


def check_auto_and_compiled_decode(device):
    q = torch.zeros(1, 4, 8, 64, device=device, dtype=torch.bfloat16)
    assert resolve_attn_impl("auto", q, cached=False) == "flex"
    assert resolve_attn_impl("auto", q, cached=True) == "sdpa"
    torch.manual_seed(0)
    cfg = GPTOSSConfig(vocab_size=512, block_size=256, n_layer=4, d_model=256, ffn_hidden=256,
                       n_experts=8, top_k=2, sliding_window=32)
    model = GPTOSS(cfg).to(device).eval()
    prompt = torch.randint(0, 512, (2, 10), device=device)
    eager = generate(model, prompt, 60, temperature=0)
    compiled = generate(model, prompt, 60, temperature=0, compile=True)
    assert torch.equal(eager, compiled), "compiled decoding chose different tokens"
    with torch.no_grad():
        full = model(eager[:, :-1]).logits.argmax(-1)[:, 9:]
    assert torch.equal(full, eager[:, 10:]), "cached decoding disagrees with the full (flex) forward"
    print("ok  auto picks flex (whole sequence) and sdpa (cached); compiled decode = eager = full forward")


def main():
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check here (the CPU paths are covered by the test suite)")
        return
    device = torch.device("cuda")
    check_flex(device, torch.float32, 2e-4)
    check_flex(device, torch.bfloat16, 3e-2)
    if torch.cuda.get_device_capability(device) >= (8, 0):
        check_grouped(device)
    check_auto_and_compiled_decode(device)


if __name__ == "__main__":
    main()
