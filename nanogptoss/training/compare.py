"""GPT-OSS against GPT-2, honestly: `python -m nanogptoss compare --help`.

Two experiments, one runner:

* grid    — GPT-OSS and GPT-2 side by side over heads x layers (the seed project's
            table, at sizes the device can train), the GPT-2 widened or narrowed so
            both have the same *active* parameters (or the same training FLOPs);
* ladder  — GPT-2, then one gpt-oss switch turned on at a time, up to the full
            GPT-OSS of the preset, so each piece's effect can be read off.

Every run is `python -m nanogptoss train` in its own process (so peak memory is the
run's own), repeated over seeds; after training, the runner measures the weights'
size on disk and greedy generation speed. It writes `table.csv`, `table.md` and
plots into the output folder. Losses are compared in bits per byte, which does not
depend on the tokenizer; on the synthetic stories the grammar's exact entropy gives
the floor no model can beat.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..config import MODELS, PRESETS, GPTConfig, get_config
from ..data.stories import describe_source, pick_source
from ..files import FolderLock, atomic_path, write_text
from ..model.generate import generate
from ..model.params import count_parameters, flops_per_token
from ..weights.checkpoint import Checkpoint, load_model
from .train import TrainConfig, add_options, check_folder, option_type, options_from_args, read_metrics


@dataclass
class RunSpec:
    """One trained model: a row label, an architecture end, config overrides, a seed."""

    label: str
    model: str  # "gptoss" | "gpt2": the end whose preset sizes the overrides start from
    overrides: dict = field(default_factory=dict)
    seed: int = 0
    group: str = ""  # rows with the same group share a line in the table (seeds averaged)
    budget: str = ""  # "" for a step budget; "speedrun" for a wall-clock one, kept in its own folders
    train: dict = field(default_factory=dict)  # this row's own training options (speedrun --per-model)

    @property
    def name(self) -> str:
        slug = "".join(c if c.isalnum() else "-" for c in self.label.lower()).strip("-")
        while "--" in slug:
            slug = slug.replace("--", "-")
        return f"{self.budget + '-' if self.budget else ''}{slug}-s{self.seed}"

    def config(self, preset: str) -> GPTConfig:
        return get_config(preset, self.model, **self.overrides)


# --------------------------------------------------------------------------- the two experiments

def _round8(x: float) -> int:
    return max(8, int(round(x / 8)) * 8)


def matched_gpt2_hidden(gptoss: GPTConfig, gpt2: GPTConfig, match: str = "active") -> int:
    """The GPT-2 MLP width whose active parameters (or training FLOPs) equal the GPT-OSS's.

    Both quantities grow linearly with the MLP width, so two evaluations give the line.
    """
    def measure(cfg: GPTConfig) -> float:
        if match == "active":
            return count_parameters(cfg).active
        if match == "flops":
            return flops_per_token(cfg, training=True)
        raise ValueError(f"match must be 'active' or 'flops', got {match!r}")

    target = measure(gptoss)
    a, b = measure(gpt2.replace(intermediate_size=8)), measure(gpt2.replace(intermediate_size=16))
    width = 8 + (target - a) / ((b - a) / 8)
    if width < 8:
        raise ValueError(f"even an 8-wide GPT-2 MLP exceeds the GPT-OSS's {match} size; "
                         "choose a larger preset or fewer layers")
    return _round8(width)


def grid_specs(preset: str, heads: list[int], layers: list[int], seeds: list[int],
               match: str = "active") -> list[RunSpec]:
    """GPT-OSS and a matched GPT-2 for every (heads, layers) cell.

    head_dim follows hidden_size / heads at both ends, so a cell differs only in architecture;
    the GPT-OSS keeps the preset's grouping ratio (query heads per KV head) where it divides.
    """
    base = PRESETS[preset]
    d = base["hidden_size"]
    ratio = base["num_attention_heads"] // base.get("num_key_value_heads", base["num_attention_heads"])
    specs = []
    for n_layers in layers:
        for n_heads in heads:
            if n_heads < 1 or n_layers < 1:
                raise ValueError(f"--heads and --layers must be at least 1, got {n_heads} heads and {n_layers} layers")
            if d % n_heads:
                raise ValueError(f"hidden_size {d} is not divisible by {n_heads} heads; choose heads that divide it")
            kv = n_heads // ratio if n_heads % ratio == 0 and n_heads >= ratio else n_heads
            oss = dict(num_hidden_layers=n_layers, num_attention_heads=n_heads, num_key_value_heads=kv,
                       head_dim=d // n_heads)
            gpt2 = dict(num_hidden_layers=n_layers, num_attention_heads=n_heads)
            gpt2["intermediate_size"] = matched_gpt2_hidden(get_config(preset, "gptoss", **oss),
                                                            get_config(preset, "gpt2", **gpt2), match)
            cell = f"{n_heads} heads x {n_layers} layers"
            for seed in seeds:
                specs.append(RunSpec(f"GPT-OSS {cell}", "gptoss", oss, seed, group=cell))
                specs.append(RunSpec(f"GPT-2 {cell}", "gpt2", gpt2, seed, group=cell))
    return specs


def ladder_rungs(preset: str) -> list[tuple[str, dict]]:
    """(label, overrides on the GPT-2 end): each rung adds one gpt-oss switch to the one before.

    The last rung is exactly the preset's GPT-OSS (tests/test_compare.py checks it).
    """
    p = PRESETS[preset]
    d = p["hidden_size"]
    steps = [
        ("GPT-2", {}),
        ("+ RMSNorm", dict(norm="rmsnorm")),
        ("+ RoPE", dict(pos="rope")),
        # a dense SwiGLU as wide as keeps the GELU MLP's parameters (3 matrices instead of 2)
        ("+ clamped SwiGLU", dict(ffn="swiglu", intermediate_size=_round8(8 * d / 3))),
        ("+ grouped-query attention", dict(num_key_value_heads=p["num_key_value_heads"], head_dim=p["head_dim"])),
        ("+ sliding window (alternating)", dict(sliding_window=p["sliding_window"])),
        ("+ attention sinks", dict(attn_sinks=True)),
        ("+ untied embeddings", dict(tie_word_embeddings=False)),
        ("+ mixture of experts = GPT-OSS", dict(num_experts=p["num_experts"], experts_per_token=p["experts_per_token"],
                                                intermediate_size=p["intermediate_size"])),
    ]
    rungs, overrides = [], {}
    for label, change in steps:
        overrides = {**overrides, **change}
        rungs.append((label, dict(overrides)))
    return rungs


def ladder_specs(preset: str, seeds: list[int]) -> list[RunSpec]:
    return [RunSpec(label, "gpt2", overrides, seed, group=label)
            for label, overrides in ladder_rungs(preset) for seed in seeds]


# --------------------------------------------------------------------------- running

# The options every run of a comparison shares: TrainConfig's, with shorter defaults.
COMPARE_DEFAULTS = dict(preset="auto", data="auto", max_steps=200, batch_size=16, warmup_steps=20,
                        eval_interval=50, eval_tokens=131072)
# TrainConfig options that vary per run (model, overrides, seed) or belong to the runner
PER_RUN = {"model", "preset", "data", "overrides", "seed", "out_dir", "resume", "ckpt_interval",
           "progress", "wandb"}
GEN_TOKENS = 128  # greedy tokens timed per trained model


def run_options(spec: RunSpec, template: TrainConfig, out: Path) -> TrainConfig:
    """The TrainConfig of one row: the shared budget, the row's model, overrides and seed."""
    return template.replace(**spec.train, model=spec.model, overrides=dict(spec.overrides), seed=spec.seed,
                            out_dir=str(out / "runs" / spec.name),
                            ckpt_interval=template.max_steps, progress=False, resume=False, wandb=False)


