"""Tokenizers: GPT-2's BPE through tiktoken, and small BPEs trained by this project.

Every tokenizer here is a `tiktoken.Encoding`, so the fast Rust encoder does the
work and the training code, the book and the sampler all share one interface
(`encode_ordinary`, `decode`, `eot_token`, `n_vocab`).

Why a small BPE at all: on two CPU cores the 50,257-row output layer of GPT-2's
vocabulary costs several times more than the rest of a tiny model, so CPU
presets use 4,096 tokens. Small ones come two ways:

- "gpt2-4k" / "gpt2-8k": the first merges of GPT-2's own BPE plus <|endoftext|>.
  Any prefix of a BPE merge list is itself a valid BPE, so this needs no training
  data and tokenizes any English text sensibly.
- "tinystories-4k" / "tinystories-8k": byte-level BPEs trained by this project on
  the TinyStories training sample with `python -m nanogptoss tokenizer train`,
  shipped in `nanogptoss/data/tokenizers/` in tiktoken's mergeable-ranks format
  (one "base64(token) rank" line per token) with a JSON file beside each saying
  how it was made. On TinyStories they compress better than GPT-2's prefixes of
  the same size (`python -m nanogptoss tokenizer measure`), so the small presets
  use them (`default_tokenizer`).
"""

from __future__ import annotations

import argparse
import base64
import heapq
import json
import os
from collections import Counter, defaultdict
from pathlib import Path
from typing import Iterable

import tiktoken

from ..files import write_text

EOT = "<|endoftext|>"
# GPT-2's pre-tokenization pattern: BPE merges never cross these chunk borders.
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
TOKENIZER_DIR = Path(__file__).parent / "tokenizers"


class TokenizerUnavailable(RuntimeError):
    """A tokenizer's files could not be found or downloaded."""


def gpt2() -> tiktoken.Encoding:
    try:
        return tiktoken.get_encoding("gpt2")
    except Exception as err:  # tiktoken raises requests/urllib errors when offline
        raise TokenizerUnavailable(
            "could not load tiktoken's 'gpt2' encoding (it downloads two files on first use). "
            "Without internet, set TIKTOKEN_CACHE_DIR to a folder holding tiktoken's cached gpt2 files; "
            f"original error: {type(err).__name__}: {err}") from None


def gpt2_prefix(n_vocab: int = 4096) -> tiktoken.Encoding:
    """GPT-2's BPE cut to its first `n_vocab - 1` ranks, plus <|endoftext|> as the last id."""
    full = gpt2()
    if not 257 <= n_vocab <= full.n_vocab:
        raise ValueError(f"n_vocab must be between 257 and {full.n_vocab}, got {n_vocab}")
    ranks = {token: rank for token, rank in full._mergeable_ranks.items() if rank < n_vocab - 1}
    return tiktoken.Encoding(name=f"gpt2-{n_vocab // 1024}k", pat_str=full._pat_str,
                             mergeable_ranks=ranks, special_tokens={EOT: n_vocab - 1})


def save_ranks(ranks: dict[bytes, int], path: str | os.PathLike) -> None:
    """tiktoken's mergeable-ranks format: one `base64(token) rank` line per token, by rank."""
    lines = [f"{base64.b64encode(tok).decode()} {rank}\n" for tok, rank in sorted(ranks.items(), key=lambda x: x[1])]
    write_text(path, "".join(lines))


