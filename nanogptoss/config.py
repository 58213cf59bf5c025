"""Model configuration: one dataclass whose every gpt-oss feature is a switch.

`GPT2Config()` and `GPTOSSConfig()` are the two ends of the same decoder; every
combination in between is a valid model too, which is what lets a chapter turn on
one feature at a time. The dataclass validates itself: an impossible combination
raises `ValueError` naming the field to change, before any tensor is allocated.

Field names are those of the gpt-oss reference's `ModelConfig` (`num_experts`,
`experts_per_token`, `initial_context_length`), and of transformers' `GptOssConfig`
for what the reference lacks (`max_position_embeddings`, `layer_types`,
`tie_word_embeddings`, ...), so a `config.json` reads like this file. Fields left at
None are derived once, at construction (`num_key_value_heads`, `head_dim`,
`intermediate_size`, `layer_types`); `replace` derives them again from the new values.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

NORMS = ("layernorm", "rmsnorm")
POSITIONS = ("learned", "rope")
FFNS = ("gelu", "swiglu")
# the implementations `nanogptoss.kernels` holds for each operation ("auto" picks one per call)
ATTN_IMPLS = ("auto", "reference", "sdpa", "flex")
MOE_IMPLS = ("auto", "reference", "dispatch", "sorted", "grouped", "gather")

# The two kinds of attention layer, named as in transformers' `layer_types`.
SLIDING = "sliding_attention"  # banded: a query sees itself and the sliding_window - 1 keys before it
FULL = "full_attention"  # dense: a query sees every earlier key
LAYER_TYPES = (SLIDING, FULL)


def alternating_layer_types(num_hidden_layers: int, sliding_window: int | None) -> tuple[str, ...]:
    """gpt-oss's pattern: banded, dense, banded, dense, ... (all dense without a window)."""
    if sliding_window is None:
        return (FULL,) * num_hidden_layers
    return tuple(SLIDING if i % 2 == 0 else FULL for i in range(num_hidden_layers))


