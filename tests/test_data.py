import importlib.util
import os
import json
import math
import time

import numpy as np
import pytest
import torch

from nanogptoss.data.stories import (DataUnavailable, TokenBatches, bits_per_byte, load_texts, prepare_tokens, read_header,
                             token_shards)
from nanogptoss.data.tokenizer import get_tokenizer

STORIES = [f"Once upon a time, a cat named Tom number {i} found a ball. He was happy. The end." for i in range(200)]


@pytest.fixture
def enc():
    return get_tokenizer("gpt2-4k")


def test_local_formats_and_both_field_names(tmp_path):
    (tmp_path / "a.txt").write_text("<|endoftext|>".join(STORIES[:3]) + "<|endoftext|>\n")
    assert load_texts(str(tmp_path / "a.txt"), limit=None, split="train") == STORIES[:2]  # last 5% (>=1) is validation
    assert load_texts(str(tmp_path / "a.txt"), split="validation") == STORIES[2:3]
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps({"story": s}) for s in STORIES[:4]))
    assert load_texts(str(tmp_path / "b.jsonl"), split="train") == STORIES[:3]
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "folder"
    folder.mkdir()
    pq.write_table(pa.table({"text": STORIES[:5]}), folder / "train-0.parquet")
    pq.write_table(pa.table({"text": STORIES[5:7]}), folder / "validation-0.parquet")
    assert load_texts(str(folder), split="train") == STORIES[:5]
    assert load_texts(str(folder), split="validation") == STORIES[5:7]


def test_records_without_a_text_field_are_refused(tmp_path):
    (tmp_path / "x.jsonl").write_text(json.dumps({"body": "hi"}))
    with pytest.raises(DataUnavailable, match="'text' or 'story'"):
        load_texts(str(tmp_path / "x.jsonl"))
    with pytest.raises(DataUnavailable, match="does not exist"):
        load_texts(str(tmp_path / "missing.txt"))


@pytest.mark.parametrize("offline", [True, False])
def test_hub_unreachable_fails_fast_with_advice(monkeypatch, offline):
    if importlib.util.find_spec("datasets") is None:
        pytest.fail("the hub path is part of the product: install `datasets` (requirements.txt)")
    monkeypatch.delenv("NANOGPTOSS_DATA", raising=False)
    if offline:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:  # no network: a hub address where nothing listens
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    start = time.perf_counter()
    with pytest.raises(DataUnavailable, match="local copy"):
        load_texts("tinystories")
    assert time.perf_counter() - start < 10


class FakeHub:
    """datasets.load_dataset for TinyStories, recording how it was called and how much was read."""

    def __init__(self, n=1000):
        self.calls, self.read, self.n = [], 0, n

    def load_dataset(self, name, split, streaming=False):
        self.calls.append((name, split, streaming))
        hub = self

        class Stream:
            column_names = ["text"]

            def __iter__(self):
                for i in range(hub.n):
                    hub.read += 1
                    yield {"text": "" if i == 2 else f" story {i} "}  # an empty record is skipped
        return Stream()


@pytest.mark.parametrize("offline", [False, True])
def test_the_hub_reads_only_the_stories_asked_for(monkeypatch, offline):
    """Colab: chapter 0's 2,000 validation stories must not download and prepare all of TinyStories."""
    import datasets

    from nanogptoss.data import stories

    hub = FakeHub()
    monkeypatch.delenv("NANOGPTOSS_DATA", raising=False)
    monkeypatch.setattr(datasets, "load_dataset", hub.load_dataset)
    monkeypatch.setattr(stories, "_check_hub_reachable", lambda: None)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1" if offline else "0")
    got = load_texts("tinystories", split="validation", limit=5)
    assert got == ["story 0", "story 1", "story 3", "story 4", "story 5"]
    # online: streamed, and only as far as needed; offline: sliced out of the cache at load time
    assert hub.calls == [("roneneldan/TinyStories", "validation[:5]", False) if offline
                         else ("roneneldan/TinyStories", "validation", True)]
    assert hub.read == 6
    hub.calls.clear()
    assert len(load_texts("tinystories", split="train")) == 999  # no limit: everything, not streamed
    assert hub.calls == [("roneneldan/TinyStories", "train", False)]


def test_nanogptoss_data_points_tinystories_at_a_local_copy(tmp_path, monkeypatch):
    (tmp_path / "TinyStories-train.txt").write_text("<|endoftext|>".join(STORIES[:10]))
    (tmp_path / "TinyStories-valid.txt").write_text("<|endoftext|>".join(STORIES[10:12]))
    monkeypatch.setenv("NANOGPTOSS_DATA", str(tmp_path))
    assert load_texts("tinystories", split="validation") == STORIES[10:12]
    assert load_texts("tinystories", limit=4) == STORIES[:4]


def test_shard_is_built_reused_and_rebuilt_when_stale_or_truncated(tmp_path, enc):
    path = tmp_path / "s.bin"
    tokens = prepare_tokens(STORIES, enc, path, "src", progress=False)
    expected = [t for s in STORIES for t in enc.encode_ordinary(s) + [enc.eot_token]]
    assert tokens.dtype == np.uint16 and tokens.tolist() == expected
    header = read_header(path)
    assert header["count"] == len(expected) and header["bytes"] == sum(len(s) + 1 for s in STORIES)
    # reused: no texts needed
    assert prepare_tokens(None, enc, path, "src").tolist() == expected
    # stale: another source must be rebuilt, and without texts that is an error
    with pytest.raises(DataUnavailable, match="rebuild"):
        prepare_tokens(None, enc, path, "other-source")
    # truncated: detected by size and rebuilt
    with open(path, "r+b") as f:
        f.truncate(10)
    assert read_header(path) is None
    assert prepare_tokens(STORIES, enc, path, "src", progress=False).tolist() == expected


