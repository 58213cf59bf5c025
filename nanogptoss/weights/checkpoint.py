"""Training checkpoints: one safetensors file, written atomically, refused when corrupt or mismatched.

A checkpoint holds everything an exact resume needs:
  model/<name>         the weights (a tied unembedding is stored once, as the embedding)
  optim/<i>/<key>      AdamW's moments and step counts, per parameter index
  rng/torch, rng/cuda  the random-number generators' states
and, in the header's string metadata, JSON for the model config, the training
config, the step, the optimizer's hyperparameters and the loss scaler.

safetensors stores tensors and strings only, so loading never runs code from the
file (unlike a pickle). The file is written under a temporary name, flushed to
disk and renamed over the old one: a crash leaves the old checkpoint or the new
one, never half of one.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import re
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..config import GPTConfig
from ..files import atomic_path
from ..model.transformer import GPT

FORMAT = "nanogptoss-checkpoint-1"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message says what to do."""


def _model_tensors(model) -> dict[str, torch.Tensor]:
    state = model.state_dict()
    if model.config.tie_word_embeddings:
        state.pop("unembedding.weight", None)  # the same tensor as embedding.weight
    return {f"model/{k}": v.detach().contiguous().cpu() for k, v in state.items()}


def save_checkpoint(path: str | os.PathLike, model, optimizer=None, scaler=None, step: int = 0,
                    train_config: dict | None = None, extra: dict | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = _model_tensors(model)
    meta = {"format": FORMAT, "step": str(step),
            "model_config": json.dumps(dataclasses.asdict(model.config)),
            "train_config": json.dumps(train_config or {}), "extra": json.dumps(extra or {})}
    if optimizer is not None:
        state = optimizer.state_dict()
        scalars = {}
        for i, per_param in state["state"].items():
            for key, value in per_param.items():
                if torch.is_tensor(value):
                    tensors[f"optim/{i}/{key}"] = value.detach().contiguous().cpu()
                else:
                    scalars[f"{i}/{key}"] = value
        meta["optim_groups"] = json.dumps(state["param_groups"])
        meta["optim_scalars"] = json.dumps(scalars)
    if scaler is not None and scaler.is_enabled():
        meta["scaler"] = json.dumps(scaler.state_dict())
    tensors["rng/torch"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["rng/cuda"] = torch.cuda.get_rng_state()
    with atomic_path(path) as tmp:
        try:
            save_file(tensors, str(tmp), metadata=meta)
        except SafetensorError as err:
            raise _os_error(err, path) from None
    return path


def _os_error(err: SafetensorError, path: Path) -> OSError:
    """safetensors reports a failed write (a full disk, say) as its own error, the OS's reason in its text:
    as the OSError it is, for `path`, so callers handle it as they handle every failed write."""
    code = re.search(r"os error (\d+)", str(err))
    if code:
        return OSError(int(code[1]), os.strerror(int(code[1])), str(path))
    return OSError(errno.EIO, f"could not be written ({err})", str(path))


class Checkpoint:
    """A checkpoint file opened for reading: `meta`, `model_config`, `step`, and loaders."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise CheckpointError(f"no checkpoint at {self.path}")
        try:
            with safe_open(str(self.path), framework="pt") as f:
                self.meta = f.metadata() or {}
                self.tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as err:
            raise CheckpointError(
                f"{self.path} is not a readable checkpoint ({type(err).__name__}: {err}); it may be truncated "
                "or corrupted. Delete it to start over, or point --out-dir at another run.") from None
        if self.meta.get("format") != FORMAT:
            raise CheckpointError(f"{self.path} is not a nanogptoss training checkpoint "
                                  f"(format {self.meta.get('format')!r}, expected {FORMAT!r})")
        try:
            self.step = int(self.meta["step"])
            fields = json.loads(self.meta["model_config"])
            self.train_config = json.loads(self.meta.get("train_config", "{}"))
            self.extra = json.loads(self.meta.get("extra", "{}"))
            if not isinstance(fields, dict) or self.step < 0:
                raise ValueError("model_config is no object" if not isinstance(fields, dict) else "negative step")
            if "optim_groups" in self.meta and not isinstance(json.loads(self.meta["optim_scalars"]), dict):
                raise ValueError("optim_scalars is no object")
        except (KeyError, ValueError) as err:
            what = f"no {err}" if isinstance(err, KeyError) else str(err)
            raise self.damaged(f"its metadata is damaged ({what})") from None
        unknown = sorted(set(fields) - {f.name for f in dataclasses.fields(GPTConfig)})
        if unknown:
            raise CheckpointError(f"{self.path}: its model config has fields this version of nanogptoss does not "
                                  f"know ({', '.join(unknown[:4])}): it was written by another version")
        try:
            self.model_config = GPTConfig(**fields)
        except (TypeError, ValueError) as err:
            raise CheckpointError(f"{self.path}: its model config is not valid ({err})") from None

    def damaged(self, what: str, use: str = "resumed or loaded") -> CheckpointError:
        return CheckpointError(f"{self.path}: {what}; it cannot be {use}. Delete it to start over, "
                               "or point --out-dir at another run.")

    def model_state(self) -> dict[str, torch.Tensor]:
        return {k.removeprefix("model/"): v for k, v in self.tensors.items() if k.startswith("model/")}

    def load_model(self, model) -> None:
        if model.config != self.model_config:
            ours, theirs = dataclasses.asdict(model.config), dataclasses.asdict(self.model_config)
            diff = {k: (theirs[k], ours[k]) for k in ours if ours[k] != theirs[k]}
            raise CheckpointError(f"{self.path} was made for another model; differing fields "
                                  f"(checkpoint, requested): {diff}. Use the same settings or another --out-dir.")
        ours = model.state_dict()
        for name, tensor in self.model_state().items():
            if name in ours and tensor.shape != ours[name].shape:
                raise self.damaged(f"model/{name} has shape {tuple(tensor.shape)} where its model config "
                                   f"implies {tuple(ours[name].shape)}")
        missing, unexpected = model.load_state_dict(self.model_state(), strict=False)
        allowed_missing = {"unembedding.weight"} if model.config.tie_word_embeddings else set()
        if set(missing) - allowed_missing or unexpected:
            raise CheckpointError(f"{self.path}: missing weights {sorted(set(missing) - allowed_missing)}, "
                                  f"unexpected {sorted(unexpected)}")

    def load_optimizer(self, optimizer) -> None:
        if "optim_groups" not in self.meta:
            raise CheckpointError(f"{self.path} holds no optimizer state, so training cannot resume from it")
        scalars = json.loads(self.meta["optim_scalars"])
        state: dict[int, dict] = {}
        for key, value in self.tensors.items():
            if key.startswith("optim/"):
                _, i, name = key.split("/", 2)
                state.setdefault(int(i), {})[name] = value
        for key, value in scalars.items():
            i, name = key.split("/", 1)
            state.setdefault(int(i), {})[name] = value
        groups = json.loads(self.meta["optim_groups"])
        if [len(g["params"]) for g in groups] != [len(g["params"]) for g in optimizer.param_groups]:
            raise CheckpointError(f"{self.path}: optimizer parameter groups do not match this model")
        self._check_optimizer_state(state, optimizer)
        # JSON has no tuples: give each value back the type the optimizer holds (AdamW's betas)
        groups = [{k: tuple(v) if isinstance(now.get(k), tuple) and isinstance(v, list) else v
                   for k, v in group.items()} for group, now in zip(groups, optimizer.param_groups)]
        optimizer.load_state_dict({"state": state, "param_groups": groups})

    def _check_optimizer_state(self, state: dict[int, dict], optimizer) -> None:
        """Every parameter has the same state (AdamW: step, exp_avg, exp_avg_sq), its moments shaped like it."""
        params = [p for group in optimizer.param_groups for p in group["params"]]
        keys = set().union(*state.values()) if state else set()
        for i, param in enumerate(params if state else []):
            lacking = sorted(keys - set(state.get(i, {})))
            if lacking:
                raise self.damaged(f"the optimizer state of parameter {i} has no {', '.join(lacking)}", "resumed")
            for key, value in state[i].items():
                if torch.is_tensor(value) and value.dim() and value.shape != param.shape:
                    raise self.damaged(f"optim/{i}/{key} has shape {tuple(value.shape)} where its parameter has "
                                       f"{tuple(param.shape)}", "resumed")
        if set(state) - set(range(len(params))):
            raise self.damaged(f"it holds optimizer state for {len(state)} parameters, the model has {len(params)}",
                               "resumed")

    def load_scaler(self, scaler) -> None:
        if scaler is not None and scaler.is_enabled() and "scaler" in self.meta:
            scaler.load_state_dict(json.loads(self.meta["scaler"]))

    def restore_rng(self) -> None:
        state = self.tensors.get("rng/torch")
        if state is None or state.dtype != torch.uint8 or state.shape != torch.get_rng_state().shape:
            raise self.damaged("its random-number state rng/torch is missing or mis-shaped", "resumed exactly")
        torch.set_rng_state(state)
        if "rng/cuda" in self.tensors and torch.cuda.is_available():
            torch.cuda.set_rng_state(self.tensors["rng/cuda"])


def load_model(path: str | os.PathLike, device="cpu", dtype: torch.dtype | None = None):
    """The model stored in a training checkpoint, ready for inference."""
    ckpt = Checkpoint(path)
    model = GPT(ckpt.model_config)
    ckpt.load_model(model)
    model = model.to(device=device, dtype=dtype) if dtype else model.to(device)
    return model.eval(), ckpt
