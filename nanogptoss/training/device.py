"""Where and in what precision to run: one choice for the trainer, the sampler and the benchmarks."""

from __future__ import annotations

import torch

DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("auto", "float32", "bfloat16", "float16")


def pick_device(name: str = "auto") -> torch.device:
    """"auto": CUDA, then Apple's MPS, then the CPU. A named device must exist here."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}; use one of {DEVICES} (or e.g. cuda:1)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but this machine has no CUDA GPU; use --device auto or cpu")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"device {name!r} asked for, but MPS is not available here; use --device auto or cpu")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unsupported device {name!r}; use one of {DEVICES}")
    return device


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    """"auto": bf16 on GPUs of compute capability 8 (Ampere) or newer; fp16 with loss scaling on
    older ones (T4, V100), which have no bf16 arithmetic; fp32 on MPS and the CPU."""
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; use one of {DTYPES}")
    if name != "auto":
        return getattr(torch, name)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.get_device_capability(device)[0] >= 8 else torch.float16
    return torch.float32
