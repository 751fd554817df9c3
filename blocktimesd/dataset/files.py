"""The filesystem under ``DATA_DIR``: fsync'd file operations, the lock, storage errors.

Every file the writer creates goes through :class:`Files`, so a file and the directory
entry naming it are durable before the writer counts them written, and tests can make
any one operation fail like a full or read-only disk.  A file is written whole to a
hidden temp name in its final directory (``.part-....parquet.tmp``: the dot hides it
from pyarrow/Spark/Hive, the suffix from DuckDB's ``*.parquet`` glob), fsynced, and
renamed over its final name (:meth:`Files.publish`); the writer then fsyncs the
directory.  Nothing is modified in place, so a reader sees a file whole or not at all,
and a crash leaves at most a temp file, removed at the next start.  :class:`DataDirLock` keeps one
writer per ``DATA_DIR``.  The error builders turn an :class:`OSError` into a
:class:`StorageError` whose message names the path and the fix (``errno`` decides
which); a problem the operator must fix in the configuration (permissions, a file in
the way) is a :class:`DataDirUnusable`, exit code 2.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# pyarrow (about 150 ms to import) is imported by the functions that read or write
# Parquet, so that a command sends its first request before paying for it.
from blocktimesd.dataset.layout import LOCK_NAME, ROWS, new_token, temp_name
from blocktimesd.dataset.objects import DataPath, ObjectPath
from blocktimesd.dataset.records import ReorgRecord, Row
from blocktimesd.dataset.rotation import Batch
from blocktimesd.errors import (
    DataDirInUse,
    DataDirUnusable,
    LockLost,
    StorageError,
    WriterClosed,
)

__all__ = [
    "Append",
    "DataDirLock",
    "Files",
    "WriteFile",
    "error_place",
    "naming",
    "path_error",
    "read_error",
    "storage_error",
]


class Files:
    """Every filesystem operation the writer performs; tests override some to fail."""

    def makedirs(self, path: DataPath) -> None:
        """Create ``path`` and missing parents, fsyncing each parent so they survive."""
        missing: list[DataPath] = []
        while not os.path.isdir(path) and path != path.parent:
            missing.append(path)
            path = path.parent
        for directory in reversed(missing):
            try:
                os.mkdir(directory)
            except FileExistsError:
                if not os.path.isdir(directory):  # a file in the way: name it, not a path below
                    raise
            self.fsync_dir(directory.parent)

    def write_new(self, path: DataPath, data: bytes) -> None:
        """Create ``path`` (it must not exist) with ``data``, fsynced."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            _write_all(fd, data, 0)
            os.fsync(fd)
        finally:
            os.close(fd)

    def write_at(self, path: DataPath, offset: int, data: bytes) -> None:
        """Make ``path`` its first ``offset`` bytes followed by ``data``, fsynced."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            os.ftruncate(fd, offset)
            _write_all(fd, data, offset)
            os.fsync(fd)
        finally:
            os.close(fd)

    def line_end(self, path: DataPath) -> int:
        """Length of ``path`` up to its last newline (0 if missing): where to append."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return 0
        try:
            end = os.fstat(fd).st_size
            while end > 0:
                start = max(0, end - 65536)
                newline = os.pread(fd, end - start, start).rfind(b"\n")
                if newline >= 0:
                    return start + newline + 1
                end = start
            return 0
        finally:
            os.close(fd)

    def replace(self, source: DataPath, target: DataPath) -> None:
        os.replace(source, target)

    def unlink(self, path: DataPath) -> None:
        os.unlink(path)

    def fsync_dir(self, path: DataPath) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def read_table(self, path: DataPath) -> Any:
        import pyarrow.parquet as pq  # type: ignore[import-untyped, unused-ignore]

        with pq.ParquetFile(path) as parquet:
            return parquet.read()

    # Built on the operations above, so a test that fails one fails these too.

    def publish(
        self, directory: DataPath, name: str, data: bytes, old: DataPath | None = None
    ) -> DataPath:
        """Write ``data`` under a temp name and rename it to ``name``, replacing ``old``."""
        temp = self.write_temp(directory, name, data)
        final = directory / name
        if old is not None:
            # Removed first: a block is never in two visible files; a crash before the
            # rename leaves the chain's durable rows a prefix, fetched again at start.
            with contextlib.suppress(FileNotFoundError):  # removed by an earlier attempt
                self.unlink(old)
        try:
            self.replace(temp, final)
        except OSError:
            self.discard(temp)
            raise
        return final

    def write_temp(self, directory: DataPath, name: str, data: bytes) -> DataPath:
        """Write ``data`` to the temp name of ``name`` in ``directory``, fsynced; a
        failed attempt leaves nothing behind (or a temp file removed at the next start)."""
        temp = directory / temp_name(name)
        try:
            self.write_new(temp, data)
        except OSError:
            self.discard(temp)
            raise
        return temp

    def discard(self, temp: DataPath) -> None:
        with contextlib.suppress(OSError):  # hidden from readers; removed at the next start
            self.unlink(temp)


