"""Every bad input we know of, and the one line the library answers it with.

tests/test_bad_inputs.py runs each case and checks that the answer is one clear line (a
ValueError-like error or a command's exit message, never a traceback) that says what it must.
`python tests/bad_inputs.py --write` regenerates the table in book/reliability.md from the
same cases; the test checks that the committed table is the one the cases give.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import math
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "book" / "reliability.md"
PACKAGE = Path(__import__("nanogptoss").__file__).resolve().parent  # where it is installed: differs per clone
TABLE_START, TABLE_END = "<!-- bad-inputs:start -->", "<!-- bad-inputs:end -->"


@dataclass
class Case:
    area: str
    what: str  # the input, as a user would type or call it
    run: Callable[[Path], None]  # does the bad thing inside a scratch folder
    expect: str  # a regular expression the answer must contain


def cli(module: str, *argv: str) -> Callable[[Path], None]:
    """A command called in-process through the dispatcher, as `python -m nanogptoss ...` calls it."""
    def run(tmp: Path) -> None:
        from nanogptoss.__main__ import main

        with _chdir(tmp):
            main([module] + [a.replace("{tmp}", str(tmp)) for a in argv])
    return run


@contextlib.contextmanager
def _chdir(path: Path):
    import os

    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def _tokenizer_dir() -> Path:
    from nanogptoss.data.tokenizer import TOKENIZER_DIR

    return TOKENIZER_DIR


def _tiny_model():
    import torch

    from nanogptoss import GPTOSS, GPTOSSConfig

    torch.manual_seed(0)
    return GPTOSS(GPTOSSConfig(vocab_size=97, max_position_embeddings=32, num_hidden_layers=2, hidden_size=32,
                               num_attention_heads=4, num_key_value_heads=2, head_dim=8, num_experts=4,
                               experts_per_token=2, intermediate_size=16, sliding_window=8))


def _ids(*shape, high=97):
    import torch

    return torch.randint(0, high, shape)


def _generate(**kwargs):
    def run(tmp):
        from nanogptoss import generate

        generate(_tiny_model(), _ids(1, 4), **{"max_new_tokens": 3, **kwargs})
    return run


def _forward(idx_fn, targets_fn=None):
    def run(tmp):
        _tiny_model()(idx_fn(), targets=targets_fn() if targets_fn else None)
    return run


def _config(**fields):
    def run(tmp):
        from nanogptoss import GPTConfig

        GPTConfig(**fields)
    return run


def _checkpoint(edit: Callable[[dict], None]):
    """A training checkpoint whose header metadata `edit` damages, then opened."""
    def run(tmp):
        from safetensors import safe_open
        from safetensors.torch import save_file

        from nanogptoss.weights.checkpoint import Checkpoint, save_checkpoint

        path = save_checkpoint(tmp / "ckpt.safetensors", _tiny_model(), step=3)
        with safe_open(str(path), framework="pt") as f:
            meta, tensors = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}
        edit(meta)
        save_file(tensors, str(path), metadata=meta)
        Checkpoint(path)
    return run


def _write(name: str, data: bytes | str):
    def make(tmp: Path) -> Path:
        path = tmp / name
        path.write_bytes(data if isinstance(data, bytes) else data.encode())
        return path
    return make


def _with_files(*makers, then: Callable[[Path], None]) -> Callable[[Path], None]:
    def run(tmp):
        for make in makers:
            make(tmp)
        then(tmp)
    return run


def _pretrained(edit: Callable[[Path], None], mxfp4: bool = True, **load):
    """A tiny gpt-oss checkpoint folder (MXFP4 experts unless mxfp4=False) that `edit`
    damages, then loaded with from_pretrained."""
    def run(tmp):
        import torch

        from nanogptoss import GPTOSS, GPTOSSConfig, from_pretrained
        from nanogptoss.weights.hf import save_pretrained

        torch.manual_seed(0)
        model = GPTOSS(GPTOSSConfig(vocab_size=97, max_position_embeddings=32, num_hidden_layers=2, hidden_size=32,
                                    num_attention_heads=4, num_key_value_heads=2, head_dim=8, num_experts=4,
                                    experts_per_token=2, intermediate_size=32, sliding_window=8))
        save_pretrained(model, tmp / "ckpt", mxfp4_experts=mxfp4)
        edit(tmp / "ckpt")
        from_pretrained(tmp / "ckpt", **load)
    return run


def _edit_config(change: Callable[[dict], None]):
    def edit(folder: Path) -> None:
        cfg = json.loads((folder / "config.json").read_text())
        change(cfg)
        (folder / "config.json").write_text(json.dumps(cfg))
    return edit


def _edit_tensors(change: Callable[[dict], None]):
    def edit(folder: Path) -> None:
        from safetensors import safe_open
        from safetensors.torch import save_file

        file = folder / "model.safetensors"
        with safe_open(str(file), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        change(tensors)
        save_file({k: t.contiguous() for k, t in tensors.items()}, str(file), metadata={"format": "pt"})
    return edit


def _truncate(folder: Path) -> None:
    file = folder / "model.safetensors"
    file.write_bytes(file.read_bytes()[:-1000])


def _random_bytes(folder: Path) -> None:
    import random

    (folder / "model.safetensors").write_bytes(random.Random(0).randbytes(4096))


LAYER0 = "model.layers.0.mlp.experts."


STORY = "Once upon a time, a fox found a red hat. It was happy."
TRAIN = ("train", "--preset", "cpu-tiny", "--data", "synthetic", "--max-stories", "200", "--batch-size", "4",
         "--max-steps", "2", "--eval-tokens", "256", "--no-progress", "--out-dir", "{tmp}/run", "--data-dir", "{tmp}/d")


def train_with(*extra: str, data: str | None = None) -> Callable[[Path], None]:
    argv = list(TRAIN[1:]) + list(extra)
    if data is not None:
        argv[argv.index("--data") + 1] = data
    return cli("train", *argv)


def _link(name: str, target: str):
    """A symbolic link `name` in the scratch folder to a file `target` there (created, holding 'precious')."""
    def make(tmp: Path) -> Path:
        import os

        (tmp / target).write_text("precious")
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(tmp / target, tmp / name)
        return tmp / name
    return make


def _shards_outside(folder: Path) -> None:
    """An index whose weight_map names a shard in the folder above the checkpoint."""
    (folder / "model.safetensors").rename(folder / "model-00001.safetensors")
    (folder.parent / "x.safetensors").write_bytes((folder / "model-00001.safetensors").read_bytes())
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": {
        "model.embed_tokens.weight": "model-00001.safetensors", "lm_head.weight": "../x.safetensors"}}))


def _save_pretrained_over_link(tmp):
    from nanogptoss.weights.hf import save_pretrained

    _link("ckpt/model.safetensors", "outside.bin")(tmp)
    save_pretrained(_tiny_model(), tmp / "ckpt")


GOOD_COMPLETIONS = _write("good.jsonl", json.dumps({"prompt": "Tim had a kite.", "completion": " It flew."}) + "\n")
JUDGE = ("--completions", "good.jsonl", "--base-url", "http://127.0.0.1:9/v1", "--model", "m")


def _redirecting_judge(tmp):
    """A judge endpoint on 127.0.0.1 that answers every request with a redirect to another host."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Redirect(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(302)
            self.send_header("Location", "http://attacker.example/v1/chat/completions")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    port = httpd.server_address[1]
    try:
        GOOD_COMPLETIONS(tmp)
        cli("judge", "--completions", "good.jsonl", "--base-url", f"http://127.0.0.1:{port}/v1", "--model", "m")(tmp)
    except SystemExit as exc:  # the port changes from run to run; the published table must not
        raise SystemExit(str(exc.code).replace(f":{port}/", ":<port>/")) from None
    finally:
        httpd.shutdown()
        httpd.server_close()


