"""File operations, the DATA_DIR lock and the storage errors, against a real filesystem."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from blocktimesd.dataset.files import (
    Append,
    DataDirLock,
    Files,
    error_place,
    naming,
    path_error,
    read_error,
    storage_error,
)
from blocktimesd.dataset.layout import LOCK_NAME, is_temp_name
from blocktimesd.errors import (
    DataDirInUse,
    DataDirUnusable,
    LockLost,
    StorageError,
    WriterClosed,
)

# -- storage errors: the errno decides the fix and the exit code ------------------------


@pytest.mark.parametrize(
    ("code", "action", "unusable", "fix"),
    [
        (errno.ENOSPC, "write", False, "free space (or raise the quota) on the filesystem"),
        (errno.EDQUOT, "write", False, "raise the quota"),
        (errno.EACCES, "write", True, "give the daemon's user write permission on /d/x and"),
        (errno.EPERM, "read", True, "give the user running blocktimesd read permission"),
        (errno.ENOTDIR, "write", True, "/d/x/f or a parent is not a directory: move it"),
        (errno.EEXIST, "write", True, "or a parent is not a directory"),
        (errno.EROFS, "write", True, "remount the filesystem read-write"),
        (errno.EIO, "read", False, "check the disk and the filesystem holding /d"),
        (errno.ENOENT, "read", True, "check the disk"),
    ],
)
def test_path_errors_name_the_path_the_errno_and_the_fix(
    code: int, action: str, unusable: bool, fix: str
) -> None:
    error = path_error(OSError(code, os.strerror(code), "/d/x/f"), Path("/d"), action)
    assert isinstance(error, DataDirUnusable) is unusable
    assert isinstance(error, StorageError)
    message = str(error)
    assert message.startswith(f"cannot {action} /d/x/f: {os.strerror(code)} ")
    assert f"({errno.errorcode[code]})" in message
    assert fix in message
    assert (error.path, error.errno) == ("/d/x/f", code)


def test_start_up_errors_say_data_dir_cannot_be_used() -> None:
    exc = OSError(errno.EROFS, os.strerror(errno.EROFS), "/d")
    error = path_error(exc, Path("/d"), "write", start=True)
    assert str(error).startswith("DATA_DIR /d cannot be used: cannot write /d:")
    assert str(read_error(exc, Path("/d"))) == str(path_error(exc, Path("/d"), "read"))


def test_a_failing_write_is_a_storage_error_that_says_it_is_retried() -> None:
    error = storage_error(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/d/f"), Path("/d"))
    assert type(error) is StorageError  # never DataDirUnusable: the writer keeps retrying
    assert "free space" in str(error)
    assert "writing resumes by itself once fixed" in str(error)
    nameless = storage_error(OSError(errno.EIO, "I/O error"), Path("/d"))
    assert nameless.path == "/d"


def test_the_same_problem_is_told_from_a_new_one() -> None:
    def error(code: int, path: str) -> StorageError:
        return storage_error(OSError(code, os.strerror(code), path), Path("/d"))

    first = error(errno.ENOSPC, "/d/x/.part-1.tmp")
    assert error_place(first) == error_place(error(errno.ENOSPC, "/d/x/.part-2.tmp"))
    assert error_place(first) != error_place(error(errno.EIO, "/d/x/.part-1.tmp"))
    assert error_place(first) != error_place(error(errno.ENOSPC, "/d/y/.part-1.tmp"))


def test_naming_gives_pyarrow_errors_a_file_name() -> None:
    bare = OSError(errno.EACCES, "Permission denied")
    named = naming(bare, Path("/d/f.parquet"))
    assert (named.errno, named.filename) == (errno.EACCES, "/d/f.parquet")
    already = OSError(errno.EACCES, "Permission denied", "/elsewhere")
    assert naming(already, Path("/d/f.parquet")) is already
    no_errno = OSError("not parquet")
    assert naming(no_errno, Path("/d/f.parquet")) is no_errno


# -- the lock ----------------------------------------------------------------------------


def test_one_lock_per_data_dir(tmp_path: Path) -> None:
    first, second = DataDirLock(tmp_path), DataDirLock(tmp_path)
    first.acquire()
    first.check()
    with pytest.raises(DataDirInUse, match="run one blocktimesd per DATA_DIR"):
        second.acquire()
    first.release()
    first.release()  # idempotent
    second.acquire()
    second.release()


@pytest.mark.parametrize("how", ["removed", "replaced"])
def test_a_lock_file_removed_or_replaced_is_a_lost_lock(tmp_path: Path, how: str) -> None:
    lock = DataDirLock(tmp_path)
    lock.acquire()
    (tmp_path / LOCK_NAME).unlink()
    if how == "replaced":
        (tmp_path / LOCK_NAME).write_text("")
    with pytest.raises(LockLost, match=f"was {how} while this writer held it") as caught:
        lock.check()
    assert caught.value.path == str(tmp_path / LOCK_NAME)
    lock.release()
    with pytest.raises(WriterClosed, match="released its lock"):
        lock.check()


# -- file operations ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "end"),
    [
        (None, 0),
        (b"", 0),
        (b"no newline yet", 0),
        (b'{"a":1}\n', 8),
        (b'{"a":1}\n{"b":', 8),  # a torn last line is cut off
        (b"x" * 70_000 + b"\n" + b"y" * 70_000, 70_001),  # further back than one read
    ],
)
def test_line_end_is_where_the_next_line_goes(
    tmp_path: Path, content: bytes | None, end: int
) -> None:
    path = tmp_path / "c.jsonl"
    if content is not None:
        path.write_bytes(content)
    assert Files().line_end(path) == end


def test_an_append_replaces_a_torn_line_and_a_retry_rewrites_the_same_place(
    tmp_path: Path,
) -> None:
    path = tmp_path / "reconciliation" / "c.jsonl"
    Append(path, b'{"n":1}\n').apply(Files())
    path.write_bytes(path.read_bytes() + b'{"n":')  # a crash mid-append
    append = Append(path, b'{"n":2}\n')
    append.apply(Files())
    append.apply(Files())  # retried after a failure that came after the write
    assert path.read_bytes() == b'{"n":1}\n{"n":2}\n'


def test_makedirs_creates_missing_parents_and_names_a_file_in_the_way(tmp_path: Path) -> None:
    Files().makedirs(tmp_path / "a" / "b" / "c")
    assert (tmp_path / "a" / "b" / "c").is_dir()
    Files().makedirs(tmp_path / "a" / "b" / "c")  # already there
    (tmp_path / "file").write_text("")
    with pytest.raises(FileExistsError) as caught:
        Files().makedirs(tmp_path / "file" / "below")
    assert caught.value.filename == str(tmp_path / "file")


class FailingReplace(Files):
    def replace(self, source: Path, target: Path) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))


def test_publish_replaces_the_old_file_and_leaves_no_temp_file(tmp_path: Path) -> None:
    old = Files().publish(tmp_path, "old.parquet", b"old")
    new = Files().publish(tmp_path, "new.parquet", b"new", old)
    assert sorted(os.listdir(tmp_path)) == ["new.parquet"]
    assert new.read_bytes() == b"new"
    Files().publish(tmp_path, "again.parquet", b"again", old)  # the old one is gone already
    with pytest.raises(OSError, match="No space left"):
        FailingReplace().publish(tmp_path, "lost.parquet", b"lost")
    assert not any(map(is_temp_name, os.listdir(tmp_path)))
    assert not (tmp_path / "lost.parquet").exists()
