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
