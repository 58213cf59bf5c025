"""Stories in, token batches out.

1. `load_texts` reads stories: TinyStories from the Hugging Face hub (or a local
   copy), a local .txt/.jsonl/.json/.parquet file or folder, or the project's
   synthetic stories.
2. `prepare_tokens` encodes them once into a uint16 memmap (`<name>.bin`) with a
   small JSON header (`<name>.json`), reused on later runs and rebuilt when stale
   or truncated.
3. `TokenBatches` cuts random windows out of the token stream. Batch `step` is a
   pure function of (seed, step), which is what makes resuming exact and lets
   several processes share one global batch.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

HUB_NAME = "roneneldan/TinyStories"
TEXT_FIELDS = ("text", "story")  # the hub dataset says "text", the original tarball's JSON "story"
LOCAL_SUFFIXES = (".txt", ".jsonl", ".json", ".parquet")
EOT = "<|endoftext|>"


class DataUnavailable(RuntimeError):
    """The stories could not be loaded; the message says what to do."""


# --------------------------------------------------------------------------- loading text

def _stories_from_records(records, where: str) -> list[str]:
    out = []
    for rec in records:
        field = next((f for f in TEXT_FIELDS if f in rec), None)
        if field is None:
            raise DataUnavailable(f"{where}: records need a 'text' or 'story' field; found {sorted(rec)[:8]}")
        if rec[field] and rec[field].strip():
            out.append(rec[field].strip())
    return out


def _read_file(path: Path) -> list[str]:
    if path.suffix == ".txt":
        return [s.strip() for s in path.read_text(encoding="utf-8").split(EOT) if s.strip()]
    if path.suffix == ".jsonl":
        with path.open(encoding="utf-8") as f:
            return _stories_from_records((json.loads(line) for line in f if line.strip()), str(path))
    if path.suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        return _stories_from_records(data if isinstance(data, list) else [data], str(path))
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        return _stories_from_records(table.to_pylist(), str(path))
    raise DataUnavailable(f"{path}: unsupported file type; use one of {', '.join(LOCAL_SUFFIXES)}")


def _split_of(path: Path) -> str:
    name = path.name.lower()
    return "validation" if ("valid" in name or "val." in name or "-val" in name or "_val" in name) else "train"


def load_local(path: str | os.PathLike, split: str = "train", val_fraction: float = 0.05) -> list[str]:
    """Stories from a file or a folder of files.

    In a folder, files whose name says "valid"/"val" are the validation split. A
    single file (or a folder with no such file) is split: its last `val_fraction`
    of stories are the validation set.
    """
    path = Path(path)
    if not path.exists():
        raise DataUnavailable(f"{path} does not exist; give a .txt/.jsonl/.json/.parquet file or a folder of them")
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.suffix in LOCAL_SUFFIXES)
    if not files:
        raise DataUnavailable(f"{path} holds no {'/'.join(LOCAL_SUFFIXES)} files")
    by_split = {"train": [], "validation": []}
    for f in files:
        by_split[_split_of(f)].append(f)
    if by_split["validation"]:
        return [s for f in by_split[split] for s in _read_file(f)]
    stories = [s for f in files for s in _read_file(f)]
    n_val = max(1, int(len(stories) * val_fraction))
    return stories[-n_val:] if split == "validation" else stories[:-n_val]


def _check_hub_reachable(timeout: float = 5.0) -> None:
    """One quick connection attempt, instead of the hub client's retries (tens of seconds) when offline."""
    import socket
    from urllib.parse import urlparse

    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
    except OSError as err:
        raise DataUnavailable(
            f"cannot reach the Hugging Face hub at {url.hostname}:{port} ({err}). Point --data (or NANOGPTOSS_DATA) "
            "at a local copy of TinyStories (.txt with <|endoftext|> separators, .jsonl or .parquet), use "
            "--data synthetic, or set HF_HUB_OFFLINE=1 to use a copy in the datasets cache.") from None