def check_experts_per_token(experts_per_token: int, num_experts: int) -> None:
    """The router keeps k of E experts, so 1 <= k <= E."""
    if not 1 <= experts_per_token <= num_experts:
        raise ValueError(f"experts_per_token ({experts_per_token}) must be between 1 and num_experts "
                         f"({num_experts})")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class GPTConfig:
    # sizes
    vocab_size: int = 50257
    max_position_embeddings: int = 1024  # the longest sequence the model accepts (its context)
    num_hidden_layers: int = 12
    hidden_size: int = 768  # d, the width of the residual stream
    num_attention_heads: int = 12
    num_key_value_heads: int | None = None  # None: as many as query heads (plain multi-head attention)
    head_dim: int | None = None  # None: hidden_size // num_attention_heads; gpt-oss fixes it at 64 instead
    intermediate_size: int | None = None  # the feed-forward width; None: 4 * hidden_size (GELU), hidden_size (SwiGLU)

    # switches, GPT-2 values by default
    norm: str = "layernorm"  # "layernorm" | "rmsnorm"
    norm_eps: float = 1e-5
    pos: str = "learned"  # "learned" absolute positions | "rope"
    rope_theta: float = 150_000.0
    rope_scaling_factor: float = 1.0  # YaRN factor; 1.0 means plain RoPE
    initial_context_length: int = 4096  # YaRN: the context the model was pretrained at
    rope_beta_fast: float = 32.0
    rope_beta_slow: float = 1.0
    rope_truncate: bool = False  # gpt-oss keeps the YaRN correction range unrounded
    sliding_window: int | None = None  # W, the keys a banded layer's query sees (itself included)
    layer_types: tuple[str, ...] | None = None  # SLIDING or FULL per layer; None: alternating, banded first
    attn_sinks: bool = False
    ffn: str = "gelu"  # "gelu" MLP | "swiglu" (clamped, gpt-oss)
    swiglu_alpha: float = 1.702
    swiglu_limit: float = 7.0
    num_experts: int = 1  # 1: a dense feed-forward; more: a mixture of experts with a router
    experts_per_token: int = 1  # k, the experts the router picks for each token
    router_aux_loss_coef: float = 0.0  # Switch/Mixtral load-balancing loss; off in gpt-oss
    tie_word_embeddings: bool = True
    bias: bool = True  # biases in the linear layers (and LayerNorm)

    # training-time settings that do not change the architecture
    dropout: float = 0.0
    initializer_range: float = 0.02  # std of the normal initialisation
    # "auto" lets nanogptoss.kernels pick the fastest path for the device and dtype at every
    # call; any other name forces that one, e.g. "reference" to read or to test against
    attn_impl: str = "auto"  # "reference" | "sdpa" | "flex" (FlexAttention)
    moe_impl: str = "auto"  # "reference" | "dispatch" | "sorted" | "grouped" | "gather"

    def __post_init__(self) -> None:
        if isinstance(self.layer_types, list):  # from JSON
            self.layer_types = tuple(self.layer_types)
        self._check_types()
        derived = self._derived()
        self._derived_fields = frozenset(name for name in derived if getattr(self, name) is None)
        for name in self._derived_fields:
            setattr(self, name, derived[name])
        self.validate()

    def _derived(self) -> dict:
        """What each None-able field becomes when it is not given."""
        heads = self.num_attention_heads
        if self.head_dim is None and self.hidden_size % heads:
            self._fail(f"hidden_size ({self.hidden_size}) is not divisible by num_attention_heads ({heads}); "
                       "change one of them or set head_dim explicitly")
        return dict(num_key_value_heads=heads, head_dim=self.hidden_size // heads,
                    intermediate_size=4 * self.hidden_size if self.ffn == "gelu" else self.hidden_size,
                    layer_types=alternating_layer_types(self.num_hidden_layers, self.sliding_window))

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 1

    def replace(self, **changes) -> "GPTConfig":
        """A copy with some fields changed, validated again; fields that were derived are derived
        again from the new values unless `changes` sets them."""
        again = {name: None for name in self._derived_fields if name not in changes}
        return dataclasses.replace(self, **again, **changes)

    # -- validation -----------------------------------------------------------
    def _fail(self, msg: str) -> None:
        raise ValueError(f"{type(self).__name__}: {msg}")

    def _check_types(self) -> None:
        """Each field has the type it says, before anything is computed from it."""
        for name in ("vocab_size", "max_position_embeddings", "num_hidden_layers", "hidden_size",
                     "num_attention_heads", "num_experts", "experts_per_token", "initial_context_length"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                self._fail(f"{name} must be a positive integer, got {value!r}")
        for name in ("num_key_value_heads", "head_dim", "intermediate_size", "sliding_window"):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or value < 1):
                self._fail(f"{name} must be a positive integer or None, got {value!r}")
        for name in ("norm_eps", "rope_theta", "rope_scaling_factor", "rope_beta_fast", "rope_beta_slow",
                     "swiglu_alpha", "swiglu_limit", "router_aux_loss_coef", "dropout", "initializer_range"):
            if not _is_number(getattr(self, name)):
                self._fail(f"{name} must be a finite number, got {getattr(self, name)!r}")
        for name in ("rope_truncate", "attn_sinks", "tie_word_embeddings", "bias"):
            if not isinstance(getattr(self, name), bool):
                self._fail(f"{name} must be True or False, got {getattr(self, name)!r}")
        for name, allowed in (("norm", NORMS), ("pos", POSITIONS), ("ffn", FFNS),
                              ("attn_impl", ATTN_IMPLS), ("moe_impl", MOE_IMPLS)):
            if getattr(self, name) not in allowed:
                self._fail(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")

    def validate(self) -> None:
        fail = self._fail
        self._check_types()
        if self.num_attention_heads % self.num_key_value_heads:
            fail(f"num_key_value_heads ({self.num_key_value_heads}) must divide num_attention_heads "
                 f"({self.num_attention_heads}): each key/value head serves a whole group of query heads")
        if self.pos == "rope" and self.head_dim % 2:
            fail(f"RoPE rotates pairs of dimensions, so head_dim must be even, got {self.head_dim}")
        if self.rope_scaling_factor < 1.0:
            fail(f"rope_scaling_factor must be >= 1 (1 is plain RoPE), got {self.rope_scaling_factor}")
        if self.pos == "learned" and self.rope_scaling_factor != 1.0:
            fail("rope_scaling_factor (YaRN) only applies with pos='rope'; set pos='rope' or the factor to 1")
        if self.rope_theta <= 1.0:
            fail(f"rope_theta must be > 1, got {self.rope_theta}")
        if self.rope_beta_fast <= self.rope_beta_slow:
            fail("rope_beta_fast must be larger than rope_beta_slow (YaRN's ramp runs from fast to slow)")

        if not isinstance(self.layer_types, tuple) or len(self.layer_types) != self.num_hidden_layers \
                or set(self.layer_types) - set(LAYER_TYPES):
            fail(f"layer_types must list {self.num_hidden_layers} entries (one per layer), each "
                 f"{SLIDING!r} or {FULL!r}, got {self.layer_types!r}")
        if SLIDING in self.layer_types and self.sliding_window is None:
            fail(f"layer_types has {SLIDING!r} layers but sliding_window is None; set the window")

        try:
            check_experts_per_token(self.experts_per_token, self.num_experts)
        except ValueError as err:
            fail(str(err))
        if self.is_moe and self.ffn != "swiglu":
            fail("a mixture of experts uses gpt-oss's clamped SwiGLU experts: set ffn='swiglu' or num_experts=1")
        if self.router_aux_loss_coef < 0:
            fail(f"router_aux_loss_coef must be >= 0, got {self.router_aux_loss_coef}")
        if self.router_aux_loss_coef > 0 and not self.is_moe:
            fail("router_aux_loss_coef > 0 needs a router: set num_experts > 1 or the coefficient to 0")
        if self.swiglu_limit <= 0:
            fail(f"swiglu_limit must be positive, got {self.swiglu_limit}")
        if not 0.0 <= self.dropout < 1.0:
            fail(f"dropout must be in [0, 1), got {self.dropout}")
        if self.norm_eps <= 0 or self.initializer_range <= 0:
            fail("norm_eps and initializer_range must be positive")


def GPT2Config(**overrides) -> GPTConfig:
    """The GPT-2 end: learned positions, LayerNorm, GELU MLP, multi-head attention, tied embeddings.

    Defaults are GPT-2 small (124M parameters).
    """
    return GPTConfig(**overrides)


GPTOSS_FEATURES = dict(norm="rmsnorm", pos="rope", attn_sinks=True, ffn="swiglu",
                       tie_word_embeddings=False, bias=True)


def GPTOSSConfig(**overrides) -> GPTConfig:
    """The GPT-OSS end: every gpt-oss feature on, at about GPT-2-small scale by default.

    RMSNorm, RoPE (plain: YaRN is for extending a pretrained context, see `model/rope.py`),
    grouped-query attention with a fixed head_dim of 64, banded/dense layers alternating
    with window 128, attention sinks, a mixture of clamped-SwiGLU experts, untied
    embeddings. The official sizes are the presets "gpt-oss-20b" and "gpt-oss-120b".
    """
    settings = dict(
        GPTOSS_FEATURES,
        vocab_size=50257, max_position_embeddings=1024, num_hidden_layers=12, hidden_size=768,
        num_attention_heads=12, num_key_value_heads=4, head_dim=64, sliding_window=128,
        num_experts=8, experts_per_token=2, intermediate_size=768,
    )
    settings.update(overrides)
    return GPTConfig(**settings)


# Sizes only; `get_config(name, model=...)` adds the architecture of either end.
# The gpt-oss presets are the official shapes, for parameter counts and shape checks.
PRESETS: dict[str, dict] = {
    "gpt-oss-20b": dict(
        vocab_size=201088, max_position_embeddings=131072, num_hidden_layers=24, hidden_size=2880,
        num_attention_heads=64, num_key_value_heads=8, head_dim=64, num_experts=32, experts_per_token=4,
        intermediate_size=2880, sliding_window=128,
        rope_theta=150_000.0, rope_scaling_factor=32.0, initial_context_length=4096,
    ),
    "gpt-oss-120b": dict(
        vocab_size=201088, max_position_embeddings=131072, num_hidden_layers=36, hidden_size=2880,
        num_attention_heads=64, num_key_value_heads=8, head_dim=64, num_experts=128, experts_per_token=4,
        intermediate_size=2880, sliding_window=128,
        rope_theta=150_000.0, rope_scaling_factor=32.0, initial_context_length=4096,
    ),
    # Trains in minutes on two CPU cores with a small (4096-token) BPE.
    "cpu-tiny": dict(
        vocab_size=4096, max_position_embeddings=128, num_hidden_layers=4, hidden_size=128,
        num_attention_heads=4, num_key_value_heads=2, head_dim=32, num_experts=4, experts_per_token=2,
        intermediate_size=128, sliding_window=32,
    ),
    # A free Colab T4 (16 GB, fp16): GPT-2 BPE, an hour or so of training.
    "colab-t4": dict(
        vocab_size=50257, max_position_embeddings=512, num_hidden_layers=8, hidden_size=512,
        num_attention_heads=8, num_key_value_heads=2, head_dim=64, num_experts=8, experts_per_token=2,
        intermediate_size=512, sliding_window=128,
    ),
    # One modern GPU (A100/H100, bf16).
    "gpu": dict(
        vocab_size=50257, max_position_embeddings=1024, num_hidden_layers=12, hidden_size=768,
        num_attention_heads=12, num_key_value_heads=4, head_dim=64, num_experts=16, experts_per_token=4,
        intermediate_size=768, sliding_window=128,
    ),
}

MODELS = ("gptoss", "gpt2")
# the sizes both ends share; the others (KV heads, head_dim, experts, window, YaRN) are GPT-OSS's
SHARED_SIZES = ("vocab_size", "max_position_embeddings", "num_hidden_layers", "hidden_size", "num_attention_heads")


def get_config(preset: str, model: str = "gptoss", **overrides) -> GPTConfig:
    """A preset's sizes with either end's architecture, plus any field overrides.

    For the GPT-2 end the GPT-OSS-only size fields are dropped, so head_dim follows
    hidden_size / num_attention_heads as in GPT-2.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; choose 'gptoss' or 'gpt2'")
    unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(GPTConfig)})
    if unknown:
        raise ValueError(f"unknown config field(s) {unknown}; the fields are those of GPTConfig "
                         "(e.g. num_hidden_layers, hidden_size, sliding_window)")
    sizes = dict(PRESETS[preset])
    if model == "gptoss":
        return GPTConfig(**{**GPTOSS_FEATURES, **sizes, **overrides})
    return GPTConfig(**{**{k: sizes[k] for k in SHARED_SIZES}, **overrides})
