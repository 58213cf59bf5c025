"""Sampling: temperature, top-k and top-p (nucleus), with or without a KV cache.

With the cache, the prompt is run once (prefill) and each new token costs one
position's worth of work; without it, every step reruns the whole sequence, which
is the slow reference the cache is tested against.
"""

from __future__ import annotations

from typing import Iterator

import torch


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _check_knobs(temperature: float, top_k: int | None, top_p: float | None) -> None:
    if not _is_number(temperature) or not temperature >= 0 or temperature == float("inf"):
        raise ValueError(f"temperature must be a number >= 0 (0 is greedy), got {temperature!r}")
    if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1):
        raise ValueError(f"top_k must be a whole number >= 1 or None, got {top_k!r}")
    if top_p is not None and (not _is_number(top_p) or not 0.0 < top_p <= 1.0):
        raise ValueError(f"top_p must be in (0, 1] or None, got {top_p!r}")


def next_token_probs(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                     top_p: float | None = None) -> torch.Tensor:
    """The distribution `sample_next` draws from: (..., V) logits -> (..., V) probabilities
    after temperature, then top-k, then top-p (zero outside what they keep). temperature > 0."""
    _check_knobs(temperature, top_k, top_p)
    if temperature == 0:
        raise ValueError("temperature 0 is greedy decoding (argmax), which has no distribution to return")
    return _filtered_probs(logits, temperature, top_k, top_p)


def _filtered_probs(logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None) -> torch.Tensor:
    # the knobs are already checked: sample_next calls this once per generated token
    # shifted by the row's max first, so a tiny temperature sends the others to -inf, never inf - inf
    logits = logits.float()
    logits = (logits - logits.amax(dim=-1, keepdim=True)) / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        # drop a token when the tokens ranked above it already reach top_p (the best is always kept)
        drop = (probs.cumsum(dim=-1) - probs) >= top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return torch.softmax(logits, dim=-1)


def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                top_p: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Pick one token id per row of `logits` (B, V); temperature 0 is greedy (argmax)."""
    _check_knobs(temperature, top_k, top_p)
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    probs = _filtered_probs(logits, temperature, top_k, top_p)
    return torch.multinomial(probs, num_samples=1, generator=generator)


def sample_from_probs(probs: torch.Tensor, u) -> torch.Tensor:
    """Pick ids from (..., V) probabilities with given uniform draws u in [0, 1), one per row.

    Inverse CDF: the first id whose cumulative probability (summed in float64) exceeds u. The
    same draws give the same ids in `book/js/model.js`, which is how the JavaScript sampler is
    tested against this one. (`sample_next` keeps torch.multinomial and its random stream.)
    """
    cdf = probs.double().cumsum(dim=-1)
    u = torch.as_tensor(u, dtype=torch.float64).reshape(*cdf.shape[:-1], 1)
    idx = torch.searchsorted(cdf, u, right=True)
    # rounding can leave the total a hair under u: take the last id with any probability
    last = (probs.shape[-1] - 1 - (probs > 0).flip(-1).int().argmax(dim=-1, keepdim=True))
    return torch.where(idx >= probs.shape[-1], last, idx)


@torch.no_grad()
def generate_stream(model, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                    top_k: int | None = None, top_p: float | None = None, use_cache: bool = True,
                    generator: torch.Generator | None = None, compile: bool = False) -> Iterator[torch.Tensor]:
    """Yield the new tokens (B, 1) one at a time, for streaming output.

    `compile` runs the one-token decode steps through `torch.compile` (worth it on a GPU,
    where a small model's step is bound by kernel launches; the first call compiles for
    a minute or so). The prompt still runs eagerly.
    """
    if idx.dim() == 1:
        idx = idx[None]
    if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be a whole number >= 0, got {max_new_tokens!r}")
    _check_knobs(temperature, top_k, top_p)  # also when no token is asked for: a wrong knob is a mistake anyway
    context = model.config.max_position_embeddings
    total = idx.shape[1] + max_new_tokens
    if total > context:
        raise ValueError(f"prompt ({idx.shape[1]} tokens) + max_new_tokens ({max_new_tokens}) = {total} "
                         f"exceeds the model's context (max_position_embeddings {context}); shorten one of them")
    was_training = model.training
    model.eval()
    try:
        cache = model.new_kv_cache(max_len=total) if use_cache else None
        # dynamic: the cache length grows every step; one graph serves them all
        step = torch.compile(model, dynamic=True) if compile and use_cache else model
        seq, step_input = idx, idx
        for i in range(max_new_tokens):
            run = step if i > 0 else model
            logits = run(step_input if use_cache else seq, kv_cache=cache).logits[:, -1, :]
            nxt = sample_next(logits, temperature, top_k, top_p, generator)
            seq = torch.cat([seq, nxt], dim=1)
            step_input = nxt
            yield nxt
    finally:
        model.train(was_training)


@torch.no_grad()
def generate(model, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
             top_k: int | None = None, top_p: float | None = None, use_cache: bool = True,
             generator: torch.Generator | None = None, compile: bool = False) -> torch.Tensor:
    """The prompt followed by `max_new_tokens` sampled tokens: (B, T + max_new_tokens)."""
    if idx.dim() == 1:
        idx = idx[None]
    new = list(generate_stream(model, idx, max_new_tokens, temperature, top_k, top_p, use_cache, generator,
                               compile))
    return torch.cat([idx, *new], dim=1)
