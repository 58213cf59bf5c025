"""The decoder: GPT-2 at one end, GPT-OSS at the other, every step in between valid.

    tokens -> embedding (+ learned positions) -> N x TransformerBlock -> norm -> unembedding

and each TransformerBlock is

    x = x + Attention(Norm(x))
    x = x + FeedForward(Norm(x))

The config decides which norm, which positions, which attention and which
feed-forward; `GPT2` and `GPTOSS` are the same class with the two end configs.
Built here, the blocks compute with the kernels `config.attn_impl` and
`config.moe_impl` name (`nanogptoss.kernels`); alone, they use the readable references.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .. import kernels
from ..config import GPT2Config, GPTConfig, GPTOSSConfig
from ..weights import hf
from .attention import AttentionBlock
from .generate import generate
from .kv_cache import KVCache
from .moe import Experts, MLPBlock
from .norm import RMSNorm
from .rope import RotaryEmbedding
from .router import Router, expert_counts, load_balancing_loss
from .swiglu import MLP, SwiGLUMLP


class ModelOutput(NamedTuple):
    logits: torch.Tensor  # (B, T, vocab_size)
    loss: torch.Tensor | None  # mean cross-entropy in nats/token, when targets are given
    aux_loss: torch.Tensor | None  # router_aux_loss_coef x load-balancing loss, when enabled

    @property
    def objective(self) -> torch.Tensor:
        """What training minimises: the cross-entropy plus the weighted auxiliary loss."""
        return self.loss if self.aux_loss is None else self.loss + self.aux_loss


def make_norm(config: GPTConfig) -> nn.Module:
    if config.norm == "rmsnorm":
        return RMSNorm(config.hidden_size, eps=config.norm_eps)
    return nn.LayerNorm(config.hidden_size, eps=config.norm_eps, bias=config.bias)


def make_feed_forward(config: GPTConfig) -> nn.Module:
    if config.is_moe:
        return MLPBlock(config)
    return SwiGLUMLP(config) if config.ffn == "swiglu" else MLP(config)


class TransformerBlock(nn.Module):
    def __init__(self, config: GPTConfig, layer_idx: int):
        super().__init__()
        self.attn_norm = make_norm(config)
        self.attn = AttentionBlock(config, layer_idx)
        self.mlp_norm = make_norm(config)
        self.mlp = make_feed_forward(config)

    def forward(self, x, positions, rope=None, cache=None):
        x = x + self.attn(self.attn_norm(x), positions, rope, cache)
        return x + self.mlp(self.mlp_norm(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        if not isinstance(config, GPTConfig):
            raise TypeError(f"expected a GPTConfig, got {type(config).__name__}")
        config.validate()  # fields may have been assigned after construction
        self.config = config
        d = config.hidden_size
        self.embedding = nn.Embedding(config.vocab_size, d)
        self.pos_embedding = nn.Embedding(config.max_position_embeddings, d) if config.pos == "learned" else None
        self.rope = RotaryEmbedding.from_config(config) if config.pos == "rope" else None
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(TransformerBlock(config, i) for i in range(config.num_hidden_layers))
        self.norm = make_norm(config)
        self.unembedding = nn.Linear(d, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.unembedding.weight = self.embedding.weight
        self.apply(self._init_weights)
        kernels.use_kernels(self)

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        # GPT-2: residual projections scaled down so the residual stream's variance
        # does not grow with depth
        residual_std = std / math.sqrt(2 * self.config.num_hidden_layers)
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0.0, std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, 0.0, std)
        elif isinstance(module, Router):
            nn.init.normal_(module.weight, 0.0, std)
            nn.init.zeros_(module.bias)
        elif isinstance(module, Experts):
            nn.init.normal_(module.gate_up_proj, 0.0, std)
            nn.init.zeros_(module.gate_up_proj_bias)
            nn.init.normal_(module.down_proj, 0.0, residual_std)
            nn.init.zeros_(module.down_proj_bias)
        elif isinstance(module, AttentionBlock):
            nn.init.normal_(module.o_proj.weight, 0.0, residual_std)
        elif isinstance(module, (MLP, SwiGLUMLP)):
            nn.init.normal_(module.down_proj.weight, 0.0, residual_std)

    # -- forward --------------------------------------------------------------
    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None,
                kv_cache: KVCache | None = None) -> ModelOutput:
        """Logits for token ids `idx` (B, T); with `targets` (B, T), the mean cross-entropy.

        Targets equal to -100 are ignored. With a `kv_cache`, `idx` continues the
        sequence the cache holds and positions count on from there.
        """
        self._check_input(idx, targets, kv_cache)
        start = kv_cache.pos if kv_cache is not None else 0
        T = idx.shape[1]
        positions = torch.arange(start, start + T, device=idx.device)
        x = self.embedding(idx)
        if self.pos_embedding is not None:
            x = x + self.pos_embedding(positions)
        x = self.dropout(x)
        rope = self.rope(positions) if self.rope is not None else None
        for i, block in enumerate(self.blocks):
            x = block(x, positions, rope, kv_cache.layers[i] if kv_cache is not None else None)
        logits = self.unembedding(self.norm(x))
        if kv_cache is not None:
            kv_cache.pos += T

        loss = aux_loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), targets.reshape(-1),
                                   ignore_index=-100)
            if self.config.router_aux_loss_coef > 0:
                aux_loss = self.config.router_aux_loss_coef * load_balancing_loss(
                    self.router_logits(), self.config.num_experts, self.config.experts_per_token)
        return ModelOutput(logits, loss, aux_loss)

    def _check_input(self, idx, targets, kv_cache) -> None:
        if not isinstance(idx, torch.Tensor) or idx.dim() != 2:
            got = tuple(idx.shape) if isinstance(idx, torch.Tensor) else type(idx).__name__
            raise ValueError(f"idx must be a (batch, time) tensor of token ids, got {got}; "
                             "add a batch dimension with idx[None] for a single sequence")
        if idx.dtype not in (torch.long, torch.int, torch.int16, torch.uint8):
            raise ValueError(f"idx must hold integer token ids, got dtype {idx.dtype}")
        B, T = idx.shape
        if T == 0 or B == 0:
            raise ValueError(f"idx of shape {tuple(idx.shape)} is empty: give at least one sequence of one token")
        start = kv_cache.pos if kv_cache is not None else 0
        context = self.config.max_position_embeddings
        if start + T > context:
            where = f"{start} cached + {T} new" if kv_cache is not None else f"{T}"
            raise ValueError(f"sequence of length {where} exceeds the context, max_position_embeddings = "
                             f"{context}; crop the input or use a config with a longer context")
        if kv_cache is not None and start + T > kv_cache.max_len:
            raise ValueError(f"the KV cache holds at most {kv_cache.max_len} positions; "
                             f"{start} cached + {T} new do not fit")
        if targets is not None:
            if not isinstance(targets, torch.Tensor) or targets.shape != idx.shape:
                got = tuple(targets.shape) if isinstance(targets, torch.Tensor) else type(targets).__name__
                raise ValueError(f"targets must have the shape of idx {tuple(idx.shape)}, got {got}")
            if targets.dtype.is_floating_point or targets.dtype == torch.bool:
                raise ValueError(f"targets must hold integer token ids (or -100 to skip a position), "
                                 f"got dtype {targets.dtype}")
        if not torch.compiler.is_compiling():  # a check that reads values would break the compiled graph
            self._check_ids("token ids", idx)
            if targets is not None:
                self._check_ids("targets", targets[targets != -100])

    def _check_ids(self, what: str, ids: torch.Tensor) -> None:
        if ids.numel() == 0:
            return
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= self.config.vocab_size:
            skip = " (or -100 to skip a position)" if what == "targets" else ""
            raise ValueError(f"{what} must lie in [0, {self.config.vocab_size}){skip}, got range [{lo}, {hi}]; "
                             "does the tokenizer match the model's vocab_size?")

    # -- MoE introspection ----------------------------------------------------
    def moe_blocks(self) -> list[MLPBlock]:
        return [b.mlp for b in self.blocks if isinstance(b.mlp, MLPBlock)]

    def router_logits(self) -> list[torch.Tensor]:
        """Each MoE layer's router logits (N, E) from the last forward pass."""
        return [m.last_routing.logits for m in self.moe_blocks() if m.last_routing is not None]

    def expert_counts(self) -> torch.Tensor:
        """(n_moe_layers, E) token-slot counts per expert from the last forward pass."""
        return torch.stack([expert_counts(m.last_routing.indices, self.config.num_experts)
                            for m in self.moe_blocks()])

    # -- generation and checkpoints -------------------------------------------
    def new_kv_cache(self, max_len: int | None = None) -> KVCache:
        return KVCache(self.config, max_len)

    @torch.no_grad()
    def generate(self, idx, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, use_cache: bool = True, generator=None) -> torch.Tensor:
        """Continue `idx` (B, T) by `max_new_tokens` sampled tokens (temperature 0: greedy)."""
        return generate(self, idx, max_new_tokens, temperature, top_k, top_p, use_cache, generator)

    @classmethod
    def from_pretrained(cls, path, dtype: torch.dtype = torch.float32, device="cpu", **overrides) -> "GPT":
        """Load a Hugging Face-format gpt-oss checkpoint (config.json + *.safetensors)."""
        return hf.load_pretrained(cls, path, dtype, device, **overrides)

    def save_pretrained(self, path) -> None:
        """Write a Hugging Face-format checkpoint that transformers' GptOssForCausalLM loads."""
        hf.save_pretrained(self, path)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


class GPT2(GPT):
    """The baseline: `GPT(GPT2Config())` unless given another config."""

    def __init__(self, config: GPTConfig | None = None):
        super().__init__(GPT2Config() if config is None else config)


class GPTOSS(GPT):
    """The gpt-oss architecture: `GPT(GPTOSSConfig())` unless given another config."""

    def __init__(self, config: GPTConfig | None = None):
        super().__init__(GPTOSSConfig() if config is None else config)
