"""Hugging Face-format gpt-oss checkpoints: `config.json` + `*.safetensors`, unquantized.

`GPTOSS.from_pretrained(dir)` reads what transformers' `GptOssForCausalLM.save_pretrained`
writes (sharded or not), and `model.save_pretrained(dir)` writes a checkpoint that
transformers loads. Our config's field names are transformers' but for the experts'. Only safetensors are read: a pickle can run code when unpickled.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..config import GPTOSS_FEATURES, GPTConfig
from ..model.rope import RotaryEmbedding

# our parameter name -> transformers' (per layer names use {i})
LAYER_NAMES = {
    "blocks.{i}.attn_norm.weight": "model.layers.{i}.input_layernorm.weight",
    "blocks.{i}.attn.q_proj.weight": "model.layers.{i}.self_attn.q_proj.weight",
    "blocks.{i}.attn.q_proj.bias": "model.layers.{i}.self_attn.q_proj.bias",
    "blocks.{i}.attn.k_proj.weight": "model.layers.{i}.self_attn.k_proj.weight",
    "blocks.{i}.attn.k_proj.bias": "model.layers.{i}.self_attn.k_proj.bias",
    "blocks.{i}.attn.v_proj.weight": "model.layers.{i}.self_attn.v_proj.weight",
    "blocks.{i}.attn.v_proj.bias": "model.layers.{i}.self_attn.v_proj.bias",
    "blocks.{i}.attn.o_proj.weight": "model.layers.{i}.self_attn.o_proj.weight",
    "blocks.{i}.attn.o_proj.bias": "model.layers.{i}.self_attn.o_proj.bias",
    "blocks.{i}.attn.sinks": "model.layers.{i}.self_attn.sinks",
    "blocks.{i}.mlp_norm.weight": "model.layers.{i}.post_attention_layernorm.weight",
    "blocks.{i}.mlp.router.weight": "model.layers.{i}.mlp.router.weight",
    "blocks.{i}.mlp.router.bias": "model.layers.{i}.mlp.router.bias",
    "blocks.{i}.mlp.experts.gate_up_proj": "model.layers.{i}.mlp.experts.gate_up_proj",
    "blocks.{i}.mlp.experts.gate_up_proj_bias": "model.layers.{i}.mlp.experts.gate_up_proj_bias",
    "blocks.{i}.mlp.experts.down_proj": "model.layers.{i}.mlp.experts.down_proj",
    "blocks.{i}.mlp.experts.down_proj_bias": "model.layers.{i}.mlp.experts.down_proj_bias",
}
GLOBAL_NAMES = {
    "embedding.weight": "model.embed_tokens.weight",
    "norm.weight": "model.norm.weight",
    "unembedding.weight": "lm_head.weight",
}


def hf_name_map(config: GPTConfig) -> dict[str, str]:
    names = dict(GLOBAL_NAMES)
    for i in range(config.num_hidden_layers):
        names.update({ours.format(i=i): theirs.format(i=i) for ours, theirs in LAYER_NAMES.items()})
    if config.tie_word_embeddings:
        del names["unembedding.weight"]
    return names


def check_hf_compatible(config: GPTConfig) -> None:
    """Only the GPT-OSS architecture has a gpt-oss checkpoint layout."""
    wrong = {k: getattr(config, k) for k, v in GPTOSS_FEATURES.items()
             if k != "tie_word_embeddings" and getattr(config, k) != v}
    if not config.is_moe:
        wrong["num_experts"] = config.num_experts
    if wrong:
        raise ValueError(f"a gpt-oss checkpoint needs the GPT-OSS architecture; these fields differ: {wrong}")


def config_to_hf(config: GPTConfig) -> dict:
    check_hf_compatible(config)
    rope = {"rope_type": "default", "rope_theta": config.rope_theta}
    if config.rope_scaling_factor > 1.0:
        rope.update(rope_type="yarn", factor=config.rope_scaling_factor, beta_fast=config.rope_beta_fast,
                    beta_slow=config.rope_beta_slow, truncate=config.rope_truncate,
                    original_max_position_embeddings=config.initial_context_length)
    # the same names on both sides, but for the experts (transformers: num_local_experts,
    # num_experts_per_tok) and a window a dense-only model still has to state
    same = ("vocab_size", "hidden_size", "intermediate_size", "head_dim", "num_hidden_layers",
            "num_attention_heads", "num_key_value_heads", "max_position_embeddings", "swiglu_limit",
            "swiglu_alpha", "tie_word_embeddings", "router_aux_loss_coef", "initializer_range")
    return {
        "architectures": ["GptOssForCausalLM"],
        "model_type": "gpt_oss",
        **{name: getattr(config, name) for name in same},
        "num_local_experts": config.num_experts,
        "num_experts_per_tok": config.experts_per_token,
        "sliding_window": config.sliding_window or config.max_position_embeddings,
        "layer_types": list(config.layer_types),
        "rms_norm_eps": config.norm_eps,
        "rope_parameters": rope,
        "attention_bias": True,
        "torch_dtype": "float32",
    }


def config_from_hf(hf: dict, **overrides) -> GPTConfig:
    """A GPTConfig from a transformers gpt-oss `config.json` (new or older rope fields)."""
    if hf.get("model_type", "gpt_oss") != "gpt_oss":
        raise ValueError(f"not a gpt-oss config: model_type is {hf.get('model_type')!r}")
    if hf.get("quantization_config"):
        raise ValueError("this checkpoint is quantized (MXFP4); nanogptoss loads unquantized weights. "
                         "Dequantize it first, e.g. load it in transformers with "
                         "Mxfp4Config(dequantize=True) and save_pretrained the result.")
    rope = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
    theta = rope.get("rope_theta", hf.get("rope_theta", 150_000.0))
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    yarn = rope_type == "yarn"
    n_layer = hf["num_hidden_layers"]
    layer_types = tuple(hf.get("layer_types") or
                        ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(n_layer)])
    window = hf.get("sliding_window") if "sliding_attention" in layer_types else None
    settings = dict(
        GPTOSS_FEATURES,
        vocab_size=hf["vocab_size"], max_position_embeddings=hf.get("max_position_embeddings", 131072),
        num_hidden_layers=n_layer, hidden_size=hf["hidden_size"], num_attention_heads=hf["num_attention_heads"],
        num_key_value_heads=hf.get("num_key_value_heads") or hf["num_attention_heads"],
        head_dim=hf.get("head_dim") or hf["hidden_size"] // hf["num_attention_heads"],
        intermediate_size=hf["intermediate_size"], num_experts=hf["num_local_experts"],
        experts_per_token=hf["num_experts_per_tok"], sliding_window=window, layer_types=layer_types,
        norm_eps=hf.get("rms_norm_eps", 1e-5), rope_theta=theta,
        rope_scaling_factor=float(rope.get("factor") or 1.0) if yarn else 1.0,
        initial_context_length=int(rope.get("original_max_position_embeddings") or 4096),
        rope_beta_fast=float(rope.get("beta_fast") or 32.0), rope_beta_slow=float(rope.get("beta_slow") or 1.0),
        rope_truncate=bool(rope.get("truncate", True)) if yarn else False,
        swiglu_limit=hf.get("swiglu_limit", 7.0), swiglu_alpha=hf.get("swiglu_alpha", 1.702),
        tie_word_embeddings=hf.get("tie_word_embeddings", False),
    )
    if hf.get("attention_bias") is False:
        raise ValueError("attention_bias=false is not a gpt-oss layout (its projections have biases)")
    settings.update(overrides)
    return GPTConfig(**settings)


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    index = path / "model.safetensors.index.json"
    if index.exists():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    else:
        files = sorted(p.name for p in path.glob("*.safetensors"))
    if not files:
        pickles = [p.name for p in path.glob("*.bin")] + [p.name for p in path.glob("*.pt")]
        hint = (f" It holds {pickles}: pickled weights are not loaded (unpickling can run code); "
                "re-save them with safetensors.") if pickles else ""
        raise FileNotFoundError(f"no *.safetensors weights in {path}.{hint}")
    tensors = {}
    for name in files:
        with safe_open(str(path / name), framework="pt") as f:
            for key in f.keys():
                tensors[key] = f.get_tensor(key)
    return tensors


def load_pretrained(model_class, path: str | os.PathLike, dtype: torch.dtype = torch.float32, device="cpu",
                    **overrides):
    """Build a `model_class` (GPTOSS) from a Hugging Face-format gpt-oss checkpoint directory.

    `overrides` change runtime fields of the config (attn_impl, moe_impl, dropout).
    `GPTOSS.from_pretrained(path)` is the way to call it.
    """
    path = Path(path)
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"{path / 'config.json'} not found: expected a Hugging Face-format "
                                "checkpoint directory (config.json + *.safetensors)")
    config = config_from_hf(json.loads((path / "config.json").read_text()), **overrides)
    tensors = _read_safetensors(path)
    if any(k.endswith(("_blocks", "_scales")) for k in tensors):
        raise ValueError("the expert weights are MXFP4-quantized (*_blocks/*_scales); "
                         "nanogptoss loads unquantized checkpoints only")
    if config.tie_word_embeddings is False and "lm_head.weight" not in tensors:
        raise ValueError("config says untied embeddings but the checkpoint has no lm_head.weight")
    with torch.device("meta"):  # no memory spent on weights about to be replaced
        model = model_class(config)
    names = hf_name_map(config)
    missing = [theirs for theirs in names.values() if theirs not in tensors]
    if missing:
        raise ValueError(f"checkpoint is missing {len(missing)} tensors, e.g. {missing[:3]}")
    unexpected = sorted(set(tensors) - set(names.values()))
    if unexpected:
        raise ValueError(f"checkpoint has tensors nanogptoss does not know, e.g. {unexpected[:3]}")
    state = {ours: tensors[theirs] for ours, theirs in names.items()}
    model.load_state_dict(state, strict=False, assign=True)
    if config.tie_word_embeddings:
        model.unembedding.weight = model.embedding.weight
    # buffers derived from the config were on the meta device: rebuild them for real
    if model.rope is not None:
        model.rope = RotaryEmbedding.from_config(config)
    return model.to(device=device, dtype=dtype).eval()  # the sinks stay float32 (AttentionBlock._apply)


def save_pretrained(model, path: str | os.PathLike) -> None:
    """Write config.json + model.safetensors in transformers' gpt-oss layout."""
    config = model.config
    hf_config = config_to_hf(config)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    params = dict(model.named_parameters(remove_duplicate=False))
    tensors = {theirs: params[ours].detach().contiguous().cpu() for ours, theirs in hf_name_map(config).items()}
    hf_config["torch_dtype"] = str(next(iter(tensors.values())).dtype).removeprefix("torch.")
    # write to temporary names first so an interrupted save never leaves half a checkpoint
    tmp_weights, tmp_config = path / "model.safetensors.tmp", path / "config.json.tmp"
    save_file(tensors, str(tmp_weights), metadata={"format": "pt"})
    tmp_config.write_text(json.dumps(hf_config, indent=2))
    os.replace(tmp_weights, path / "model.safetensors")
    os.replace(tmp_config, path / "config.json")
