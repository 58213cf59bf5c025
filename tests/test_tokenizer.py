import os
from pathlib import Path

import pytest
import tiktoken

from nanogptoss.data.tokenizer import (EOT, encoding_from_ranks, get_tokenizer, gpt2_prefix, load_ranks, save_ranks,
                                  train_bpe)

TEXTS = ["Once upon a time, there was a little dog named Max. Max liked to run in the park.",
         "One day, Lily found a shiny red ball. She was very happy and played all day.",
         "The cat and the dog were friends. They played together in the sun. The end."] * 20


def test_gpt2_is_tiktokens_gpt2():
    enc = get_tokenizer("gpt2")
    assert enc.n_vocab == 50257 and enc.eot_token == 50256
    assert enc.encode_ordinary("Hello world") == tiktoken.get_encoding("gpt2").encode_ordinary("Hello world")


def test_gpt2_prefix_is_a_valid_smaller_bpe():
    small, full = gpt2_prefix(4096), get_tokenizer("gpt2")
    assert small.n_vocab == 4096 and small.eot_token == 4095
    text = "Once upon a time, Lily saw a big, friendly dragon! 123 ünïcödé"
    ids = small.encode_ordinary(text)
    assert max(ids) < 4095 and small.decode(ids) == text
    # a prefix of the merge list gives the same pieces or finer ones, never different bytes
    assert len(ids) >= len(full.encode_ordinary(text))
    assert get_tokenizer("gpt2-4k").encode_ordinary(text) == ids


def test_train_bpe_round_trips_through_tiktoken_format(tmp_path):
    ranks = train_bpe(TEXTS, vocab_size=300, progress=False)
    assert len(ranks) == 299 and sorted(ranks.values()) == list(range(299))
    assert train_bpe(TEXTS, vocab_size=300, progress=False) == ranks  # deterministic
    path = tmp_path / "tiny.tiktoken"
    save_ranks(ranks, path)
    assert load_ranks(path) == ranks
    enc = get_tokenizer(str(path))
    assert enc.n_vocab == 300 and enc.eot_token == 299
    for text in TEXTS[:3] + ["words never seen: xylophone zebra"]:
        assert enc.decode(enc.encode_ordinary(text)) == text
    # the merges learned the corpus: far fewer tokens than bytes
    assert len(enc.encode_ordinary(TEXTS[0])) < 0.6 * len(TEXTS[0].encode())


def test_train_bpe_merges_the_most_frequent_pair_first():
    ranks = train_bpe(["aaab " * 50, "cd"], vocab_size=258, progress=False)
    assert [t for t, r in ranks.items() if r == 256] == [b"aa"]


def test_eot_is_a_special_token_not_text():
    enc = encoding_from_ranks(train_bpe(TEXTS, 280, progress=False), "t")
    assert enc.encode(EOT, allowed_special="all") == [enc.eot_token]
    assert enc.eot_token not in enc.encode_ordinary(EOT)


def test_bad_names_and_files_say_what_to_do(tmp_path):
    with pytest.raises(ValueError, match="gpt2-4k"):
        get_tokenizer("no-such-tokenizer")
    bad = tmp_path / "bad.tiktoken"
    bad.write_text("not-base64!! x\n")
    with pytest.raises(ValueError, match="bad.tiktoken:1"):
        load_ranks(bad)
    with pytest.raises(ValueError, match="at least 257"):
        train_bpe(TEXTS, vocab_size=100)


def test_bpe_training_is_deterministic_on_a_slice():
    from nanogptoss.data.stories import load_texts

    source = "tinystories" if os.environ.get("NANOGPTOSS_DATA") else "synthetic"
    texts = load_texts(source, "train", limit=300)
    first, again = train_bpe(texts, 600, progress=False), train_bpe(list(texts), 600, progress=False)
    assert first == again and len(first) == 599


