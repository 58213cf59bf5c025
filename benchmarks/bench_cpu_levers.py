"""The CPU levers, measured: threads, bf16 autocast and torch.compile on train.py's own step.

Each row is one optimizer step exactly as `python -m nanogptoss train` takes it (the
library's `train_step`: forward under the run's autocast, loss, backward, clipping,
AdamW), for the GPT-OSS and the GPT-2 end of the `cpu-tiny` preset at the batch the
speedrun uses. Rows are interleaved round by round, so a busy neighbour slows them all
alike. Run from the repository root:

    python benchmarks/bench_cpu_levers.py --json benchmarks/results/cpu/cpu_levers.json \
        --md benchmarks/results/cpu/cpu_levers.md
    python benchmarks/bench_cpu_levers.py --smoke     # seconds: checks the script runs (CI)

A faster step only helps a wall-clock budget if it learns as much: bf16 rounds the
activations, so the script also trains each model for --quality-steps steps in float32
and in bf16 from the same seed and reports the loss both reach. torch.compile's first
call compiles; that time is reported apart, since a 10-minute budget pays for it.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from common import Row, measure, print_table, write_json
from nanogptoss import get_config
from nanogptoss.data.stories import describe_source, load_texts, pick_source
from nanogptoss.data.tokenizer import get_tokenizer
from nanogptoss.files import write_text
from nanogptoss.training.train import Run, TokenBatches, TrainConfig, build, train_step


def cpu_features() -> str:
    try:
        flags = open("/proc/cpuinfo").read().split("flags", 1)[1].split("\n", 1)[0].split()
    except (OSError, IndexError):
        return "unknown"
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
    return ", ".join(f for f in wanted if f in flags) or "none of avx2/avx512/amx"


class Setup:
    """One model with its optimizer and batches, stepping with train.py's train_step."""

    def __init__(self, model: str, dtype: torch.dtype, compiled: bool, batch: int, steps_tokens: torch.Tensor,
                 overrides: dict):
        self.cfg = TrainConfig(model=model, preset="cpu-tiny", batch_size=batch, grad_clip=1.0, overrides=overrides)
        self.run = Run(torch.device("cpu"), dtype)
        torch.manual_seed(0)
        self.model, self.optimizer, self.scaler = build(self.cfg, self.run, get_config("cpu-tiny").vocab_size)
        self.train_model = torch.compile(self.model) if compiled else self.model
        seq = self.model.config.max_position_embeddings
        self.batches = TokenBatches(steps_tokens, seq, batch, 0, 0, 1, 1)
        self.tokens = batch * seq
        self.step_no = 0

    def step(self) -> float:
        row = train_step(self.step_no, self.cfg.lr, self.cfg, self.run, self.train_model, self.model,
                         self.optimizer, self.scaler, self.batches)
        self.step_no += 1
        return row["loss"]


def markdown(result: dict, command: str) -> str:
    """The table the README shows: tokens/s of each lever, its ratio, and the loss check."""
    lines = [f"CPU levers: one training step of `cpu-tiny` (batch {result['batch']} x 128 tokens), median of "
             f"{result['rows'][0]['runs']} interleaved rounds; CPU flags {result['cpu']}, torch {result['torch']}; "
             f"the loss check trains on {result['data']}.",
             "", f"Command: `{command}`", "",
             "| model | lever | tokens/s | vs float32, 1 thread | loss after "
             f"{result['quality_steps']} steps |", "|---|---|---|---|---|"]
    for r in result["rows"]:
        model, lever = r["name"].split(": ", 1)
        ratio = result["ratios"].get(f"{r['name']} / float32 1 thread", 1.0)
        kind = "bf16 autocast" if "bf16" in lever else "float32" if lever == "float32, 1 thread(s)" else None
        loss = result["quality_loss"].get(f"{model}: {kind}") if kind else None
        if lever.endswith("torch.compile, 1 thread(s)") and model in result["compile_first_step_s"]:
            lever += f" (first step compiles: {result['compile_first_step_s'][model]:.0f} s)"
        lines.append(f"| {model} | {lever} | {r['tokens_per_s']:,.0f} | {ratio:.2f}x | "
                     f"{'' if loss is None else f'{loss:.4f}'} |")
    return "\n".join(lines) + "\n"


