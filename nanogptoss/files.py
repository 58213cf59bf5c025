"""How the library writes files: atomically, under names no other writer shares, and with a lock
on a run folder, so that nothing is ever half written, silently shared or left behind.

A file is written under a temporary name that holds the writer's process id and a random part
(`.<name>.tmp-<pid>-<random>`), flushed to disk and renamed over the target: a reader sees the
old file or the new one, never half of one, and two writers never write into the same temporary
file. A writer killed midway leaves its temporary file; `remove_stale_temps` deletes those of
processes that no longer exist.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path
from typing import Iterator

TEMP_MARK = ".tmp-"


def temp_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.with_name(f".{path.name}{TEMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is synced and renamed over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files in `folder` whose writer process has died; return them."""
    removed = []
    for p in Path(folder).glob(f".*{TEMP_MARK}*"):
        try:
            pid = int(p.name.rsplit(TEMP_MARK, 1)[1].split("-")[0])
        except ValueError:
            continue
        if pid != os.getpid() and not pid_alive(pid):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


class FolderInUse(RuntimeError):
    """Another process holds the lock of a run folder."""


class FolderLock:
    """An exclusive lock on a folder, held while a run writes into it (released when the process
    ends, however it ends). A second process asking for it fails at once, saying which pid has it
    and which option (`option`) chooses another folder."""

    def __init__(self, folder: str | os.PathLike, option: str = "--out-dir"):
        self.path = Path(folder) / ".lock"
        self.option = option
        self.file = None

    def acquire(self) -> "FolderLock":
        try:
            import fcntl
        except ImportError:  # Windows: no advisory locks; runs are not protected from each other
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(self.path, "a+")
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.seek(0)
            holder = self.file.read().strip() or "another process"
            self.file.close()
            self.file = None
            raise FolderInUse(f"{self.path.parent} is in use by a run that is still going (pid {holder}); "
                              f"wait for it to finish, or choose another {self.option}") from None
        self.file.seek(0)
        self.file.truncate()
        self.file.write(str(os.getpid()))
        self.file.flush()
        return self

    def release(self) -> None:
        if self.file is not None:
            self.file.close()  # closing drops the lock
            self.file = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
