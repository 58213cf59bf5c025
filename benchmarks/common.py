"""What the benchmark scripts share: one config and one set of weights in both nanogptoss
and transformers' GptOssForCausalLM, switching our implementation paths, timing, memory,
and the printed table.

The weights go through a Hugging Face checkpoint on disk (`save_pretrained`), and both
models load that same checkpoint, so neither side gets a head start from its own init.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without install

from nanogptoss import GPTOSS, get_config  # noqa: E402
from nanogptoss.kernels import use_kernels  # noqa: E402

# Dense bf16 tensor-core peaks (no sparsity), FLOP/s, for MFU; others need --peak-tflops.
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "T4": 65e12}


def common_args(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--smoke", action="store_true", help="a tiny size that runs in seconds (CI); not a measurement")
    p.add_argument("--preset", default=None, help="config preset (default: cpu-tiny on a CPU, gpu on CUDA)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16"],
                   help="default: float32 on a CPU, bfloat16 on CUDA")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--repeats", type=int, default=None, help="timed repetitions per row (median is reported)")
    p.add_argument("--no-hf", action="store_true", help="skip transformers (e.g. where it is not installed)")
    p.add_argument("--hf-attn", default=None,
                   help="comma-separated transformers attention implementations to time "
                        "(default: eager; for training on CUDA, eager,flex_attention)")
    p.add_argument("--vocab-size", type=int, default=None,
                   help="override the preset's vocabulary (default: the preset's, padded to a multiple of 64 on CUDA)")
    p.add_argument("--peak-tflops", type=float, default=None, help="the accelerator's peak, for MFU")
    p.add_argument("--json", default=None, help="also write the results to this file")
    return p


def setup(args) -> tuple[torch.device, torch.dtype]:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.dtype is None:
        args.dtype = "bfloat16" if device.type == "cuda" else "float32"
    if args.preset is None:
        args.preset = "gpu" if device.type == "cuda" and not args.smoke else "cpu-tiny"
    return device, getattr(torch, args.dtype)


def build_models(config, device, dtype, with_hf: bool = True, seed: int = 0):
    """(ours, hf): the same random weights, loaded the same way into both libraries.

    transformers starts on its "eager" attention; `use_hf_attention` switches it."""
    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as tmp:
        GPTOSS(config).save_pretrained(tmp)
        ours = GPTOSS.from_pretrained(tmp, dtype=dtype, device=device)
        hf = None
        if with_hf:
            from transformers import GptOssForCausalLM
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()

            # "eager" is transformers' sink-aware attention for gpt-oss (it has no SDPA
            # path); the experts keep transformers' default implementation
            hf = GptOssForCausalLM.from_pretrained(tmp, attn_implementation="eager", dtype=dtype).to(device)
    return ours, hf


def hf_attention_choices(args, device, gpu_flex: bool = True) -> list[str]:
    """transformers' attention implementations to time: "eager" (its default for gpt-oss)
    everywhere, and for training on a GPU also its FlexAttention path (which, like ours,
    handles the sinks), so that our numbers are held against its fastest option."""
    if args.hf_attn:
        return args.hf_attn.split(",")
    return ["eager", "flex_attention"] if device.type == "cuda" and gpu_flex else ["eager"]


def use_hf_attention(hf, impl: str) -> None:
    if hf.config._attn_implementation != impl:
        hf.set_attn_implementation(impl)


def hf_description(hf) -> str:
    cfg = hf.config
    return (f"transformers {__import__('transformers').__version__}: attention={cfg._attn_implementation}, "
            f"experts={getattr(cfg, '_experts_implementation', 'eager')}")


def set_paths(model, attn_impl: str, moe_impl: str) -> None:
    """Switch every layer of a built model to the given attention / MoE implementation."""
    use_kernels(model, attn_impl, moe_impl)


def with_paths(model, attn_impl: str, moe_impl: str, fn):
    """`fn` run with the model switched to these paths: rows interleave, so each row
    sets the paths it times instead of relying on the row before it."""
    def run():
        set_paths(model, attn_impl, moe_impl)
        return fn()
    return run


# -- measuring ------------------------------------------------------------------

def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def proc_status_bytes(field: str) -> int:
    """A memory field of /proc/self/status (Linux), e.g. "VmRSS" or its peak "VmHWM", in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


class PeakMemory:
    """Peak memory above what was allocated at the start, in bytes.

    CUDA: the caching allocator's peak. CPU: the process's peak resident set (Linux
    VmHWM, reset through /proc/self/clear_refs) above its resident set at the start;
    freed memory is first handed back to the OS so the start is a fair baseline.
    """

    def __init__(self, device: torch.device):
        self.device, self.peak = device, None

    def __enter__(self):
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = torch.cuda.memory_allocated(self.device)
        else:
            try:
                ctypes.CDLL("libc.so.6").malloc_trim(0)
                Path("/proc/self/clear_refs").write_text("5")
                self.start = proc_status_bytes("VmRSS")
            except (OSError, KeyError):  # not Linux: no CPU memory figure
                self.start = None
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.peak = torch.cuda.max_memory_allocated(self.device) - self.start
        elif self.start is not None:
            self.peak = max(proc_status_bytes("VmHWM") - self.start, 0)