def load_ranks(path: str | os.PathLike) -> dict[bytes, int]:
    ranks = {}
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not a text file of 'base64-token rank' lines (tiktoken's format)") from None
    if not lines:
        raise ValueError(f"{path} is empty; a tokenizer file holds one 'base64-token rank' line per token")
    for n, line in enumerate(lines, 1):
        try:
            tok, rank = line.split()
            ranks[base64.b64decode(tok, validate=True)] = int(rank)
        except ValueError:
            raise ValueError(f"{path}:{n} is not a 'base64-token rank' line: {line[:60]!r}") from None
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise ValueError(f"{path}: ranks must be 0..{len(ranks) - 1} without gaps or repeats")
    missing = [b for b in range(256) if bytes([b]) not in ranks]
    if missing:  # a byte-level BPE must be able to spell any text; tiktoken panics without them
        raise ValueError(f"{path} lacks {len(missing)} of the 256 single bytes (e.g. {bytes([missing[0]])!r}): "
                         "a byte-level BPE's file holds every single byte as a token; train one with "
                         "`python -m nanogptoss tokenizer train`")
    return ranks


def encoding_from_ranks(ranks: dict[bytes, int], name: str) -> tiktoken.Encoding:
    return tiktoken.Encoding(name=name, pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                             special_tokens={EOT: len(ranks)})


# the tokenizer a model of each small vocabulary trains with: the one that compresses TinyStories best
SMALL_TOKENIZERS = {4096: "tinystories-4k", 8192: "tinystories-8k"}


def default_tokenizer(vocab_size: int) -> str:
    """The shipped BPE of a small preset's vocabulary; GPT-2's own BPE for the others."""
    return SMALL_TOKENIZERS.get(vocab_size, "gpt2")


def get_tokenizer(name: str = "gpt2") -> tiktoken.Encoding:
    """"gpt2", "gpt2-4k" (or "gpt2-8k"), a path to a .tiktoken ranks file, or the name of one shipped in
    nanogptoss/data/tokenizers/ ("tinystories-4k", "tinystories-8k")."""
    if name == "gpt2":
        return gpt2()
    if name in ("gpt2-4k", "gpt2-8k"):
        return gpt2_prefix(4096 if name == "gpt2-4k" else 8192)
    for candidate in (Path(name), TOKENIZER_DIR / name, TOKENIZER_DIR / f"{name}.tiktoken"):
        if candidate.is_file():
            return encoding_from_ranks(load_ranks(candidate), candidate.stem)
    shipped = sorted(p.stem for p in TOKENIZER_DIR.glob("*.tiktoken"))
    raise ValueError(f"unknown tokenizer {name!r}: use 'gpt2', 'gpt2-4k', 'gpt2-8k', a path to a .tiktoken file"
                     f"{', or one of ' + ', '.join(shipped) if shipped else ''}; "
                     "train one with `python -m nanogptoss tokenizer train`")


# ---------------------------------------------------------------------------------------------
# Training a byte-level BPE. The textbook loop (count pairs, merge the most frequent, repeat)
# recounts everything per merge; here the pair counts are updated only for the words that
# contain the merged pair, and a heap with lazy deletion finds the most frequent pair.

def _chunk_counts(texts: Iterable[str]) -> Counter:
    import regex  # tiktoken depends on it

    pattern = regex.compile(GPT2_PATTERN)
    counts: Counter = Counter()
    for text in texts:
        for part in text.split(EOT):
            counts.update(pattern.findall(part))
    return counts


def train_bpe(texts: Iterable[str], vocab_size: int = 4096, progress: bool = True) -> dict[bytes, int]:
    """Mergeable ranks of a byte-level BPE with `vocab_size` ids (the last one is <|endoftext|>).

    Ties between equally frequent pairs go to the smaller pair of ranks, so training is deterministic.
    """
    from tqdm.auto import tqdm

    if vocab_size < 257:
        raise ValueError(f"vocab_size must be at least 257 (256 bytes + <|endoftext|>), got {vocab_size}")
    ranks = {bytes([b]): b for b in range(256)}
    token_bytes = [bytes([b]) for b in range(256)]
    chunks = _chunk_counts(texts)
    words = [[*chunk.encode("utf-8")] for chunk in chunks]
    freqs = list(chunks.values())
    pair_count: defaultdict = defaultdict(int)
    where: defaultdict = defaultdict(set)  # pair -> indices of words containing it
    for w, (word, f) in enumerate(zip(words, freqs)):
        for pair in zip(word, word[1:]):
            pair_count[pair] += f
            where[pair].add(w)
    heap = [(-c, pair) for pair, c in pair_count.items()]
    heapq.heapify(heap)
    n_merges = vocab_size - 1 - 256
    bar = tqdm(total=n_merges, desc="BPE merges", disable=not progress)
    while len(token_bytes) < vocab_size - 1 and heap:
        neg, pair = heapq.heappop(heap)
        if pair_count.get(pair, 0) != -neg or -neg == 0:
            continue  # stale heap entry
        new_id = len(token_bytes)
        token_bytes.append(token_bytes[pair[0]] + token_bytes[pair[1]])
        if token_bytes[-1] in ranks:  # the same bytes reached by another pair: nothing new to add
            token_bytes.pop()
            pair_count[pair] = 0
            continue
        ranks[token_bytes[-1]] = new_id
        changed = set()
        for w in where.pop(pair):
            word, f = words[w], freqs[w]
            for p in zip(word, word[1:]):
                pair_count[p] -= f
                changed.add(p)
            merged, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
                    merged.append(new_id)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            words[w] = merged
            for p in zip(merged, merged[1:]):
                pair_count[p] += f
                where[p].add(w)
                changed.add(p)
        for p in changed:
            if pair_count[p] > 0:
                heapq.heappush(heap, (-pair_count[p], p))
        bar.update(1)
    bar.close()
    return ranks


def bytes_per_token(tokenizer, texts: Iterable[str]) -> tuple[int, int]:
    """(UTF-8 bytes, tokens) of the texts, each followed by <|endoftext|> counted as one byte."""
    texts = list(texts)
    ids = tokenizer.encode_ordinary_batch(texts, num_threads=min(8, os.cpu_count() or 1))
    return sum(len(t.encode("utf-8")) + 1 for t in texts), sum(len(i) + 1 for i in ids)


def provenance(data: str, vocab_size: int, max_stories: int, command: str) -> dict:
    """How a trained tokenizer was made: enough to make it again and to check it is the same."""
    import datetime
    import hashlib

    from .stories import local_files

    files = []
    local = os.environ.get("NANOGPTOSS_DATA") if data == "tinystories" else data
    if local and Path(local).exists():
        files = [{"file": f.name, "bytes": f.stat().st_size, "sha256": hashlib.sha256(f.read_bytes()).hexdigest()}
                 for f in local_files(local) if "valid" not in f.name.lower()]
    return {"command": command, "data": data, "files": files, "vocab_size": vocab_size,
            "max_stories": max_stories, "date": datetime.date.today().isoformat()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m nanogptoss tokenizer",
                                     description="Train a small byte-level BPE and save it in tiktoken's format.")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser(
        "train", help="train a BPE on a corpus",
        description="Train a byte-level BPE on the training stories of --data. Held out, as in `train`: "
                    "TinyStories' validation split; in a folder, the files named *valid*/*val*; in a single "
                    "file, its last 5%% of stories. A plain text file (any name but .jsonl/.json/.parquet) "
                    "is cut into stories at <|endoftext|>, else at blank lines, else at line ends.")
    train.add_argument("--data", default="tinystories",
                       help="'tinystories' (the Hugging Face dataset, or $NANOGPTOSS_DATA when set), "
                            "'synthetic', or a local text, .jsonl, .json or .parquet file, or a folder")
    train.add_argument("--vocab-size", type=int, default=4096, help="ids in all, <|endoftext|> included")
    train.add_argument("--max-stories", type=int, default=200_000, help="train on at most this many stories")
    train.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="show a progress bar")
    train.add_argument("--out", default=None,
                       help="output .tiktoken file, beside it <name>.json saying how it was made (default: "
                            "<data>-<vocabulary>.tiktoken in the working folder; the shipped tokenizers are "
                            "never overwritten)")
    show = sub.add_parser("show", help="tokenize a text with a tokenizer and print the pieces")
    show.add_argument("--tokenizer", default="tinystories-4k")
    show.add_argument("text", nargs="?", default="Once upon a time, there was a little girl named Lily.")
    measure = sub.add_parser("measure", help="bytes per token of tokenizers on validation stories")
    measure.add_argument("--data", default="tinystories", help="as for train; the validation split is measured")
    measure.add_argument("--tokenizers", nargs="+", default=["tinystories-4k", "gpt2-4k", "tinystories-8k",
                                                           "gpt2-8k", "gpt2"])
    args = parser.parse_args(argv)
    try:
        run_command(args)
    except (ValueError, TokenizerUnavailable) as err:
        raise SystemExit(f"error: {err}") from None


