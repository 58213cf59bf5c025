"""Resuming a run: the last evaluation survives it, and it refuses other stories or another vocabulary."""
import json
import math
from pathlib import Path

import pytest
from safetensors import safe_open
from safetensors.torch import save_file

from nanogptoss.training.train import read_metrics, train
from nanogptoss.weights.checkpoint import Checkpoint, CheckpointError

from conftest import config

# what a summary measures of the machine, not of the run: these differ between any two runs
TIMINGS = {"train_s", "wall_s", "train_tokens_per_s", "peak_memory_mb", "checkpoint_mb", "run"}


class Stop(Exception):
    """Stands for a kill: raised from the metrics callback, after a step's row is logged."""


def stop_at(step: int):
    def callback(row):
        if row["step"] == step:
            raise Stop
    return callback


def test_a_run_killed_before_its_summary_resumes_to_the_uninterrupted_summary(tmp_path, stories):
    full = train(config(tmp_path, stories, "full"))
    cut = config(tmp_path, stories, "cut")
    train(cut)
    # a kill between the last checkpoint and summary.json leaves exactly this: the checkpoint at the
    # last step, the whole metrics log, no summary
    (Path(cut.out_dir) / "summary.json").unlink()
    resumed = train(cut.replace(resume=True))
    assert math.isfinite(resumed["val_loss"]) and math.isfinite(resumed["val_bpb"])
    mine = {k: v for k, v in resumed.items() if k not in TIMINGS}
    assert mine == {k: v for k, v in full.items() if k not in TIMINGS}
    assert json.loads((Path(cut.out_dir) / "summary.json").read_text())["val_ppl"] == full["val_ppl"]


def test_a_checkpoint_after_a_resume_keeps_the_last_evaluation_and_the_training_time(tmp_path, stories):
    settings = dict(max_steps=12, eval_interval=6, ckpt_interval=2)
    train(config(tmp_path, stories, "full", **settings))
    full = read_metrics(tmp_path / "runs" / "full")
    cut = config(tmp_path, stories, "cut", **settings)
    with pytest.raises(Stop):
        train(cut, callback=stop_at(7))  # the checkpoint at step 6 holds the evaluation at step 6
    with pytest.raises(Stop):
        train(cut.replace(resume=True), callback=stop_at(9))  # the checkpoint at step 8 is written before the next
    ckpt = Checkpoint(Path(cut.out_dir) / "checkpoint.safetensors")
    assert ckpt.step == 8 and ckpt.extra["val_loss"] == full[5]["val_loss"]
    train(cut.replace(resume=True))
    rows = read_metrics(cut.out_dir)
    assert [(r["step"], r["loss"], r.get("val_loss")) for r in rows] == \
        [(r["step"], r["loss"], r.get("val_loss")) for r in full]  # still bit for bit
    times = [r["train_s"] for r in rows]
    assert times == sorted(times)  # the training time goes on from the checkpoint's, not from zero


def _rewrite_extra(path: Path, edit) -> None:
    with safe_open(str(path), framework="pt") as f:
        meta, tensors = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}
    extra = json.loads(meta["extra"])
    edit(extra)
    meta["extra"] = json.dumps(extra)
    save_file(tensors, str(path), metadata=meta)


def test_resume_refuses_a_data_file_that_changed(tmp_path, stories):
    data = tmp_path / "mine.txt"
    data.write_text(stories.read_text())
    cfg = config(tmp_path, stories, "r", data=str(data), max_steps=4)
    train(cfg)
    data.write_text(stories.read_text().replace("Lily", "Lola"))  # same path, same size, other stories
    with pytest.raises(CheckpointError, match=rf"^the stories of --data {data} changed since .*checkpoint.safetensors "
                                              r"was written \(content \w+ then, \w+ now\); resume on the stories it "
                                              r"trained on, or start a new --out-dir$"):
        train(cfg.replace(max_steps=8, resume=True))
    data.write_text(stories.read_text())  # the same stories again: it resumes
    assert train(cfg.replace(max_steps=8, resume=True))["steps"] == 8


def test_resume_refuses_a_tokenizer_file_that_changed(tmp_path, stories):
    from nanogptoss.data.tokenizer import TOKENIZER_DIR, load_ranks, save_ranks

    ranks = load_ranks(TOKENIZER_DIR / "tinystories-4k.tiktoken")
    tok = tmp_path / "tok.tiktoken"
    save_ranks(ranks, tok)
    cfg = config(tmp_path, stories, "t", tokenizer=str(tok), max_steps=4)
    train(cfg)
    last = max(ranks, key=ranks.get)  # the same size of vocabulary, so the model still fits: one token swapped
    save_ranks({**{t: r for t, r in ranks.items() if t != last}, b"qzxjv": ranks[last]}, tok)
    with pytest.raises(CheckpointError, match=rf"^the vocabulary of --tokenizer {tok} changed since .* was written "
                                              r"\(content \w+ then, \w+ now\); restore the tokenizer it trained "
                                              r"with, or start a new --out-dir$"):
        train(cfg.replace(max_steps=8, resume=True))


def test_an_older_checkpoint_without_the_content_resumes_with_a_warning(tmp_path, stories, capsys):
    cfg = config(tmp_path, stories, "old", max_steps=4)
    train(cfg)
    path = Path(cfg.out_dir) / "checkpoint.safetensors"
    _rewrite_extra(path, lambda extra: [extra.pop(k, None) for k in ("data_sha256", "tokenizer_sha256")])
    capsys.readouterr()
    assert train(cfg.replace(max_steps=8, resume=True))["steps"] == 8
    warning = [line for line in capsys.readouterr().out.splitlines() if "WARNING" in line]
    assert warning == [f"WARNING: {path} does not record the content of its data and tokenizer (an older "
                       "checkpoint), so resuming cannot check that they are unchanged"]
    assert "data_sha256" in Checkpoint(path).extra  # its next checkpoint records them
