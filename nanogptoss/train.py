"""Train a GPT-OSS or a GPT-2 on TinyStories (or any stories): `python -m nanogptoss.train --help`.

One loop for both models: AdamW with no decay on norms, biases, sinks and
embeddings; linear warmup then cosine decay; gradient clipping and accumulation;
bf16 autocast on GPUs that have it, fp16 with a GradScaler on those that do not
(T4, V100); DDP under torchrun; atomic safetensors checkpoints and exact resume.

Batch `b` of optimizer step `s` is a pure function of (seed, s, b), the checkpoint
holds the optimizer and RNG states, and the learning rate is a function of the
step, so a resumed run retraces the uninterrupted one exactly.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist

from .checkpoint import Checkpoint, CheckpointError, save_checkpoint
from .config import MODELS, PRESETS, get_config
from .data import DataUnavailable, TokenBatches, bits_per_byte, token_shards
from .model import GPT
from .params import count_parameters
from .tokenizer import TokenizerUnavailable, get_tokenizer


def opt(default, help: str, **kw):
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class TrainConfig:
    model: str = opt("gptoss", "architecture: gptoss or gpt2", choices=MODELS)
    preset: str = opt("cpu-tiny", "model sizes", choices=tuple(PRESETS))
    set: list = opt(None, "model config overrides FIELD=VALUE (repeatable), e.g. --set n_layer=2 --set attn_sinks=false",
                    action="append")
    data: str = opt("tinystories", "'tinystories' (hub, or $NANOGPTOSS_DATA), 'synthetic', or a .txt/.jsonl/.parquet file or folder")
    tokenizer: str = opt("auto", "gpt2, gpt2-4k, gpt2-8k, or a .tiktoken file; auto: gpt2-4k/8k for small "
                                 "vocabularies, else gpt2")
    max_stories: int = opt(None, "use at most this many training stories (a twentieth as many validation stories)")
    data_dir: str = opt("data", "where token shards are cached")
    batch_size: int = opt(32, "sequences per optimizer step, over all processes and accumulation steps")
    grad_accum: int = opt(1, "micro-batches per optimizer step (same results, less memory)")
    max_steps: int = opt(500, "optimizer steps")
    lr: float = opt(2e-3, "peak learning rate")
    min_lr: float = opt(2e-4, "learning rate at the end of the cosine decay")
    warmup_steps: int = opt(50, "linear warmup steps")
    weight_decay: float = opt(0.1, "AdamW weight decay (matrices only)")
    beta1: float = opt(0.9, "AdamW beta1")
    beta2: float = opt(0.95, "AdamW beta2")
    grad_clip: float = opt(1.0, "clip the gradient norm to this (0: off)")
    eval_interval: int = opt(100, "steps between validation evaluations")
    eval_batches: int = opt(20, "validation batches per evaluation")
    ckpt_interval: int = opt(100, "steps between checkpoints (one at the end too)")
    out_dir: str = opt(None, "run folder for the checkpoint and summary (default runs/<model>-<preset>)")
    log_dir: str = opt("logs", "folder for the metrics file <run>.jsonl")
    resume: bool = opt(False, "continue from the run folder's checkpoint")
    seed: int = opt(1337, "seed for weights and batches")
    device: str = opt("auto", "auto, cuda, mps or cpu")
    dtype: str = opt("auto", "auto (bf16 on GPUs with bf16, fp16+GradScaler on older GPUs, fp32 on CPU/MPS), "
                             "float32, bfloat16, float16")
    compile: bool = opt(False, "torch.compile the model")
    wandb: bool = opt(False, "also log to Weights & Biases (needs `pip install wandb`)")
    progress: bool = opt(True, "show a tqdm progress bar")

    def run_name(self) -> str:
        return Path(self.out_dir).name if self.out_dir else f"{self.model}-{self.preset}"

    def validate(self) -> None:
        for name in ("batch_size", "grad_accum", "max_steps", "eval_batches", "ckpt_interval", "eval_interval"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.batch_size % self.grad_accum:
            raise ValueError(f"--batch-size {self.batch_size} must be divisible by --grad-accum {self.grad_accum}")
        if not 0 <= self.min_lr <= self.lr:
            raise ValueError(f"need 0 <= --min-lr ({self.min_lr}) <= --lr ({self.lr})")


# Fields that may change between a run and its resumption without changing the numbers.
RESUMABLE_CHANGES = {"max_steps", "eval_interval", "ckpt_interval", "resume", "device", "progress", "wandb",
                     "compile", "log_dir", "data_dir"}


def parse_overrides(items: list[str] | None) -> dict:
    """["n_layer=2", "attn_sinks=false", "sliding_window=none"] -> typed values."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--set expects FIELD=VALUE, got {item!r}")
        key, raw = item.split("=", 1)
        low = raw.lower()
        if low in ("none", "null"):
            out[key] = None
        elif low in ("true", "false"):
            out[key] = low == "true"
        else:
            try:
                out[key] = int(raw)
            except ValueError:
                try:
                    out[key] = float(raw)
                except ValueError:
                    out[key] = raw
    return out


