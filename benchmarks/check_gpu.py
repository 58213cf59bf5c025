"""Correctness checks of the GPU-only fast paths, to run on a CUDA machine before trusting
its benchmark numbers:

    python benchmarks/check_gpu.py                      # every check
    python benchmarks/check_gpu.py grouped "compiled model"   # some of them, by name

The CPU test suite covers what a CPU can run (FlexAttention forward, the sink gate's
gradients, grouped GEMM in float32 and bfloat16); this adds what only a GPU runs:
compiled FlexAttention with gradients (float32, bfloat16, float16; window, sinks, GQA),
the bf16 grouped GEMM with gradients, the automatic choice, training steps in bfloat16
(autocast and pure) and float16 with a GradScaler against a float32 reference, the
whole model under torch.compile against eager, and compiled and uncached decoding
against cached decoding. Every check runs and prints ok or FAIL; the exit status is 1
if any failed.
"""

from __future__ import annotations

import math
import sys
import traceback
from pathlib import Path

import torch
import torch._dynamo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nanogptoss import GPTOSS, GPTOSSConfig, MLPBlock, attention, generate  # noqa: E402
from nanogptoss.kernels import choose_attention, choose_moe, use_kernels  # noqa: E402
from nanogptoss.kernels.attention import attention_flex  # noqa: E402
from nanogptoss.kernels.moe import moe_grouped, moe_sorted  # noqa: E402


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
        ref = attention(q, k, v, pos, pos, window, sinks)
        fast = attention_flex(q, k, v, pos, pos, window, sinks)
        torch.testing.assert_close(fast.float(), ref.float(), atol=atol, rtol=atol)
        g_ref = torch.autograd.grad(ref, [q, k, v, sinks], grad_out)
        g_fast = torch.autograd.grad(fast, [q, k, v, sinks], grad_out)
        for name, a, b in zip("q k v sinks".split(), g_fast, g_ref):
            torch.testing.assert_close(a.float(), b.float(), atol=atol * 4, rtol=atol * 4, msg=name)
    print(f"ok  flex attention equals the reference, values and gradients ({dtype})")


def check_grouped(device):
    torch.manual_seed(0)
    cfg = GPTOSSConfig(hidden_size=256, intermediate_size=256, num_experts=16, experts_per_token=4)
    block = MLPBlock(cfg).to(device, torch.bfloat16)
    with torch.no_grad():
        for p in block.parameters():
            p.normal_(0, 0.05)
    x = torch.randn(512, 256, device=device, dtype=torch.bfloat16, requires_grad=True)
    assert choose_moe("auto", x, block.experts, cfg.experts_per_token) == "grouped"
    routing = block.router(x)
    grad_out = torch.randn(512, 256, device=device, dtype=torch.bfloat16)
    ref = moe_sorted(x, block.experts, routing)
    fast = moe_grouped(x, block.experts, routing)
    torch.testing.assert_close(fast.float(), ref.float(), atol=2e-2, rtol=2e-2)
    params = [x] + list(block.experts.parameters())
    # the router's graph is shared by both paths: keep it for the second backward
    # (bias gradients are sums over hundreds of bf16 rows: compared as whole tensors)
    for a, b in zip(torch.autograd.grad(fast, params, grad_out, retain_graph=True),
                    torch.autograd.grad(ref, params, grad_out)):
        assert relative_error(a, b) < 1e-2, relative_error(a, b)
    print("ok  grouped GEMM equals the sorted dispatch, values and gradients (bfloat16), and auto picks it")