def test_token_shards_cache_both_splits(tmp_path, enc):
    (tmp_path / "s.txt").write_text("<|endoftext|>".join(STORIES))
    shards = token_shards(str(tmp_path / "s.txt"), enc, tmp_path / "cache", progress=False)
    assert shards["train"][1]["stories"] == 190 and shards["validation"][1]["stories"] == 10
    assert len(list((tmp_path / "cache").glob("*.bin"))) == 2


def test_batches_are_a_function_of_seed_and_step_and_split_across_ranks_and_micro_steps():
    tokens = np.arange(1000, dtype=np.uint16)
    one = TokenBatches(tokens, seq_len=16, batch_size=4, seed=3)
    x, y = one.get(7)
    assert x.shape == (4, 16) and torch.equal(y[:, :-1], x[:, 1:])  # y is x shifted by one
    assert torch.equal(one.get(7)[0], x) and not torch.equal(one.get(8)[0], x)
    halves = [TokenBatches(tokens, 16, 4, seed=3, rank=r, world=2).get(7)[0] for r in range(2)]
    assert torch.equal(torch.stack([halves[0], halves[1]], 1).reshape(4, 16), x)
    micro = TokenBatches(tokens, 16, 4, seed=3, n_micro=2)
    assert torch.equal(torch.cat([micro.get(7, 0)[0], micro.get(7, 1)[0]]), x)
    with pytest.raises(ValueError, match="divisible"):
        TokenBatches(tokens, 16, 3, world=2)
    with pytest.raises(DataUnavailable, match="max_position_embeddings"):
        TokenBatches(tokens[:10], 16, 4)


def test_batches_reach_the_last_window_and_accept_a_stream_of_exactly_one_window():
    tokens = np.arange(40, dtype=np.uint16)
    batches = TokenBatches(tokens, seq_len=8, batch_size=64, seed=0)
    last_targets = {int(y[-1]) for step in range(20) for y in batches.get(step)[1]}
    assert 39 in last_targets  # the final token is a target: the window starting at 40 - 8 - 1 is drawn
    one = TokenBatches(tokens[:9], seq_len=8, batch_size=2)  # exactly seq_len + 1 tokens: one window
    x, y = one.get(0)
    assert x.tolist() == [list(range(8))] * 2 and y.tolist() == [list(range(1, 9))] * 2
    with pytest.raises(DataUnavailable, match="at least seq_len \\+ 1 = 9"):
        TokenBatches(tokens[:8], seq_len=8, batch_size=2)


def test_bits_per_byte():
    header = {"count": 250, "bytes": 1000}
    assert bits_per_byte(math.log(2) * 4, header) == pytest.approx(1.0)  # 4 bits/token, 4 bytes/token


def test_auto_source_uses_tinystories_when_it_can_be_had_else_says_it_falls_back(tmp_path, monkeypatch, capsys):
    from nanogptoss.data.stories import pick_source

    assert pick_source("synthetic") == "synthetic" and pick_source("stories.txt") == "stories.txt"
    monkeypatch.delenv("NANOGPTOSS_DATA", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-home"))
    assert pick_source("auto") == "synthetic"
    assert "TinyStories is not available" in capsys.readouterr().out
    local = tmp_path / "tiny"
    local.mkdir()
    (local / "train.txt").write_text("Once there was a cat.<|endoftext|>The end came.")
    (local / "valid.txt").write_text("A dog ran.<|endoftext|>It was happy.")
    monkeypatch.setenv("NANOGPTOSS_DATA", str(local))
    assert pick_source("auto") == "tinystories"


def genuine_or_synthetic():
    """The genuine TinyStories sample where NANOGPTOSS_DATA names it (CI), else the synthetic stories."""
    return ("tinystories", os.environ["NANOGPTOSS_DATA"]) if os.environ.get("NANOGPTOSS_DATA") else ("synthetic", None)


def test_the_validation_split_is_the_valid_file_never_a_slice_of_train():
    source, folder = genuine_or_synthetic()
    train, valid = load_texts(source, "train"), load_texts(source, "validation")
    assert train and valid and not set(train) & set(valid)
    if folder:  # the folder's own files, story for story
        from pathlib import Path

        files = {p.name: p for p in Path(folder).iterdir()}
        valid_file = next(p for name, p in files.items() if "valid" in name)
        train_file = next(p for name, p in files.items() if "train" in name)
        assert valid == [s.strip() for s in valid_file.read_text().split("<|endoftext|>") if s.strip()]
        assert train == [s.strip() for s in train_file.read_text().split("<|endoftext|>") if s.strip()]


def test_limits_take_the_first_stories_and_refuse_nonsense():
    source, _ = genuine_or_synthetic()
    assert load_texts(source, "validation", limit=7) == load_texts(source, "validation")[:7]
    for bad in (0, -5, 2.5):
        with pytest.raises(ValueError, match="positive integer"):
            load_texts(source, "validation", limit=bad)
