"""nanogptoss: a GPT-OSS-style language model, one readable module per idea."""

from .attention import AttentionBlock, attention_mask, attention_reference, attention_sdpa
from .config import GPT2Config, GPTConfig, GPTOSSConfig, PRESETS, get_config
from .generate import generate, generate_stream, next_token_probs, sample_next
from .kv_cache import KVCache
from .mlp import MLP
from .model import GPT, GPT2, GPTOSS, ModelOutput, TransformerBlock
from .moe import MLPBlock, moe_dispatch, moe_reference
from .params import count_parameters, flops_per_token
from .pretrained import from_pretrained, save_pretrained
from .rmsnorm import RMSNorm
from .rope import RotaryEmbedding, apply_rotary_emb
from .router import Router, load_balancing_loss
from .swiglu import SwiGLUMLP, swiglu

__version__ = "0.1.0"
