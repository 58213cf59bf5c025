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

import hashlib
import json
import math
import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..files import atomic_path, remove_stale_temps, write_text

HUB_NAME = "roneneldan/TinyStories"
TEXT_FIELDS = ("text", "story")  # the hub dataset says "text", the original tarball's JSON "story"
LOCAL_SUFFIXES = (".txt", ".jsonl", ".json", ".parquet")  # what a folder is searched for; a file named alone
STRUCTURED_SUFFIXES = (".jsonl", ".json", ".parquet")  # any other file is read as plain UTF-8 text
EOT = "<|endoftext|>"


class DataUnavailable(RuntimeError):
    """The stories could not be loaded; the message says what to do."""


# --------------------------------------------------------------------------- loading text

def _stories_from_records(records, where: str) -> list[str]:
    out = []
    for n, rec in enumerate(records, 1):
        if isinstance(rec, str):  # a JSON list of stories
            story = rec
        elif isinstance(rec, dict):
            field = next((f for f in TEXT_FIELDS if f in rec), None)
            if field is None:
                raise DataUnavailable(f"{where}: record {n} needs a 'text' or 'story' field; found {sorted(rec)[:8]}")
            story = rec[field]
        else:
            raise DataUnavailable(f"{where}: record {n} is not a story but {rec!r:.40}; records must be objects "
                                  "with a 'text' or 'story' field, or strings")
        if not isinstance(story, str):
            raise DataUnavailable(f"{where}: record {n} has {story!r:.40} where a story's text belongs")
        if story.strip():
            out.append(story.strip())
    return out


def _jsonl_records(path: Path):
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except ValueError as err:
                    raise DataUnavailable(f"{path}:{n} is not valid JSON ({err}); each line must be an object "
                                          'like {"text": "..."}') from None


def _read_file(path: Path) -> list[str]:
    try:
        if path.suffix not in STRUCTURED_SUFFIXES:
            return split_stories(path.read_text(encoding="utf-8"))
        if path.suffix == ".jsonl":
            return _stories_from_records(_jsonl_records(path), str(path))
        if path.suffix == ".json":
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except ValueError as err:
                raise DataUnavailable(f"{path} is not valid JSON ({err})") from None
            return _stories_from_records(data if isinstance(data, list) else [data], str(path))
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            try:
                table = pq.read_table(path)
            except Exception as err:  # pyarrow's own error types
                raise DataUnavailable(f"{path} is not a readable parquet file ({type(err).__name__}: {err})") from None
            return _stories_from_records(table.to_pylist(), str(path))
    except UnicodeDecodeError as err:
        raise DataUnavailable(f"{path} is not UTF-8 text (byte {err.start} is {err.object[err.start:err.start + 1]!r}); "
                              "give a text file of stories separated by <|endoftext|>") from None
    raise AssertionError(path.suffix)  # every suffix is handled above


def split_stories(text: str) -> list[str]:
    """The stories of a plain text: separated by <|endoftext|> where it has any (TinyStories' files),
    else by blank lines (paragraphs), else one per line."""
    if EOT in text:
        pieces = text.split(EOT)
    else:
        pieces = re.split(r"\n[ \t]*\n", text)
        if len(pieces) < 2:
            pieces = text.splitlines()
    return [piece.strip() for piece in pieces if piece.strip()]


def _split_of(path: Path) -> str:
    name = path.name.lower()
    return "validation" if ("valid" in name or "val." in name or "-val" in name or "_val" in name) else "train"


def local_files(path: str | os.PathLike) -> list[Path]:
    """The story files a local source names: the file itself, or those in a folder."""
    path = Path(path)
    if not path.exists():
        raise DataUnavailable(f"{path} does not exist; give a text, .jsonl, .json or .parquet file, or a folder of them")
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.suffix in LOCAL_SUFFIXES)
    if not files:
        raise DataUnavailable(f"{path} holds no {'/'.join(LOCAL_SUFFIXES)} files")
    return files