@torch.no_grad()
def generation_speed(ckpt_path: Path, new_tokens: int, device: str = "cpu") -> float:
    """Greedy tokens/s of the trained model (batch 1, KV cache), after a short warm-up."""
    model, _ = load_model(ckpt_path, device=device)
    idx = torch.zeros((1, 1), dtype=torch.long, device=device)
    new_tokens = min(new_tokens, model.config.max_position_embeddings - 1)
    generate(model, idx, max_new_tokens=8, temperature=0.0)
    start = time.perf_counter()
    generate(model, idx, max_new_tokens=new_tokens, temperature=0.0)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return new_tokens / (time.perf_counter() - start)


def weights_size_mb(ckpt_path: Path, out_file: Path) -> float:
    """Size on disk of the model's weights alone (fp32 safetensors), as one would ship them."""
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in Checkpoint(ckpt_path).model_state().items()}
    save_file(state, str(out_file))
    return out_file.stat().st_size / 2 ** 20


def run_one(spec: RunSpec, template: TrainConfig, out: Path, env: dict | None = None) -> dict:
    """Train one row in a child process (so its peak memory is its own), then measure what
    the checkpoint gives. A finished run is reused only if it was made with these options."""
    cfg = run_options(spec, template, out)
    run_dir = Path(cfg.out_dir)
    summary_path, options_path = run_dir / "summary.json", run_dir / "options.json"
    wanted = dataclasses.asdict(cfg)
    done = (summary_path.exists() and options_path.exists() and json.loads(options_path.read_text()) == wanted
            and json.loads(summary_path.read_text()).get("status") == "finished")
    if not done:
        # the folder's own lock first: a trainer started by hand may be writing into it, and a folder
        # in use is never emptied (the lock file itself stays: it is what the trainer holds)
        with FolderLock(run_dir, option="--out") as lock:
            stale = [p for p in run_dir.iterdir() if p != lock.path]
            if stale:
                print(f"{spec.name}: {run_dir} holds a run with other settings or an unfinished one; training again",
                      flush=True)
            for p in stale:
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                else:
                    p.unlink()
            write_text(options_path, json.dumps(wanted, indent=1))
        cmd = [sys.executable, "-m", "nanogptoss", "train", "--options", str(options_path)]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"training {spec.label} (seed {spec.seed}) failed:\n{proc.stderr[-3000:]}")
    summary = json.loads(summary_path.read_text())
    ckpt = run_dir / "checkpoint.safetensors"
    rows = read_metrics(run_dir)
    train_tail = [r["loss"] for r in rows[-max(1, len(rows) // 10):]]
    device = "cuda" if summary["device"].startswith("cuda") else "cpu"
    return dict(label=spec.label, group=spec.group, model=spec.model, seed=spec.seed,
                train_loss=statistics.fmean(train_tail), val_loss=summary["val_loss"], val_bpb=summary["val_bpb"],
                params_total=summary["params_total"], params_active=summary["params_active"],
                train_flops_per_token=flops_per_token(GPTConfig(**summary["model_config"]), training=True),
                weights_mb=weights_size_mb(ckpt, run_dir / "model.safetensors"),
                peak_memory_mb=summary["peak_memory_mb"], train_tokens_per_s=summary["train_tokens_per_s"],
                gen_tokens_per_s=generation_speed(ckpt, GEN_TOKENS, device),
                tokenizer=summary["tokenizer"], device=summary["device"], dtype=summary["dtype"],
                steps=summary["steps"], wall_s=summary["wall_s"], name=spec.name, data=summary["data"],
                val_tokens=summary["val_tokens"], val_bytes=summary["val_bytes"], tokens_seen=summary["tokens_seen"],
                train_s=summary["train_s"], threads=summary["threads"], lr=f"{cfg.lr:g} → {cfg.min_lr:g}",
                batch_size=cfg.batch_size,
                seq_len=summary["model_config"]["max_position_embeddings"])


def run_all(specs: list[RunSpec], template: TrainConfig, out: str | os.PathLike, progress: bool = True,
            side_by_side: bool = False, jobs: int = 1) -> list[dict]:
    """Every run (those already finished in `out` are reused), with a progress bar, `jobs` at a time
    (each run is its own process; results keep the order of `specs`); `side_by_side` runs all at
    once, so that runs on a wall-clock budget share the machine's load alike."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    jobs = len(specs) if side_by_side else jobs
    # one comparison at a time in a folder: a second one would empty the first one's live run folders
    with FolderLock(out, option="--out"), ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        done = pool.map(lambda spec: run_one(spec, template, out, env), specs)
        return list(tqdm(done, total=len(specs), desc="runs", unit="run", disable=not progress or side_by_side))


# --------------------------------------------------------------------------- reporting

COLUMNS = [  # (key, header, format)
    ("val_bpb", "val bits/byte", "{:.4f}"),
    ("val_loss", "val loss (nats/token)", "{:.4f}"),
    ("train_loss", "train loss", "{:.4f}"),
    ("params_total", "total params", "{:,.0f}"),
    ("params_active", "active params", "{:,.0f}"),
    ("weights_mb", "weights on disk (MB)", "{:.2f}"),
    ("peak_memory_mb", "peak memory (MB)", "{:,.0f}"),
    ("train_tokens_per_s", "train tokens/s", "{:,.0f}"),
    ("gen_tokens_per_s", "generation tokens/s", "{:,.0f}"),
]


def summarize(results: list[dict]) -> list[dict]:
    """One line per (group, model): means over seeds, and the spread of the losses."""
    lines: dict[tuple, list[dict]] = {}
    for r in results:
        lines.setdefault((r["group"], r["label"]), []).append(r)
    table = []
    for (group, label), runs in lines.items():
        line = dict(group=group, label=label, seeds=len(runs))
        for key, _, _ in COLUMNS:
            values = [r[key] for r in runs]
            line[key] = statistics.fmean(values)
            line[key + "_sd"] = statistics.stdev(values) if len(values) > 1 else 0.0
        table.append(line)
    return table


def _cell(line: dict, key: str, fmt: str) -> str:
    text = fmt.format(line[key])
    if key in ("val_bpb", "val_loss", "train_loss") and line["seeds"] > 1:
        text += f" ± {line[key + '_sd']:.4f}"
    return text


def markdown_table(table: list[dict], floor_bpb: float | None = None) -> str:
    head = ["model", "seeds"] + [h for _, h, _ in COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for line in table:
        lines.append("| " + " | ".join([line["label"], str(line["seeds"])]
                                       + [_cell(line, k, f) for k, _, f in COLUMNS]) + " |")
    text = "\n".join(lines)
    if floor_bpb is not None:
        text += (f"\n\nEntropy floor of the synthetic stories: {floor_bpb:.4f} bits/byte "
                 "(no model can go below it). ± is the standard deviation over seeds.")
    elif any(line["seeds"] > 1 for line in table):
        text += "\n\n± is the standard deviation over seeds."
    return text


def write_csv(results: list[dict], path: Path) -> None:
    keys = list(results[0])
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(results)


def _pyplot():
    """matplotlib.pyplot, headless unless a notebook has already chosen a backend."""
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _curve_styles(labels: list[str], plt) -> dict[str, tuple]:
    """(colour, line style) per label. A grid's lines come in two families: GPT-OSS in
    shades of blue, solid; GPT-2 in shades of orange, dashed; a ladder's run along one scale."""
    families = {"GPT-OSS": (plt.cm.Blues, "-"), "GPT-2": (plt.cm.Oranges, "--")}
    members = {name: [lab for lab in labels if lab.startswith(name + " ")] for name in families}
    if sum(map(len, members.values())) != len(labels):
        colors = plt.cm.viridis([i / max(1, len(labels) - 1) for i in range(len(labels))])
        return {lab: (c, "-") for lab, c in zip(labels, colors)}
    styles = {}
    for name, (cmap, ls) in families.items():
        for i, lab in enumerate(members[name]):
            styles[lab] = (cmap(0.45 + 0.5 * i / max(1, len(members[name]) - 1)), ls)
    return styles


def plot_curves(results: list[dict], out: Path, path: Path, title: str, floor_bpb: float | None = None) -> None:
    """Validation bits/byte against steps for every run, one colour per table line."""
    plt = _pyplot()
    labels = list(dict.fromkeys(r["label"] for r in results))
    fig, (ax_train, ax_val) = plt.subplots(1, 2, figsize=(13, 4.8))
    styles = _curve_styles(labels, plt)
    for label in labels:
        color, ls = styles[label]
        for i, r in enumerate(x for x in results if x["label"] == label):
            rows = read_metrics(out / "runs" / r["name"])
            steps = [row["step"] for row in rows]
            k = max(1, len(rows) // 20)  # a running mean, so the seeds' noise does not hide the trend
            smooth = [statistics.fmean(row["loss"] for row in rows[max(0, j - k + 1):j + 1]) for j in range(len(rows))]
            ax_train.plot(steps, smooth, color=color, ls=ls, alpha=0.8, label=label if i == 0 else None)
            val = [(row["step"], row["val_bpb"]) for row in rows if "val_bpb" in row]
            ax_val.plot(*zip(*val), marker="o", color=color, ls=ls, alpha=0.8, label=label if i == 0 else None)
    if floor_bpb is not None:
        ax_val.axhline(floor_bpb, color="black", ls="--", lw=1, label="entropy floor")
    ax_train.set(xlabel="step", ylabel="train loss (nats/token, running mean)", title="training loss")
    ax_val.set(xlabel="step", ylabel="bits per byte", title="validation bits/byte")
    ax_val.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_ladder(table: list[dict], path: Path, title: str, floor_bpb: float | None = None) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 4.5))
    y = list(range(len(table)))[::-1]
    ax.barh(y, [line["val_bpb"] for line in table], xerr=[line["val_bpb_sd"] for line in table],
            color="tab:blue", alpha=0.75, capsize=3)
    ax.set_yticks(y, [line["label"] for line in table])
    low = min(line["val_bpb"] - line["val_bpb_sd"] for line in table)
    if floor_bpb is not None:
        ax.axvline(floor_bpb, color="black", ls="--", lw=1, label="entropy floor")
        ax.legend()
        low = min(low, floor_bpb)
    high = max(line["val_bpb"] + line["val_bpb_sd"] for line in table)
    ax.set_xlim(low - 0.1 * (high - low), high + 0.05 * (high - low))
    ax.set(xlabel="validation bits per byte (lower is better)", title=title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def entropy_floor(template: TrainConfig) -> float | None:
    if template.data != "synthetic":
        return None
    from ..data.synthetic import bits_per_byte

    return bits_per_byte()


def report(experiment: str, results: list[dict], budget: TrainConfig, out: Path, command: str) -> str:
    """Write table.csv, table.md and the plots for one experiment; returns the markdown."""
    floor = entropy_floor(budget)
    table = summarize(results)
    write_csv(results, out / f"{experiment}.csv")
    r = results[0]
    scored = {(x["tokenizer"], x["val_tokens"], x["val_bytes"]) for x in results}
    validation = (f"the first {r['val_tokens']:,} tokens ({r['val_bytes']:,} bytes) of the validation split, "
                  "the same for every row" if len(scored) == 1 else
                  "validation token counts differ between rows (tokenizers or contexts differ): " +
                  ", ".join(f"{t}: {n:,} tokens / {b:,} bytes" for t, n, b in sorted(scored)))
    header = (f"{experiment}: preset {budget.preset}, {budget.max_steps} steps of {budget.batch_size} sequences, "
              f"data: {describe_source(r['data'])}, tokenizer {r['tokenizer']}, {r['device']} {r['dtype']}; "
              f"validation bits/byte on {validation}.\n\n"
              f"Command: `{command}`\n\n")
    md = header + markdown_table(table, floor) + "\n"
    write_text(out / f"{experiment}.md", md)
    plot_curves(results, out, out / f"{experiment}_curves.png", f"{experiment} ({budget.preset})", floor)
    if experiment == "ladder":
        plot_ladder(table, out / "ladder.png", f"what each gpt-oss piece buys ({budget.preset})", floor)
    return md


# --------------------------------------------------------------------------- the speedrun

SPEEDRUN_COLUMNS = [  # (key, header, format)
    ("val_bpb", "val bits/byte", "{:.4f}"),
    ("lr", "lr (peak → end)", "{}"),
    ("batch_size", "batch", "{:d}"),
    ("tokens_seen", "tokens seen", "{:,.0f}"),
    ("steps", "steps", "{:,.0f}"),
    ("train_tokens_per_s", "train tokens/s", "{:,.0f}"),
    ("train_s", "training s", "{:,.0f}"),
    ("peak_memory_mb", "peak memory (MB)", "{:,.0f}"),
    ("params_active", "active params", "{:,.0f}"),
    ("params_total", "total params", "{:,.0f}"),
]


def speedrun_report(results: list[dict], budget: TrainConfig, out: Path, command: str) -> str:
    """The speedrun's table (the same wall-clock budget for every model) and its curves against time."""
    write_csv(results, out / "speedrun.csv")
    r = results[0]
    lines = [f"speedrun: preset {budget.preset}, {budget.max_minutes:g} minutes of training per run (evaluation not "
             f"counted), warmup {budget.warmup_steps} steps, {r['device']} {r['dtype']}, "
             f"{r['threads']} threads; data: {describe_source(r['data'])}, tokenizer {r['tokenizer']}; validation "
             f"bits/byte on the first {r['val_tokens']:,} tokens ({r['val_bytes']:,} bytes) of the validation split.",
             "", f"Command: `{command}`", "",
             "| model | seed | " + " | ".join(h for _, h, _ in SPEEDRUN_COLUMNS) + " |",
             "|" + "---|" * (len(SPEEDRUN_COLUMNS) + 2)]
    for x in results:
        lines.append(f"| {x['label']} | {x['seed']} | " + " | ".join(f.format(x[k]) for k, _, f in SPEEDRUN_COLUMNS) + " |")
    md = "\n".join(lines) + "\n"
    write_text(out / "speedrun.md", md)
    plot_speedrun(results, out, budget)
    return md


def plot_speedrun(results: list[dict], out: Path, budget: TrainConfig) -> None:
    """Validation bits/byte of each speedrun against training minutes and against tokens."""
    plt = _pyplot()
    fig, (ax_time, ax_tokens) = plt.subplots(1, 2, figsize=(13, 4.8))
    styles = _curve_styles(list(dict.fromkeys(x["label"] for x in results)), plt)
    for x in results:
        rows = [row for row in read_metrics(out / "runs" / x["name"]) if "val_bpb" in row]
        color, ls = styles[x["label"]]
        label = f"{x['label']} (seed {x['seed']})"
        ax_time.plot([row["train_s"] / 60 for row in rows], [row["val_bpb"] for row in rows], marker="o", color=color,
                     ls=ls, label=label)
        ax_tokens.plot([row["step"] * x["batch_size"] * x["seq_len"] / 1e6 for row in rows],
                       [row["val_bpb"] for row in rows], marker="o", color=color, ls=ls, label=label)
    ax_time.set(xlabel="training minutes", ylabel="validation bits per byte", title="equal wall-clock")
    ax_tokens.set(xlabel="training tokens (millions)", ylabel="validation bits per byte", title="per token")
    ax_time.legend(fontsize=8)
    fig.suptitle(f"speedrun ({budget.preset}, {budget.max_minutes:g} min per model)")
    fig.tight_layout()
    fig.savefig(out / "speedrun_curves.png", dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- command line

def pick_preset(name: str = "auto") -> str:
    if name != "auto":
        return name
    if not torch.cuda.is_available():
        return "cpu-tiny"
    return "gpu" if torch.cuda.is_bf16_supported(including_emulation=False) else "colab-t4"


PER_MODEL_OPTIONS = ("lr", "min_lr", "batch_size")  # TrainConfig options
# model fields one end may change without changing its parameter count, so the GPT-2 match still holds
# (each a whole number)
PER_MODEL_FIELDS = {"gptoss": ("sliding_window",), "gpt2": ()}


def parse_per_model(items: list[str] | None) -> dict[str, dict]:
    """["gpt2:lr=0.002", "gptoss:sliding_window=64"] -> {"gpt2": {"lr": 0.002}, "gptoss": {"sliding_window": 64}}."""
    model_fields = {name for fields in PER_MODEL_FIELDS.values() for name in fields}
    types = {f.name: option_type(f) for f in dataclasses.fields(TrainConfig)} | dict.fromkeys(model_fields, int)
    out: dict[str, dict] = {}
    for item in items or []:
        model, sep, setting = item.partition(":")
        name, eq, raw = setting.partition("=")
        if not (sep and eq) or model not in MODELS:
            raise ValueError(f"--per-model expects MODEL:OPTION=VALUE with MODEL one of {MODELS}, "
                             f"e.g. gpt2:lr=0.002; got {item!r}")
        allowed = PER_MODEL_OPTIONS + PER_MODEL_FIELDS[model]
        if name not in allowed:
            why = (f"{model} has no {name}" if name in model_fields
                   else f"{name!r} cannot differ between the models")
            raise ValueError(f"--per-model {item}: {why}; for {model} choose one of {allowed}")
        try:
            out.setdefault(model, {})[name] = types[name](raw)
        except ValueError:
            raise ValueError(f"--per-model {item}: {name} takes a number") from None
    return out


def speedrun_specs(preset: str, heads: int, layers: int, seed: int, per_model: dict[str, dict]) -> list[RunSpec]:
    """The grid cell (heads, layers) on a wall-clock budget, each model with its --per-model settings:
    training options go to the run, model fields to the config (and the label, so the table says so)."""
    specs = []
    for spec in grid_specs(preset, [heads], [layers], [seed]):
        mine = per_model.get(spec.model, {})
        fields = {k: v for k, v in mine.items() if k in PER_MODEL_FIELDS[spec.model]}
        label = spec.label + "".join(f", {k.replace('_', ' ')} {v}" for k, v in fields.items())
        specs.append(dataclasses.replace(spec, label=label, overrides={**spec.overrides, **fields}, budget="speedrun",
                                         train={k: v for k, v in mine.items() if k in PER_MODEL_OPTIONS}))
        specs[-1].config(preset)  # a bad field (e.g. a window of 0) fails here, before anything trains
    return specs


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m nanogptoss compare",
        description="Train GPT-OSS and GPT-2 side by side (grid) or one gpt-oss switch at a time (ladder), "
                    "and write tables and plots. Finished runs in --out with the same options are reused.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("experiment", choices=("grid", "ladder", "both", "speedrun"),
                        help="speedrun: the preset's GPT-OSS and the GPT-2 of equal active parameters, each trained "
                             "for the same wall-clock time (--minutes)")
    parser.add_argument("--minutes", type=float, default=10.0, help="speedrun: training minutes per model")
    parser.add_argument("--jobs", type=int, default=1,
                        help="grid, ladder: runs trained at once, each in its own process (results do not depend on it)")
    parser.add_argument("--preset", choices=["auto"] + [p for p in PRESETS if not p.startswith("gpt-oss")],
                        help="auto: cpu-tiny without a GPU, colab-t4 on GPUs without bf16, gpu on the others")
    parser.add_argument("--data", help="auto (TinyStories when it can be had, else synthetic stories, with a "
                                       "note), tinystories, synthetic, or a local file/folder")
    parser.add_argument("--heads", type=int, nargs="+", default=None,
                        help="grid: query heads (default: the preset's), e.g. --heads 2 4 8; speedrun: one value")
    parser.add_argument("--layers", type=int, nargs="+", default=None,
                        help="grid: layers (default: the preset's), e.g. --layers 2 4; speedrun: one value")
    parser.add_argument("--match", default="active", choices=("active", "flops"),
                        help="grid: size the GPT-2 MLP to the GPT-OSS's active parameters or training FLOPs")
    parser.add_argument("--per-model", action="append", default=None, metavar="MODEL:OPTION=VALUE",
                        help="speedrun: a training option for one model only, each model at its own tuned "
                             f"setting (repeatable), e.g. --per-model gpt2:lr=0.002; OPTION one of "
                             f"{', '.join(PER_MODEL_OPTIONS)}, or for gptoss a field that leaves its parameter "
                             f"count alone ({', '.join(PER_MODEL_FIELDS['gptoss'])})")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--out", default="compare", help="folder for runs, tables and plots")
    add_options(parser, {f.name for f in dataclasses.fields(TrainConfig)} - PER_RUN - {"max_minutes"})
    parser.set_defaults(**COMPARE_DEFAULTS)
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    try:
        template = options_from_args(args, preset="cpu-tiny", data="synthetic").replace(
            preset=pick_preset(args.preset), data=pick_source(args.data))
        template.validate()
        if args.jobs < 1:
            raise ValueError(f"--jobs must be at least 1, got {args.jobs}")
        repeated = sorted({s for s in args.seeds if args.seeds.count(s) > 1})
        if repeated:  # the same seed twice is the same run twice, not a spread over seeds
            raise ValueError(f"--seeds {' '.join(map(str, args.seeds))} repeats seed "
                             f"{', '.join(map(str, repeated))}; give each seed once")
        per_model = parse_per_model(args.per_model)
        if per_model and args.experiment != "speedrun":
            raise ValueError("--per-model is for the speedrun; grid and ladder compare every model at the same "
                             "settings and steps")
        for options in per_model.values():  # each model's settings must make a valid run too
            template.replace(**{k: v for k, v in options.items() if k in PER_MODEL_OPTIONS}).validate()
        out = Path(args.out)
        check_folder("--out", out)
        command = "python -m nanogptoss compare " + " ".join(argv)
        print(f"preset {template.preset}, data {template.data}", flush=True)
        experiments = ["grid", "ladder"] if args.experiment == "both" else [args.experiment]
        if args.experiment == "speedrun":
            p = PRESETS[template.preset]
            budget = template.replace(max_minutes=args.minutes, max_steps=10 ** 9, threads=template.threads or 1)
            results = []
            if len(args.heads or [0]) > 1 or len(args.layers or [0]) > 1:
                raise ValueError("the speedrun trains one shape: give --heads and --layers one value each (or "
                                 "leave them out for the preset's)")
            shape = (args.heads or [p["num_attention_heads"]], args.layers or [p["num_hidden_layers"]])
            for seed in args.seeds:  # the two models of a seed train at the same time, one thread each
                specs = speedrun_specs(template.preset, shape[0][0], shape[1][0], seed, per_model)
                print(f"seed {seed}: training {', '.join(s.label for s in specs)} side by side for "
                      f"{args.minutes:g} minutes", flush=True)
                results += run_all(specs, budget, out, side_by_side=True)
            print(speedrun_report(results, budget, out, command))
            return
        for experiment in experiments:
            p = PRESETS[template.preset]
            specs = (grid_specs(template.preset, args.heads or [p["num_attention_heads"]],
                                args.layers or [p["num_hidden_layers"]], args.seeds, args.match)
                     if experiment == "grid" else ladder_specs(template.preset, args.seeds))
            results = run_all(specs, template, out, jobs=args.jobs)
            print(report(experiment, results, template, out, command))
    except (ValueError, RuntimeError) as err:
        raise SystemExit(f"error: {err}") from None


if __name__ == "__main__":
    main()