def _write_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


# -- operations: each records its progress, so a retry resumes where it failed -----------


@dataclass(slots=True)
class WriteFile:
    """Write a rolled (or, for a checkpoint, copied) open file as one data file."""

    batch: Batch[Row] | Batch[ReorgRecord]
    data: bytes | None = None
    published: DataPath | None = None  # renamed into place; only the directory fsync remains
    replaces: WriteFile | None = None  # the snapshot of the same open file it supersedes
    checkpoint: bool = False  # a snapshot of a file still open, superseded later

    @property
    def new_rows(self) -> int:
        """Rows this file makes durable that the snapshot it replaces did not."""
        old = self.replaces
        held = len(old.batch.items) if old is not None and old.published is not None else 0
        return len(self.batch.items) - held

    def apply(self, files: Files, data_dir: DataPath, row_group_rows: int) -> None:
        directory = data_dir / self.batch.partition.path
        if self.published is None:
            if self.data is None:
                from blocktimesd.dataset.schema import REORG_SCHEMA, ROW_SCHEMA, encode, to_table

                schema = ROW_SCHEMA if self.batch.partition.dataset == ROWS else REORG_SCHEMA
                self.data = encode(to_table(self.batch.items, schema), row_group_rows)
            files.makedirs(directory)
            old = None if self.replaces is None else self.replaces.published
            name = self.batch.file_name(new_token())
            self.published = files.publish(directory, name, self.data, old)
        files.fsync_dir(directory)


@dataclass(slots=True)
class Append:
    """Append ``line`` to the JSON-lines file ``path``."""

    path: DataPath
    line: bytes
    offset: int | None = None  # where the line goes; a retry rewrites from here

    def apply(self, files: Files) -> None:
        files.makedirs(self.path.parent)
        if self.offset is None:
            self.offset = files.line_end(self.path)  # drops a torn line after a crash
        files.write_at(self.path, self.offset, self.line)
        if self.offset == 0:
            files.fsync_dir(self.path.parent)


# -- the lock ----------------------------------------------------------------------------