def exercises(*argv: str) -> Callable[[Path], None]:
    """`python -m nanogptoss exercises ...`, whose main returns its exit status."""
    def run(tmp: Path) -> None:
        from nanogptoss.book.cli import main

        with _chdir(tmp):
            status = main(list(argv))
        if status:
            raise SystemExit(status)
    return run


NOTEBOOK = _write("a.ipynb", json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))


def _resume_below_checkpoint(tmp):
    cli("train", *TRAIN[1:])(tmp)
    cli("train", *TRAIN[1:], "--resume", "--max-steps", "1")(tmp)


STORIES = "<|endoftext|>".join(f"{STORY} It was day {i}." for i in range(400))


def _resume_after(change: Callable[[Path], None], *extra: str, data: str | None = None):
    """A two-step run, then `change` to its inputs under the same names, then --resume."""
    def run(tmp):
        train_with(*extra, data=data)(tmp)
        change(tmp)
        train_with(*extra, "--resume", "--max-steps", "4", data=data)(tmp)
    return run


def _tokenizer_file(one_token_other: bool):
    """tok.tiktoken: the shipped tinystories-4k, or the same with its last token another (same size)."""
    def make(tmp):
        from nanogptoss.data.tokenizer import TOKENIZER_DIR, load_ranks, save_ranks

        ranks = load_ranks(TOKENIZER_DIR / "tinystories-4k.tiktoken")
        if one_token_other:
            last = max(ranks, key=ranks.get)
            ranks = {**{t: r for t, r in ranks.items() if t != last}, b"qzxjv": ranks[last]}
        save_ranks(ranks, tmp / "tok.tiktoken")
    return make


def _compare_into_busy_folder(tmp):
    from nanogptoss.files import FolderLock

    with FolderLock(tmp / "c"):  # held as a live comparison holds its --out
        cli("compare", "grid", "--seeds", "0", "--data", "synthetic", "--out", "{tmp}/c")(tmp)
_TRAINED: list[Path] = []  # one finished TRAIN run (run folder and token cache), copied by the cases that need one


def _trained_run(tmp: Path) -> None:
    """TRAIN's run folder ({tmp}/run) and token cache ({tmp}/d), as a finished 2-step run leaves them."""
    import atexit
    import shutil

    if not _TRAINED:
        _TRAINED.append(Path(tempfile.mkdtemp(prefix="bad-inputs-run-")))
        atexit.register(shutil.rmtree, _TRAINED[0], ignore_errors=True)
        cli("train", *TRAIN[1:])(_TRAINED[0])
    for name in ("run", "d"):
        shutil.copytree(_TRAINED[0] / name, tmp / name)


