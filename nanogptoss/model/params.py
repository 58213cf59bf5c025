"""Parameter and FLOP counts, from the config alone (no weights allocated).

"Active" parameters are those one token actually uses: only k of the E experts,
and, following the official gpt-oss counts, not the input embedding (a lookup,
not a matrix multiply) but the output unembedding.
"""

from __future__ import annotations

from typing import NamedTuple

from ..config import SLIDING, GPTConfig


class ParameterCount(NamedTuple):
    total: int
    active: int
    embedding: int  # input token (+ position) embeddings
    unembedding: int  # 0 when tied to the embedding
    per_layer: int  # total in one transformer block (the same for every block)
    per_layer_active: int


def _linear(n_in: int, n_out: int, bias: bool) -> int:
    return n_in * n_out + (n_out if bias else 0)


def count_parameters(config: GPTConfig) -> ParameterCount:
    c = config
    d, H, G, h = c.hidden_size, c.num_attention_heads, c.num_key_value_heads, c.head_dim
    f, E = c.intermediate_size, c.num_experts
    norm = d * (2 if c.norm == "layernorm" and c.bias else 1)
    attn = (_linear(d, H * h, c.bias) + 2 * _linear(d, G * h, c.bias) + _linear(H * h, d, c.bias)
            + (H if c.attn_sinks else 0))
    if c.is_moe:
        router = _linear(d, E, True)
        expert = d * 2 * f + 2 * f + f * d + d
        ffn, ffn_active = router + E * expert, router + c.experts_per_token * expert
    elif c.ffn == "swiglu":
        ffn = ffn_active = _linear(d, 2 * f, c.bias) + _linear(f, d, c.bias)
    else:
        ffn = ffn_active = _linear(d, f, c.bias) + _linear(f, d, c.bias)
    per_layer = 2 * norm + attn + ffn
    per_layer_active = 2 * norm + attn + ffn_active
    embedding = c.vocab_size * d + (c.max_position_embeddings * d if c.pos == "learned" else 0)
    unembedding = 0 if c.tie_word_embeddings else c.vocab_size * d
    total = embedding + c.num_hidden_layers * per_layer + norm + unembedding
    # the output projection is active whether or not it shares its matrix with the input
    active = c.num_hidden_layers * per_layer_active + norm + c.vocab_size * d
    return ParameterCount(total, active, embedding, unembedding, per_layer, per_layer_active)


def flops_per_token(config: GPTConfig, seq_len: int | None = None, training: bool = False) -> float:
    """Matrix-multiply FLOPs for one token (2 per multiply-add).

    The weights give 2 x active parameters; attention adds scores and the weighted
    sum, 4·H·h per key attended, averaged over a sequence of `seq_len` (default:
    the context) with each banded layer capped at its window. Training (forward +
    backward) is 3x the forward.
    """
    c = config
    T = c.max_position_embeddings if seq_len is None else seq_len
    weights = 2 * (count_parameters(c).active - c.num_hidden_layers * (c.num_attention_heads if c.attn_sinks else 0))
    attention = 0.0
    for layer_type in c.layer_types:
        w = c.sliding_window if layer_type == SLIDING else T
        w = min(w, T)
        # mean over positions t = 1..T of the keys query t sees, min(t, w)
        keys = (w * (w + 1) / 2 + (T - w) * w) / T
        attention += 4 * c.num_attention_heads * c.head_dim * keys
    forward = weights + attention
    return 3 * forward if training else forward


def format_count(n: float) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return str(int(n))


def preset_table() -> str:
    """A markdown table of every preset at both ends: total and active parameters, FLOPs/token."""
    from ..config import PRESETS, get_config

    rows = ["| preset | model | layers | hidden_size | experts (k per token) | total params | active params "
            "| forward GFLOPs/token @4096 |", "|---|---|---|---|---|---|---|---|"]
    for name in PRESETS:
        for model in ("gptoss", "gpt2"):
            c = get_config(name, model=model)
            p = count_parameters(c)
            moe = f"{c.num_experts} ({c.experts_per_token})" if c.is_moe else "dense"
            gflops = flops_per_token(c, seq_len=min(4096, c.max_position_embeddings)) / 1e9
            rows.append(f"| {name} | {model} | {c.num_hidden_layers} | {c.hidden_size} | {moe} | {p.total:,} "
                        f"({format_count(p.total)}) | {p.active:,} ({format_count(p.active)}) | {gflops:.3f} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    """`python -m nanogptoss presets`."""
    import argparse

    argparse.ArgumentParser(prog="python -m nanogptoss presets", description=main.__doc__).parse_args(argv)
    print(preset_table())
