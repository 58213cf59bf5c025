"""Write stories with a trained checkpoint: `python -m nanogptoss sample --ckpt runs/gptoss-cpu-tiny/checkpoint.safetensors`.

Tokens are printed as they are sampled (the KV cache makes each one cost a single
position), and the generation speed is printed at the end.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from ..data.tokenizer import get_tokenizer
from ..model.generate import generate_stream
from ..weights.checkpoint import CheckpointError, load_model
from .device import pick_device


class StreamDecoder:
    """Token ids in, text out, holding back bytes that do not yet form whole UTF-8 characters."""

    def __init__(self, tokenizer):
        self.tokenizer, self.pending = tokenizer, b""

    def push(self, token: int) -> str:
        self.pending += self.tokenizer.decode_single_token_bytes(token)
        try:
            text, self.pending = self.pending.decode("utf-8"), b""
            return text
        except UnicodeDecodeError:
            return ""


# below this the logits / temperature that sampling exponentiates can overflow float32 (a logit of 1e4
# over 1e-35 does); such a temperature is greedy decoding in all but name, which 0 asks for exactly
MIN_TEMPERATURE = 1e-6


def sample(ckpt: str, prompt: str = "Once upon a time", max_new_tokens: int = 200, temperature: float = 0.8,
           top_k: int | None = None, top_p: float | None = 0.95, num_samples: int = 1, seed: int = 0,
           device: str = "auto", stream=sys.stdout, stop_at_eot: bool = True) -> list[str]:
    """Sample `num_samples` continuations of `prompt`, streaming them to `stream`; returns the texts."""
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"--num-samples must be at least 1, got {num_samples!r}")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens must be at least 1, got {max_new_tokens!r}")
    if isinstance(temperature, (int, float)) and 0 < temperature < MIN_TEMPERATURE:
        raise ValueError(f"--temperature {temperature:g} is too small to sample with (the logits divided by it "
                         f"overflow float32); use 0 for greedy decoding, or at least {MIN_TEMPERATURE:g}")
    dev = pick_device(device)
    model, info = load_model(ckpt, device=dev)
    tokenizer = get_tokenizer(info.extra.get("tokenizer", "gpt2"))
    ids = tokenizer.encode_ordinary(prompt) if prompt else [tokenizer.eot_token]
    room = model.config.max_position_embeddings - len(ids)
    if room <= 0:
        raise ValueError(f"the prompt has {len(ids)} tokens, the model's context is {model.config.max_position_embeddings}")
    max_new_tokens = min(max_new_tokens, room)
    generator = torch.Generator(device=dev).manual_seed(seed)
    texts = []
    for n in range(num_samples):
        decoder, pieces, count = StreamDecoder(tokenizer), [prompt], 0
        if stream:
            print(f"--- sample {n + 1} ---\n{prompt}", end="", file=stream, flush=True)
        start = time.perf_counter()
        idx = torch.tensor([ids], device=dev)
        for token in generate_stream(model, idx, max_new_tokens, temperature, top_k, top_p, generator=generator):
            count += 1
            t = token.item()
            if stop_at_eot and t == tokenizer.eot_token:
                break
            piece = decoder.push(t)
            pieces.append(piece)
            if stream:
                print(piece, end="", file=stream, flush=True)
        elapsed = time.perf_counter() - start
        texts.append("".join(pieces))
        if stream:
            print(f"\n[{count} tokens in {elapsed:.2f} s: {count / elapsed:,.1f} tokens/s on {dev}]", file=stream)
    return texts


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m nanogptoss sample", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--ckpt", required=True, help="a checkpoint.safetensors written by nanogptoss.training.train")
    p.add_argument("--prompt", default="Once upon a time", help="the beginning of the story")
    p.add_argument("--max-new-tokens", type=int, default=200, help="tokens to sample (fewer if the context ends)")
    p.add_argument("--temperature", type=float, default=0.8, help="0 is greedy")
    p.add_argument("--top-k", type=int, default=None, help="sample among the k most likely tokens only")
    p.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling: the smallest set with this mass")
    p.add_argument("--num-samples", type=int, default=1, help="how many stories")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--device", default="auto", help="auto, cuda, mps or cpu")
    args = p.parse_args(argv)
    try:
        sample(args.ckpt, args.prompt, args.max_new_tokens, args.temperature, args.top_k, args.top_p,
               args.num_samples, args.seed, args.device)
    except (CheckpointError, ValueError) as err:
        raise SystemExit(f"error: {err}") from None


if __name__ == "__main__":
    main()