def run_command(args) -> None:
    from .stories import DataUnavailable, load_texts

    if args.command == "show":
        enc = get_tokenizer(args.tokenizer)
        ids = enc.encode_ordinary(args.text)
        print(f"{enc.name}: {len(ids)} tokens, vocabulary {enc.n_vocab}")
        print(" | ".join(enc.decode([i]) for i in ids))
        return
    if args.command == "measure":
        try:
            texts = load_texts(args.data, split="validation")
        except DataUnavailable as err:
            raise ValueError(str(err)) from None
        print(f"{len(texts):,} validation stories of {args.data}")
        print("| tokenizer | vocabulary | tokens | bytes/token |\n|---|---|---|---|")
        for name in args.tokenizers:
            enc = get_tokenizer(name)
            n_bytes, n_tokens = bytes_per_token(enc, texts)
            print(f"| {name} | {enc.n_vocab:,} | {n_tokens:,} | {n_bytes / n_tokens:.3f} |")
        return

    if args.vocab_size < 257:
        raise ValueError(f"--vocab-size must be at least 257 (256 bytes + <|endoftext|>), got {args.vocab_size}")
    if args.out and Path(args.out).resolve().parent == TOKENIZER_DIR.resolve():
        raise ValueError(f"--out {args.out} is inside the installed package's shipped tokenizers "
                         f"({TOKENIZER_DIR}), which checkpoints name and must not change: write elsewhere")
    try:
        texts = load_texts(args.data, split="train", limit=args.max_stories)
    except DataUnavailable as err:
        raise ValueError(str(err)) from None
    print(f"training on {len(texts):,} stories: {training_split(args.data, len(texts), args.max_stories)}")

    ranks = train_bpe(texts, args.vocab_size, progress=args.progress)
    n_vocab = len(ranks) + 1
    if n_vocab < args.vocab_size:
        print(f"note: asked for {args.vocab_size:,} ids, got {n_vocab:,}: the text has no more pairs of "
              "tokens to merge; give more text for a larger vocabulary")
    size = f"{n_vocab // 1024}k" if n_vocab % 1024 == 0 else str(n_vocab)
    out = Path(args.out) if args.out else Path(f"{Path(str(args.data)).stem}-{size}.tiktoken")
    out.parent.mkdir(parents=True, exist_ok=True)
    save_ranks(ranks, out)
    command = (f"python -m nanogptoss tokenizer train --data {args.data} --vocab-size {args.vocab_size} "
               f"--max-stories {args.max_stories}")
    write_text(out.with_suffix(".json"),
               json.dumps(provenance(args.data, n_vocab, args.max_stories, command), indent=1) + "\n")
    enc = encoding_from_ranks(ranks, out.stem)
    sample = " ".join(texts[:50])
    print(f"wrote {out} ({len(ranks)} ranks + <|endoftext|>); "
          f"{len(sample.encode()) / len(enc.encode_ordinary(sample)):.2f} bytes/token on the first 50 stories")


def training_split(data: str, n_stories: int, max_stories: int) -> str:
    """Which stories of `data` a tokenizer trained on, and which were held out, in words."""
    from .stories import _split_of, local_files

    first = f"the first {n_stories:,} of " if n_stories == max_stories else ""
    if data == "synthetic":
        return f"{first}the synthetic stories (validation stories come from another seed)"
    local = os.environ.get("NANOGPTOSS_DATA") if data == "tinystories" else data
    if not local:
        return f"{first}TinyStories' training split (its validation split held out)"
    files = local_files(local)
    held = [f.name for f in files if _split_of(f) == "validation"]
    if held and len(held) < len(files):
        return f"{first}the training files of {local} ({', '.join(held)} held out)"
    return f"{first}the first 95% of the stories in {local} (the last 5% held out for validation)"


if __name__ == "__main__":
    main()