def load_hub(split: str = "train") -> list[str]:
    """TinyStories through `datasets.load_dataset`, failing fast with advice when offline."""
    try:
        import datasets
    except ImportError:
        raise DataUnavailable("loading TinyStories from the hub needs the `datasets` package: pip install datasets") from None
    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    if not offline:
        _check_hub_reachable()
    try:
        ds = datasets.load_dataset(HUB_NAME, split=split)
    except Exception as err:
        raise DataUnavailable(
            f"could not load {HUB_NAME!r} ({'HF_HUB_OFFLINE=1 is set' if offline else 'no connection to the hub?'}: "
            f"{type(err).__name__}: {str(err)[:200]}). Point --data (or NANOGPTOSS_DATA) at a local copy "
            "(.txt with <|endoftext|> separators, .jsonl or .parquet), or use --data synthetic.") from None
    field = next((f for f in TEXT_FIELDS if f in ds.column_names), None)
    if field is None:
        raise DataUnavailable(f"{HUB_NAME}: expected a 'text' or 'story' column, found {ds.column_names}")
    return [s.strip() for s in ds[field] if s and s.strip()]


def load_texts(source: str = "tinystories", split: str = "train", limit: int | None = None,
               seed: int = 0) -> list[str]:
    """Stories from "tinystories" (hub, or $NANOGPTOSS_DATA when set), "synthetic", or a local path."""
    if split not in ("train", "validation"):
        raise ValueError(f"split must be 'train' or 'validation', got {split!r}")
    if source == "synthetic":
        from .synthetic import generate_stories

        n = limit or (20_000 if split == "train" else 1_000)
        # the validation stories come from another seed, so they are not copies of training stories
        return generate_stories(n, seed=seed * 2 + (split == "validation"))
    if source == "tinystories":
        local = os.environ.get("NANOGPTOSS_DATA")
        stories = load_local(local, split) if local else load_hub(split)
    else:
        stories = load_local(source, split)
    return stories[:limit] if limit else stories


def pick_source(source: str = "auto") -> str:
    """ "auto": TinyStories when it can be had (hub, datasets cache or $NANOGPTOSS_DATA), else the
    synthetic stories, saying so loudly; any other source is returned as it is."""
    if source != "auto":
        return source
    try:
        load_texts("tinystories", "validation", limit=1)
        return "tinystories"
    except DataUnavailable as err:
        print(f"NOTE: TinyStories is not available here, so the synthetic stories are used instead.\n"
              f"      ({err})", flush=True)
        return "synthetic"


# --------------------------------------------------------------------------- token shards

def _header_path(bin_path: Path) -> Path:
    return bin_path.with_suffix(".json")


def read_header(bin_path: str | os.PathLike) -> dict | None:
    """The shard's header when the shard is complete, else None (missing, truncated or unreadable)."""
    bin_path = Path(bin_path)
    try:
        header = json.loads(_header_path(bin_path).read_text())
        if bin_path.stat().st_size != header["count"] * np.dtype(header["dtype"]).itemsize:
            return None
        return header
    except (OSError, ValueError, KeyError, TypeError):
        return None


def prepare_tokens(texts: Sequence[str] | None, tokenizer, bin_path: str | os.PathLike, source: str,
                   progress: bool = True, num_threads: int = 0) -> np.memmap:
    """Encode stories (each followed by <|endoftext|>) into a uint16 memmap, or reuse a matching one.

    `texts` may be None when the caller only wants an existing shard; a missing or
    stale shard then raises. The header records the tokenizer, the token count,
    the UTF-8 byte count (for bits per byte) and the source.
    """
    from tqdm.auto import tqdm

    bin_path = Path(bin_path)
    header = read_header(bin_path)
    wanted = {"tokenizer": tokenizer.name, "n_vocab": tokenizer.n_vocab, "source": source}
    if header is not None and all(header.get(k) == v for k, v in wanted.items()):
        return np.memmap(bin_path, dtype=header["dtype"], mode="r", shape=(header["count"],))
    if texts is None:
        raise DataUnavailable(f"{bin_path} is missing, truncated or made for another tokenizer/source; "
                              "pass the texts to rebuild it")
    if tokenizer.n_vocab > 2 ** 16:
        raise ValueError(f"uint16 shards hold ids below 65536; tokenizer {tokenizer.name} has {tokenizer.n_vocab}")
    bin_path.parent.mkdir(parents=True, exist_ok=True)
    threads = num_threads or min(8, os.cpu_count() or 1)
    chunk = 2048
    pieces, n_bytes = [], 0
    for i in tqdm(range(0, len(texts), chunk), desc=f"tokenizing {bin_path.name}", disable=not progress,
                  unit_scale=chunk, unit="story"):
        batch = texts[i:i + chunk]
        for ids in tokenizer.encode_ordinary_batch(batch, num_threads=threads):
            ids.append(tokenizer.eot_token)
            pieces.append(np.asarray(ids, dtype=np.uint16))
        n_bytes += sum(len(t.encode("utf-8")) + 1 for t in batch)  # +1: the separator, as one byte
    tokens = np.concatenate(pieces) if pieces else np.zeros(0, np.uint16)
    tmp = bin_path.with_name(bin_path.name + ".tmp")
    tokens.tofile(tmp)
    os.replace(tmp, bin_path)
    header = dict(wanted, dtype="uint16", count=int(tokens.size), bytes=n_bytes, stories=len(texts))
    tmp = _header_path(bin_path).with_name(bin_path.stem + ".json.tmp")
    tmp.write_text(json.dumps(header, indent=1))
    os.replace(tmp, _header_path(bin_path))  # the header last: a shard without one is rebuilt
    return np.memmap(bin_path, dtype=np.uint16, mode="r", shape=(tokens.size,))