def check_auto_and_compiled_decode(device):
    q = torch.zeros(1, 4, 8, 64, device=device, dtype=torch.bfloat16)
    assert choose_attention("auto", q, k_positions_are_queries=True) == "flex"
    assert choose_attention("auto", q, k_positions_are_queries=False) == "sdpa"
    torch.manual_seed(0)
    cfg = GPTOSSConfig(vocab_size=512, max_position_embeddings=256, num_hidden_layers=4, hidden_size=256, intermediate_size=256,
                       num_experts=8, experts_per_token=2, sliding_window=32)
    model = GPTOSS(cfg).to(device).eval()
    prompt = torch.randint(0, 512, (2, 10), device=device)
    eager = generate(model, prompt, 60, temperature=0)
    compiled = generate(model, prompt, 60, temperature=0, compile=True)
    assert torch.equal(eager, compiled), "compiled decoding chose different tokens"
    with torch.no_grad():
        full = model(eager[:, :-1]).logits.argmax(-1)[:, 9:]
    assert torch.equal(full, eager[:, 10:]), "cached decoding disagrees with the full (flex) forward"
    print("ok  auto picks flex (whole sequence) and sdpa (cached); compiled decode = eager = full forward")


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def small_model(device, seed=0, **overrides):
    """A GPT-OSS with every feature on, random weights away from init (sinks and biases too)."""
    torch.manual_seed(seed)
    settings = dict(vocab_size=512, max_position_embeddings=256, num_hidden_layers=4, hidden_size=256, num_attention_heads=4, num_key_value_heads=2, head_dim=64,
                    intermediate_size=256, num_experts=8, experts_per_token=2, sliding_window=64)
    settings.update(overrides)
    model = GPTOSS(GPTOSSConfig(**settings)).to(device)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1 and "norm" not in name:
                p.normal_(0, 0.5)
    return model


def set_paths(model, attn: str, moe: str) -> None:
    use_kernels(model, attn, moe)


def loss_and_grads(model, idx, autocast_dtype=None, scaler=None):
    model.zero_grad(set_to_none=True)
    with torch.autocast(idx.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        loss = model(idx[:, :-1], targets=idx[:, 1:]).loss
    (scaler.scale(loss) if scaler is not None else loss).backward()
    grads = {n: p.grad.float() / (scaler.get_scale() if scaler is not None else 1.0)
             for n, p in model.named_parameters() if p.grad is not None}
    return loss.float().item(), grads


def grad_errors(grads: dict, ref: dict) -> tuple[float, float, str]:
    """Relative error of all gradients together, and the worst single parameter's (with its
    name): a sum over many tokens can cancel down to a small gradient whose low-precision
    rounding is large relative to it, so that one is held to a looser bound."""
    names = list(ref)
    total = relative_error(torch.cat([grads[n].flatten() for n in names]), torch.cat([ref[n].flatten() for n in names]))
    worst, name = max((relative_error(grads[n], ref[n]), n) for n in names)
    return total, worst, name


def assert_grads_close(grads: dict, ref: dict, tol: float, what: str) -> str:
    total, worst, name = grad_errors(grads, ref)
    # the worst single tensor: a bias or router gradient summed over a thousand tokens
    # whose terms nearly cancel keeps bf16's rounding of each term (0.4%) but not its size
    assert total < tol and worst < 0.5, (f"{what} gradients differ from the reference: {total:.2e} overall, "
                                             f"{worst:.2e} for {name}")
    return f"{what} {total:.1e} (worst {worst:.1e})"


def check_training_dtypes(device):
    """A training step in bf16 (autocast and pure bf16 weights) and fp16 (autocast +
    GradScaler), fast paths, against float32 on the reference paths."""
    model = small_model(device)
    idx = torch.randint(0, 512, (4, 257), device=device)
    set_paths(model, "reference", "reference")
    ref_loss, ref_grads = loss_and_grads(model, idx)
    set_paths(model, "auto", "auto")
    fp32_loss, fp32_grads = loss_and_grads(model, idx)
    assert abs(fp32_loss - ref_loss) < 1e-4, (fp32_loss, ref_loss)
    report = [assert_grads_close(fp32_grads, ref_grads, 1e-3, "fp32 fast")]
    for dtype, tol in ((torch.bfloat16, 3e-2), (torch.float16, 1e-2)):
        scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
        loss, grads = loss_and_grads(model, idx, dtype, scaler)
        assert abs(loss - ref_loss) / ref_loss < tol / 5, (dtype, loss, ref_loss)
        report.append(assert_grads_close(grads, ref_grads, tol, f"{str(dtype)[6:]} autocast"))
    # the GradScaler path end to end: a few optimizer steps stay finite and lower the loss
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    scaler = torch.amp.GradScaler(device.type)
    losses = []
    for _ in range(8):
        with torch.autocast(device.type, dtype=torch.float16):
            loss = model(idx[:, :-1], targets=idx[:, 1:]).loss
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0], losses
    # pure bf16 weights, as the benchmarks train: flex + grouped GEMM
    pure = small_model(device).to(torch.bfloat16)
    h = torch.zeros(8, 256, device=device, dtype=torch.bfloat16, requires_grad=True)
    if device.type == "cuda":
        assert choose_moe("auto", h, pure.blocks[0].mlp.experts, 2) == "grouped"
    loss, grads = loss_and_grads(pure, idx)
    assert abs(loss - ref_loss) / ref_loss < 2e-2, (loss, ref_loss)
    report.append(assert_grads_close(grads, ref_grads, 5e-2, "pure bf16"))
    print(f"ok  training step gradients vs float32 reference paths, relative error: {'; '.join(report)}; "
          f"fp16 + GradScaler: loss {losses[0]:.3f} -> {losses[-1]:.3f} in 8 steps")


