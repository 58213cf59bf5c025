"""Hugging Face-format gpt-oss checkpoints: `config.json` + `*.safetensors`.

`GPTOSS.from_pretrained(dir)` reads what transformers' `GptOssForCausalLM.save_pretrained`
writes (sharded or not), and the published `openai/gpt-oss-20b` and `openai/gpt-oss-120b`
folders, whose experts are MXFP4 (`*_blocks`, `*_scales` and a `quantization_config` in
config.json; see `mxfp4.py`). Their `original/` subfolder (openai's own layout) is not read:
load the top folder. `model.save_pretrained(dir)` writes a checkpoint that transformers
loads. Our config's field names are transformers' but for the experts'.

Loading checks every tensor's name, shape and dtype from the files' headers before it
reads any weight, then streams one tensor at a time from the shards to the target device,
so host memory never holds a second copy of the checkpoint. Only safetensors are read: a
pickle can run code when unpickled.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import NamedTuple

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from tqdm.auto import tqdm

from . import mxfp4
from ..config import GPTOSS_FEATURES, GPTConfig
from ..files import atomic_path, write_text
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


# fields config.json must have; the others have gpt-oss's defaults
REQUIRED_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                   "num_local_experts", "num_experts_per_tok")
EXPERT_MATRICES = ("gate_up_proj", "down_proj")  # MXFP4 in the published checkpoints; all else is bf16


class CheckpointFormatError(ValueError):
    """A checkpoint folder nanogptoss cannot load, said in one line."""


def read_config(path: Path) -> dict:
    file = path / "config.json"
    if not file.exists():
        raise FileNotFoundError(f"{file} not found: expected a Hugging Face-format "
                                "checkpoint directory (config.json + *.safetensors)")
    try:
        hf = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointFormatError(f"{file} is not valid JSON ({exc}); re-download or re-save the checkpoint") from None
    if not isinstance(hf, dict):
        raise CheckpointFormatError(f"{file} holds a JSON {type(hf).__name__}, not an object of config fields")
    return hf


def check_architecture(hf: dict) -> None:
    """Refuse, in one line, a config.json that is not a gpt-oss one."""
    architectures = hf.get("architectures") or []
    if "model_type" not in hf and "num_experts" in hf and "num_local_experts" not in hf:
        raise CheckpointFormatError("this is openai's original/ layout (config.json without model_type); "
                                    "load the checkpoint's top folder, the Hugging Face layout, instead")
    if hf.get("model_type", "gpt_oss") != "gpt_oss" or any(a != "GptOssForCausalLM" for a in architectures):
        raise CheckpointFormatError(
            f"not a gpt-oss checkpoint: config.json has model_type {hf.get('model_type')!r} and architectures "
            f"{architectures}; nanogptoss loads gpt_oss / GptOssForCausalLM checkpoints")
    missing = [name for name in REQUIRED_FIELDS if name not in hf]
    if missing:
        raise CheckpointFormatError(f"config.json has no {', '.join(map(repr, missing))}: a gpt-oss config "
                                    f"needs {', '.join(REQUIRED_FIELDS)}")


# what each config.json field must hold, checked before anything is computed from it
WHOLE_FIELDS = REQUIRED_FIELDS + ("max_position_embeddings", "num_key_value_heads", "head_dim", "sliding_window")
NUMBER_FIELDS = ("rms_norm_eps", "rope_theta", "swiglu_limit", "swiglu_alpha")
ROPE_NUMBER_FIELDS = ("rope_theta", "factor", "original_max_position_embeddings", "beta_fast", "beta_slow")
BOOL_FIELDS = ("tie_word_embeddings", "attention_bias")
NULLABLE_FIELDS = ("num_key_value_heads", "head_dim", "sliding_window", "layer_types", "rope_parameters",
                   "rope_scaling")  # null: derived, or none
ROPE_TYPES = ("default", "yarn")


def check_fields(hf: dict) -> None:
    """Refuse, in one line naming the field, a config.json value of the wrong kind (null only where it means
    "derive it" or "none")."""
    def refuse(name, value, want):
        raise CheckpointFormatError(f"config.json: {name} must be {want}, got {value!r}; fix config.json")

    number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)  # noqa: E731
    for name, value in hf.items():
        if value is None and name in NULLABLE_FIELDS:
            continue
        if name in WHOLE_FIELDS and not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            refuse(name, value, "a whole number >= 1")
        if name in NUMBER_FIELDS and not number(value):
            refuse(name, value, "a finite number")
        if name in BOOL_FIELDS and not isinstance(value, bool):
            refuse(name, value, "true or false")
        if name == "layer_types" and not (isinstance(value, list) and all(isinstance(t, str) for t in value)):
            refuse(name, value, "a list of 'sliding_attention' / 'full_attention', one per layer")
        if name in ("rope_parameters", "rope_scaling"):
            if not isinstance(value, dict):
                refuse(name, value, "an object (rope_type, factor, ...)")
            if value.get("rope_type", value.get("type", "default")) not in ROPE_TYPES:
                refuse(f"{name}.rope_type", value.get("rope_type", value.get("type")),
                       f"one of {ROPE_TYPES} (gpt-oss's RoPE, plain or YaRN)")
            for key in ROPE_NUMBER_FIELDS:
                if value.get(key) is not None and not number(value[key]):
                    refuse(f"{name}.{key}", value[key], "a finite number")


def quantization(hf: dict) -> str | None:
    """None for an unquantized checkpoint, "mxfp4" for the published one; anything else is refused."""
    q = hf.get("quantization_config")
    if not q:
        return None
    method = q.get("quant_method") if isinstance(q, dict) else q
    if method != "mxfp4":
        raise CheckpointFormatError(f"quantization_config.quant_method is {method!r}: nanogptoss loads unquantized "
                                    "or MXFP4 ('mxfp4') gpt-oss checkpoints; dequantize it first")
    for key in ("block_size", "group_size"):
        if key in q and q[key] != mxfp4.BLOCK_SIZE:
            raise CheckpointFormatError(f"quantization_config.{key} is {q[key]!r}: MXFP4 blocks hold "
                                        f"{mxfp4.BLOCK_SIZE} values")
    return "mxfp4"


def config_from_hf(hf: dict, **overrides) -> GPTConfig:
    """A GPTConfig from a transformers gpt-oss `config.json` (new or older rope fields)."""
    check_architecture(hf)
    check_fields(hf)
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
        raise CheckpointFormatError("attention_bias=false is not a gpt-oss layout (its projections have biases)")
    settings.update(overrides)
    try:
        return GPTConfig(**settings)
    except ValueError as err:
        raise CheckpointFormatError(f"config.json describes no model nanogptoss can build: {err}") from None


# -- what the files hold, from their headers ---------------------------------------------

class TensorInfo(NamedTuple):
    file: Path
    shape: tuple[int, ...]
    dtype: str  # safetensors' name: "BF16", "F32", "U8", ...


def _inside(name) -> bool:
    """Whether an index's shard name stays in the checkpoint folder: relative, no `..` (judged on the
    name, not on where links lead: a Hugging Face cache's shards are links into its blobs folder)."""
    return (isinstance(name, str) and name != "" and not os.path.isabs(name) and not os.path.splitdrive(name)[0]
            and ".." not in Path(name.replace("\\", "/")).parts)


