"""Train a GPT-OSS or a GPT-2 on TinyStories (or any stories): `python -m nanogptoss train --help`.

One loop for both models: AdamW (decay on the matrices that multiply activations);
linear warmup then cosine decay; gradient clipping and accumulation; bf16 autocast on
GPUs that have it, fp16 with a GradScaler on those that do not (T4, V100); DDP under
torchrun; atomic safetensors checkpoints and exact resume.

Batch `b` of optimizer step `s` is a pure function of (seed, s, b), the checkpoint
holds the optimizer and RNG states, and the learning rate is a function of the
step, so a resumed run retraces the uninterrupted one exactly.

`train(cfg)` reads top to bottom: set up the device, restore or start, load the data,
build the model, then the loop of `train_step`, `evaluate`, `log` and `save`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import resource
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
from torch import nn

from ..config import MODELS, PRESETS, GPTConfig, get_config
from ..files import FolderInUse, FolderLock, remove_stale_temps, write_text
from ..data.stories import (DataUnavailable, TokenBatches, ValidationSet, pick_source, source_identity, token_shards,
                            tokenizer_fingerprint)
from ..data.tokenizer import TokenizerUnavailable, default_tokenizer, get_tokenizer
from ..model.moe import Experts
from ..model.params import count_parameters
from ..model.router import Router
from ..model.transformer import GPT
from ..weights.checkpoint import Checkpoint, CheckpointError, save_checkpoint
from .device import DEVICES, DTYPES, pick_device, pick_dtype


def opt(default, help: str, **kw):
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class TrainConfig:
    """Every option of a training run; the command line of `train` and `compare` is made from it."""

    model: str = opt("gptoss", "architecture: gptoss or gpt2", choices=MODELS)
    preset: str = opt("cpu-tiny", "model sizes", choices=tuple(PRESETS))
    overrides: dict = opt(None, "model config fields FIELD=VALUE (repeatable), e.g. --set num_hidden_layers=2 "
                                "--set attn_sinks=false", flag="--set")
    data: str = opt("auto", "'auto' (TinyStories when it can be had, else the synthetic stories, saying so), "
                            "'tinystories' (the local copy $NANOGPTOSS_DATA names, else the hub), 'synthetic', or "
                            "a .txt/.jsonl/.parquet file or folder")
    tokenizer: str = opt("auto", "tinystories-4k/8k (shipped), gpt2, gpt2-4k, gpt2-8k, or a .tiktoken file; auto: "
                                 "the shipped BPE of a 4k/8k preset, else gpt2")
    max_stories: int = opt(None, "use at most this many training stories (a twentieth as many validation stories)")
    data_dir: str = opt("data", "where token shards are cached")
    batch_size: int = opt(32, "sequences per optimizer step, over all processes and accumulation steps")
    grad_accum: int = opt(1, "micro-batches per optimizer step (same results, less memory)")
    max_steps: int = opt(500, "optimizer steps")
    max_minutes: float = opt(None, "stop after this many minutes of training (evaluation not counted): a wall-clock "
                                   "budget; the learning rate then decays with the time spent, and --max-steps caps it")
    lr: float = opt(2e-3, "peak learning rate")
    min_lr: float = opt(2e-4, "learning rate at the end of the cosine decay")
    warmup_steps: int = opt(50, "linear warmup steps")
    weight_decay: float = opt(0.1, "AdamW weight decay (matrices that multiply activations only)")
    beta1: float = opt(0.9, "AdamW beta1")
    beta2: float = opt(0.95, "AdamW beta2")
    grad_clip: float = opt(1.0, "clip the gradient norm to this (0: off)")
    eval_interval: int = opt(100, "steps between validation evaluations")
    eval_tokens: int = opt(65536, "validation tokens scored per evaluation: the first N of the validation split, "
                                  "the same for every run (more than the split holds: all of it)")
    ckpt_interval: int = opt(100, "steps between checkpoints (one at the end too)")
    out_dir: str = opt(None, "run folder for the checkpoint, the metrics log and the summary "
                             "(default runs/<model>-<preset>)")
    resume: bool = opt(False, "continue from the run folder's checkpoint")
    seed: int = opt(1337, "seed for weights and batches")
    device: str = opt("auto", "auto, cuda, mps or cpu")
    threads: int = opt(None, "CPU threads for torch (default: torch's choice; tiny models often run faster with 1)")
    dtype: str = opt("auto", "auto (bf16 on GPUs with bf16, fp16+GradScaler on older GPUs, fp32 on CPU/MPS), "
                             "float32, bfloat16, float16", choices=DTYPES)
    compile: bool = opt(False, "torch.compile the model")
    wandb: bool = opt(False, "also log to Weights & Biases (needs `pip install wandb`)")
    progress: bool = opt(True, "show a tqdm progress bar")

    def __post_init__(self) -> None:
        if self.overrides is None or isinstance(self.overrides, dict):  # anything else fails check_types
            self.overrides = dict(self.overrides or {})

    def run_dir(self) -> Path:
        return Path(self.out_dir or f"runs/{self.model}-{self.preset}")

    def run_name(self) -> str:
        return self.run_dir().resolve().name

    def check_types(self) -> None:
        """Each field holds the type its annotation names (None only where None is the default): a value
        from JSON or Python is not converted by argparse, and "false" is no boolean."""
        kinds = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,), "dict": (dict,)}
        words = {"int": "a whole number", "float": "a number", "bool": "true or false", "str": "a string",
                 "dict": "an object of model config fields"}
        for f in dataclasses.fields(self):
            value, kind = getattr(self, f.name), str(f.type)
            if value is None and f.default is None:
                continue
            if not isinstance(value, kinds[kind]) or (isinstance(value, bool) and kind in ("int", "float")):
                null = " or null" if f.default is None else ""
                raise ValueError(f"{f.name} must be {words[kind]}{null}, got {value!r}")

    def validate(self) -> None:
        flag = lambda name: "--" + name.replace("_", "-")  # noqa: E731
        self.check_types()
        for name in ("batch_size", "grad_accum", "max_steps", "eval_tokens", "ckpt_interval", "eval_interval"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{flag(name)} must be a whole number of at least 1, got {value!r}")
        for name in ("warmup_steps",):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ValueError(f"{flag(name)} must be a whole number >= 0, got {getattr(self, name)!r}")
        if self.max_stories is not None and (not isinstance(self.max_stories, int) or self.max_stories < 1):
            raise ValueError(f"--max-stories must be at least 1 (leave it out for all stories), got {self.max_stories!r}")
        for name in ("lr", "min_lr", "weight_decay", "grad_clip", "beta1", "beta2"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{flag(name)} must be a finite number >= 0, got {value!r}")
        if self.lr == 0:
            raise ValueError("--lr must be positive")
        if self.max_minutes is not None and (not isinstance(self.max_minutes, (int, float))
                                             or not math.isfinite(self.max_minutes) or self.max_minutes <= 0):
            raise ValueError(f"--max-minutes must be a positive number of minutes, got {self.max_minutes!r}")
        if self.max_minutes is not None and self.resume:
            raise ValueError("a run with a wall-clock budget (--max-minutes) cannot be resumed exactly; "
                             "start it again, or train by --max-steps to be able to resume")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ValueError(f"--threads must be at least 1, got {self.threads!r}")
        if not (self.beta1 < 1 and self.beta2 < 1):
            raise ValueError(f"--beta1 and --beta2 must be below 1, got {self.beta1} and {self.beta2}")
        if self.run_dir().resolve() == Path.cwd().resolve() or not self.run_name():
            raise ValueError(f"--out-dir {self.out_dir!r} is the current folder; name a folder of its own for the run, "
                             "e.g. --out-dir runs/my-run")
        for name in ("data_dir", "out_dir"):
            if getattr(self, name):
                check_folder(flag(name), getattr(self, name))
        if self.batch_size % self.grad_accum:
            raise ValueError(f"--batch-size {self.batch_size} must be divisible by --grad-accum {self.grad_accum}")
        if not 0 <= self.min_lr <= self.lr:
            raise ValueError(f"need 0 <= --min-lr ({self.min_lr}) <= --lr ({self.lr})")
        if self.model not in MODELS or self.preset not in PRESETS:
            raise ValueError(f"--model must be one of {MODELS} and --preset one of {tuple(PRESETS)}")
        if self.device != "auto" and self.device.split(":")[0] not in DEVICES:
            raise ValueError(f"--device must be one of {DEVICES} (or e.g. cuda:1), got {self.device!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"--dtype must be one of {DTYPES}, got {self.dtype!r}")
        if "vocab_size" in self.overrides:
            raise ValueError("vocab_size follows the tokenizer; choose --tokenizer instead of --set vocab_size")
        get_config(self.preset, self.model, **self.overrides)  # unknown or impossible fields fail here

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


def check_folder(flag: str, path: str | os.PathLike) -> None:
    """A folder to write in: refused in one line when it, or the nearest folder above it that exists, is a file."""
    for existing in (Path(path), *Path(path).parents):
        if existing.exists():
            if not existing.is_dir():
                where = "is a file" if existing == Path(path) else f"lies inside {str(existing)!r}, which is a file"
                raise ValueError(f"{flag} {str(path)!r} {where}; give a folder")
            return


# Fields that may change between a run and its resumption without changing the numbers.
RESUMABLE_CHANGES = {"max_steps", "eval_interval", "ckpt_interval", "resume", "device", "progress", "wandb",
                     "compile", "data_dir", "out_dir", "threads"}


def comparable_settings(settings: dict) -> dict:
    """The settings that must match for a resume, with local paths resolved (./x is x)."""
    out = {k: v for k, v in settings.items() if k not in RESUMABLE_CHANGES}
    data = out.get("data")
    if isinstance(data, str) and data not in ("tinystories", "synthetic", "auto") and Path(data).exists():
        out["data"] = str(Path(data).resolve())
    return out


# --------------------------------------------------------------------------- model config overrides

def _parse_value(name: str, raw: str, annotation: str):
    """A --set value in the type its GPTConfig field declares ("int | None" takes 7 or none)."""
    kinds = [k.strip() for k in annotation.split("|")]
    if "None" in kinds and raw.lower() in ("none", "null"):
        return None
    kind = next(k for k in kinds if k != "None")
    try:
        if kind == "bool":
            if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return raw.lower() in ("true", "1", "yes")
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind.startswith("tuple"):
            return tuple(part.strip() for part in raw.split(",") if part.strip())
    except ValueError:
        allowed = " or none" if "None" in kinds else ""
        article = "an" if kind[0] in "aeiou" else "a"
        raise ValueError(f"--set {name}={raw}: {name} takes {article} {kind}{allowed}") from None
    return raw


def parse_overrides(items: list[str] | None) -> dict:
    """["num_hidden_layers=2", "attn_sinks=false", "sliding_window=none"] -> typed values,
    each parsed as the type its GPTConfig field declares."""
    fields = {f.name: f.type for f in dataclasses.fields(GPTConfig)}
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--set expects FIELD=VALUE, got {item!r}")
        name, raw = item.split("=", 1)
        if name not in fields:
            raise ValueError(f"--set {item}: {name!r} is not a model config field; the fields are GPTConfig's, "
                             "e.g. num_hidden_layers, hidden_size, sliding_window, attn_sinks")
        out[name] = _parse_value(name, raw, str(fields[name]))
    return out


# --------------------------------------------------------------------------- the pieces of the loop

@dataclass
class Run:
    """Where a run executes: the device, its precision and, under torchrun, this process's rank."""

    device: torch.device
    dtype: torch.dtype
    rank: int = 0
    world: int = 1

    @property
    def main_process(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def autocast(self):
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)