# --------------------------------------------------------------------------- pieces of the loop

def pick_device(name: str = "auto") -> torch.device:
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    """bf16 needs compute capability 8 (Ampere); T4/V100 get fp16 with loss scaling. MPS and CPU: fp32."""
    if name != "auto":
        return getattr(torch, name)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.get_device_capability(device)[0] >= 8 else torch.float16
    return torch.float32


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Decay the weight matrices of projections and experts; not norms, biases, sinks or embeddings."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        skip = p.dim() < 2 or "embedding" in name or name.endswith("bias") or "norm" in name
        (no_decay if skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))


@torch.no_grad()
def evaluate(model, batches: TokenBatches, n_batches: int, device, autocast) -> float:
    was_training = model.training
    model.eval()
    total = torch.zeros((), device=device)
    for i in range(n_batches):
        x, y = batches.get(i, device=device)
        with autocast:
            total += model(x, y).loss.float()
    model.train(was_training)
    if dist.is_initialized():
        dist.all_reduce(total)
        total /= dist.get_world_size()
    return total.item() / n_batches


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


class MetricsLog:
    """JSON lines, one per step; on resume the lines of steps after the checkpoint are dropped."""

    def __init__(self, path: Path, resume_step: int | None):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = []
        if resume_step is not None and path.exists():
            rows = [line for line in path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= resume_step]
        path.write_text("".join(r + "\n" for r in rows))

    def write(self, row: dict) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")


def read_metrics(path: str | os.PathLike) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


# --------------------------------------------------------------------------- the loop

