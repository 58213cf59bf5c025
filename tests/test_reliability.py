"""Nothing lost, nothing stale: runs, caches, logs and summaries under repetition, concurrency and kills."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nanogptoss.data.stories import token_shards
from nanogptoss.data.tokenizer import get_tokenizer
from nanogptoss.files import FolderInUse, FolderLock, remove_stale_temps, write_text
from nanogptoss.training import judge
from nanogptoss.training import train as trainer
from nanogptoss.training.train import MetricsLog, TrainingDiverged, read_metrics, train
from nanogptoss.weights.checkpoint import Checkpoint, CheckpointError

from conftest import config

STORIES = [f"Once upon a time, a dog named Rex number {i} dug a hole. He was proud. The end." for i in range(120)]


def write_stories(path: Path, stories=STORIES) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("<|endoftext|>".join(stories))
    return path


def expected_tokens(enc, stories):
    return [t for s in stories for t in enc.encode_ordinary(s) + [enc.eot_token]]


# -- token caches ------------------------------------------------------------------------

def test_an_edited_source_is_tokenized_again(tmp_path):
    enc = get_tokenizer("gpt2-4k")
    src = write_stories(tmp_path / "stories.txt")
    first = token_shards(str(src), enc, tmp_path / "cache", progress=False)["train"][0].tolist()
    changed = [s.replace("dog", "cat") for s in STORIES]
    write_stories(src, changed)
    os.utime(src, ns=(src.stat().st_atime_ns, src.stat().st_mtime_ns))  # same size is no excuse either
    again = token_shards(str(src), enc, tmp_path / "cache", progress=False)["train"][0].tolist()
    assert again != first and again == expected_tokens(enc, changed[:-6])  # the last 5% are validation


def test_a_touched_but_unchanged_source_is_reused(tmp_path):
    enc = get_tokenizer("gpt2-4k")
    src = write_stories(tmp_path / "stories.txt")
    token_shards(str(src), enc, tmp_path / "cache", progress=False)
    shard = next((tmp_path / "cache").glob("*train.bin"))
    built = shard.stat().st_mtime_ns
    os.utime(src)  # a new mtime, the same bytes: the content hash says nothing changed
    token_shards(str(src), enc, tmp_path / "cache", progress=False)
    assert shard.stat().st_mtime_ns == built


def test_another_tokenizer_of_the_same_name_is_not_reused(tmp_path):
    from nanogptoss.data.tokenizer import encoding_from_ranks, train_bpe

    src = write_stories(tmp_path / "stories.txt")
    small = encoding_from_ranks(train_bpe(STORIES, 300, progress=False), "mine")
    larger = encoding_from_ranks(train_bpe(STORIES, 400, progress=False), "mine")
    a = token_shards(str(src), small, tmp_path / "cache", progress=False)["train"][0].tolist()
    b = token_shards(str(src), larger, tmp_path / "cache", progress=False)["train"][0].tolist()
    assert a == expected_tokens(small, STORIES[:-6]) and b == expected_tokens(larger, STORIES[:-6])


def test_two_files_of_one_name_in_two_folders_never_share_a_shard(tmp_path):
    enc = get_tokenizer("gpt2-4k")
    a = write_stories(tmp_path / "a" / "stories.txt", STORIES)
    b = write_stories(tmp_path / "b" / "stories.txt", [s.upper() for s in STORIES])
    ta = token_shards(str(a), enc, tmp_path / "cache", progress=False)["train"][0].tolist()
    tb = token_shards(str(b), enc, tmp_path / "cache", progress=False)["train"][0].tolist()
    assert ta == expected_tokens(enc, STORIES[:-6])
    assert tb == expected_tokens(enc, [s.upper() for s in STORIES[:-6]])
    assert len(list((tmp_path / "cache").glob("*.bin"))) == 4


def test_concurrent_first_builds_of_two_sources_each_get_their_own_tokens(tmp_path):
    enc = get_tokenizer("gpt2-4k")
    many = [f"{s} Story {i} of a long list." for i, s in enumerate(STORIES * 20)]
    sources = {"a": write_stories(tmp_path / "a" / "stories.txt", many),
               "b": write_stories(tmp_path / "b" / "stories.txt", [s.upper() for s in many])}
    code = ("import sys, numpy as np; from nanogptoss.data.stories import token_shards; "
            "from nanogptoss.data.tokenizer import get_tokenizer; "
            "t = token_shards(sys.argv[1], get_tokenizer('gpt2-4k'), sys.argv[2], progress=False); "
            "np.save(sys.argv[3], np.asarray(t['train'][0]))")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(src), str(tmp_path / "cache"),
                               str(tmp_path / f"{name}{i}.npy")], stderr=subprocess.PIPE)
             for i in range(3) for name, src in sources.items()]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read().decode()[-2000:]
    for name, src in sources.items():
        expected = expected_tokens(enc, src.read_text().split("<|endoftext|>")[:-len(many) // 20])
        for i in range(3):
            assert np.load(tmp_path / f"{name}{i}.npy").tolist() == expected, (name, i)
    assert not [p for p in (tmp_path / "cache").iterdir() if ".tmp-" in p.name]


# -- run folders: logs, locks, resumes ----------------------------------------------------------

def test_the_metrics_log_lives_in_its_run_folder(tmp_path, stories):
    a = config(tmp_path, stories, "x", max_steps=3, out_dir=str(tmp_path / "a" / "exp1"))
    b = config(tmp_path, stories, "x", max_steps=5, out_dir=str(tmp_path / "b" / "exp1"))
    train(a), train(b)
    assert [r["step"] for r in read_metrics(a.out_dir)] == [1, 2, 3]
    assert [r["step"] for r in read_metrics(b.out_dir)] == [1, 2, 3, 4, 5]


def test_a_torn_last_line_is_dropped_and_resume_goes_on(tmp_path, stories):
    cfg = config(tmp_path, stories, "torn", max_steps=4, ckpt_interval=4)
    train(cfg)
    log = Path(cfg.out_dir) / "metrics.jsonl"
    with log.open("a") as f:
        f.write('{"step": 5, "loss": 2.3')  # a kill in the middle of writing a row
    assert [r["step"] for r in read_metrics(cfg.out_dir)] == [1, 2, 3, 4]
    Path(cfg.out_dir, "summary.json").unlink()
    train(config(tmp_path, stories, "torn", max_steps=8, ckpt_interval=4, resume=True))
    assert [r["step"] for r in read_metrics(cfg.out_dir)] == list(range(1, 9))


def test_the_log_rewrite_on_resume_is_atomic(tmp_path, monkeypatch):
    log = tmp_path / "metrics.jsonl"
    rows = [{"step": i, "loss": 1.0} for i in range(1, 1001)]
    write_text(log, "".join(json.dumps(r) + "\n" for r in rows))
    before = log.read_bytes()

    def killed(*args):
        raise KeyboardInterrupt  # the process dies before the rename
    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        MetricsLog(log, resume_step=500)
    assert log.read_bytes() == before  # the old log, whole
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]  # and no temporary file left


def test_a_second_run_on_the_same_folder_refuses(tmp_path, stories):
    cfg = config(tmp_path, stories, "busy", max_steps=2)
    with FolderLock(cfg.out_dir):
        with pytest.raises(FolderInUse, match="in use by a run that is still going"):
            train(cfg)
    train(cfg)  # free again once the other run is gone


def test_resuming_a_finished_run_leaves_it_as_it_was(tmp_path, stories, capsys):
    cfg = config(tmp_path, stories, "done", max_steps=5)
    train(cfg)
    summary = Path(cfg.out_dir, "summary.json").read_bytes()
    log = Path(cfg.out_dir, "metrics.jsonl").read_bytes()
    again = train(config(tmp_path, stories, "done", max_steps=5, resume=True))
    assert "finished at step 5 already" in capsys.readouterr().out
    assert Path(cfg.out_dir, "summary.json").read_bytes() == summary and again["steps"] == 5
    assert Path(cfg.out_dir, "metrics.jsonl").read_bytes() == log
    with pytest.raises(CheckpointError, match="at step 5, beyond --max-steps 3"):
        train(config(tmp_path, stories, "done", max_steps=3, resume=True))


def test_temporary_files_of_dead_writers_are_removed_at_the_next_start(tmp_path, stories):
    cfg = config(tmp_path, stories, "tmp", max_steps=2)
    folder = Path(cfg.out_dir)
    folder.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale = folder / f".checkpoint.safetensors.tmp-{dead}-deadbeef"
    stale.write_bytes(b"x" * 1000)
    alive = folder / f".checkpoint.safetensors.tmp-{os.getppid()}-cafecafe"  # a live process's: kept
    alive.write_bytes(b"y")
    train(cfg)
    assert not stale.exists() and alive.exists()
    assert remove_stale_temps(folder) == []


def test_resume_takes_the_folder_by_any_path_and_after_a_move(tmp_path, stories, monkeypatch):
    monkeypatch.chdir(tmp_path)
    train(config(tmp_path, stories, "ref", max_steps=4, ckpt_interval=2, out_dir="runs/ref"))
    Path("runs/ref/summary.json").unlink()  # as if stopped at step 4 of 6
    train(config(tmp_path, stories, "ref", max_steps=6, ckpt_interval=2, out_dir="./runs/ref", resume=True))
    Path("runs/ref").rename("moved")
    train(config(tmp_path, stories, "ref", max_steps=8, ckpt_interval=2, out_dir="moved", resume=True))
    assert Checkpoint("moved/checkpoint.safetensors").step == 8
    assert [r["step"] for r in read_metrics("moved")] == list(range(1, 9))


def test_the_settings_are_checked_before_any_tokenizing(tmp_path, stories, monkeypatch):
    train(config(tmp_path, stories, "early", max_steps=2))

    def never(*args, **kwargs):
        raise AssertionError("tokenized before the settings check")
    monkeypatch.setattr(trainer, "token_shards", never)
    with pytest.raises(CheckpointError, match="other settings"):
        train(config(tmp_path, stories, "early", max_steps=4, lr=0.5, resume=True))


def test_a_diverged_run_stops_keeps_its_last_good_checkpoint_and_says_so(tmp_path, stories):
    cfg = config(tmp_path, stories, "boom", max_steps=12, lr=50.0, min_lr=0.0, warmup_steps=1, ckpt_interval=1,
                 grad_clip=0.0)
    with pytest.raises(TrainingDiverged, match=r"loss is \S+ at step \d+ .*last good checkpoint \(step \d+\)"):
        train(cfg)
    summary = json.loads(Path(cfg.out_dir, "summary.json").read_text())
    assert summary["status"] == "diverged" and "diverged" in summary["error"]
    ckpt = Checkpoint(Path(cfg.out_dir) / "checkpoint.safetensors")
    rows = read_metrics(cfg.out_dir)
    assert ckpt.step == len(rows) and all(r["loss"] < 4 * np.log(4096) for r in rows)
    with pytest.raises(ValueError, match="--lr must be a finite number"):
        train(config(tmp_path, stories, "inf", lr=float("inf")))


# -- the judge ----------------------------------------------------------------------------------

def test_two_completions_of_one_prompt_are_graded_each(tmp_path, monkeypatch):
    seen = []

    class Client:
        def __init__(self, *args, **kwargs):
            pass

        def grade(self, prompt, completion):
            seen.append(completion)
            return judge.Grades(5.0, 5.0, 5.0, "A", "")

    monkeypatch.setattr(judge, "JudgeClient", Client)
    rows = tmp_path / "c.jsonl"
    rows.write_text("".join(json.dumps({"prompt": "Tim had a kite.", "completion": c}) + "\n"
                            for c in (" It flew.", " It fell.")))
    summary = judge.main(["--completions", str(rows)])
    assert seen == [" It flew.", " It fell."] and summary["n"] == 2