def setup(cfg: TrainConfig) -> Run:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = pick_device(cfg.device)
    rank, world = 0, 1
    if "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if cfg.batch_size % (cfg.grad_accum * world):
        raise ValueError(f"--batch-size {cfg.batch_size} must be divisible by --grad-accum {cfg.grad_accum} "
                         f"x {world} processes")
    return Run(device, pick_dtype(cfg.dtype, device), rank, world)


def tokenizer_name(cfg: TrainConfig) -> str:
    return default_tokenizer(PRESETS[cfg.preset]["vocab_size"]) if cfg.tokenizer == "auto" else cfg.tokenizer


def load_data(cfg: TrainConfig, run: Run, tokenizer):
    """Train and validation tokens; the first process tokenizes, the others reuse its shards."""
    if run.main_process:
        shards = token_shards(cfg.data, tokenizer, cfg.data_dir, limit=cfg.max_stories, progress=cfg.progress)
    if run.distributed:
        dist.barrier()
    if not run.main_process:
        shards = token_shards(cfg.data, tokenizer, cfg.data_dir, limit=cfg.max_stories, progress=False)
    return shards["train"], shards["validation"]


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on every matrix that multiplies activations: linear layers (the
    unembedding included, tied or not), the router and the experts. Norms, biases,
    sinks and the embeddings that are only looked up (tokens when untied, positions)
    are exempt."""
    decay = set()
    for module in model.modules():
        if isinstance(module, (nn.Linear, Router)):
            decay.add(module.weight)
        elif isinstance(module, Experts):
            decay.update((module.gate_up_proj, module.down_proj))
    params = [p for p in model.parameters() if p.requires_grad]  # shared (tied) parameters once
    return [{"params": [p for p in params if p in decay], "weight_decay": weight_decay},
            {"params": [p for p in params if p not in decay], "weight_decay": 0.0}]


def build(cfg: TrainConfig, run: Run, vocab_size: int):
    """The model (fp32 master weights), its AdamW and the loss scaler fp16 needs."""
    model_config = get_config(cfg.preset, cfg.model, **{**cfg.overrides, "vocab_size": vocab_size})
    model = GPT(model_config).to(run.device)
    optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr,
                                  betas=(cfg.beta1, cfg.beta2), fused=run.device.type == "cuda")
    scaler = torch.amp.GradScaler(run.device.type, enabled=run.dtype == torch.float16)
    return model, optimizer, scaler


def open_checkpoint(cfg: TrainConfig, ckpt_path: Path) -> Checkpoint | None:
    """The checkpoint to resume from, checked against the settings before any work is done."""
    if not ckpt_path.exists():
        if cfg.resume:
            print(f"no checkpoint in {ckpt_path.parent}: starting from scratch")
        return None
    if not cfg.resume:
        raise CheckpointError(f"{ckpt_path} exists: pass --resume to continue it, or choose another --out-dir")
    ckpt = Checkpoint(ckpt_path)
    before, now = comparable_settings(ckpt.train_config), comparable_settings(dataclasses.asdict(cfg))
    if before != now:
        diff = {k: (before.get(k), now.get(k)) for k in sorted(set(now) | set(before)) if before.get(k) != now.get(k)}
        raise CheckpointError(f"{ckpt_path} was trained with other settings (checkpoint, now): {diff}; "
                              "resume with the same settings, or start a new --out-dir")
    if ckpt.step > cfg.max_steps:
        raise CheckpointError(f"{ckpt_path} is at step {ckpt.step}, beyond --max-steps {cfg.max_steps}; resume with "
                              f"--max-steps {ckpt.step} or more")
    return ckpt


def trained_content(cfg: TrainConfig, tokenizer) -> dict:
    """What a run trains on, by content, as the token cache keys it: the stories and the vocabulary.
    Their names are not enough: an edited data file or a retrained .tiktoken keeps its path."""
    return {"data_sha256": source_identity(cfg.data)[1], "tokenizer_sha256": tokenizer_fingerprint(tokenizer)}


def check_content(ckpt: Checkpoint, content: dict, cfg: TrainConfig, tok_name: str) -> None:
    """Resume only on the stories and the vocabulary the checkpoint trained on."""
    if not all(key in ckpt.extra for key in content):
        # written before checkpoints recorded them: nothing to compare with, and refusing would strand the run
        print(f"WARNING: {ckpt.path} does not record the content of its data and tokenizer (an older checkpoint), "
              "so resuming cannot check that they are unchanged", flush=True)
        return
    for key, what, option, value, fix in (
            ("data_sha256", "the stories of", "--data", cfg.data, "resume on the stories it trained on"),
            ("tokenizer_sha256", "the vocabulary of", "--tokenizer", tok_name, "restore the tokenizer it trained with")):
        if ckpt.extra[key] != content[key]:
            raise CheckpointError(f"{what} {option} {value} changed since {ckpt.path} was written (content "
                                  f"{str(ckpt.extra[key])[:12] or 'none'} then, {content[key][:12] or 'none'} now); "
                                  f"{fix}, or start a new --out-dir")


def restore(ckpt: Checkpoint, model, optimizer, scaler) -> int:
    """Weights, optimizer moments, loss scale and random state: the step to continue from."""
    ckpt.load_model(model)
    ckpt.load_optimizer(optimizer)
    ckpt.load_scaler(scaler)
    ckpt.restore_rng()
    return ckpt.step


def lr_at(step: int, cfg: TrainConfig, progress: float | None = None) -> float:
    """Step s (counted from 0) trains at lr·(s+1)/warmup_steps during the warmup, so step warmup_steps−1
    is the one step at the peak cfg.lr; a cosine then falls to cfg.min_lr, reached at the last step
    (max_steps−1), or, for a run on a wall-clock budget, at the end of its time (`progress`: the
    fraction of the budget spent)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if progress is None:
        progress = (step + 1 - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))