def checkpoint_files(path: Path) -> list[Path]:
    index = path / "model.safetensors.index.json"
    if index.exists():
        try:
            files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
            raise CheckpointFormatError(f"{index} is not a safetensors index (JSON with a weight_map)") from None
        outside = [name for name in files if not _inside(name)]
        if outside:
            raise CheckpointFormatError(f"{index.name} names shards outside {path}: {outside[:3]}; a checkpoint's "
                                        "shards are files in its own folder (fix the index's weight_map)")
        absent = [name for name in files if not (path / name).exists()]
        if absent:
            raise CheckpointFormatError(f"{index.name} names shards that are not in {path}: {absent[:3]}; "
                                        "the download is incomplete")
        return [path / name for name in files]
    files = sorted(path.glob("*.safetensors"))
    if not files:
        pickles = [p.name for p in path.glob("*.bin")] + [p.name for p in path.glob("*.pt")]
        hint = (f" It holds {pickles}: pickled weights are not loaded (unpickling can run code); "
                "re-save them with safetensors.") if pickles else ""
        raise FileNotFoundError(f"no *.safetensors weights in {path}.{hint}")
    return files


def read_headers(path: Path) -> dict[str, TensorInfo]:
    """Every tensor's file, shape and dtype, without reading any weight."""
    tensors = {}
    for file in checkpoint_files(path):
        try:
            with safe_open(str(file), framework="pt") as f:
                for key in f.keys():
                    piece = f.get_slice(key)
                    tensors[key] = TensorInfo(file, tuple(piece.get_shape()), piece.get_dtype())
        except Exception as exc:  # safetensors raises its own error type for every kind of damage
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise CheckpointFormatError(f"{file} is not a readable safetensors file ({reason}); "
                                        "it is damaged or cut short: download it again") from None
    return tensors