def _resume_damaged(tensors: Callable[[dict], None] = lambda t: None, meta: Callable[[dict], None] = lambda m: None,
                    metrics: str | None = None) -> Callable[[Path], None]:
    """`train --resume --max-steps 3` of TRAIN's run after `tensors`/`meta` damaged its checkpoint (or `metrics`
    replaced its metrics log)."""
    def run(tmp):
        from safetensors import safe_open
        from safetensors.torch import save_file

        _trained_run(tmp)
        path = tmp / "run" / "checkpoint.safetensors"
        with safe_open(str(path), framework="pt") as f:
            m, t = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}
        tensors(t)
        meta(m)
        save_file({k: v.contiguous() for k, v in t.items()}, str(path), metadata=m)
        if metrics is not None:
            (tmp / "run" / "metrics.jsonl").write_text(metrics)
        cli("train", *TRAIN[1:], "--resume", "--max-steps", "3")(tmp)
    return run


def _on_a_full_disk(target: str) -> Callable[[Path], None]:
    """`train --resume --max-steps 3` of TRAIN's run while the disk is full: the `target` write (the checkpoint,
    through safetensors, or the metrics log) fails as a full disk fails it."""
    def run(tmp):
        import errno
        import os
        from unittest import mock

        from safetensors import SafetensorError

        def full(*args, **kwargs):
            if target == "checkpoint":  # safetensors' own words for it
                raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28) "
                                      f'at path "{tmp}/run/.tmpXYZ"')
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp / "run" / "metrics.jsonl"))

        _trained_run(tmp)
        where = ("nanogptoss.weights.checkpoint.save_file" if target == "checkpoint"
                 else "nanogptoss.training.train.MetricsLog.write")
        with mock.patch(where, full):
            cli("train", *TRAIN[1:], "--resume", "--max-steps", "3")(tmp)
    return run


def _options(fields) -> Callable[[Path], None]:
    """`train --options opts.json` with `fields` as the file's JSON."""
    return _with_files(_write("opts.json", json.dumps(fields)), then=cli("train", "--options", "opts.json"))


def _train_api(**fields) -> Callable[[Path], None]:
    def run(tmp):
        from nanogptoss.training.train import TrainConfig, train

        train(TrainConfig(**fields, out_dir=str(tmp / "run")))
    return run


def _parse_harmony(text: str) -> Callable[[Path], None]:
    def run(tmp):
        from nanogptoss.data import harmony

        harmony.parse_messages(harmony.get_encoding().encode(text, allowed_special="all"))
    return run


def _render_harmony(**fields) -> Callable[[Path], None]:
    def run(tmp):
        from nanogptoss.data import harmony

        harmony.render_message(harmony.Message(**fields))
    return run


