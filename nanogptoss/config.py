"""Model configuration: one dataclass whose every gpt-oss feature is a switch.

`GPT2Config()` and `GPTOSSConfig()` are the two ends of the same decoder; every
combination in between is a valid model too, which is what lets a chapter turn on
one feature at a time. The dataclass validates itself: an impossible combination
raises `ValueError` naming the field to change, before any tensor is allocated.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

NORMS = ("layernorm", "rmsnorm")
POSITIONS = ("learned", "rope")
FFNS = ("gelu", "swiglu")
ATTN_IMPLS = ("auto", "reference", "sdpa", "flex")
MOE_IMPLS = ("auto", "reference", "dispatch", "grouped", "gather")


@dataclass
class GPTConfig:
    # sizes
    vocab_size: int = 50257
    block_size: int = 1024  # the longest sequence the model accepts (its context)
    n_layer: int = 12
    d_model: int = 768
    n_head: int = 12
    n_kv_head: int | None = None  # None: as many as n_head (plain multi-head attention)
    head_dim: int | None = None  # None: d_model // n_head; gpt-oss fixes it at 64 instead
    ffn_hidden: int | None = None  # None: 4 * d_model for GELU, d_model for SwiGLU experts

    # switches, GPT-2 values by default
    norm: str = "layernorm"  # "layernorm" | "rmsnorm"
    norm_eps: float = 1e-5
    pos: str = "learned"  # "learned" absolute positions | "rope"
    rope_theta: float = 150_000.0
    rope_scaling_factor: float = 1.0  # YaRN factor; 1.0 means plain RoPE
    rope_original_context: int = 4096  # YaRN: the context the model was pretrained at
    rope_beta_fast: float = 32.0
    rope_beta_slow: float = 1.0
    rope_truncate: bool = False  # gpt-oss keeps the YaRN correction range unrounded
    sliding_window: int | None = None  # W: a banded layer's query sees itself and W-1 keys before it
    window_pattern: str = "SF"  # repeated over layers: S banded, F dense (gpt-oss: S F S F ...)
    attn_sinks: bool = False
    ffn: str = "gelu"  # "gelu" MLP | "swiglu" (clamped, gpt-oss)
    swiglu_alpha: float = 1.702
    swiglu_limit: float = 7.0
    n_experts: int = 1  # 1: a dense feed-forward; more: a mixture of experts with a router
    top_k: int = 1
    router_aux_loss_coef: float = 0.0  # Switch/Mixtral load-balancing loss; off in gpt-oss
    tie_embeddings: bool = True
    bias: bool = True  # biases in the linear layers (and LayerNorm)

    # training-time settings that do not change the architecture
    dropout: float = 0.0
    init_std: float = 0.02
    # "auto" picks the fastest path the device and dtype support (attention.resolve_attn_impl,
    # moe.resolve_moe_impl); the others force one, e.g. "reference" to read or to test against
    attn_impl: str = "auto"  # "reference" writes the scores out | "sdpa" | "flex" (FlexAttention, CUDA)
    moe_impl: str = "auto"  # "reference" every expert | "dispatch" chosen ones | "grouped" one grouped GEMM
    #                         | "gather" each token gathers its experts' weights (decoding)

    def __post_init__(self) -> None:
        self.validate()

    # -- derived values -------------------------------------------------------
    @property
    def kv_heads(self) -> int:
        return self.n_head if self.n_kv_head is None else self.n_kv_head

    @property
    def dim_head(self) -> int:
        return self.d_model // self.n_head if self.head_dim is None else self.head_dim

    @property
    def hidden(self) -> int:
        if self.ffn_hidden is not None:
            return self.ffn_hidden
        return 4 * self.d_model if self.ffn == "gelu" else self.d_model

    @property
    def is_moe(self) -> bool:
        return self.n_experts > 1

    @property
    def layer_types(self) -> list[str]:
        """"sliding" or "full" for each layer, the window pattern repeated."""
        if self.sliding_window is None:
            return ["full"] * self.n_layer
        kinds = {"S": "sliding", "F": "full"}
        return [kinds[self.window_pattern[i % len(self.window_pattern)]] for i in range(self.n_layer)]

    @property
    def rope_concentration(self) -> float:
        """YaRN's attention temperature: cos and sin are both scaled by it."""
        f = self.rope_scaling_factor
        return 1.0 if f <= 1.0 else 0.1 * math.log(f) + 1.0

    def replace(self, **changes) -> "GPTConfig":
        """A copy with some fields changed, validated again (dataclasses.replace keeps the class)."""
        return dataclasses.replace(self, **changes)

    # -- validation -----------------------------------------------------------
    def validate(self) -> None:
        def fail(msg: str) -> None:
            raise ValueError(f"{type(self).__name__}: {msg}")

        for name in ("vocab_size", "block_size", "n_layer", "d_model", "n_head", "n_experts", "top_k"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                fail(f"{name} must be a positive integer, got {value!r}")
        for name in ("n_kv_head", "head_dim", "ffn_hidden", "sliding_window"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                fail(f"{name} must be a positive integer or None, got {value!r}")
        for name, allowed in (("norm", NORMS), ("pos", POSITIONS), ("ffn", FFNS),
                              ("attn_impl", ATTN_IMPLS), ("moe_impl", MOE_IMPLS)):
            if getattr(self, name) not in allowed:
                fail(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")

        if self.head_dim is None and self.d_model % self.n_head:
            fail(f"d_model ({self.d_model}) is not divisible by n_head ({self.n_head}); "
                 "change one of them or set head_dim explicitly")
        if self.n_head % self.kv_heads:
            fail(f"n_kv_head ({self.kv_heads}) must divide n_head ({self.n_head}): "
                 "each key/value head serves a whole group of query heads")
        if self.pos == "rope" and self.dim_head % 2:
            fail(f"RoPE rotates pairs of dimensions, so head_dim must be even, got {self.dim_head}")
        if self.rope_scaling_factor < 1.0:
            fail(f"rope_scaling_factor must be >= 1 (1 is plain RoPE), got {self.rope_scaling_factor}")
        if self.pos == "learned" and self.rope_scaling_factor != 1.0:
            fail("rope_scaling_factor (YaRN) only applies with pos='rope'; set pos='rope' or the factor to 1")
        if self.rope_theta <= 1.0:
            fail(f"rope_theta must be > 1, got {self.rope_theta}")
        if self.rope_beta_fast <= self.rope_beta_slow:
            fail("rope_beta_fast must be larger than rope_beta_slow (YaRN's ramp runs from fast to slow)")
        if self.rope_original_context < 1:
            fail(f"rope_original_context must be positive, got {self.rope_original_context}")

        if not self.window_pattern or set(self.window_pattern) - {"S", "F"}:
            fail(f"window_pattern must be a non-empty string of 'S' (banded) and 'F' (dense), "
                 f"got {self.window_pattern!r}")

        if self.top_k > self.n_experts:
            fail(f"top_k ({self.top_k}) cannot exceed n_experts ({self.n_experts})")
        if self.is_moe and self.ffn != "swiglu":
            fail("a mixture of experts uses gpt-oss's clamped SwiGLU experts: set ffn='swiglu' "
                 "or n_experts=1")
        if self.router_aux_loss_coef < 0:
            fail(f"router_aux_loss_coef must be >= 0, got {self.router_aux_loss_coef}")
        if self.router_aux_loss_coef > 0 and not self.is_moe:
            fail("router_aux_loss_coef > 0 needs a router: set n_experts > 1 or the coefficient to 0")
        if self.swiglu_limit <= 0:
            fail(f"swiglu_limit must be positive, got {self.swiglu_limit}")
        if not 0.0 <= self.dropout < 1.0:
            fail(f"dropout must be in [0, 1), got {self.dropout}")
        if self.norm_eps <= 0 or self.init_std <= 0:
            fail("norm_eps and init_std must be positive")


def GPT2Config(**overrides) -> GPTConfig:
    """The GPT-2 end: learned positions, LayerNorm, GELU MLP, multi-head attention, tied embeddings.

    Defaults are GPT-2 small (124M parameters).
    """
    return GPTConfig(**overrides)


GPTOSS_FEATURES = dict(
    norm="rmsnorm", pos="rope", attn_sinks=True, ffn="swiglu",
    tie_embeddings=False, bias=True, window_pattern="SF",
)


def GPTOSSConfig(**overrides) -> GPTConfig:
    """The GPT-OSS end: every gpt-oss feature on, at about GPT-2-small scale by default.

    RMSNorm, RoPE (plain: YaRN is for extending a pretrained context, see `rope.py`),
    grouped-query attention with a fixed head_dim of 64, banded/dense layers alternating
    with window 128, attention sinks, a mixture of clamped-SwiGLU experts, untied
    embeddings. The official sizes are the presets "gpt-oss-20b" and "gpt-oss-120b".
    """
    settings = dict(
        GPTOSS_FEATURES,
        vocab_size=50257, block_size=1024, n_layer=12, d_model=768,
        n_head=12, n_kv_head=4, head_dim=64, sliding_window=128,
        n_experts=8, top_k=2, ffn_hidden=768,
    )
    settings.update(overrides)
    return GPTConfig(**settings)


# Sizes only; `get_config(name, model=...)` adds the architecture of either end.
# The gpt-oss presets are the official shapes, for parameter counts and shape checks.
PRESETS: dict[str, dict] = {
    "gpt-oss-20b": dict(
        vocab_size=201088, block_size=131072, n_layer=24, d_model=2880, n_head=64, n_kv_head=8,
        head_dim=64, n_experts=32, top_k=4, ffn_hidden=2880, sliding_window=128,
        rope_theta=150_000.0, rope_scaling_factor=32.0, rope_original_context=4096,
    ),
    "gpt-oss-120b": dict(
        vocab_size=201088, block_size=131072, n_layer=36, d_model=2880, n_head=64, n_kv_head=8,
        head_dim=64, n_experts=128, top_k=4, ffn_hidden=2880, sliding_window=128,
        rope_theta=150_000.0, rope_scaling_factor=32.0, rope_original_context=4096,
    ),
    # Trains in minutes on two CPU cores with a small (4096-token) BPE.
    "cpu-tiny": dict(
        vocab_size=4096, block_size=128, n_layer=4, d_model=128, n_head=4, n_kv_head=2,
        head_dim=32, n_experts=4, top_k=2, ffn_hidden=128, sliding_window=32,
    ),
    # A free Colab T4 (16 GB, fp16): GPT-2 BPE, an hour or so of training.
    "colab-t4": dict(
        vocab_size=50257, block_size=512, n_layer=8, d_model=512, n_head=8, n_kv_head=2,
        head_dim=64, n_experts=8, top_k=2, ffn_hidden=512, sliding_window=128,
    ),
    # One modern GPU (A100/H100, bf16).
    "gpu": dict(
        vocab_size=50257, block_size=1024, n_layer=12, d_model=768, n_head=12, n_kv_head=4,
        head_dim=64, n_experts=16, top_k=4, ffn_hidden=768, sliding_window=128,
    ),
}

MODELS = ("gptoss", "gpt2")


def get_config(preset: str, model: str = "gptoss", **overrides) -> GPTConfig:
    """A preset's sizes with either end's architecture, plus any field overrides.

    For the GPT-2 end the GPT-OSS-only size fields (KV heads, experts, window, YaRN)
    are dropped, and head_dim follows d_model / n_head as in GPT-2.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; choose 'gptoss' or 'gpt2'")
    sizes = dict(PRESETS[preset])
    if model == "gptoss":
        settings = dict(GPTOSS_FEATURES, **sizes)
        return GPTConfig(**{**settings, **overrides})
    gpt2_sizes = {k: sizes[k] for k in ("vocab_size", "block_size", "n_layer", "d_model", "n_head")}
    return GPTConfig(**{**gpt2_sizes, **overrides})
