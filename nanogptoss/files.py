"""How the library writes files: atomically, under names no other writer shares, and with a lock
on a run folder, so that nothing is ever half written, silently shared or left behind.

A file is written under a temporary name that holds the writer's process id and a random part
(`.<name>.tmp-<pid>-<random>`), flushed to disk and renamed over the target: a reader sees the
old file or the new one, never half of one, and two writers never write into the same temporary
file. A writer killed midway leaves its temporary file; `remove_stale_temps` deletes those of
processes that no longer exist.

No write goes through a symbolic link: a temporary name is created new (it cannot already be a
link), and a target, a lock file or a temporary name that is a link is refused, so a link planted
in a run folder can never redirect a write to a file elsewhere.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path
from typing import Iterator

TEMP_MARK = ".tmp-"


NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)  # 0 on Windows, where links need privileges to create


class SymlinkRefused(OSError, ValueError):
    """A write would have gone through a symbolic link (a bad path, so also a ValueError: the
    commands answer it in one line)."""


def refuse_symlink(path: str | os.PathLike, what: str = "") -> None:
    """Raise SymlinkRefused, one line, when `path` is a symbolic link."""
    if os.path.islink(path):
        raise SymlinkRefused(f"{path}{what} is a symbolic link (to {os.readlink(path)}); nanogptoss never writes "
                             "through a link: remove the link or choose another path")


def temp_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.with_name(f".{path.name}{TEMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a new, empty temporary file's path to write; on success it is synced and renamed over `path`.

    The temporary file is created here, exclusively (O_EXCL: never an existing file or link), and
    must still be that plain file when the write is done; `path` must not be a link.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    refuse_symlink(path)
    tmp = temp_path(path)
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW, 0o666))  # umask applies
    try:
        yield tmp
        refuse_symlink(tmp, " (a temporary file replaced while it was written)")
        fd = os.open(tmp, os.O_RDONLY | NOFOLLOW)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        refuse_symlink(path)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_TRUNC | NOFOLLOW)
        with open(fd, "w", encoding="utf-8") as f:
            f.write(text)


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
        refuse_symlink(self.path)  # the pid written below would overwrite the link's target
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | NOFOLLOW, 0o666)
        except OSError as err:
            refuse_symlink(self.path)  # a link made since the check above
            raise err
        self.file = open(fd, "r+")
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