def test_the_shipped_bpes_load_say_how_they_were_made_and_compress_tinystories_best():
    import hashlib
    import json

    from nanogptoss.data.stories import load_texts
    from nanogptoss.data.tokenizer import TOKENIZER_DIR, bytes_per_token, default_tokenizer

    for name, vocab in (("tinystories-4k", 4096), ("tinystories-8k", 8192)):
        enc = get_tokenizer(name)
        assert enc.n_vocab == vocab and enc.eot_token == vocab - 1 and default_tokenizer(vocab) == name
        made = json.loads((TOKENIZER_DIR / f"{name}.json").read_text())
        assert made["vocab_size"] == vocab and "tokenizer train" in made["command"]
        if os.environ.get("NANOGPTOSS_DATA"):  # the data it says it was made from is the data here
            train_file = next(p for p in Path(os.environ["NANOGPTOSS_DATA"]).iterdir() if "train" in p.name)
            assert made["files"][0]["sha256"] == hashlib.sha256(train_file.read_bytes()).hexdigest()
    source = "tinystories" if os.environ.get("NANOGPTOSS_DATA") else "synthetic"
    stories = load_texts(source, "validation", limit=500)
    ratio = {n: (lambda b, t: b / t)(*bytes_per_token(get_tokenizer(n), stories))
             for n in ("tinystories-4k", "gpt2-4k", "tinystories-8k", "gpt2-8k")}
    assert ratio["tinystories-4k"] > ratio["gpt2-4k"] and ratio["tinystories-8k"] > ratio["gpt2-8k"], ratio
    assert get_tokenizer(default_tokenizer(50257)).n_vocab == 50257


def test_retraining_the_shipped_4k_bpe_gives_the_same_file(tmp_path):
    """The shipped file is what its command makes (with the genuine sample at hand)."""
    from nanogptoss.data.tokenizer import TOKENIZER_DIR, main

    if not os.environ.get("NANOGPTOSS_DATA"):
        # without the sample the command cannot run; the file still loads (checked above)
        assert (TOKENIZER_DIR / "tinystories-4k.tiktoken").stat().st_size > 0
        return
    main(["train", "--data", "tinystories", "--vocab-size", "4096", "--out", str(tmp_path / "again.tiktoken")])
    assert (tmp_path / "again.tiktoken").read_bytes() == (TOKENIZER_DIR / "tinystories-4k.tiktoken").read_bytes()


def _paragraphs(n: int) -> str:
    words = "the cat sat on a mat and then ran to see the big red dog in the sun".split()
    return "\n\n".join(" ".join(words[(i + j) % len(words)] for j in range(12)) for i in range(n))


def test_tokenizer_train_takes_any_text_file_says_what_it_held_out_and_writes_to_the_working_folder(
        tmp_path, monkeypatch, capsys):
    from nanogptoss.data.tokenizer import TOKENIZER_DIR, main

    shipped = {p.name: p.read_bytes() for p in TOKENIZER_DIR.iterdir()}
    (tmp_path / "notes.md").write_text(_paragraphs(40))  # no <|endoftext|>, not .txt
    monkeypatch.chdir(tmp_path)
    main(["train", "--data", "notes.md", "--vocab-size", "270", "--no-progress"])
    out = capsys.readouterr().out
    assert "training on 38 stories: the first 95% of the stories in notes.md (the last 5% held out" in out
    assert (tmp_path / "notes-270.tiktoken").is_file() and (tmp_path / "notes-270.json").is_file()
    assert get_tokenizer(str(tmp_path / "notes-270.tiktoken")).n_vocab == 270
    assert {p.name: p.read_bytes() for p in TOKENIZER_DIR.iterdir()} == shipped  # the package untouched


def test_tokenizer_train_never_writes_the_shipped_files_and_says_a_vocabulary_shortfall(tmp_path, monkeypatch,
                                                                                       capsys):
    from nanogptoss.data.tokenizer import TOKENIZER_DIR, main

    (tmp_path / "tiny.txt").write_text("ab ab ab\n\nba ba\n\nab ba")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match="shipped tokenizers"):
        main(["train", "--data", "tiny.txt", "--out", str(TOKENIZER_DIR / "tinystories-4k.tiktoken")])
    main(["train", "--data", "tiny.txt", "--vocab-size", "5000", "--no-progress"])
    out = capsys.readouterr().out
    got = get_tokenizer(str(tmp_path / next(p.name for p in tmp_path.glob("tiny-*.tiktoken")))).n_vocab
    assert got < 5000 and f"asked for 5,000 ids, got {got:,}" in out
    assert (tmp_path / f"tiny-{got}.tiktoken").is_file()  # named for what it holds, not "4k"


def test_tokenizer_train_help_says_what_is_held_out(capsys):
    from nanogptoss.data.tokenizer import main

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "held out" in " ".join(capsys.readouterr().out.split()).lower()


def test_a_ranks_file_without_the_256_single_bytes_is_refused(tmp_path):
    import base64

    path = tmp_path / "short.tiktoken"
    path.write_text("".join(f"{base64.b64encode(bytes([b])).decode()} {b}\n" for b in range(200)))
    with pytest.raises(ValueError, match="lacks 56 of the 256 single bytes"):
        get_tokenizer(str(path))
