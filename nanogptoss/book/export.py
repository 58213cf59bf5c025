"""Export a model for the browser: one safetensors file that `book/js/model.js` loads.

The tensors keep the library's `state_dict` names (`blocks.0.attn.q_proj.weight`, ...), so
the JavaScript reads the same names the chapters print; a tied unembedding is written once,
as `embedding.weight`. The config rides in the file's `__metadata__` as JSON (key
`config`), so a page fetches a single file. fp16 halves the download; the JS decodes it to
float32 and computes in float32 either way. The sinks are always float32: in half precision
-3.1 and -3.0 would be one logit (see `AttentionBlock._apply`).

    python -m nanogptoss.book.export runs/x/checkpoint.safetensors model.safetensors --dtype fp16
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import torch

from ..files import atomic_path

DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


def export_model(model, path, dtype: str = "fp32", tokenizer: str = "tinystories-4k") -> None:
    """Write `model`'s weights, config and tokenizer name to `path` (safetensors) for `model.js`."""
    from safetensors.torch import save_file

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    tensors = {}
    for name, tensor in model.state_dict().items():
        if name == "unembedding.weight" and model.config.tie_word_embeddings:
            continue  # the same tensor as embedding.weight
        keep = torch.float32 if name.endswith(".sinks") else DTYPES[dtype]
        tensors[name] = tensor.detach().to("cpu", keep).contiguous()
    config = dataclasses.asdict(model.config)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"config": json.dumps(config), "format": "nanogptoss",
                                                   "tokenizer": tokenizer})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m nanogptoss.book.export",
                                     description="Export a training checkpoint for the browser's model.js.")
    parser.add_argument("checkpoint", help="a checkpoint written by nanogptoss training (checkpoint.safetensors)")
    parser.add_argument("out", help="the .safetensors file to write")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp16")
    parser.add_argument("--tokenizer", default="tinystories-4k", help="the tokenizer the model was trained with")
    args = parser.parse_args(argv)
    from ..weights.checkpoint import CheckpointError, load_model

    try:
        export_model(load_model(args.checkpoint)[0], args.out, args.dtype, args.tokenizer)
    except (OSError, ValueError, CheckpointError) as err:
        raise SystemExit(f"export: {err}") from None


if __name__ == "__main__":
    main()