def with_threads(n: int, fn):
    def run():
        torch.set_num_threads(n)
        return fn()
    return run


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes, one round: checks the script runs")
    p.add_argument("--batch", type=int, default=16, help="sequences per step (the speedrun's batch)")
    p.add_argument("--repeats", type=int, default=None, help="timed rounds (median reported)")
    p.add_argument("--quality-steps", type=int, default=None,
                   help="steps trained in fp32 and bf16 to compare the loss (default 150; 0: skip)")
    p.add_argument("--no-compile", action="store_true", help="leave out the torch.compile rows")
    p.add_argument("--json", default=None)
    p.add_argument("--md", default=None, help="also write the markdown table to this file")
    args = p.parse_args(argv)
    repeats = args.repeats or (1 if args.smoke else 15)
    quality_steps = args.quality_steps if args.quality_steps is not None else (3 if args.smoke else 150)
    batch = 2 if args.smoke else args.batch
    overrides = dict(num_hidden_layers=1, max_position_embeddings=16) if args.smoke else {}
    max_threads = torch.get_num_threads()
    thread_counts = sorted({1, max_threads})

    source = pick_source("auto")
    tokenizer = get_tokenizer("tinystories-4k")
    texts = load_texts(source, "train", limit=50 if args.smoke else 2_000)
    stream = torch.tensor([t for text in texts for t in tokenizer.encode_ordinary(text) + [tokenizer.eot_token]],
                          dtype=torch.int32)
    print(f"text: {len(texts):,} training stories ({source}), {stream.numel():,} tokens (tinystories-4k)")
    print(f"CPU: {cpu_features()}; torch {torch.__version__}; {max_threads} threads available; "
          f"cpu-tiny, batch {batch}")

    rows, compile_s = [], {}
    for model in ("gptoss", "gpt2"):
        label = "GPT-OSS" if model == "gptoss" else "GPT-2"
        for threads in thread_counts:
            s = Setup(model, torch.float32, False, batch, stream, overrides)
            rows.append(Row(f"{label}: float32, {threads} thread(s)", with_threads(threads, s.step), s.tokens))
        s = Setup(model, torch.bfloat16, False, batch, stream, overrides)
        rows.append(Row(f"{label}: bf16 autocast, 1 thread(s)", with_threads(1, s.step), s.tokens))
        if not args.no_compile:
            s = Setup(model, torch.float32, True, batch, stream, overrides)
            torch.set_num_threads(1)
            t0 = time.perf_counter()
            s.step()  # compiles
            compile_s[label] = time.perf_counter() - t0
            rows.append(Row(f"{label}: float32, torch.compile, 1 thread(s)", with_threads(1, s.step), s.tokens))
    results = measure(rows, torch.device("cpu"), repeats, warmup=1 if args.smoke else 2)
    torch.set_num_threads(max_threads)
    print_table(f"one training step (train.py's train_step), median of {repeats}, rows interleaved", results)

    by_name = {r["name"]: r for r in results}
    ratios = {}
    for label in ("GPT-OSS", "GPT-2"):
        base = by_name[f"{label}: float32, 1 thread(s)"]["tokens_per_s"]
        for r in results:
            if r["name"].startswith(label + ":") and r["name"] != f"{label}: float32, 1 thread(s)":
                ratios[f"{r['name']} / float32 1 thread"] = r["tokens_per_s"] / base
    print("\nratios (tokens/s over the same model's float32, 1 thread)")
    for k, v in ratios.items():
        print(f"ratio {k}: {v:.2f}x")
    for label, seconds in compile_s.items():
        print(f"{label}: torch.compile's first step took {seconds:.1f} s")

    quality = {}
    if quality_steps:
        torch.set_num_threads(1)
        for model in ("gptoss", "gpt2"):
            label = "GPT-OSS" if model == "gptoss" else "GPT-2"
            for name, dtype in (("float32", torch.float32), ("bf16 autocast", torch.bfloat16)):
                s = Setup(model, dtype, False, batch, stream, overrides)
                losses = [s.step() for _ in range(quality_steps)]
                quality[f"{label}: {name}"] = sum(losses[-10:]) / len(losses[-10:])
        torch.set_num_threads(max_threads)
        print(f"\ntraining loss (mean of the last 10 of {quality_steps} steps, same seed, same batches)")
        for k, v in quality.items():
            print(f"  {k}: {v:.4f}")
    result = dict(benchmark="cpu_levers", data=f"{len(texts):,} training stories, {describe_source(source)}",
                  cpu=cpu_features(), torch=torch.__version__, threads_available=max_threads,
                  batch=batch, rows=results, ratios=ratios, compile_first_step_s=compile_s,
                  quality_steps=quality_steps, quality_loss=quality)
    write_json(args.json, result)
    if args.md:
        command = "python benchmarks/bench_cpu_levers.py " + " ".join(sys.argv[1:] if argv is None else argv)
        write_text(args.md, markdown(result, command))


if __name__ == "__main__":
    main()
