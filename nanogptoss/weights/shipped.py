"""The book's own trained models, shipped inside the package: `nanogptoss.pretrained(name)`.

Each is one safetensors file in `data/pretrained/` written by `nanogptoss.book.export`
(fp16 weights, the config and tokenizer name in its `__metadata__`), the same file the
browser's `model.js` fetches. How each was trained, and its bits/byte, is in that folder's
README.md; `python -m nanogptoss.weights.shipped` prints the names.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..config import GPTConfig

PRETRAINED_DIR = Path(__file__).resolve().parents[1] / "data" / "pretrained"
NAMES = ("tinystories-gptoss", "tinystories-gpt2")


def pretrained_path(name: str) -> Path:
    """The shipped file of `name`, or one line that lists the names there are."""
    if name not in NAMES:
        raise ValueError(f"no pretrained model {name!r}; choose one of {', '.join(NAMES)}")
    path = PRETRAINED_DIR / f"{name}.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from this install of nanogptoss; reinstall the package")
    return path


def read_exported(path: str | Path, device="cpu", dtype: torch.dtype = torch.float32):
    """The model in a file written by `nanogptoss.book.export`, in eval mode, and its metadata."""
    from safetensors import safe_open

    from ..model.transformer import GPT

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        if meta.get("format") != "nanogptoss" or "config" not in meta:
            raise ValueError(f"{path} was not written by nanogptoss.book.export (no nanogptoss config in it)")
        state = {name: f.get_tensor(name) for name in f.keys()}
    model = GPT(GPTConfig(**json.loads(meta["config"])))  # ties the unembedding to the embedding if asked
    missing, unexpected = model.load_state_dict(state, strict=False)  # copies fp16 into the float32 weights
    tied = {"unembedding.weight"} if model.config.tie_word_embeddings else set()
    if set(missing) - tied or unexpected:
        raise ValueError(f"{path}: missing weights {sorted(set(missing) - tied)}, unexpected {sorted(unexpected)}")
    return model.to(device=device, dtype=dtype).eval(), meta


def pretrained(name: str = "tinystories-gptoss", device="cpu", dtype: torch.dtype = torch.float32):
    """The book's trained model `name` ("tinystories-gptoss" or its matched "tinystories-gpt2").

    Its weights are stored in fp16 and computed here in `dtype`; its tokenizer is named in
    `model.tokenizer_name` (`nanogptoss.data.tokenizer.get_tokenizer` loads it).
    """
    model, meta = read_exported(pretrained_path(name), device, dtype)
    model.tokenizer_name = meta.get("tokenizer", "tinystories-4k")
    return model


if __name__ == "__main__":
    print("\n".join(NAMES))