def token_shards(source: str, tokenizer, cache_dir: str | os.PathLike = "data", limit: int | None = None,
                 progress: bool = True) -> dict[str, tuple[np.memmap, dict]]:
    """Train and validation shards for a source, built on first use: {split: (tokens, header)}."""
    tag = "".join(c if c.isalnum() else "_" for c in Path(source).name if c) or "data"
    out = {}
    for split in ("train", "validation"):
        path = Path(cache_dir) / f"{tag}-{tokenizer.name}-{split}{f'-{limit}' if limit else ''}.bin"
        header = read_header(path)
        texts = None
        if header is None or header.get("tokenizer") != tokenizer.name or header.get("source") != source:
            texts = load_texts(source, split, limit=limit if split == "train" else (limit and max(limit // 20, 50)))
        tokens = prepare_tokens(texts, tokenizer, path, source, progress=progress)
        out[split] = (tokens, read_header(path))
    return out


class TokenBatches:
    """Random (x, y) windows of `seq_len` tokens; the global batch of a step depends only on (seed, step).

    `batch_size` rows make one optimizer step. With gradient accumulation they are cut
    into `n_micro` micro-batches, and each micro-batch is shared among `world`
    processes (rank r takes rows r, r + world, ...), so every combination of
    accumulation and processes sees exactly the rows one process would.
    """

    def __init__(self, tokens: np.ndarray, seq_len: int, batch_size: int, seed: int = 0,
                 rank: int = 0, world: int = 1, n_micro: int = 1):
        if len(tokens) <= seq_len + 1:
            raise DataUnavailable(f"only {len(tokens)} tokens: need more than seq_len + 1 = {seq_len + 1}; "
                                  "use more stories or a shorter context (max_position_embeddings)")
        if batch_size % (n_micro * world):
            raise ValueError(f"batch_size {batch_size} must be divisible by gradient-accumulation steps ({n_micro}) "
                             f"x processes ({world})")
        self.tokens, self.seq_len, self.batch_size = tokens, seq_len, batch_size
        self.seed, self.rank, self.world, self.n_micro = seed, rank, world, n_micro

    def get(self, step: int, micro: int = 0, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        starts = torch.randint(len(self.tokens) - self.seq_len - 1, (self.batch_size,), generator=g)
        per_micro = self.batch_size // self.n_micro
        mine = starts[micro * per_micro:(micro + 1) * per_micro][self.rank::self.world].tolist()
        rows = np.stack([self.tokens[s:s + self.seq_len + 1] for s in mine]).astype(np.int64)
        xy = torch.from_numpy(rows)
        x, y = xy[:, :-1], xy[:, 1:]
        if torch.device(device).type == "cuda":
            return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
        return x.to(device), y.to(device)


def bits_per_byte(loss_nats_per_token: float, header: dict) -> float:
    """Cross-entropy per UTF-8 byte in bits: comparable across tokenizers."""
    return loss_nats_per_token * header["count"] / header["bytes"] / math.log(2)