class Row:
    """One line of a table: a name, the call to time, and the tokens one call produces.

    `repeats` and `warmup` override the table's for a row too slow to run as often.
    """

    def __init__(self, name: str, fn, tokens: int, repeats: int | None = None, warmup: int | None = None,
                 note: str = ""):
        self.name, self.fn, self.tokens, self.note = name, fn, tokens, note
        self.repeats, self.warmup = repeats, warmup


def _timed(fn, device) -> float:
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def measure(rows: list[Row], device, repeats: int, warmup: int = 1) -> list[dict]:
    """Median seconds per call of every row, the rows interleaved round by round.

    This machine is shared: interleaving spreads a busy neighbour's slowdown over all
    rows instead of one, and the median drops the rounds it hit hardest. The memory
    meter watches each row's warm-up (or, without one, its first timed run) alone.
    """
    peaks, times = {}, {row.name: [] for row in rows}
    for row in rows:
        n = warmup if row.warmup is None else row.warmup
        print(f"  [{time.strftime('%H:%M:%S')}] {row.name}: {n} warm-up run(s)", flush=True)
        if n > 0:
            with PeakMemory(device) as mem:
                for _ in range(n):
                    row.fn()
                synchronize(device)
            peaks[row.name] = mem.peak
    for r in range(repeats):
        print(f"  [{time.strftime('%H:%M:%S')}] round {r + 1} of {repeats}", flush=True)
        for row in rows:
            if r >= (repeats if row.repeats is None else row.repeats):
                continue
            if row.name in peaks:
                times[row.name].append(_timed(row.fn, device))
            else:
                with PeakMemory(device) as mem:
                    times[row.name].append(_timed(row.fn, device))
                peaks[row.name] = mem.peak
    return [dict(name=row.name, seconds=statistics.median(times[row.name]),
                 tokens_per_s=row.tokens / statistics.median(times[row.name]),
                 peak_mib=None if peaks[row.name] is None else peaks[row.name] / 2**20,
                 note=row.note, runs=len(times[row.name]))
            for row in rows]


def peak_flops(device: torch.device, override_tflops: float | None) -> float | None:
    if override_tflops:
        return override_tflops * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)


# -- printing -------------------------------------------------------------------

def print_table(title: str, rows: list[dict]) -> None:
    print(f"\n{title}")
    print(f"| {'what':<48} | {'tokens/s':>10} | {'ms/run':>9} | {'peak MiB':>8} | note")
    print(f"|{'-' * 50}|{'-' * 12}|{'-' * 11}|{'-' * 10}|------")
    for r in rows:
        mem = "n/a" if r["peak_mib"] is None else f"{r['peak_mib']:.1f}"
        print(f"| {r['name']:<48} | {r['tokens_per_s']:>10.1f} | {r['seconds'] * 1e3:>9.1f} | {mem:>8} | {r['note']}")


def print_ratios(ratios: list[tuple[str, float, float | None]]) -> None:
    """The closing lines: each ratio with its target, if it has one."""
    print("\nratios")
    for label, value, target in ratios:
        verdict = "" if target is None else f"  (target >= {target:g}x: {'met' if value >= target else 'NOT met'})"
        print(f"ratio {label}: {value:.2f}x{verdict}")


def environment(device, dtype, args) -> dict:
    env = dict(torch=torch.__version__, device=str(device), dtype=str(dtype).removeprefix("torch."),
               threads=torch.get_num_threads(), preset=args.preset, smoke=args.smoke)
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def write_json(path: str | None, payload: dict) -> None:
    if path:
        Path(path).write_text(json.dumps(payload, indent=2))


def config_for(args, device, **overrides):
    """The preset's config; on a GPU its vocabulary padded to a multiple of 64 unless
    --vocab-size says otherwise: an odd row length (GPT-2's 50257) misaligns the logits,
    and cuBLAS then falls back to a slow kernel for the unembedding (measured on an H100:
    one 8 ms matmul per step). The padded ids are never drawn as inputs."""
    vocab = get_config(args.preset).vocab_size
    if args.vocab_size:
        vocab = args.vocab_size
    elif device.type == "cuda" and not args.smoke:
        vocab = -(-vocab // 64) * 64
    return get_config(args.preset, vocab_size=vocab, **overrides)


def make_optimizer(model, device):
    """The same AdamW for every row; fused on a GPU (one kernel per step, as train.py)."""
    return torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
