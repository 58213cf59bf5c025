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
TABLE_START, TABLE_END = "<!-- bad-inputs:start -->", "<!-- bad-inputs:end -->"


@dataclass
class Case:
    area: str
    what: str  # the input, as a user would type or call it
    run: Callable[[Path], None]  # does the bad thing inside a scratch folder
    expect: str  # a regular expression the answer must contain


def cli(module: str, *argv: str) -> Callable[[Path], None]:
    """A command called in-process as `python -m nanogptoss ...` would call it."""
    def run(tmp: Path) -> None:
        import importlib

        from nanogptoss.__main__ import COMMANDS

        main = importlib.import_module(COMMANDS[module][0]).main
        with _chdir(tmp):
            main([a.replace("{tmp}", str(tmp)) for a in argv])
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
        from nanogptoss.book.exercises import main

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
    # from_pretrained: Hugging Face-format and MXFP4 checkpoints
    Case("pretrained", "from_pretrained(dir) whose config.json is not JSON",
         _pretrained(lambda d: (d / "config.json").write_text("{not json")), "config.json is not valid JSON"),
    Case("pretrained", "from_pretrained(dir) whose config.json has no hidden_size",
         _pretrained(_edit_config(lambda c: c.pop("hidden_size"))), "config.json has no 'hidden_size'"),
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
    # python -m nanogptoss sample
    Case("sample", "sample --ckpt missing.safetensors", cli("sample", "--ckpt", "missing.safetensors"),
         "no checkpoint at missing.safetensors"),
    Case("sample", "sample --num-samples 0", cli("sample", "--ckpt", "x", "--num-samples", "0"),
         "--num-samples must be at least 1"),
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
        return re.sub(r"\bpid \d+", "pid <pid>", message.replace(tmp, "<tmp>"))  # the same table every time


def table(answers: dict[str, str]) -> str:
    rows = ["| where | bad input | what the library says |", "|---|---|---|"]
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
