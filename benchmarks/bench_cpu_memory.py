"""Where a CPU run's memory goes: the process's resident set over training steps, per dtype.

Trains `cpu-tiny` (GPT-OSS or GPT-2) for --steps steps of --batch x 128 random token ids
in float32 and in bf16 autocast, each in a fresh process, and prints the peak resident
set above the start, the resident set at the end, and what is left after glibc's
`malloc_trim` hands freed heap memory back to the system. A large drop means the growth
was memory freed by torch but kept by the allocator, not live tensors. Linux only.

    python benchmarks/bench_cpu_memory.py --steps 80
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import subprocess
import sys
from pathlib import Path

import torch

from common import proc_status_bytes  # also puts the checkout on sys.path
from nanogptoss import GPT, get_config


def rss_mb(field: str) -> float:
    return proc_status_bytes(field) / 2**20


def one_run(model: str, dtype_name: str, steps: int, batch: int) -> dict:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    dtype = getattr(torch, dtype_name)
    net = GPT(get_config("cpu-tiny", model))
    optimizer = torch.optim.AdamW(net.parameters())
    x = torch.randint(0, net.config.vocab_size, (batch, net.config.max_position_embeddings))
    libc = ctypes.CDLL("libc.so.6")
    gc.collect()
    libc.malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")  # resets the peak (VmHWM)
    start = rss_mb("VmRSS")
    for _ in range(steps):
        with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
            out = net(x, x)
        out.objective.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    end = rss_mb("VmRSS")
    gc.collect()
    libc.malloc_trim(0)
    return dict(model=model, dtype=dtype_name, steps=steps, batch=batch, peak_mb=rss_mb("VmHWM") - start,
                end_mb=end - start, after_trim_mb=rss_mb("VmRSS") - start)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=80)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--models", nargs="+", default=["gptoss", "gpt2"], choices=["gptoss", "gpt2"])
    p.add_argument("--one", nargs=2, metavar=("MODEL", "DTYPE"), help=argparse.SUPPRESS)  # the child process
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(one_run(*args.one, args.steps, args.batch)))
        return
    print(f"cpu-tiny, {args.steps} training steps of batch {args.batch}, one thread, each in a fresh process; "
          "resident memory above the start, MB")
    print("| model | dtype | peak | at the end | after malloc_trim |\n|---|---|---|---|---|")
    for model in args.models:
        for dtype in ("float32", "bfloat16"):
            cmd = [sys.executable, __file__, "--one", model, dtype, "--steps", str(args.steps),
                   "--batch", str(args.batch)]
            r = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
            print(f"| {model} | {dtype} | {r['peak_mb']:,.0f} | {r['end_mb']:,.0f} | {r['after_trim_mb']:,.0f} |",
                  flush=True)


if __name__ == "__main__":
    main()