class DataDirLock:
    """An exclusive ``flock`` on ``DATA_DIR/.writer.lock``: one writer per DATA_DIR.

    A lock lives on a file, not on a path: if the file is removed or replaced (``rm -rf
    DATA_DIR`` under a running daemon), a second writer can take a new one, so the holder
    checks before every operation that the path still names the file it locked.
    """

    __slots__ = ("_fd", "data_dir", "name", "shard")

    def __init__(self, data_dir: DataPath, *, shard: str | None = None) -> None:
        self.data_dir = data_dir
        self.shard = shard  # a backfill worker of several: its own lock file
        self.name = LOCK_NAME if shard is None else f"{LOCK_NAME}.shard-{shard}"
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock; :class:`DataDirInUse` when another process holds it (for a
        worker of several: when a writer holds the dataset's own lock, too)."""
        if self.shard is not None:
            whole = DataDirLock(self.data_dir)
            whole.acquire()  # checked, not kept: the workers share the dataset
            whole.release()
        fd = os.open(self.data_dir / self.name, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            who = "another process" if self.shard is None else f"another worker {self.shard}"
            raise DataDirInUse(
                f"{who} writes to {self.data_dir}; run one blocktimesd per DATA_DIR "
                "(and each --shard I/N once)"
            ) from None
        self._fd = fd

    def check(self) -> None:
        """Raise :class:`LockLost` unless the lock path still names the file locked."""
        fd = self._fd  # read once: release() may run meanwhile
        if fd is None:
            raise WriterClosed(f"the writer of {self.data_dir} released its lock")
        held = os.fstat(fd)
        path = self.data_dir / self.name
        try:
            now = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            now = None
        if now is not None and (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino):
            return
        raise LockLost(
            f"the lock file {path} was {'removed' if now is None else 'replaced'} while this "
            f"writer held it (was {self.data_dir} deleted or moved?): another blocktimesd may "
            "now write there, so this one stops before writing again. Make sure one "
            f"blocktimesd runs per DATA_DIR, restore {self.data_dir} if it was moved by "
            "mistake, and start the daemon again: it resumes after the last durable block",
            path=str(path),
        )

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the flock
            self._fd = None


# -- storage errors: what failed, and the fix --------------------------------------------

# Errors of the path itself (permissions, a file in the way, a read-only filesystem):
# the operator must fix the configuration, so they end a command with exit code 2.
_PATH_ERRNOS = frozenset(
    {
        errno.EACCES,
        errno.EPERM,
        errno.EROFS,
        errno.ENOTDIR,
        errno.EEXIST,
        errno.EISDIR,
        errno.ENOENT,
        errno.ELOOP,
        errno.ENAMETOOLONG,
    }
)


# S3 answers that no retry mends: the configuration (bucket, credentials) must change.
_S3_UNUSABLE = ("ACCESS_DENIED", "AccessDenied", "NO_SUCH_BUCKET", "NoSuchBucket",
                "INVALID_ACCESS_KEY_ID", "InvalidAccessKeyId", "SIGNATURE_DOES_NOT_MATCH",
                "SignatureDoesNotMatch")  # fmt: skip


def _what(exc: OSError) -> str:
    """What went wrong: the OS's words and errno name, or the object store's message."""
    if exc.errno is None or exc.strerror is None:
        return str(exc)
    return f"{exc.strerror} ({errno.errorcode.get(exc.errno, '?')})"


def _unusable(exc: OSError, data_dir: DataPath) -> bool:
    if isinstance(data_dir, ObjectPath):
        return any(word in str(exc) for word in _S3_UNUSABLE)
    return (exc.errno or 0) in _PATH_ERRNOS


def _fix(code: int, path: str, data_dir: DataPath, access: str) -> str:
    if isinstance(data_dir, ObjectPath):
        return (
            f"check that the bucket {data_dir.bucket} exists, that the credentials (the "
            f"standard AWS settings) may list, read, write and delete objects under "
            f"{data_dir}, and, for an S3-compatible store, AWS_ENDPOINT_URL"
        )
    if code in (errno.ENOSPC, errno.EDQUOT):
        return f"free space (or raise the quota) on the filesystem holding {data_dir}"
    if code in (errno.EACCES, errno.EPERM):
        who = "the daemon's user" if access == "write" else "the user running blocktimesd"
        return f"give {who} {access} permission on {Path(path).parent} and below"
    if code in (errno.ENOTDIR, errno.EEXIST):
        return f"{path} or a parent is not a directory: move it or point DATA_DIR elsewhere"
    if code == errno.EROFS:
        return f"remount the filesystem read-write or point DATA_DIR elsewhere than {data_dir}"
    return f"check the disk and the filesystem holding {data_dir}"


def storage_error(exc: OSError, data_dir: DataPath) -> StorageError:
    """A write of the running writer failed: it keeps the rows and retries."""
    path = exc.filename or str(data_dir)
    code = exc.errno or 0
    return StorageError(
        f"cannot write {path}: {_what(exc)}; "
        f"{_fix(code, path, data_dir, 'write')}. Rows are kept in memory and writing resumes "
        "by itself once fixed; producers wait while the queue is full",
        path=str(path),
        errno=code,
    )


def read_error(exc: OSError, data_dir: DataPath) -> StorageError:
    """The error to raise when reading ``data_dir`` fails with ``exc``: a
    :class:`DataDirUnusable` (exit code 2) for permissions and paths, else a
    :class:`StorageError`; the message names the path and the fix."""
    return path_error(exc, data_dir, "read")


def path_error(
    exc: OSError, data_dir: DataPath, action: str, *, start: bool = False
) -> StorageError:
    """Taking DATA_DIR at start-up (``start``, ``action`` "write") or reading it failed:
    nothing is retried, so the message says what to fix, and a path problem is
    :class:`DataDirUnusable`."""
    path = exc.filename or str(data_dir)
    code = exc.errno or 0
    kind = DataDirUnusable if _unusable(exc, data_dir) else StorageError
    where = f"DATA_DIR {data_dir} cannot be used: " if start else ""
    return kind(
        f"{where}cannot {action} {path}: {_what(exc)}; {_fix(code, path, data_dir, action)}",
        path=str(path),
        errno=code,
    )


def naming(exc: OSError, path: DataPath) -> OSError:
    """``exc`` with ``path`` as its file name: pyarrow's errors carry the errno only."""
    if exc.filename is not None or exc.errno is None:
        return exc
    return OSError(exc.errno, os.strerror(exc.errno), str(path))


def error_place(error: StorageError) -> tuple[int | None, str]:
    """What failed where, to tell a new problem from the same one failing again (temp
    names differ from retry to retry, so the directory stands for the file)."""
    return error.errno, str(Path(error.path or "").parent)