def load_local(path: str | os.PathLike, split: str = "train", val_fraction: float = 0.05) -> list[str]:
    """Stories from a file or a folder of files.

    In a folder, files whose name says "valid"/"val" are the validation split. A
    single file (or a folder with no such file) is split: its last `val_fraction`
    of stories are the validation set.
    """
    files = local_files(path)
    by_split = {"train": [], "validation": []}
    for f in files:
        by_split[_split_of(f)].append(f)
    if by_split["validation"] and by_split["train"]:
        stories = [s for f in by_split[split] for s in _read_file(f)]
        if not stories:
            raise DataUnavailable(f"the {split} files of {path} ({', '.join(f.name for f in by_split[split])}) "
                                  "hold no stories")
        return stories
    if by_split["validation"] and Path(path).is_dir():  # its name says it is held out: never trained on
        raise DataUnavailable(f"{path} holds only validation files ({', '.join(f.name for f in by_split['validation'])}"
                              "); add the training stories (a file whose name does not say valid or val), or give "
                              "a file to split into training and validation stories")
    stories = [s for f in files for s in _read_file(f)]
    if len(stories) < 2:
        what = "no stories" if not stories else "a single story"
        raise DataUnavailable(f"{path} holds {what}: a file is split into training and validation stories, so "
                              "it needs at least two (separated by <|endoftext|>, blank lines, or lines)")
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


def load_hub(split: str = "train", limit: int | None = None) -> list[str]:
    """TinyStories through `datasets.load_dataset`, failing fast with advice when offline.

    With a `limit`, only that many stories are read: streamed from the hub (a Colab session
    starts in seconds instead of downloading and preparing all ~2.1M stories), or, with
    HF_HUB_OFFLINE=1, sliced out of the datasets cache at load time.
    """
    try:
        import datasets
    except ImportError:
        raise DataUnavailable("loading TinyStories from the hub needs the `datasets` package: pip install datasets") from None
    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    if not offline:
        _check_hub_reachable()
    try:
        if limit and not offline:
            ds = datasets.load_dataset(HUB_NAME, split=split, streaming=True)
        else:
            ds = datasets.load_dataset(HUB_NAME, split=f"{split}[:{limit}]" if limit else split)
        stories, field = [], None
        for record in ds:  # a stream may not know its columns before its first record
            if field is None:
                field = next((f for f in TEXT_FIELDS if f in record), None)
                if field is None:
                    raise DataUnavailable(f"{HUB_NAME}: expected a 'text' or 'story' column, found {list(record)}")
            story = (record[field] or "").strip()
            if story:
                stories.append(story)
                if limit and len(stories) == limit:
                    break
        return stories
    except DataUnavailable:
        raise
    except Exception as err:
        raise DataUnavailable(
            f"could not load {HUB_NAME!r} ({'HF_HUB_OFFLINE=1 is set' if offline else 'no connection to the hub?'}: "
            f"{type(err).__name__}: {str(err)[:200]}). Point --data (or NANOGPTOSS_DATA) at a local copy "
            "(.txt with <|endoftext|> separators, .jsonl or .parquet), or use --data synthetic.") from None


def load_texts(source: str = "tinystories", split: str = "train", limit: int | None = None,
               seed: int = 0) -> list[str]:
    """Stories from "tinystories" (hub, or $NANOGPTOSS_DATA when set), "synthetic", or a local path."""
    if split not in ("train", "validation"):
        raise ValueError(f"split must be 'train' or 'validation', got {split!r}")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise ValueError(f"the number of stories must be a positive integer or None (all), got {limit!r}")
    if source == "synthetic":
        from .synthetic import generate_stories

        n = limit or (20_000 if split == "train" else 1_000)
        # the validation stories come from another seed, so they are not copies of training stories
        return generate_stories(n, seed=seed * 2 + (split == "validation"))
    if source == "tinystories":
        local = os.environ.get("NANOGPTOSS_DATA")
        stories = load_local(local, split) if local else load_hub(split, limit)
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


def describe_source(source: str) -> str:
    """Where the stories of a source come from, in words for a table's caption."""
    if source == "synthetic":
        return "the synthetic stories of nanogptoss.data.synthetic (not TinyStories)"
    if source == "tinystories":
        local = os.environ.get("NANOGPTOSS_DATA")
        if not local:
            return f"TinyStories from the Hugging Face hub ({HUB_NAME})"
        return f"TinyStories, the local copy in {Path(local).name}/ ({', '.join(f.name for f in local_files(local))})"
    return f"the stories in {source}"


# --------------------------------------------------------------------------- token shards