def train_step(step: int, lr: float, cfg: TrainConfig, run: Run, train_model, model, optimizer, scaler,
               batches: TokenBatches) -> dict:
    """One optimizer step over cfg.grad_accum micro-batches at learning rate `lr`; returns its metrics row."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    loss_sum = torch.zeros((), device=run.device)
    aux_sum = torch.zeros((), device=run.device)
    for micro in range(cfg.grad_accum):
        x, y = batches.get(step, micro, run.device)
        last_micro = micro == cfg.grad_accum - 1
        sync = train_model.no_sync() if run.distributed and not last_micro else contextlib.nullcontext()
        with sync:
            with run.autocast():
                out = train_model(x, y)
            scaler.scale(out.objective / cfg.grad_accum).backward()
        loss_sum += out.loss.detach().float()
        if out.aux_loss is not None:
            aux_sum += out.aux_loss.detach().float()
    grad_norm = float("nan")
    if cfg.grad_clip > 0:
        scaler.unscale_(optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip).item()
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    if run.distributed:
        for total in (loss_sum, aux_sum):
            dist.all_reduce(total)
            total /= run.world
    row = {"step": step + 1, "loss": loss_sum.item() / cfg.grad_accum, "lr": lr, "grad_norm": grad_norm}
    if model.config.is_moe and model.config.router_aux_loss_coef > 0:
        row["aux_loss"] = aux_sum.item() / cfg.grad_accum
    return row


@torch.no_grad()
def evaluate(model, validation: ValidationSet, batch_size: int, run: Run) -> float:
    """Mean validation loss (nats/token) over every target of the fixed validation set."""
    was_training = model.training
    model.eval()
    total = torch.zeros((), device=run.device, dtype=torch.float64)
    for x, y in validation.batches(batch_size, run.rank, run.world, run.device):
        with run.autocast():
            total += model(x, y).loss.double() * y.numel()
    model.train(was_training)
    if run.distributed:
        dist.all_reduce(total)
    return total.item() / validation.n_tokens


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


METRICS = "metrics.jsonl"  # the metrics log, in the run folder it belongs to


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """The rows of a metrics log (a run folder or its metrics.jsonl). A last line cut short by a
    kill mid-write is dropped; a broken line before it means the file was damaged otherwise."""
    path = Path(path)
    if path.is_dir():
        path = path / METRICS
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    rows = []
    for n, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
        except ValueError:
            if n == len(lines):
                break  # torn by a kill during the write
            row = None
        if not (isinstance(row, dict) and isinstance(row.get("step"), int)):  # every row is an object with a step
            raise ValueError(f"{path}:{n} is not a metrics row; the log is damaged (delete it to start a new one)")
        rows.append(row)
    return rows


class MetricsLog:
    """JSON lines, one per step; on resume the log is rewritten (atomically) with the rows up to the
    checkpoint's step, so a resumed run's log reads like an uninterrupted one's."""

    def __init__(self, path: Path, resume_step: int):
        self.path = path
        rows = [r for r in read_metrics(path) if r.get("step", 0) <= resume_step] if path.exists() else []
        write_text(path, "".join(json.dumps(r) + "\n" for r in rows))

    def write(self, row: dict) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")


