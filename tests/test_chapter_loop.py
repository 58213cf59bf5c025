"""Chapter 11 writes the training loop from scratch; run that very code against the library's
`train()` and require the same numbers to the last bit.

Why exact equality, not a tolerance: on the CPU in float32 both do the same operations in the
same order (the same seed right before the model is built, batches that are a function of
(seed, step), the same AdamW update per parameter, the clipping norm over model.parameters(),
the validation loss summed in float64 over the same batches). Any difference is a difference
of the loop, not of rounding; what does change the rounding (bf16/fp16, the fused AdamW,
gradient accumulation) is outside what the chapter's loop does.
"""

import ast
import json
from pathlib import Path

import pytest

from nanogptoss.data.stories import pick_source, token_shards
from nanogptoss.data.tokenizer import get_tokenizer
from nanogptoss.training.train import read_metrics, tokenizer_name, train

from conftest import config

ROOT = Path(__file__).resolve().parents[1]
CHAPTER = ROOT / "notebooks" / "11_training.ipynb"
COMPARED = ("step", "lr", "loss", "grad_norm", "val_loss", "val_bpb")
LIBRARY_MODULES = {"math", "numpy", "torch", "nanogptoss"}  # what `make test` installs


def chapter_loop() -> dict:
    """The namespace of the chapter's loop cell, run with the chapter's imports of the library's
    requirements (plotting and IPython imports are left out)."""
    cells = ["".join(c["source"]) for c in json.loads(CHAPTER.read_text())["cells"] if c["cell_type"] == "code"]
    imports = [ast.get_source_segment(src, node) for src in cells for node in ast.parse(src).body
               if isinstance(node, (ast.Import, ast.ImportFrom))
               and ((node.module or "") if isinstance(node, ast.ImportFrom) else node.names[0].name)
               .split(".")[0] in LIBRARY_MODULES]
    loop = [src for src in cells if "\ndef train_loop(" in "\n" + src]
    assert len(loop) == 1, f"{CHAPTER.name}: expected one cell defining train_loop, found {len(loop)}"
    namespace: dict = {}
    exec("\n".join(imports), namespace)
    exec(compile(loop[0], f"{CHAPTER.name}[train_loop]", "exec"), namespace)
    return namespace


def data(cfg):
    tokenizer = get_tokenizer(tokenizer_name(cfg))
    shards = token_shards(pick_source(cfg.data), tokenizer, cfg.data_dir, limit=cfg.max_stories, progress=False)
    return shards["train"][0], shards["validation"][0], tokenizer


def table(rows) -> dict:
    return {name: [r.get(name) for r in rows] for name in COMPARED}


@pytest.fixture(scope="module")
def library_run(tmp_path_factory, stories):
    """train() for 12 steps of a tiny model, evaluating at steps 6 and 12: its config and rows
    (one run per model, shared by the tests)."""
    runs = {}

    def run(model):
        if model not in runs:
            cfg = config(tmp_path_factory.mktemp(f"loop-{model}"), stories, model, model=model, max_steps=12,
                         eval_interval=6)
            train(cfg)
            runs[model] = cfg, read_metrics(cfg.out_dir)
        return runs[model]
    return run


@pytest.mark.parametrize("model", ["gptoss", "gpt2"])  # GPT-2: a tied unembedding, decayed once
def test_the_chapters_loop_gives_the_library_trainers_numbers_to_the_bit(library_run, model):
    cfg, library = library_run(model)
    loop = chapter_loop()
    model, ours = loop["train_loop"](cfg, *data(cfg))
    assert [r["step"] for r in library] == list(range(1, 13))
    assert sum("val_loss" in r for r in ours) == 2  # evaluated at 6 and 12, as train() did
    assert table(ours) == table(library)
    assert library[-1]["loss"] < library[0]["loss"]  # it did train: the comparison is not of two idle runs


def wrong_groups(loop):
    right = loop["decay_groups"]

    def groups(model, weight_decay):  # the router's matrices left undecayed
        decayed, others = right(model, weight_decay)
        routers = [m.weight for m in model.modules() if isinstance(m, loop["Router"])]
        return [{**decayed, "params": [p for p in decayed["params"] if all(p is not r for r in routers)]},
                {**others, "params": others["params"] + routers}]
    return "decay_groups", groups


def wrong_batches(loop):
    right = loop["get_batch"]

    def batches(tokens, step, cfg, seq_len):  # the windows of another seed
        return right(tokens, step, cfg.replace(seed=cfg.seed + 1), seq_len)
    return "get_batch", batches


@pytest.mark.parametrize("mistake", [wrong_groups, wrong_batches])
def test_a_mistake_in_the_loop_breaks_the_equality(library_run, mistake):
    cfg, library = library_run("gptoss")
    loop = chapter_loop()
    name, wrong = mistake(loop)
    loop[name] = wrong  # train_loop looks its helpers up in this namespace
    _, ours = loop["train_loop"](cfg, *data(cfg))
    assert table(ours)["loss"] != table(library)["loss"]


def test_the_chapters_loop_is_its_own_code():
    """No call of the library's trainer, its step or its optimizer groups inside the loop."""
    cells = [c for c in json.loads(CHAPTER.read_text())["cells"] if "def train_loop(" in "".join(c["source"])]
    tree = ast.parse("".join(cells[0]["source"]))
    called = {node.func.id for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}
    assert {"decay_groups", "get_batch", "evaluate", "lr_at"} <= called
    assert not called & {"train", "train_step", "param_groups", "build", "TokenBatches"}, called
