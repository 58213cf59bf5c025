"""The atomic writers and the run-folder lock never write through a symbolic link."""

import os

import pytest

from nanogptoss import files
from nanogptoss.files import FolderLock, SymlinkRefused, atomic_path, write_text


@pytest.fixture
def outside(tmp_path):
    """A file outside the folder the library writes into, which a planted link points at."""
    target = tmp_path / "outside.txt"
    target.write_text("precious")
    (tmp_path / "run").mkdir()
    return target


def test_write_text_is_atomic_and_leaves_no_temporary_file(tmp_path):
    write_text(tmp_path / "a" / "x.json", "one")
    write_text(tmp_path / "a" / "x.json", "two")
    assert (tmp_path / "a" / "x.json").read_text() == "two"
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["x.json"]


def test_a_lock_that_is_a_link_is_refused_and_its_target_untouched(tmp_path, outside):
    os.symlink(outside, tmp_path / "run" / ".lock")
    with pytest.raises(SymlinkRefused, match=r"\.lock is a symbolic link .*never writes through a link"):
        FolderLock(tmp_path / "run").acquire()
    assert outside.read_text() == "precious"


def test_the_lock_still_works_and_writes_its_pid(tmp_path):
    with FolderLock(tmp_path / "run") as lock:
        assert (tmp_path / "run" / ".lock").read_text() == str(os.getpid())
        with pytest.raises(files.FolderInUse, match=f"pid {os.getpid()}"):
            FolderLock(tmp_path / "run").acquire()
    assert lock.file is None


def test_a_target_that_is_a_link_is_refused(tmp_path, outside):
    os.symlink(outside, tmp_path / "run" / "summary.json")
    with pytest.raises(SymlinkRefused, match="summary.json is a symbolic link"):
        write_text(tmp_path / "run" / "summary.json", "{}")
    assert outside.read_text() == "precious"
    assert os.path.islink(tmp_path / "run" / "summary.json")
    assert isinstance(SymlinkRefused("x"), ValueError)  # the commands answer ValueErrors in one line


def test_a_temporary_name_that_is_a_link_is_never_written_through(tmp_path, outside, monkeypatch):
    # a link planted at the very name the writer draws (as if guessed): creating it fails, nothing is written
    planted = tmp_path / "run" / ".x.json.tmp-1-planted"
    os.symlink(outside, planted)
    monkeypatch.setattr(files, "temp_path", lambda path: planted)
    with pytest.raises(FileExistsError):
        write_text(tmp_path / "run" / "x.json", "overwritten")
    assert outside.read_text() == "precious"


def test_a_temporary_file_swapped_for_a_link_is_not_renamed_into_place(tmp_path, outside):
    target = tmp_path / "run" / "weights.bin"
    with pytest.raises(SymlinkRefused, match="replaced while it was written"):
        with atomic_path(target) as tmp:
            tmp.unlink()
            os.symlink(outside, tmp)
    assert not target.exists() and outside.read_text() == "precious"
    assert list((tmp_path / "run").iterdir()) == []