class Logger:
    """Where each metrics row goes: the JSON-lines log, Weights & Biases, a callback, the progress bar."""

    def __init__(self, cfg: TrainConfig, run: Run, start_step: int, callback: Callable[[dict], None] | None):
        from tqdm.auto import tqdm

        main = run.main_process
        self.log = MetricsLog(cfg.run_dir() / METRICS, start_step) if main else None
        self.callback = callback if main else None
        self.wandb = None
        if cfg.wandb and main:
            try:
                import wandb
            except ImportError:
                raise RuntimeError("--wandb needs the wandb package: pip install wandb (or drop --wandb)") from None
            self.wandb = wandb.init(project="nanogptoss", name=cfg.run_name(), config=dataclasses.asdict(cfg),
                                    resume="allow")
        self.bar = tqdm(total=cfg.max_steps, initial=start_step, disable=not (cfg.progress and main),
                        desc=cfg.run_name(), unit="step", dynamic_ncols=True)
        self.val_loss = float("nan")

    def __call__(self, row: dict) -> None:
        self.val_loss = row.get("val_loss", self.val_loss)
        if self.log:
            self.log.write(row)
        if self.wandb:
            self.wandb.log(row, step=row["step"])
        if self.callback:
            self.callback(row)
        self.bar.set_postfix(loss=f"{row['loss']:.3f}", val=f"{self.val_loss:.3f}", tok_s=f"{row['tokens_per_s']:,.0f}")
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()
        if self.wandb:
            self.wandb.finish()