# A shard is named after its source's identity (where the stories come from) and keyed on its
# content (what they are) and the tokenizer's vocabulary: two files of the same name in two
# folders never share a shard, and an edited file or a retrained tokenizer is tokenized again.

def _sha256(*parts) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else str(part).encode())
        h.update(b"\0")
    return h.hexdigest()


HASH_LIMIT = 256 * 2 ** 20  # sources up to this size are hashed whole; larger ones by size and mtime


def source_identity(source: str) -> tuple[str, str]:
    """(identity, content fingerprint) of a source, without tokenizing it."""
    if source == "synthetic":
        from . import synthetic

        return "synthetic", _sha256(Path(synthetic.__file__).read_bytes())  # the grammar is the source
    if source == "tinystories" and not os.environ.get("NANOGPTOSS_DATA"):
        return f"hub:{HUB_NAME}", ""  # the datasets cache keeps the hub's copy in step with the hub
    path = Path(os.environ["NANOGPTOSS_DATA"] if source == "tinystories" else source)
    files = local_files(path)
    stats = [(f, f.stat()) for f in files]
    whole = sum(st.st_size for _, st in stats) <= HASH_LIMIT
    content = _sha256(*(part for f, st in stats for part in (
        f.relative_to(path) if path.is_dir() else f.name, st.st_size,
        hashlib.sha256(f.read_bytes()).hexdigest() if whole else st.st_mtime_ns)))
    return str(path.resolve()), content


def tokenizer_fingerprint(tokenizer) -> str:
    """The vocabulary itself (every id's bytes, the split pattern, the special tokens), not its name."""
    pieces = []
    for i in range(tokenizer.n_vocab):
        try:
            pieces.append(tokenizer.decode_single_token_bytes(i))
        except KeyError:  # a gap in the ids
            pieces.append(b"")
    return _sha256(tokenizer._pat_str, sorted(tokenizer._special_tokens.items()), *pieces)


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
                   progress: bool = True, num_threads: int = 0, content: str = "") -> np.memmap:
    """Encode stories (each followed by <|endoftext|>) into a uint16 memmap, or reuse a matching one.

    `texts` may be None when the caller only wants an existing shard; a missing or
    stale shard then raises. The header records the tokenizer and its fingerprint, the
    source and its content fingerprint, the token count and the UTF-8 byte count (for
    bits per byte). Files are written under names of their own and renamed into place,
    the header last, so concurrent builders never see each other's half-written files.
    """
    from tqdm.auto import tqdm

    bin_path = Path(bin_path)
    header = read_header(bin_path)
    wanted = {"tokenizer": tokenizer.name, "tokenizer_sha256": tokenizer_fingerprint(tokenizer),
              "n_vocab": tokenizer.n_vocab, "source": source, "content_sha256": content}
    if header is not None and all(header.get(k) == v for k, v in wanted.items()):
        return np.memmap(bin_path, dtype=header["dtype"], mode="r", shape=(header["count"],))
    if texts is None:
        raise DataUnavailable(f"{bin_path} is missing, truncated or made for another tokenizer/source; "
                              "pass the texts to rebuild it")
    if tokenizer.n_vocab > 2 ** 16:
        raise ValueError(f"uint16 shards hold ids below 65536; tokenizer {tokenizer.name} has {tokenizer.n_vocab}")
    bin_path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(bin_path.parent)
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
    with atomic_path(bin_path) as tmp:
        tokens.tofile(tmp)
    header = dict(wanted, dtype="uint16", count=int(tokens.size), bytes=n_bytes, stories=len(texts))
    write_text(_header_path(bin_path), json.dumps(header, indent=1))  # the header last: a shard without one is rebuilt
    return np.memmap(bin_path, dtype=np.uint16, mode="r", shape=(tokens.size,))