def expected_tensors(model, config: GPTConfig, quantized: bool) -> dict[str, tuple[tuple[int, ...], str | None]]:
    """The checkpoint's name -> (shape, required safetensors dtype or None) for this config."""
    params = dict(model.named_parameters(remove_duplicate=False))
    expected = {}
    for ours, theirs in hf_name_map(config).items():
        expected[theirs] = (tuple(params[ours].shape), None)
    if quantized:
        E, d, f, b = config.num_experts, config.hidden_size, config.intermediate_size, mxfp4.BLOCK_SIZE
        for i in range(config.num_hidden_layers):
            for proj, (rows, k) in {"gate_up_proj": (2 * f, d), "down_proj": (d, f)}.items():
                name = f"model.layers.{i}.mlp.experts.{proj}"
                del expected[name]
                expected[f"{name}_blocks"] = ((E, rows, k // b, b // 2), "U8")
                expected[f"{name}_scales"] = ((E, rows, k // b), "U8")
    return expected


def check_tensors(found: dict[str, TensorInfo], expected: dict, quantized: bool, config: GPTConfig) -> None:
    if not quantized and any(k.endswith(("_blocks", "_scales")) for k in found):
        raise CheckpointFormatError("the expert weights are MXFP4 (*_blocks/*_scales) but config.json has no "
                                    "quantization_config with quant_method 'mxfp4'; fix config.json")
    if quantized and not any(k.endswith("_blocks") for k in found):
        raise CheckpointFormatError("config.json says the experts are quantized (MXFP4) but the checkpoint has no "
                                    "*_blocks/*_scales tensors; remove quantization_config from config.json")
    if config.tie_word_embeddings is False and "lm_head.weight" not in found:
        raise CheckpointFormatError("config says untied embeddings but the checkpoint has no lm_head.weight")
    missing = [name for name in expected if name not in found]
    if missing:
        raise CheckpointFormatError(f"checkpoint is missing {len(missing)} tensors, e.g. {missing[:3]}")
    unexpected = sorted(set(found) - set(expected))
    if unexpected:
        raise CheckpointFormatError(f"checkpoint has tensors nanogptoss does not know, e.g. {unexpected[:3]}")
    for name, (shape, dtype) in expected.items():
        info = found[name]
        if name.endswith("_blocks") and info.shape[-1:] != (mxfp4.BLOCK_SIZE // 2,):
            raise CheckpointFormatError(f"{name} has shape {info.shape}: MXFP4 blocks are {mxfp4.BLOCK_SIZE} values "
                                        f"in {mxfp4.BLOCK_SIZE // 2} bytes, so the last dimension must be "
                                        f"{mxfp4.BLOCK_SIZE // 2}")
        if info.shape != shape:
            raise CheckpointFormatError(f"{name} has shape {info.shape} in {info.file.name}, but config.json implies "
                                        f"{shape}; the weights and config.json do not belong together")
        if dtype is not None and info.dtype != dtype:
            raise CheckpointFormatError(f"{name} is {info.dtype}; MXFP4 blocks and scales are uint8 (U8)")
        if dtype is None and info.dtype in ("U8", "I8", "BOOL"):
            raise CheckpointFormatError(f"{name} is {info.dtype}: expected floating-point weights")


# -- loading ---------------------------------------------------------------------------

EXPERT_MODES = ("auto", "packed", "dequantized")


def experts_mode(experts: str, quantized: bool, device: torch.device, overrides: dict) -> str:
    """ "packed" or "dequantized": how the experts of this checkpoint will sit in memory."""
    if experts not in EXPERT_MODES:
        raise ValueError(f"experts must be one of {EXPERT_MODES}, got {experts!r}")
    if not quantized:
        if experts == "packed":
            raise ValueError("experts='packed' keeps MXFP4 experts packed, but this checkpoint is not quantized; "
                             "use experts='auto'")
        return "dequantized"
    mode = experts if experts != "auto" else ("dequantized" if device.type == "cpu" else "packed")
    if mode == "packed" and overrides.get("moe_impl", "auto") != "auto":
        raise ValueError(f"moe_impl={overrides['moe_impl']!r} needs the experts as whole tensors; packed MXFP4 "
                         "experts run their own MoE: drop moe_impl or load with experts='dequantized'")
    return mode


def _assign(model: nn.Module, name: str, tensor: torch.Tensor) -> None:
    """Put `tensor` in place of the (meta) parameter or buffer `name`."""
    module_name, _, leaf = name.rpartition(".")
    module = model.get_submodule(module_name)
    if leaf in module._parameters:
        module._parameters[leaf] = nn.Parameter(tensor, requires_grad=tensor.is_floating_point())
    else:
        module._buffers[leaf] = tensor


def load_pretrained(model_class, path: str | os.PathLike, dtype: torch.dtype = torch.float32, device="cpu",
                    experts: str = "auto", progress: bool | None = None, **overrides):
    """Build a `model_class` (GPTOSS) from a Hugging Face-format gpt-oss checkpoint directory.

    `experts` says how MXFP4 experts sit in memory: "packed" (kept MXFP4, each expert
    dequantized on the fly in the forward pass), "dequantized" (to `dtype` once, at load
    time) or "auto" (packed on a GPU, dequantized on a CPU). `overrides` change runtime
    fields of the config (attn_impl, moe_impl, dropout). `GPTOSS.from_pretrained(path)` is
    the way to call it.
    """
    path, device = Path(path), torch.device(device)
    hf = read_config(path)
    quantized = quantization(hf) is not None
    config = config_from_hf(hf, **overrides)
    mode = experts_mode(experts, quantized, device, overrides)
    with torch.device("meta"):  # no memory spent on weights about to be replaced
        model = model_class(config)
    found = read_headers(path)
    expected = expected_tensors(model, config, quantized)
    check_tensors(found, expected, quantized, config)  # everything checked before any weight is read

    if mode == "packed":
        with torch.device("meta"):
            for block in model.blocks:
                block.mlp.experts = mxfp4.PackedExperts(config.num_experts, config.hidden_size,
                                                        config.intermediate_size, config.swiglu_alpha,
                                                        config.swiglu_limit)
                block.mlp.moe = mxfp4.moe_packed
    ours_of = {theirs: ours for ours, theirs in hf_name_map(config).items()}
    pending = {}  # dequantized mode: one projection's blocks waiting for its scales (or back)

    def place(name: str, tensor: torch.Tensor) -> None:
        if name.endswith(("_blocks", "_scales")):
            if mode == "packed":
                _assign(model, name.replace("model.layers.", "blocks.", 1), tensor.to(device))
                return
            base, part = name.rsplit("_", 1)
            pending.setdefault(base, {})[part] = tensor.to(device)
            if len(pending[base]) == 2:
                both = pending.pop(base)
                weight = mxfp4.dequantize_experts(both["blocks"], both["scales"], dtype)
                _assign(model, ours_of[base], weight)
            return
        keep_fp32 = name.endswith(".sinks")  # see AttentionBlock._apply
        _assign(model, ours_of[name], tensor.to(device=device, dtype=torch.float32 if keep_fp32 else dtype))

    by_file: dict[Path, list[str]] = {}
    for name, info in found.items():
        by_file.setdefault(info.file, []).append(name)
    total = sum(math.prod(info.shape) for info in found.values())
    show = progress if progress is not None else total > 200_000_000
    with tqdm(total=len(found), desc=f"loading {path.name}", unit="tensor", disable=not show) as bar:
        for file, names in by_file.items():
            with safe_open(str(file), framework="pt") as f:
                for name in names:
                    place(name, f.get_tensor(name))
                    bar.update()
    if config.tie_word_embeddings:
        model.unembedding.weight = model.embedding.weight
    # buffers derived from the config were on the meta device: rebuild them for real
    if model.rope is not None:
        model.rope = RotaryEmbedding.from_config(config).to(device)
    left = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    assert not left, f"not loaded: {left[:3]}"  # check_tensors has made this impossible
    return model.eval()


MXFP4_CONFIG = {"quant_method": "mxfp4",  # as in the published checkpoints: only the experts are quantized
                "modules_to_not_convert": ["model.layers.*.self_attn", "model.layers.*.mlp.router",
                                           "model.embed_tokens", "lm_head"]}


def save_pretrained(model, path: str | os.PathLike, mxfp4_experts: bool | None = None) -> None:
    """Write config.json + model.safetensors in transformers' gpt-oss layout.

    With `mxfp4_experts` (the default for a model whose experts are packed) the expert
    matrices are written in MXFP4, quantized by `mxfp4.quantize` where they are not
    already, in the layout of the published checkpoints.
    """
    config = model.config
    hf_config = config_to_hf(config)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    packed = isinstance(model.blocks[0].mlp.experts, mxfp4.PackedExperts)
    mxfp4_experts = packed if mxfp4_experts is None else mxfp4_experts
    params = dict(model.named_parameters(remove_duplicate=False))
    buffers = dict(model.named_buffers())
    tensors = {}
    for ours, theirs in hf_name_map(config).items():
        if not theirs.endswith(EXPERT_MATRICES):
            tensors[theirs] = params[ours]
        elif packed:  # MXFP4 already
            blocks, scales = buffers[f"{ours}_blocks"], buffers[f"{ours}_scales"]
            if mxfp4_experts:
                tensors[f"{theirs}_blocks"], tensors[f"{theirs}_scales"] = blocks, scales
            else:
                tensors[theirs] = mxfp4.dequantize_experts(blocks, scales, params[f"{ours}_bias"].dtype)
        elif mxfp4_experts:
            tensors[f"{theirs}_blocks"], tensors[f"{theirs}_scales"] = mxfp4.quantize_experts(params[ours].detach())
        else:
            tensors[theirs] = params[ours]
    tensors = {name: t.detach().contiguous().cpu() for name, t in tensors.items()}
    hf_config["torch_dtype"] = str(tensors["model.embed_tokens.weight"].dtype).removeprefix("torch.")
    if mxfp4_experts:
        hf_config["quantization_config"] = dict(MXFP4_CONFIG)
    # atomic writes (never half a file, never through a link); the weights first, so a folder whose
    # config.json is new always has the weights it describes
    with atomic_path(path / "model.safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
    write_text(path / "config.json", json.dumps(hf_config, indent=2))