CASES: list[Case] = [
    # the model config
    Case("config", "GPTConfig(norm_eps=float('nan'))", _config(norm_eps=math.nan), "norm_eps must be a finite number"),
    Case("config", "GPTConfig(norm_eps='1e-5')", _config(norm_eps="1e-5"), "norm_eps must be a finite number"),
    Case("config", "GPTConfig(initializer_range=float('nan'))", _config(initializer_range=math.nan),
         "initializer_range must be a finite number"),
    Case("config", "GPTConfig(attn_sinks='no')", _config(attn_sinks="no"), "attn_sinks must be True or False"),
    Case("config", "GPTConfig(num_attention_heads=5)", _config(num_attention_heads=5),
         "not divisible by num_attention_heads"),
    Case("config", "GPTConfig(layer_types=('sliding',) * 12)", _config(layer_types=("sliding",) * 12),
         "layer_types must list 12 entries"),
    # the model's forward pass and generation
    Case("model", "model(ids) with ids of shape (0, 5)", _forward(lambda: _ids(0, 5)), r"shape \(0, 5\) is empty"),
    Case("model", "model(ids, targets) with a target id of 97 for vocab_size 97",
         _forward(lambda: _ids(2, 5), lambda: _ids(2, 5).index_fill(1, _ids(1, high=5)[0:1], 97)),
         r"targets must lie in \[0, 97\)"),
    Case("model", "model(ids, targets) with float targets", _forward(lambda: _ids(2, 5), lambda: _ids(2, 5).float()),
         "targets must hold integer token ids"),
    Case("model", "model(ids) with 40 tokens and a 32-token context", _forward(lambda: _ids(1, 40)),
         "exceeds the context"),
    Case("generate", "generate(model, ids, max_new_tokens=0, top_k=-1)", _generate(max_new_tokens=0, top_k=-1),
         "top_k must be a whole number >= 1"),
    Case("generate", "generate(model, ids, 3, temperature=float('nan'))", _generate(temperature=math.nan),
         "temperature must be a number >= 0"),
    Case("generate", "generate(model, ids, 3, temperature='0.8')", _generate(temperature="0.8"),
         "temperature must be a number >= 0"),
    Case("generate", "generate(model, ids, max_new_tokens=2.5)", _generate(max_new_tokens=2.5),
         "max_new_tokens must be a whole number"),
    # training checkpoints
    Case("checkpoint", "a checkpoint whose metadata has no step", _checkpoint(lambda m: m.pop("step")),
         "metadata is damaged"),
    Case("checkpoint", "a checkpoint whose model config is not JSON",
         _checkpoint(lambda m: m.update(model_config="{not json")), "metadata is damaged"),
    Case("checkpoint", "a checkpoint whose model config has an unknown field",
         _checkpoint(lambda m: m.update(model_config=json.dumps({**json.loads(m["model_config"]), "n_layer": 2}))),
         "fields this version of nanogptoss does not know"),
    Case("checkpoint", "train --resume from a checkpoint whose model/embedding.weight lost a row",
         _resume_damaged(tensors=lambda t: t.update({"model/embedding.weight": t["model/embedding.weight"][:-1]})),
         r"model/embedding.weight has shape \(\d+, \d+\) where its model config implies"),
    Case("checkpoint", "train --resume from a checkpoint whose metadata has no optim_scalars",
         _resume_damaged(meta=lambda m: m.pop("optim_scalars")), r"metadata is damaged \(no 'optim_scalars'\)"),
    Case("checkpoint", "train --resume from a checkpoint without its random-number state rng/torch",
         _resume_damaged(tensors=lambda t: t.pop("rng/torch")), "random-number state rng/torch is missing"),
    Case("checkpoint", "train --resume from a checkpoint whose optim/0/exp_avg is mis-shaped",
         _resume_damaged(tensors=lambda t: t.update({"optim/0/exp_avg": t["optim/0/exp_avg"][:-1]})),
         r"optim/0/exp_avg has shape"),
    Case("checkpoint", "train --resume from a checkpoint missing optim/3/exp_avg_sq",
         _resume_damaged(tensors=lambda t: t.pop("optim/3/exp_avg_sq")),
         "the optimizer state of parameter 3 has no exp_avg_sq"),
    Case("checkpoint", "train --resume with a metrics.jsonl whose row is not an object",
         _resume_damaged(metrics='{"step": 1, "loss": 8.0}\n[2, 7.9]\n'),
         r"metrics.jsonl:2 is not a metrics row; the log is damaged"),
    # the book's shipped models
    Case("pretrained", "nanogptoss.pretrained('tinystories')", lambda tmp: __import__("nanogptoss").pretrained("tinystories"),
         "no pretrained model 'tinystories'; choose one of tinystories-gptoss, tinystories-gpt2"),
    # from_pretrained: Hugging Face-format and MXFP4 checkpoints
    Case("pretrained", "from_pretrained(dir) whose config.json is not JSON",
         _pretrained(lambda d: (d / "config.json").write_text("{not json")), "config.json is not valid JSON"),
    Case("pretrained", "from_pretrained(dir) whose config.json has no hidden_size",
         _pretrained(_edit_config(lambda c: c.pop("hidden_size"))), "config.json has no 'hidden_size'"),
    Case("pretrained", "from_pretrained(dir) whose config.json has num_attention_heads 0 and no head_dim",
         _pretrained(_edit_config(lambda c: (c.pop("head_dim"), c.update(num_attention_heads=0)))),
         "config.json: num_attention_heads must be a whole number >= 1, got 0"),
    Case("pretrained", "from_pretrained(dir) whose config.json has hidden_size \"32\" (a string) and no head_dim",
         _pretrained(_edit_config(lambda c: (c.pop("head_dim"), c.update(hidden_size="32")))),
         "config.json: hidden_size must be a whole number >= 1, got '32'"),
    Case("pretrained", "from_pretrained(dir) whose config.json has head_dim 0",
         _pretrained(_edit_config(lambda c: c.update(head_dim=0))), "config.json: head_dim must be a whole number"),
    Case("pretrained", "from_pretrained(dir) whose config.json has layer_types 2",
         _pretrained(_edit_config(lambda c: c.update(layer_types=2))), "config.json: layer_types must be a list"),
    Case("pretrained", "from_pretrained(dir) whose config.json has rope_parameters \"yarn\"",
         _pretrained(_edit_config(lambda c: c.update(rope_parameters="yarn"))),
         "config.json: rope_parameters must be an object"),
    Case("pretrained", "from_pretrained(dir) whose config.json has a YaRN rope_parameters.factor \"x\"",
         _pretrained(_edit_config(lambda c: c["rope_parameters"].update(rope_type="yarn", factor="x"))),
         "config.json: rope_parameters.factor must be a finite number, got 'x'"),
    Case("pretrained", "from_pretrained(dir) whose config.json has rope_parameters.rope_type \"linear\"",
         _pretrained(_edit_config(lambda c: c["rope_parameters"].update(rope_type="linear", factor=2.0))),
         r"rope_parameters.rope_type must be one of \('default', 'yarn'\)"),
    Case("pretrained", "from_pretrained(dir) whose config.json has num_experts_per_tok 5 of 4 experts",
         _pretrained(_edit_config(lambda c: c.update(num_experts_per_tok=5))),
         r"config.json describes no model .* experts_per_token \(5\) must be between 1 and num_experts \(4\)"),
    Case("pretrained", "from_pretrained(dir) of a Llama checkpoint",
         _pretrained(_edit_config(lambda c: c.update(model_type="llama", architectures=["LlamaForCausalLM"]))),
         "not a gpt-oss checkpoint"),
    Case("pretrained", "from_pretrained(dir/original) (openai's own layout)",
         _pretrained(_edit_config(lambda c: (c.clear(), c.update(num_experts=4, experts_per_token=2,
                                                                 num_hidden_layers=2))), mxfp4=False),
         "openai's original/ layout"),
    Case("pretrained", "from_pretrained(dir) quantized with bitsandbytes",
         _pretrained(_edit_config(lambda c: c.update(quantization_config={"quant_method": "bitsandbytes"}))),
         "quant_method is 'bitsandbytes'"),
    Case("pretrained", "from_pretrained(dir) with quantization_config.block_size 16",
         _pretrained(_edit_config(lambda c: c["quantization_config"].update(block_size=16))),
         "MXFP4 blocks hold 32 values"),
    Case("pretrained", "from_pretrained(dir) with MXFP4 blocks of 16 values",
         _pretrained(_edit_tensors(lambda t: t.update({LAYER0 + "down_proj_blocks": t[LAYER0 + "down_proj_blocks"][..., :8]}))),
         "down_proj_blocks has shape .* the last dimension must be 16"),
    Case("pretrained", "from_pretrained(dir) missing one expert's scales",
         _pretrained(_edit_tensors(lambda t: t.pop(LAYER0 + "gate_up_proj_scales"))),
         r"missing 1 tensors, e.g. \['model.layers.0.mlp.experts.gate_up_proj_scales'\]"),
    Case("pretrained", "from_pretrained(dir) with mis-shaped scales",
         _pretrained(_edit_tensors(lambda t: t.update({LAYER0 + "gate_up_proj_scales": t[LAYER0 + "gate_up_proj_scales"][:, :-1]}))),
         "gate_up_proj_scales has shape"),
    Case("pretrained", "from_pretrained(dir) with float scales",
         _pretrained(_edit_tensors(lambda t: t.update({LAYER0 + "gate_up_proj_scales": t[LAYER0 + "gate_up_proj_scales"].float()}))),
         "blocks and scales are uint8"),
    Case("pretrained", "from_pretrained(dir) with MXFP4 tensors but no quantization_config",
         _pretrained(_edit_config(lambda c: c.pop("quantization_config"))), "no quantization_config"),
    Case("pretrained", "from_pretrained(dir) with a mis-shaped q_proj",
         _pretrained(_edit_tensors(lambda t: t.update({"model.layers.1.self_attn.q_proj.weight":
                                                       t["model.layers.1.self_attn.q_proj.weight"][:-1]}))),
         r"model.layers.1.self_attn.q_proj.weight has shape \(31, 32\)"),
    Case("pretrained", "from_pretrained(dir) with a truncated model.safetensors",
         _pretrained(_truncate), "model.safetensors is not a readable safetensors file"),
    Case("pretrained", "from_pretrained(dir) with random bytes as model.safetensors",
         _pretrained(_random_bytes), "model.safetensors is not a readable safetensors file"),
    Case("pretrained", "from_pretrained(dir, experts='packed') of an unquantized checkpoint",
         _pretrained(lambda d: None, mxfp4=False, experts="packed"), "this checkpoint is not quantized"),
    Case("pretrained", "from_pretrained(dir, experts='packed', moe_impl='grouped')",
         _pretrained(lambda d: None, experts="packed", moe_impl="grouped"), "packed MXFP4 experts run their own MoE"),
    Case("pretrained", "from_pretrained(dir) whose index names ../x.safetensors", _pretrained(_shards_outside),
         r"names shards outside .*\['../x.safetensors'\]"),
    Case("pretrained", "save_pretrained(model, dir) where dir/model.safetensors links elsewhere",
         _save_pretrained_over_link, "model.safetensors is a symbolic link .*never writes through a link"),
    # python -m nanogptoss train
    Case("train", "train --set foo=1", train_with("--set", "foo=1"), "'foo' is not a model config field"),
    Case("train", "train --set num_hidden_layers=two", train_with("--set", "num_hidden_layers=two"),
         "num_hidden_layers takes an int"),
    Case("train", "train --set vocab_size=100", train_with("--set", "vocab_size=100"), "vocab_size follows the tokenizer"),
    Case("train", "train --device foo", train_with("--device", "foo"), "--device must be one of"),
    Case("train", "train --dtype foo", train_with("--dtype", "foo"), "invalid choice: 'foo'"),
    Case("train", "train --max-stories 0", train_with("--max-stories", "0"), "--max-stories must be at least 1"),
    Case("train", "train --max-stories -5", train_with("--max-stories", "-5"), "--max-stories must be at least 1"),
    Case("train", "train --warmup-steps -10", train_with("--warmup-steps", "-10"), "--warmup-steps must be a whole number >= 0"),
    Case("train", "train --grad-clip -1", train_with("--grad-clip", "-1"), "--grad-clip must be a finite number >= 0"),
    Case("train", "train --lr inf", train_with("--lr", "inf"), "--lr must be a finite number"),
    Case("train", "train --out-dir .", train_with("--out-dir", "."), "is the current folder"),
    Case("train", "train --data-dir FILE", _with_files(_write("afile", "x"), then=train_with("--data-dir", "afile")),
         "--data-dir 'afile' is a file"),
    Case("train", "train --data missing.txt", train_with(data="missing.txt"), "missing.txt does not exist"),
    Case("train", "train --data empty.txt", _with_files(_write("empty.txt", ""), then=train_with(data="empty.txt")),
         "empty.txt holds no stories"),
    Case("train", "train --data one.txt (one line of text)",
         _with_files(_write("one.txt", STORY * 50), then=train_with(data="one.txt")),
         r"one.txt holds a single story: a file is split into training and validation stories"),
    Case("train", "train --data binary.txt", _with_files(_write("binary.txt", b"\xff\xfe\x00\x81" * 64),
                                                          then=train_with(data="binary.txt")), "is not UTF-8 text"),
    Case("train", "train --data broken.jsonl (line 2 cut short)",
         _with_files(_write("broken.jsonl", json.dumps({"text": STORY}) + '\n{"text": "Once'),
                     then=train_with(data="broken.jsonl")), r"broken.jsonl:2 is not valid JSON"),
    Case("train", "train --data list.json (a JSON list of ints)",
         _with_files(_write("list.json", "[1, 2, 3]"), then=train_with(data="list.json")), "record 1 is not a story but 1"),
    Case("train", "train --resume --max-steps 1 on a step-2 checkpoint", _resume_below_checkpoint,
         "is at step 2, beyond --max-steps 1"),
    Case("train", "train --out-dir run whose .lock links to a file elsewhere",
         _with_files(_link("run/.lock", "outside.txt"), then=train_with()), r"\.lock is a symbolic link"),
    Case("train", "train --resume after the --data file was edited in place",
         _with_files(_write("s.txt", STORIES),
                     then=_resume_after(_write("s.txt", STORIES.replace("fox", "cat")), data="s.txt")),
         r"the stories of --data s.txt changed since <tmp>/run/checkpoint.safetensors was written .*; resume on the "
         "stories it trained on, or start a new --out-dir"),
    Case("train", "train --resume after the --tokenizer .tiktoken file was retrained in place",
         _with_files(_tokenizer_file(False),
                     then=_resume_after(_tokenizer_file(True), "--tokenizer", "tok.tiktoken")),
         r"the vocabulary of --tokenizer tok.tiktoken changed since .*; restore the tokenizer it trained with"),
    Case("train", "train --resume on a full disk (simulated: the checkpoint write fails with ENOSPC)",
         _on_a_full_disk("checkpoint"), r"run/checkpoint.safetensors: No space left on device; free some disk space"),
    Case("train", "train --resume on a full disk (simulated: the metrics log write fails with ENOSPC)",
         _on_a_full_disk("metrics"), r"run/metrics.jsonl: No space left on device; free some disk space"),
    Case("train", "train --out-dir afile/run (a file where a folder belongs)",
         _with_files(_write("afile", "x"), then=train_with("--out-dir", "afile/run")),
         "--out-dir 'afile/run' lies inside 'afile', which is a file; give a folder"),
    Case("train", "train --options missing.json", cli("train", "--options", "missing.json"),
         "--options missing.json: no such file"),
    Case("train", "train --options notjson.json", _with_files(_write("notjson.json", "batch_size=4"),
                                                           then=cli("train", "--options", "notjson.json")),
         "--options notjson.json is not valid JSON"),
    Case("train", "train --options opts.json holding [1, 2]", _options([1, 2]),
         "must hold a JSON object of TrainConfig fields, got a list"),
    Case("train", "train --options opts.json holding {\"n_layer\": 2}", _options({"n_layer": 2}),
         "'n_layer' is not a training option; the options are TrainConfig's fields"),
    Case("train", "train --options opts.json holding {\"resume\": \"false\"}", _options({"resume": "false"}),
         "resume must be true or false, got 'false'"),
    Case("train", "train --options opts.json holding {\"batch_size\": null}", _options({"batch_size": None}),
         "batch_size must be a whole number, got None"),
    Case("train", "train --options opts.json holding {\"device\": null}", _options({"device": None}),
         "device must be a string, got None"),
    Case("train", "train --options opts.json holding {\"max_steps\": 2.5}", _options({"max_steps": 2.5}),
         "max_steps must be a whole number, got 2.5"),
    Case("train", "train --options opts.json holding {\"overrides\": [\"num_hidden_layers=2\"]}",
         _options({"overrides": ["num_hidden_layers=2"]}), "overrides must be an object of model config fields"),
    Case("train", "train(TrainConfig(compile='no'))", _train_api(compile="no"), "compile must be true or false"),
    Case("train", "train --eval-tokens 10 (less than one 128-token window)", train_with("--eval-tokens", "10"),
         r"--eval-tokens must be at least one window, the context of 128 tokens \(max_position_embeddings\)"),
    Case("train", "train --data valonly (a folder holding only TinyStories-valid.txt)",
         _with_files(lambda tmp: (tmp / "valonly").mkdir(),
                     _write("valonly/TinyStories-valid.txt", "<|endoftext|>".join([STORY] * 400)),
                     then=train_with(data="valonly")),
         r"valonly holds only validation files \(TinyStories-valid.txt\); add the training stories"),
    # python -m nanogptoss sample
    Case("sample", "sample --ckpt missing.safetensors", cli("sample", "--ckpt", "missing.safetensors"),
         "no checkpoint at missing.safetensors"),
    Case("sample", "sample --num-samples 0", cli("sample", "--ckpt", "x", "--num-samples", "0"),
         "--num-samples must be at least 1"),
    Case("sample", "sample --ckpt run/checkpoint.safetensors --temperature 1e-45",
         _with_files(_trained_run, then=cli("sample", "--ckpt", "run/checkpoint.safetensors", "--temperature", "1e-45",
                                            "--max-new-tokens", "5")),
         "--temperature 1e-45 is too small to sample with .* use 0 for greedy decoding"),
    # python -m nanogptoss judge
    Case("judge", "judge --completions missing.jsonl", cli("judge", "--completions", "missing.jsonl"), "no such file"),
    Case("judge", "judge --completions notjson.jsonl",
         _with_files(_write("notjson.jsonl", "hello\n"), then=cli("judge", "--completions", "notjson.jsonl")),
         "notjson.jsonl:1 is not valid JSON"),
    Case("judge", "judge --limit 0", cli("judge", "--limit", "0"), "--limit must be at least 1"),
    Case("judge", "judge --prompts blank.txt", _with_files(_write("blank.txt", "\n  \n"),
                                                          then=cli("judge", "--prompts", "blank.txt")), "has no prompts"),
    Case("judge", "judge --timeout 0", cli("judge", "--timeout", "0"), "--timeout must be a finite number of seconds above 0"),
    Case("judge", "judge --timeout -1", cli("judge", "--timeout", "-1"), "--timeout must be a finite number of seconds"),
    Case("judge", "judge --timeout nan", cli("judge", "--timeout", "nan"), "--timeout must be a finite number of seconds"),
    Case("judge", "judge --timeout inf", cli("judge", "--timeout", "inf"), "--timeout must be a finite number of seconds"),
    Case("judge", "judge --out missing/r.json", _with_files(GOOD_COMPLETIONS, then=cli("judge", *JUDGE, "--out",
                                                                                      "missing/r.json")),
         "the folder .*missing does not exist"),
    Case("judge", "judge --out . (a folder)", _with_files(GOOD_COMPLETIONS, then=cli("judge", *JUDGE, "--out", ".")),
         "is a folder; give a file name"),
    Case("judge", "judge --base-url URL whose server redirects to another host", _redirecting_judge,
         r"redirected \(HTTP 302\) to http://attacker.example/v1/chat/completions; redirects are not followed"),
    # python -m nanogptoss tokenizer
    Case("tokenizer", "tokenizer show --tokenizer bogus", cli("tokenizer", "show", "--tokenizer", "bogus"),
         "unknown tokenizer 'bogus'"),
    Case("tokenizer", "tokenizer show --tokenizer bad.tiktoken (not base64)",
         _with_files(_write("bad.tiktoken", "hello world\n"), then=cli("tokenizer", "show", "--tokenizer",
                                                                        "bad.tiktoken")),
         r"bad.tiktoken:1 is not a 'base64-token rank' line"),
    Case("tokenizer", "tokenizer train --vocab-size 100", cli("tokenizer", "train", "--vocab-size", "100"),
         "--vocab-size must be at least 257"),
    Case("tokenizer", "tokenizer train --data missing.txt", cli("tokenizer", "train", "--data", "missing.txt"),
         "missing.txt does not exist"),
    Case("tokenizer", "tokenizer show --tokenizer short.tiktoken (only 200 of the 256 single bytes)",
         _with_files(_write("short.tiktoken", "".join(f"{base64.b64encode(bytes([b])).decode()} {b}\n"
                                                        for b in range(200))),
                     then=cli("tokenizer", "show", "--tokenizer", "short.tiktoken")),
         "lacks 56 of the 256 single bytes"),
    Case("tokenizer", "tokenizer train --out <the package's tokenizers>/tinystories-4k.tiktoken",
         lambda tmp: cli("tokenizer", "train", "--out", str(_tokenizer_dir() / "tinystories-4k.tiktoken"))(tmp),
         "inside the installed package's shipped tokenizers"),
    # python -m nanogptoss compare
    Case("compare", "compare grid --heads 3", cli("compare", "grid", "--heads", "3", "--out", "{tmp}/c"),
         "not divisible by 3 heads"),
    Case("compare", "compare grid --heads 0", cli("compare", "grid", "--heads", "0", "--out", "{tmp}/c"),
         "--heads and --layers must be at least 1, got 0 heads"),
    Case("compare", "compare grid --layers 0", cli("compare", "grid", "--layers", "0", "--out", "{tmp}/c"),
         "--heads and --layers must be at least 1, got .* and 0 layers"),
    Case("compare", "compare grid --out afile (a file)",
         _with_files(_write("afile", "x"), then=cli("compare", "grid", "--out", "afile")),
         "--out 'afile' is a file; give a folder"),
    Case("compare", "compare speedrun --per-model gpt2:lr", cli("compare", "speedrun", "--per-model", "gpt2:lr",
                                                                "--data", "synthetic", "--out", "{tmp}/c"),
         r"expects MODEL:OPTION=VALUE .* e\.g\. gpt2:lr=0\.002"),
    Case("compare", "compare speedrun --per-model gpt2:seed=3",
         cli("compare", "speedrun", "--per-model", "gpt2:seed=3", "--data", "synthetic", "--out", "{tmp}/c"),
         "'seed' cannot differ between the models; for gpt2 choose one of"),
    Case("compare", "compare speedrun --per-model gpt2:sliding_window=64",
         cli("compare", "speedrun", "--per-model", "gpt2:sliding_window=64", "--data", "synthetic",
             "--out", "{tmp}/c"),
         "gpt2 has no sliding_window; for gpt2 choose one of"),
    Case("compare", "compare speedrun --per-model gptoss:sliding_window=0",
         cli("compare", "speedrun", "--per-model", "gptoss:sliding_window=0", "--data", "synthetic",
             "--out", "{tmp}/c"),
         "sliding_window must be a positive integer"),
    Case("compare", "compare speedrun --per-model gpt2:batch_size=0",
         cli("compare", "speedrun", "--per-model", "gpt2:batch_size=0", "--data", "synthetic", "--out", "{tmp}/c"),
         "--batch-size must be a whole number of at least 1"),
    Case("compare", "compare speedrun --layers 2 4",
         cli("compare", "speedrun", "--layers", "2", "4", "--data", "synthetic", "--out", "{tmp}/c"),
         "the speedrun trains one shape: give --heads and --layers one value each"),
    Case("compare", "compare grid --per-model gpt2:lr=0.001",
         cli("compare", "grid", "--per-model", "gpt2:lr=0.001", "--data", "synthetic", "--out", "{tmp}/c"),
         "--per-model is for the speedrun"),
    Case("compare", "compare grid --seeds 0 0", cli("compare", "grid", "--seeds", "0", "0", "--data", "synthetic",
                                                     "--out", "{tmp}/c"),
         "--seeds 0 0 repeats seed 0; give each seed once"),
    Case("compare", "compare grid --out c while another comparison trains into c", _compare_into_busy_folder,
         r"<tmp>/c is in use by a run that is still going \(pid <pid>\); wait for it to finish, or choose another --out"),
    # python -m nanogptoss exercises grade
    Case("exercises", "exercises grade . --total-timeout 0",
         _with_files(NOTEBOOK, then=exercises("grade", ".", "--total-timeout", "0")),
         "--total-timeout, --max-output, --jobs and --threads must be at least 1"),
    Case("exercises", "exercises grade . --max-output 0",
         _with_files(NOTEBOOK, then=exercises("grade", ".", "--max-output", "0")),
         "--total-timeout, --max-output, --jobs and --threads must be at least 1"),
    # python -m nanogptoss exercises
    Case("exercises", "exercises strip notebooks/02_rmsnorm.ipynb --out afile (a file)",
         _with_files(_write("afile", "x"), then=cli("exercises", "strip", str(ROOT / "notebooks" / "02_rmsnorm.ipynb"),
                                                     "--out", "afile")),
         "afile: File exists; a file stands where a folder is needed"),
    # harmony, the chat format (nanogptoss.data.harmony), read as openai-harmony reads it
    Case("harmony", "parse_messages(tokens of '<|start|>assistant<|channel|><|message|>hi<|end|>')",
         _parse_harmony("<|start|>assistant<|channel|><|message|>hi<|end|>"),
         r"has <\|channel\|> but no channel name after it"),
    Case("harmony", "parse_messages(tokens of '<|start|>bob<|message|>hi<|end|>')",
         _parse_harmony("<|start|>bob<|message|>hi<|end|>"), "'bob' is not one of"),
    Case("harmony", "parse_messages(tokens of '<|start|>assistant a b c<|message|>hi<|end|>')",
         _parse_harmony("<|start|>assistant a b c<|message|>hi<|end|>"), r"unexpected words \['a'\]"),
    Case("harmony", "render_message(Message('assistant', 'hi', channel=''))",
         _render_harmony(role="assistant", content="hi", channel=""), "a channel is one word"),
]