def check_compiled_model(device):
    """torch.compile of the whole model (training: flex + grouped GEMM in bf16) equals eager."""
    from torch._dynamo.utils import counters

    model = small_model(device, seed=1).to(torch.bfloat16)
    idx = torch.randint(0, 512, (4, 257), device=device)
    eager_loss, eager_grads = loss_and_grads(model, idx)
    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(model)
    comp_loss, comp_grads = loss_and_grads(compiled, idx)
    comp_grads = {n.removeprefix("_orig_mod."): g for n, g in comp_grads.items()}
    assert abs(comp_loss - eager_loss) / eager_loss < 1e-2, (comp_loss, eager_loss)
    report = assert_grads_close(comp_grads, eager_grads, 3e-2, "gradients")
    breaks = sum(counters["graph_break"].values())
    reasons = "; ".join(list(counters["graph_break"])[:3])
    print(f"ok  torch.compile(model) equals eager in bf16 (loss {comp_loss:.4f} vs {eager_loss:.4f}, {report}); "
          f"graph breaks: {breaks}{' (' + reasons + ')' if breaks else ''}")


def check_uncached_decode(device):
    """Decoding without a cache (a longer sequence every step, through compiled flex) picks
    the same tokens as with one."""
    model = small_model(device, seed=2).eval()
    prompt = torch.randint(0, 512, (2, 12), device=device)
    cached = generate(model, prompt, 40, temperature=0)
    uncached = generate(model, prompt, 40, temperature=0, use_cache=False)
    assert torch.equal(cached, uncached), "uncached decoding chose different tokens"
    print("ok  uncached decoding (flex, growing length) = cached decoding (sdpa + ring buffer), 40 tokens")


def main():
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check here (the CPU paths are covered by the test suite)")
        return
    device = torch.device("cuda")
    print(f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}")
    # one process here runs flex in three dtypes, with and without gradients, at several
    # sizes: more variants than dynamo's default limit of 8 compiled versions (a training
    # run needs one or two), past which it would fall back to the slow unfused kernel
    torch._dynamo.config.recompile_limit = 64
    checks = {
        "flex float32": lambda: check_flex(device, torch.float32, 2e-4),
        "flex bfloat16": lambda: check_flex(device, torch.bfloat16, 3e-2),
        "flex float16": lambda: check_flex(device, torch.float16, 1e-2),
        "grouped": lambda: check_grouped(device),
        "auto and compiled decode": lambda: check_auto_and_compiled_decode(device),
        "training dtypes": lambda: check_training_dtypes(device),
        "compiled model": lambda: check_compiled_model(device),
        "uncached decode": lambda: check_uncached_decode(device),
    }
    if torch.cuda.get_device_capability(device) < (8, 0):
        del checks["grouped"]  # the grouped GEMM kernel needs Ampere or newer
    wanted = sys.argv[1:]
    unknown = set(wanted) - set(checks)
    if unknown:
        sys.exit(f"unknown check(s) {sorted(unknown)}; choose from {list(checks)}")
    if wanted:
        checks = {name: check for name, check in checks.items() if name in wanted}
    failed = []
    for name, check in checks.items():
        try:
            check()
        except Exception:
            failed.append(name)
            print(f"FAIL {name}")
            traceback.print_exc()
    print(f"{len(checks) - len(failed)} of {len(checks)} checks passed" + (f"; failed: {failed}" if failed else ""))
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