def train(cfg: TrainConfig, callback: Callable[[dict], None] | None = None) -> dict:
    """Train as `cfg` says; returns the run's summary (also written to <out_dir>/summary.json).

    `callback(row)` receives every metrics row (a live plot in a notebook, say).
    """
    cfg.validate()
    distributed = "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1
    device = pick_device(cfg.device)
    if distributed:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    else:
        rank, world = 0, 1
    if cfg.batch_size % (cfg.grad_accum * world):
        raise ValueError(f"--batch-size {cfg.batch_size} must be divisible by --grad-accum {cfg.grad_accum} "
                         f"x {world} processes")
    main_process = rank == 0
    dtype = pick_dtype(cfg.dtype, device)
    autocast = (torch.autocast(device.type, dtype=dtype) if dtype != torch.float32
                else contextlib.nullcontext())
    torch.manual_seed(cfg.seed)

    # data: the first process tokenizes, the others wait and reuse its shards
    overrides = parse_overrides(cfg.set)
    preset_vocab = overrides.get("vocab_size", PRESETS[cfg.preset]["vocab_size"])
    tok_name = cfg.tokenizer if cfg.tokenizer != "auto" else (
        "gpt2-4k" if preset_vocab <= 4096 else "gpt2-8k" if preset_vocab <= 8192 else "gpt2")
    tokenizer = get_tokenizer(tok_name)
    if main_process:
        shards = token_shards(cfg.data, tokenizer, cfg.data_dir, limit=cfg.max_stories, progress=cfg.progress)
    if distributed:
        dist.barrier()
    if not main_process:
        shards = token_shards(cfg.data, tokenizer, cfg.data_dir, limit=cfg.max_stories, progress=False)
    (train_tokens, _), (val_tokens, val_header) = shards["train"], shards["validation"]

    overrides["vocab_size"] = tokenizer.n_vocab
    model_config = get_config(cfg.preset, cfg.model, **overrides)
    model = GPT(model_config).to(device)
    optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr,
                                  betas=(cfg.beta1, cfg.beta2), fused=device.type == "cuda")
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)

    out_dir = Path(cfg.out_dir or f"runs/{cfg.run_name()}")
    ckpt_path = out_dir / "checkpoint.safetensors"
    start_step = 0
    if cfg.resume and ckpt_path.exists():
        ckpt = Checkpoint(ckpt_path)
        before = {k: v for k, v in ckpt.train_config.items() if k not in RESUMABLE_CHANGES}
        now = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in RESUMABLE_CHANGES}
        if before != now:
            diff = {k: (before.get(k), now.get(k)) for k in now if before.get(k) != now.get(k)}
            raise CheckpointError(f"{ckpt_path} was trained with other settings (checkpoint, now): {diff}; "
                                  "resume with the same settings, or start a new --out-dir")
        ckpt.load_model(model)
        ckpt.load_optimizer(optimizer)
        ckpt.load_scaler(scaler)
        ckpt.restore_rng()
        start_step = ckpt.step
    elif cfg.resume and main_process:
        print(f"no checkpoint in {out_dir}: starting from scratch")
    elif ckpt_path.exists():
        raise CheckpointError(f"{ckpt_path} exists: pass --resume to continue it, or choose another --out-dir")

    counts = count_parameters(model_config)
    train_model = model
    if cfg.compile:
        train_model = torch.compile(model)
    if distributed:
        train_model = torch.nn.parallel.DistributedDataParallel(
            train_model, device_ids=[device.index] if device.type == "cuda" else None)

    batches = TokenBatches(train_tokens, model_config.block_size, cfg.batch_size, cfg.seed, rank, world, cfg.grad_accum)
    val_batches = TokenBatches(val_tokens, model_config.block_size, cfg.batch_size // cfg.grad_accum,
                               cfg.seed + 1, rank, world)
    log = MetricsLog(Path(cfg.log_dir) / f"{cfg.run_name()}.jsonl", start_step) if main_process else None
    run = None
    if cfg.wandb and main_process:
        try:
            import wandb
        except ImportError:
            raise RuntimeError("--wandb needs the wandb package: pip install wandb (or drop --wandb)") from None
        run = wandb.init(project="nanogptoss", name=cfg.run_name(), config=dataclasses.asdict(cfg), resume="allow")

    def emit(row: dict) -> None:
        if log:
            log.write(row)
        if run:
            run.log(row, step=row["step"])
        if callback and main_process:
            callback(row)

    from tqdm.auto import tqdm

    tokens_per_step = cfg.batch_size * model_config.block_size
    bar = tqdm(total=cfg.max_steps, initial=start_step, disable=not (cfg.progress and main_process),
               desc=cfg.run_name(), unit="step", dynamic_ncols=True)
    val_loss, rates = float("nan"), []
    t_start = time.perf_counter()
    model.train()
    for step in range(start_step, cfg.max_steps):
        t0 = time.perf_counter()
        lr = lr_at(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss_sum = torch.zeros((), device=device)
        aux_sum = torch.zeros((), device=device)
        for micro in range(cfg.grad_accum):
            x, y = batches.get(step, micro, device)
            sync = contextlib.nullcontext() if (not distributed or micro == cfg.grad_accum - 1) \
                else train_model.no_sync()
            with sync:
                with autocast:
                    out = train_model(x, y)
                scaler.scale(out.objective / cfg.grad_accum).backward()
            loss_sum += out.loss.detach().float()
            if out.aux_loss is not None:
                aux_sum += out.aux_loss.detach().float()
        if cfg.grad_clip > 0:
            scaler.unscale_(optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip).item()
        else:
            grad_norm = float("nan")
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        if distributed:
            dist.all_reduce(loss_sum)
            dist.all_reduce(aux_sum)
            loss_sum /= world
            aux_sum /= world
        loss = loss_sum.item() / cfg.grad_accum
        dt = time.perf_counter() - t0
        if step > start_step:  # the first step pays for warm-up and compilation
            rates.append(tokens_per_step / dt)
        row = {"step": step + 1, "loss": loss, "lr": lr, "grad_norm": grad_norm, "tokens_per_s": tokens_per_step / dt}
        if model_config.is_moe and model_config.router_aux_loss_coef > 0:
            row["aux_loss"] = aux_sum.item() / cfg.grad_accum
        last = step + 1 == cfg.max_steps
        if (step + 1) % cfg.eval_interval == 0 or last:
            val_loss = evaluate(model, val_batches, cfg.eval_batches, device, autocast)
            row.update(val_loss=val_loss, val_bpb=bits_per_byte(val_loss, val_header))
        emit(row)
        bar.set_postfix(loss=f"{loss:.3f}", val=f"{val_loss:.3f}", tok_s=f"{row['tokens_per_s']:,.0f}")
        bar.update(1)
        if main_process and ((step + 1) % cfg.ckpt_interval == 0 or last):
            save_checkpoint(ckpt_path, model, optimizer, scaler, step + 1, dataclasses.asdict(cfg),
                            extra={"tokenizer": tok_name, "val_loss": val_loss})
    bar.close()

    summary = {
        "run": cfg.run_name(), "model": cfg.model, "preset": cfg.preset, "tokenizer": tok_name,
        "steps": cfg.max_steps, "val_loss": val_loss, "val_bpb": bits_per_byte(val_loss, val_header),
        "val_ppl": math.exp(val_loss) if val_loss == val_loss else float("nan"),
        "params_total": counts.total, "params_active": counts.active,
        "train_tokens_per_s": sum(rates) / len(rates) if rates else float("nan"),
        "peak_memory_mb": peak_memory_mb(device), "device": str(device), "dtype": str(dtype).removeprefix("torch."),
        "world_size": world, "wall_s": time.perf_counter() - t_start,
        "checkpoint_mb": ckpt_path.stat().st_size / 2 ** 20 if ckpt_path.exists() else float("nan"),
        "model_config": dataclasses.asdict(model_config),
    }
    if main_process:
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    if run:
        run.finish()
    if distributed:
        dist.destroy_process_group()
    return summary


# --------------------------------------------------------------------------- command line

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m nanogptoss.train",
        description="Train a GPT-OSS or GPT-2 on stories. Example (CPU, minutes): "
                    "python -m nanogptoss.train --model gptoss --preset cpu-tiny --data synthetic --max-steps 200",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        meta = dict(f.metadata)
        if f.type in ("bool", bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, help=meta["help"])
            continue
        kind = {"int": int, "float": float}.get(f.type if isinstance(f.type, str) else f.type.__name__, str)
        parser.add_argument(flag, type=kind, default=f.default, **meta)
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    cfg = TrainConfig(**vars(args))
    try:
        summary = train(cfg)
    except (ValueError, CheckpointError, DataUnavailable, TokenizerUnavailable) as err:
        raise SystemExit(f"error: {err}") from None
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"{summary['run']}: val loss {summary['val_loss']:.4f} nats/token, {summary['val_bpb']:.4f} bits/byte, "
              f"{summary['train_tokens_per_s']:,.0f} tokens/s ({summary['device']}, {summary['dtype']})")
    return summary


if __name__ == "__main__":
    main()