def token_shards(source: str, tokenizer, cache_dir: str | os.PathLike = "data", limit: int | None = None,
                 progress: bool = True) -> dict[str, tuple[np.memmap, dict]]:
    """Train and validation shards for a source, built on first use: {split: (tokens, header)}."""
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ValueError(f"the number of stories must be a positive integer or None (all), got {limit!r}")
    identity, content = source_identity(source)
    name = Path(source).name if source not in ("synthetic", "tinystories") else source
    tag = "".join(c if c.isalnum() else "_" for c in name) or "data"
    out = {}
    for split in ("train", "validation"):
        n = limit if split == "train" else (limit and max(limit // 20, 50))
        path = Path(cache_dir) / (f"{tag}-{_sha256(identity)[:10]}-{tokenizer.name}-{split}"
                                  f"{f'-{limit}' if limit else ''}.bin")
        try:
            tokens = prepare_tokens(None, tokenizer, path, identity, progress=progress, content=content)
        except DataUnavailable:  # not built yet, or stale
            texts = load_texts(source, split, limit=n)
            tokens = prepare_tokens(texts, tokenizer, path, identity, progress=progress, content=content)
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
        if len(tokens) < seq_len + 1:
            raise DataUnavailable(f"only {len(tokens)} tokens: need at least seq_len + 1 = {seq_len + 1}; "
                                  "use more stories or a shorter context (max_position_embeddings)")
        if batch_size % (n_micro * world):
            raise ValueError(f"batch_size {batch_size} must be divisible by gradient-accumulation steps ({n_micro}) "
                             f"x processes ({world})")
        self.tokens, self.seq_len, self.batch_size = tokens, seq_len, batch_size
        self.seed, self.rank, self.world, self.n_micro = seed, rank, world, n_micro

    def get(self, step: int, micro: int = 0, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        # a window takes seq_len + 1 tokens, so the last one starts at len - seq_len - 1 (inclusive)
        starts = torch.randint(len(self.tokens) - self.seq_len, (self.batch_size,), generator=g)
        per_micro = self.batch_size // self.n_micro
        mine = starts[micro * per_micro:(micro + 1) * per_micro][self.rank::self.world].tolist()
        rows = np.stack([self.tokens[s:s + self.seq_len + 1] for s in mine]).astype(np.int64)
        xy = torch.from_numpy(rows)
        x, y = xy[:, :-1], xy[:, 1:]
        if torch.device(device).type == "cuda":
            return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
        return x.to(device), y.to(device)


class ValidationSet:
    """A fixed prefix of the validation tokens, cut into consecutive windows: every evaluation of
    every model that shares the tokenizer and context scores exactly these targets.

    Window i holds tokens [i·L, (i+1)·L] (inputs the first L, targets the last L), so the targets
    are `n_tokens` consecutive tokens of the split. Their UTF-8 bytes are counted exactly (the
    <|endoftext|> separator as one byte), which turns a loss into bits per byte of that text.
    """

    def __init__(self, tokens: np.ndarray, seq_len: int, n_tokens: int, tokenizer):
        if n_tokens < seq_len:
            raise ValueError(f"--eval-tokens must be at least one window, the context of {seq_len} tokens "
                             f"(max_position_embeddings), got {n_tokens}")
        windows = min(n_tokens, len(tokens) - 1) // seq_len
        if windows < 1:
            raise DataUnavailable(f"the validation split has {len(tokens)} tokens, fewer than one window of "
                                  f"{seq_len + 1}; use more validation stories or a shorter context")
        self.seq_len, self.windows = seq_len, windows
        self.tokens = np.asarray(tokens[:windows * seq_len + 1], dtype=np.int64)
        self.n_tokens = windows * seq_len
        lengths = np.array([1 if i == tokenizer.eot_token else len(tokenizer.decode_single_token_bytes(i))
                            for i in range(tokenizer.n_vocab)])
        self.n_bytes = int(lengths[self.tokens[1:]].sum())

    def batches(self, batch_size: int, rank: int = 0, world: int = 1, device="cpu"):
        """(x, y) batches of this process's share of the windows (window w goes to rank w % world)."""
        mine = list(range(rank, self.windows, world))
        for i in range(0, len(mine), batch_size):
            rows = np.stack([self.tokens[w * self.seq_len:(w + 1) * self.seq_len + 1] for w in mine[i:i + batch_size]])
            xy = torch.from_numpy(rows).to(device)
            yield xy[:, :-1], xy[:, 1:]

    def bits_per_byte(self, loss_nats_per_token: float) -> float:
        return loss_nats_per_token * self.n_tokens / self.n_bytes / math.log(2)


def bits_per_byte(loss_nats_per_token: float, header: dict) -> float:
    """Cross-entropy per UTF-8 byte in bits: comparable across tokenizers."""
    return loss_nats_per_token * header["count"] / header["bytes"] / math.log(2)