# --------------------------------------------------------------------------- the loop

def perplexity(loss: float) -> float:
    return float("nan") if loss != loss else math.exp(loss) if loss < 700 else math.inf


def diverged_loss(loss: float, vocab_size: int) -> bool:
    """A loss that is not a number, or far worse than guessing uniformly (ln V nats/token): no
    healthy run gets there, even at its first step, so the run has blown up."""
    return not math.isfinite(loss) or loss > 4 * math.log(vocab_size)


class TrainingDiverged(RuntimeError):
    """The loss stopped being a finite number."""


def train(cfg: TrainConfig, callback: Callable[[dict], None] | None = None) -> dict:
    """Train as `cfg` says; returns the run's summary (also written to <out_dir>/summary.json).

    `callback(row)` receives every metrics row (a live plot in a notebook, say).
    """
    cfg.validate()
    cfg = cfg.replace(data=pick_source(cfg.data))  # "auto" becomes what it found, in the checkpoint too
    run = setup(cfg)
    out_dir = cfg.run_dir()
    lock = FolderLock(out_dir).acquire() if run.main_process else None
    try:
        return _train(cfg, run, out_dir, callback)
    finally:
        if lock:
            lock.release()
        if run.distributed:
            dist.destroy_process_group()


def _train(cfg: TrainConfig, run: Run, out_dir: Path, callback) -> dict:
    ckpt_path = out_dir / "checkpoint.safetensors"
    if run.main_process:
        remove_stale_temps(out_dir)  # a writer killed mid-checkpoint left its temporary file
    ckpt = open_checkpoint(cfg, ckpt_path)
    if ckpt is not None and ckpt.step == cfg.max_steps and (out_dir / "summary.json").exists():
        print(f"{out_dir} finished at step {ckpt.step} already; nothing to do (raise --max-steps to train on)")
        return json.loads((out_dir / "summary.json").read_text())
    torch.manual_seed(cfg.seed)

    tok_name = tokenizer_name(cfg)
    tokenizer = get_tokenizer(tok_name)
    content = trained_content(cfg, tokenizer)
    if ckpt:
        check_content(ckpt, content, cfg, tok_name)
    (train_tokens, _), (val_tokens, _) = load_data(cfg, run, tokenizer)
    model, optimizer, scaler = build(cfg, run, tokenizer.n_vocab)
    start_step = restore(ckpt, model, optimizer, scaler) if ckpt else 0

    train_model = torch.compile(model) if cfg.compile else model
    if run.distributed:
        train_model = torch.nn.parallel.DistributedDataParallel(
            train_model, device_ids=[run.device.index] if run.device.type == "cuda" else None)
    seq_len = model.config.max_position_embeddings
    batches = TokenBatches(train_tokens, seq_len, cfg.batch_size, cfg.seed, run.rank, run.world, cfg.grad_accum)
    validation = ValidationSet(val_tokens, seq_len, cfg.eval_tokens, tokenizer)
    log = Logger(cfg, run, start_step, callback)
    if ckpt:  # the last evaluation goes on: a checkpoint or summary written before the next one reports it, not NaN
        log.val_loss = ckpt.extra.get("val_loss", float("nan"))

    def save(step: int) -> None:
        if run.main_process:
            save_checkpoint(ckpt_path, model, optimizer, scaler, step, dataclasses.asdict(cfg),
                            extra={"tokenizer": tok_name, "val_loss": log.val_loss, "train_s": train_s, **content})

    tokens_per_step = cfg.batch_size * seq_len
    budget_s = cfg.max_minutes * 60 if cfg.max_minutes else None
    train_s = ckpt.extra.get("train_s", 0.0) if ckpt else 0.0  # the time of the steps before the checkpoint counts
    rates, t_start, diverged, step = [], time.perf_counter(), None, start_step - 1
    model.train()
    for step in range(start_step, cfg.max_steps):
        lr = lr_at(step, cfg, min(1.0, train_s / budget_s) if budget_s else None)
        t0 = time.perf_counter()
        row = train_step(step, lr, cfg, run, train_model, model, optimizer, scaler, batches)
        dt = time.perf_counter() - t0
        train_s += dt
        row.update(tokens_per_s=tokens_per_step / dt, train_s=train_s)
        if diverged_loss(row["loss"], tokenizer.n_vocab):
            last_good = Checkpoint(ckpt_path).step if ckpt_path.exists() else None
            kept = f"the last good checkpoint (step {last_good}) is kept" if last_good else "no checkpoint was written"
            diverged = (f"training diverged: the loss is {row['loss']:.4g} at step {step + 1} (lr {row['lr']:.3g}); "
                        f"{kept}. Lower --lr, raise --warmup-steps, or keep --grad-clip on")
            break
        if step > start_step:  # the first step pays for warm-up and compilation
            rates.append(row["tokens_per_s"])
        last = step + 1 == cfg.max_steps or (budget_s is not None and train_s >= budget_s)
        if (step + 1) % cfg.eval_interval == 0 or last:
            val_loss = evaluate(model, validation, cfg.batch_size // cfg.grad_accum, run)
            row.update(val_loss=val_loss, val_bpb=validation.bits_per_byte(val_loss))
        log(row)
        if (step + 1) % cfg.ckpt_interval == 0 or last:
            save(step + 1)
        if last:
            break
    log.close()
    steps_done = step + 1 if not diverged else step

    val_loss = log.val_loss
    counts = count_parameters(model.config)
    summary = {
        "run": cfg.run_name(), "model": cfg.model, "preset": cfg.preset, "tokenizer": tok_name,
        "status": "diverged" if diverged else "finished", "steps": steps_done, "max_steps": cfg.max_steps,
        "train_s": train_s, "tokens_seen": steps_done * tokens_per_step, "threads": torch.get_num_threads(),
        "data": cfg.data, "val_tokens": validation.n_tokens, "val_bytes": validation.n_bytes,
        "val_loss": val_loss, "val_bpb": validation.bits_per_byte(val_loss),
        "val_ppl": perplexity(val_loss),
        "params_total": counts.total, "params_active": counts.active,
        "train_tokens_per_s": sum(rates) / len(rates) if rates else float("nan"),
        "peak_memory_mb": peak_memory_mb(run.device), "device": str(run.device),
        "dtype": str(run.dtype).removeprefix("torch."), "world_size": run.world,
        "wall_s": time.perf_counter() - t_start,
        "checkpoint_mb": ckpt_path.stat().st_size / 2 ** 20 if ckpt_path.exists() else float("nan"),
        "model_config": dataclasses.asdict(model.config),
    }
    if diverged:
        summary["error"] = diverged
    if run.main_process:
        write_text(out_dir / "summary.json", json.dumps(summary, indent=1))
    if diverged:
        raise TrainingDiverged(diverged)
    return summary


# --------------------------------------------------------------------------- command line

def option_type(f: dataclasses.Field):
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    return {"int": int, "float": float}.get(kind, str)


def add_options(parser: argparse.ArgumentParser, names: typing.Iterable[str] | None = None) -> None:
    """Add TrainConfig's fields (all, or those in `names`) as --options, with their help."""
    wanted = None if names is None else set(names)
    for f in dataclasses.fields(TrainConfig):
        if wanted is not None and f.name not in wanted:
            continue
        meta = dict(f.metadata)
        flag = meta.pop("flag", "--" + f.name.replace("_", "-"))
        if f.name == "overrides":
            parser.add_argument(flag, dest="overrides", action="append", default=None, metavar="FIELD=VALUE", **meta)
        elif f.type in ("bool", bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, help=meta["help"])
        else:
            parser.add_argument(flag, dest=f.name, type=option_type(f), default=f.default, **meta)


def options_from_args(args: argparse.Namespace, **base) -> TrainConfig:
    """A TrainConfig from parsed arguments: `base` first, then every option the parser has."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    values = {k: v for k, v in vars(args).items() if k in names}
    if "overrides" in values:
        values["overrides"] = parse_overrides(values["overrides"])
    return TrainConfig(**{**base, **values})


def options_from_file(path: str | os.PathLike) -> TrainConfig:
    """A TrainConfig from a JSON object of its fields (`train --options FILE`), each field checked."""
    where = f"--options {path}"
    try:
        fields = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{where}: no such file (give a JSON file of TrainConfig fields, as compare writes)") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{where} is not valid JSON ({err})") from None
    if not isinstance(fields, dict):
        raise ValueError(f"{where} must hold a JSON object of TrainConfig fields, got a {type(fields).__name__}")
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    unknown = sorted(set(fields) - set(names))
    if unknown:
        raise ValueError(f"{where}: {', '.join(map(repr, unknown))} is not a training option; the options are "
                         f"TrainConfig's fields, e.g. {', '.join(names[:4])} (train --help lists them)")
    cfg = TrainConfig(**fields)
    try:
        cfg.check_types()
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None
    return cfg


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m nanogptoss train",
        description="Train a GPT-OSS or GPT-2 on stories. Example (CPU, minutes): "
                    "python -m nanogptoss train --model gptoss --preset cpu-tiny --data synthetic --max-steps 200",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--options", default=None, metavar="FILE",
                        help="read every option from a JSON file of TrainConfig fields (what `compare` writes); "
                             "other options are then ignored")
    add_options(parser)
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    try:
        if args.options:
            cfg = options_from_file(args.options)
        else:
            cfg = options_from_args(args)
        summary = train(cfg)
    except (ValueError, CheckpointError, DataUnavailable, TokenizerUnavailable, FolderInUse,
            TrainingDiverged) as err:
        raise SystemExit(f"error: {err}") from None
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"{summary['run']}: val loss {summary['val_loss']:.4f} nats/token, {summary['val_bpb']:.4f} bits/byte, "
              f"{summary['train_tokens_per_s']:,.0f} tokens/s ({summary['device']}, {summary['dtype']})")
    return summary


if __name__ == "__main__":
    main()