def answer(case: Case) -> str:
    """What the user is told: the error's one line. Raises AssertionError if the input is accepted
    or answered with anything but a clear error."""
    from nanogptoss.data.stories import DataUnavailable
    from nanogptoss.data.tokenizer import TokenizerUnavailable
    from nanogptoss.weights.checkpoint import CheckpointError

    clear = (ValueError, CheckpointError, DataUnavailable, TokenizerUnavailable)
    with tempfile.TemporaryDirectory() as tmp:
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                case.run(Path(tmp))
        except SystemExit as exit_:
            if exit_.code in (0, None):
                raise AssertionError(f"{case.what}: accepted (exit 0)") from None
            message = exit_.code if isinstance(exit_.code, str) else err.getvalue().strip().splitlines()[-1]
        except clear as exc:
            message = str(exc)
        else:
            raise AssertionError(f"{case.what}: accepted without an error")
        # the same table on every machine and clone
        message = message.replace(tmp, "<tmp>").replace(str(PACKAGE), "<package>")
        return re.sub(r"\bpid \d+", "pid <pid>", message)


def table(answers: dict[str, str]) -> str:
    areas = list(dict.fromkeys(case.area for case in CASES))
    counts = ", ".join(f"{sum(case.area == area for case in CASES)} {area}" for area in areas)
    rows = [f"{len(CASES)} bad inputs in {len(areas)} areas ({counts}), each answered in one line:", "",
            "| where | bad input | what the library says |", "|---|---|---|"]
    for case in CASES:
        text = answers[case.what].replace("|", "\\|").replace("\n", " ")
        rows.append(f"| {case.area} | `{case.what.replace('|', chr(92) + '|')}` | {text} |")
    return "\n".join(rows)


def write_page(answers: dict[str, str]) -> None:
    page = PAGE.read_text()
    start, end = page.index(TABLE_START) + len(TABLE_START), page.index(TABLE_END)
    PAGE.write_text(page[:start] + "\n" + table(answers) + "\n" + page[end:])


def committed_table() -> str:
    page = PAGE.read_text()
    return page[page.index(TABLE_START) + len(TABLE_START):page.index(TABLE_END)].strip()


if __name__ == "__main__":
    if "--write" not in sys.argv:
        raise SystemExit("usage: python tests/bad_inputs.py --write   (regenerates the table in book/reliability.md)")
    sys.path.insert(0, str(ROOT))
    write_page({case.what: answer(case) for case in CASES})
    print(f"wrote {len(CASES)} cases to {PAGE}")
