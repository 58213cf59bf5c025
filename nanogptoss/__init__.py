"""nanogptoss: a GPT-OSS-style language model, one readable module per idea.

The layout: `config` (GPTConfig and the presets), `model/` (the architecture, a module
per chapter), `kernels/` (fast paths of the same functions), `weights/` (Hugging Face and
training checkpoints), `data/` (tokenizers and stories), `training/` (train, compare,
sample, judge), `book/` (exercise checkers, explorers). `python -m nanogptoss --help`
lists the commands.
"""

from .config import GPT2Config, GPTConfig, GPTOSSConfig, PRESETS, get_config
from .model.attention import AttentionBlock, attention, attention_mask, attention_reference
from .model.generate import generate, generate_stream, next_token_probs, sample_next
from .model.kv_cache import KVCache
from .model.moe import MLPBlock, moe_dispatch, moe_reference
from .model.norm import RMSNorm
from .model.params import count_parameters, flops_per_token
from .model.rope import RotaryEmbedding, apply_rotary_emb
from .model.router import Router, load_balancing_loss
from .model.swiglu import MLP, SwiGLUMLP, swiglu
from .model.transformer import GPT, GPT2, GPTOSS, ModelOutput, TransformerBlock

from .weights.shipped import pretrained  # the book's own trained models

from_pretrained = GPTOSS.from_pretrained

__version__ = "0.2.0"
