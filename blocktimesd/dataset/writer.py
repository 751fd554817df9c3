"""The single Parquet writer: the one task that touches files under ``DATA_DIR``.

Producers ``await writer.put(item)`` into a bounded queue; one task takes items in
order.  Rows (:class:`Row`, alone or in lists) and :class:`ReorgRecord`\\ s are buffered
per partition and written a whole file at a time when :class:`Rotator` rolls them;
:class:`Reconciliation` records are appended to ``reconciliation/<chain>.jsonl``;
:class:`DeleteFrom` removes a chain's rows from a block number on (repair after a
reorg deeper than the confirmation depth); :class:`Flush` completes once everything
queued before it is durable.  The layout is in ``docs/schema.md``.

Atomic files.  A file is serialized in memory, written to a hidden temp name in its
final directory (``.part-....parquet.tmp``: the dot hides it from pyarrow/Spark/Hive,
the suffix from DuckDB's ``*.parquet`` glob), fsynced, renamed over its final name and
its directory fsynced.  Nothing is ever modified in place, so a reader sees a file
whole or not at all, and a crash (kill -9, power loss) leaves at most a temp file,
removed at the next start.  A repair writes the rows that survive in a straddling file
to a temp file first, then removes the affected files from the highest block down, and
only then renames the survivor into place, so the visible dataset of a chain stays a
gap-free prefix at every step.

Durability and resume.  Rows are durable once their file is renamed and the directory
fsynced; until then they live in memory, at most ``max_rows`` per chain for at most
``max_minutes``.  With ``checkpoint_s`` set (the daemon: 60 s), an open file of rows is
also written as it stands every ``checkpoint_s`` seconds while it gains rows, each
snapshot replacing the previous one (the old one is removed just before the new one is
renamed into place, so no block is ever in two visible files; a crash between the two
steps leaves a prefix), so rows are durable within about ``checkpoint_s`` while the
files stay as few as ``max_minutes`` makes them.  A stop of any kind loses only the
rows not yet durable, and the daemon resumes from
:func:`last_durable` (the highest block on disk and its hash), fetching the lost rows
again; it must check that the hash is still canonical and send :class:`DeleteFrom` if
not.  Keep ``max_minutes`` inside the nodes' state-pruning window (256 blocks by
default, about 25 minutes of 6-second blocks) or use archive nodes.

Disk full, no permission, read-only filesystem: any :class:`OSError` while writing
stops writing, sets :attr:`ParquetWriter.error` (a :class:`StorageError` naming the
path and the fix) and ``status`` to ``failing``, and reports ``write_failed`` to the
observer.  The operation is retried with backoff until it succeeds; meanwhile the
writer takes nothing more from the queue, so the queue fills and producers wait in
``put`` (backpressure reaches the chain followers, which fall behind and catch up
later).  Each operation is safe to repeat (a failed temp file is removed, a rename
that happened is not redone, a partial JSON line is cut off), so nothing is lost or
duplicated, and files already written are never touched.  The observer hears how many
rows of each chain the writer holds (queued or buffered, not yet durable) and when a
write last succeeded, so a writer that cannot write shows on the metrics and readiness.

One writer per DATA_DIR.  :meth:`ParquetWriter.start` takes an exclusive ``flock`` on
``DATA_DIR/.writer.lock``.  A lock lives on a file, not on a path: if the file is removed
or replaced (``rm -rf DATA_DIR`` under a running daemon), a second writer can take a new
one.  So before every operation the writer checks that the lock path still names the
file it locked, and when it does not, it stops with :class:`LockLost` (fatal) without
writing again.

Start-up and resume.  An error taking DATA_DIR is :class:`DataDirUnusable` (exit code 2:
the operator must fix the path) or :class:`StorageError`.  :func:`last_durable_row` and
:func:`durable_tail` trust a file's name only once its footer agrees (row count,
``block_number`` statistics); a file that cannot be read or disagrees is
:class:`InvalidDataFile`, naming the file and the fix, never a pyarrow traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import errno
import fcntl
import logging
import os
import random
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field, fields
from operator import attrgetter
from pathlib import Path
from typing import Any, Protocol, TypeAlias

import orjson
import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
import pyarrow.compute as pc  # type: ignore[import-untyped, unused-ignore]
import pyarrow.parquet as pq  # type: ignore[import-untyped, unused-ignore]

from blocktimesd.core.backoff import backoff
from blocktimesd.dataset.records import COLUMNS, ReorgRecord, Row
from blocktimesd.dataset.rotation import (
    DAY_MS,
    REORGS,
    ROWS,
    Batch,
    FileSpan,
    RollReason,
    RotationPolicy,
    Rotator,
    check_chain,
    file_name,
    is_temp_name,
    parse_file_name,
    reorg_partition,
    row_partition,
    span_disagreement,
    temp_name,
)
from blocktimesd.errors import (
    BlocktimesError,
    DataDirInUse,
    DataDirUnusable,
    InvalidDataFile,
    LockLost,
    StorageError,
    WriterClosed,
)

__all__ = [
    "REORG_SCHEMA",
    "ROW_SCHEMA",
    "DeleteFrom",
    "Files",
    "Flush",
    "Item",
    "ParquetWriter",
    "Reconciliation",
    "WriterObserver",
    "WriterSettings",
    "WriterStatus",
    "check_data_files",
    "durable_tail",
    "last_durable",
    "last_durable_row",
    "read_error",
]

log = logging.getLogger(__name__)

ROW_SCHEMA = pa.schema(
    [
        pa.field("chain", pa.string(), nullable=False),
        pa.field("block_number", pa.uint32(), nullable=False),
        pa.field("hash", pa.string(), nullable=False),
        pa.field("parent_hash", pa.string(), nullable=False),
        pa.field("timestamp_ms", pa.int64(), nullable=False),
        pa.field("delta_since_parent_ms", pa.int64()),
        pa.field("ingestion_ts_ms", pa.int64(), nullable=False),
        pa.field("contained_store_segment_headers", pa.bool_()),
        pa.field("bundle_count", pa.int32()),
        pa.field("consensus_block_hash", pa.string()),
        pa.field("slot", pa.int64()),
        pa.field("spec_version", pa.int32(), nullable=False),
        pa.field("consensus_block_number", pa.int64()),
    ]
)
REORG_SCHEMA = pa.schema(
    [
        pa.field("chain", pa.string(), nullable=False),
        pa.field("detected_ts_ms", pa.int64(), nullable=False),
        pa.field("depth", pa.int32(), nullable=False),
        pa.field("old_tip_number", pa.uint32(), nullable=False),
        pa.field("old_tip_hash", pa.string(), nullable=False),
        pa.field("new_tip_number", pa.uint32(), nullable=False),
        pa.field("new_tip_hash", pa.string(), nullable=False),
        pa.field("common_ancestor_number", pa.uint32(), nullable=False),
        pa.field("common_ancestor_hash", pa.string(), nullable=False),
        pa.field("beyond_confirmation", pa.bool_(), nullable=False),
    ]
)
if tuple(ROW_SCHEMA.names) != COLUMNS or tuple(REORG_SCHEMA.names) != tuple(
    f.name for f in fields(ReorgRecord)
):  # pragma: no cover - a guard against rows.py and this file drifting apart
    raise RuntimeError("the Arrow schemas no longer match blocktimesd.dataset.records")

_CHAIN, _NUMBER, _TIMESTAMP = (
    attrgetter("chain"),
    attrgetter("block_number"),
    attrgetter("timestamp_ms"),
)
LOCK_NAME = ".writer.lock"  # dot-prefixed: no dataset reader looks at it
_BLOCK_SORTED = [pq.SortingColumn(1)]  # files are sorted by block_number
# Block hashes are unique: a dictionary page for them costs CPU and makes files larger.
_DICTIONARY_NOT_FOR = frozenset(
    {"hash", "parent_hash", "consensus_block_hash", "old_tip_hash", "new_tip_hash"}
)


# -- items -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reconciliation:
    """One record for ``reconciliation/<chain>.jsonl``; ``record`` is anything orjson
    serializes (a dataclass instance, typically).  Serialized here, so a record that
    cannot be written fails in the producer, not in the writer."""

    chain: str
    record: Any
    line: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        check_chain(self.chain)
        object.__setattr__(
            self, "line", orjson.dumps(self.record, option=orjson.OPT_APPEND_NEWLINE)
        )


@dataclass(frozen=True, slots=True)
class DeleteFrom:
    """Remove ``chain``'s rows with ``block_number >= block_number``, buffered and on disk."""

    chain: str
    block_number: int

    def __post_init__(self) -> None:
        check_chain(self.chain)
        if self.block_number < 0:
            raise ValueError(f"cannot delete from block {self.block_number}")


def _new_future() -> asyncio.Future[None]:
    return asyncio.get_running_loop().create_future()


@dataclass(frozen=True, slots=True, eq=False)
class Flush:
    """Await it: done when everything queued before it is durable."""

    done: asyncio.Future[None] = field(default_factory=_new_future)

    def __await__(self) -> Generator[Any, None, None]:
        return self.done.__await__()


Item: TypeAlias = Row | list[Row] | ReorgRecord | Reconciliation | DeleteFrom | Flush


_ITEM_TYPES = (Row, list, ReorgRecord, Reconciliation, DeleteFrom, Flush)


class _Stop:
    """Wakes the writer task when close() is called."""


# -- settings, status, observer ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WriterSettings:
    max_rows: int = 50_000  # rows per file
    max_minutes: float = 10.0  # a file is written at most this long after its first row
    queue_size: int = 1024  # items (a list of rows counts as one)
    row_group_rows: int = 65_536
    poll_interval: float = 1.0  # seconds between checks of open files' age
    # Seconds between snapshots of an open file of rows (None: written only when rolled).
    checkpoint_s: float | None = None
    retry_initial: float = 1.0  # seconds before retrying a failed write; doubles ...
    retry_cap: float = 60.0  # ... up to this

    def __post_init__(self) -> None:
        if self.queue_size < 1 or self.row_group_rows < 1 or self.poll_interval <= 0:
            raise ValueError("queue_size, row_group_rows and poll_interval must be positive")
        if self.checkpoint_s is not None and self.checkpoint_s <= 0:
            raise ValueError("checkpoint_s must be positive (or None)")

    @property
    def policy(self) -> RotationPolicy:
        return RotationPolicy(self.max_rows, self.max_minutes * 60)


class WriterStatus(enum.StrEnum):
    NEW = "new"
    RUNNING = "running"
    FAILING = "failing"  # writes fail (see .error) and are being retried
    CLOSED = "closed"


class WriterObserver(Protocol):
    """Where the writer reports what it does (the metrics layer implements this)."""

    def file_written(self, dataset: str, chain: str, rows: int) -> None: ...

    def rows_deleted(self, chain: str, rows: int) -> None: ...

    def write_failed(self, reason: str) -> None: ...

    def write_recovered(self) -> None: ...

    def queue_length(self, items: int) -> None: ...

    def rows_pending(self, chain: str, rows: int) -> None:
        """``chain`` has ``rows`` rows put and not yet durable (queued or buffered)."""

    def rows_checkpointed(self, chain: str, rows: int) -> None:
        """A snapshot of an open file made ``rows`` more rows of ``chain`` durable."""

    def write_succeeded(self) -> None:
        """DATA_DIR was taken, or an operation completed: the writer can write."""


class _NullObserver:
    def file_written(self, dataset: str, chain: str, rows: int) -> None:
        pass

    def rows_deleted(self, chain: str, rows: int) -> None:
        pass

    def write_failed(self, reason: str) -> None:
        pass

    def write_recovered(self) -> None:
        pass

    def queue_length(self, items: int) -> None:
        pass

    def rows_pending(self, chain: str, rows: int) -> None:
        pass

    def rows_checkpointed(self, chain: str, rows: int) -> None:
        pass

    def write_succeeded(self) -> None:
        pass


# -- the filesystem, tables, files -------------------------------------------------------


class Files:
    """Every filesystem operation the writer performs; tests override some to fail."""

    def makedirs(self, path: Path) -> None:
        """Create ``path`` and missing parents, fsyncing each parent so they survive."""
        missing: list[Path] = []
        while not path.is_dir() and path != path.parent:
            missing.append(path)
            path = path.parent
        for directory in reversed(missing):
            try:
                os.mkdir(directory)
            except FileExistsError:
                if not directory.is_dir():  # a file in the way: name it, not a path below
                    raise
            self.fsync_dir(directory.parent)

    def write_new(self, path: Path, data: bytes) -> None:
        """Create ``path`` (it must not exist) with ``data``, fsynced."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            _write_all(fd, data, 0)
            os.fsync(fd)
        finally:
            os.close(fd)

    def write_at(self, path: Path, offset: int, data: bytes) -> None:
        """Make ``path`` its first ``offset`` bytes followed by ``data``, fsynced."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            os.ftruncate(fd, offset)
            _write_all(fd, data, offset)
            os.fsync(fd)
        finally:
            os.close(fd)

    def line_end(self, path: Path) -> int:
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

    def replace(self, source: Path, target: Path) -> None:
        os.replace(source, target)

    def unlink(self, path: Path) -> None:
        os.unlink(path)

    def fsync_dir(self, path: Path) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def listdir(self, path: Path) -> list[str]:
        try:
            return sorted(os.listdir(path))
        except FileNotFoundError:
            return []

    def read_table(self, path: Path) -> Any:
        with pq.ParquetFile(path) as parquet:
            return parquet.read()


def _write_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def _table(items: Sequence[Any], schema: Any) -> Any:
    if not items:
        return schema.empty_table()
    if isinstance(items[0], tuple):  # rows: transpose them
        columns: Any = zip(*items, strict=True)
    else:
        columns = (list(map(attrgetter(f.name), items)) for f in schema)
    arrays = [pa.array(column, type=f.type) for column, f in zip(columns, schema, strict=True)]
    return pa.Table.from_arrays(arrays, schema=schema)


def _encode(table: Any, row_group_rows: int) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(
        table,
        sink,
        row_group_size=row_group_rows,
        compression="zstd",
        use_dictionary=[name for name in table.schema.names if name not in _DICTIONARY_NOT_FOR],
        sorting_columns=_BLOCK_SORTED if "block_number" in table.schema.names else None,
    )
    data: bytes = sink.getvalue().to_pybytes()
    return data


def _token() -> str:
    return uuid.uuid4().hex[:8]


def _chain_dirs(data_dir: Path, files: Files, chain: str) -> list[Path]:
    """The date directories of ``chain``'s rows."""
    base = data_dir / ROWS / f"chain={chain}"
    return [base / name for name in files.listdir(base) if name.startswith("date=")]


def last_durable(data_dir: Path | str, chain: str) -> tuple[int, str] | None:
    """The highest block of ``chain`` on disk and its hash, or None with no rows."""
    row = last_durable_row(data_dir, chain)
    return None if row is None else (row.block_number, row.hash)


def last_durable_row(data_dir: Path | str, chain: str) -> Row | None:
    """The row of ``chain`` with the highest block number on disk, or None.

    File names give the candidate file; its footer must agree with its name (else
    :class:`InvalidDataFile`), and only its last row group is read.  Temp files and
    strangers are ignored.  A filesystem error is a :class:`StorageError`
    (:class:`DataDirUnusable` for permissions and paths).
    """
    data_dir = Path(data_dir)
    spans = _data_files(data_dir, check_chain(chain))
    if not spans:
        return None
    span, path = max(spans, key=lambda found: found[0].last)
    check_data_files([path], data_dir)
    with _reading(path, data_dir), pq.ParquetFile(path) as parquet:
        table = parquet.read_row_group(parquet.metadata.num_row_groups - 1)
        if pc.max(table["block_number"]).as_py() != span.last:  # not sorted: read it all
            table = parquet.read()
    at = pc.index(table["block_number"], span.last).as_py()
    return Row(*(table[name][at].as_py() for name in COLUMNS))


def durable_tail(data_dir: Path | str, chain: str, count: int) -> list[Row]:
    """Up to ``count`` rows of ``chain`` with the highest block numbers, ascending.

    Read from the files with the highest block numbers only, each checked as in
    :func:`last_durable_row`; used on resume to find where the dataset and the node's
    canonical chain last agree.
    """
    data_dir = Path(data_dir)
    rows: list[Row] = []
    files = _data_files(data_dir, check_chain(chain))
    for _, path in sorted(files, key=lambda found: found[0].last, reverse=True):
        check_data_files([path], data_dir)
        with _reading(path, data_dir):
            table = pq.read_table(path, partitioning=None)
        rows.extend(
            Row(*values) for values in zip(*(table[c].to_pylist() for c in COLUMNS), strict=True)
        )
        if len(rows) >= count:
            break
    rows.sort(key=lambda row: row.block_number)
    return rows[-count:]


def _data_files(data_dir: Path, chain: str) -> list[tuple[FileSpan, Path]]:
    """``chain``'s data files, by the spans their names give (unchecked)."""
    files = Files()
    found: list[tuple[FileSpan, Path]] = []
    try:
        for directory in _chain_dirs(data_dir, files, chain):
            for name in files.listdir(directory):
                span = parse_file_name(name)
                if span is not None:
                    found.append((span, directory / name))
    except OSError as exc:
        raise _path_error(exc, data_dir, "read") from exc
    return found


def check_data_files(paths: Sequence[Path], data_dir: Path) -> None:
    """Check that each data file can be read and that its footer agrees with its name.

    Only the footers are read (row count, ``block_number`` statistics).  Every file that
    cannot be trusted is named in one :class:`InvalidDataFile`; a filesystem error (no
    permission, ...) raises a :class:`StorageError` at once.
    """
    bad: list[tuple[Path, str]] = []
    for path in paths:
        try:
            problem = _inspect_data_file(path)
        except OSError as exc:
            raise _path_error(_naming(exc, path), data_dir, "read") from exc
        if problem is not None:
            bad.append((path, problem))
    if bad:
        raise _invalid_files(bad, data_dir)


def _inspect_data_file(path: Path) -> str | None:
    """Why the data file ``path`` cannot be trusted, or None.

    Raises :class:`OSError` (with an errno) when the filesystem fails; a file that is
    not Parquet, is truncated or disagrees with its name is a problem, not an error.
    """
    span = parse_file_name(path.name)
    if span is None:
        return "its name is not part-<first>-<last>-<token>.parquet (the daemon ignores it)"
    try:
        meta = pq.read_metadata(path)
        names = meta.schema.names
        if "block_number" not in names:
            return "it has no block_number column"
        first, last = _block_range(path, meta, names.index("block_number"))
    except OSError as exc:
        if exc.errno is not None:
            raise
        return f"it cannot be read as Parquet ({exc})"  # pyarrow's own IOError
    except (pa.ArrowException, ValueError) as exc:
        return f"it cannot be read as Parquet ({exc})"
    return span_disagreement(span, meta.num_rows, first, last)


def _block_range(path: Path, meta: Any, column: int) -> tuple[int | None, int | None]:
    """The lowest and highest block_number: from the statistics, else from the column."""
    lows: list[int] = []
    highs: list[int] = []
    for index in range(meta.num_row_groups):
        group = meta.row_group(index)
        if group.num_rows == 0:
            continue
        stats = group.column(column).statistics
        if stats is None or not stats.has_min_max:
            numbers = pq.read_table(path, columns=["block_number"])["block_number"]
            low, high = pc.min(numbers).as_py(), pc.max(numbers).as_py()
            return low, high
        lows.append(stats.min)
        highs.append(stats.max)
    return (min(lows), max(highs)) if lows else (None, None)


def _invalid_files(bad: Sequence[tuple[Path, str]], data_dir: Path) -> InvalidDataFile:
    shown = "; ".join(f"{path}: {problem}" for path, problem in bad[:10])
    more = f" (and {len(bad) - 10} more)" if len(bad) > 10 else ""
    which, it = ("this file", "it") if len(bad) == 1 else (f"these {len(bad)} files", "them")
    return InvalidDataFile(
        f"cannot trust {which} in {data_dir}: {shown}{more}. Move {it} out of {data_dir} "
        f"(or delete {it}), then run "
        "`blocktimesd validate`: the daemon fetches the blocks after the last durable one "
        "again, and `blocktimesd backfill` fills any other gap left",
        path=str(bad[0][0]),
    )


@contextlib.contextmanager
def _reading(path: Path, data_dir: Path) -> Iterator[None]:
    """Turn the errors of reading a data file into :class:`StorageError`\\ s."""
    try:
        yield
    except OSError as exc:
        if exc.errno is None:
            raise _invalid_files([(path, f"it cannot be read ({exc})")], data_dir) from exc
        raise _path_error(_naming(exc, path), data_dir, "read") from exc
    except (pa.ArrowException, ValueError) as exc:
        raise _invalid_files([(path, f"it cannot be read ({exc})")], data_dir) from exc


def _naming(exc: OSError, path: Path) -> OSError:
    """``exc`` with ``path`` as its file name: pyarrow's errors carry the errno only."""
    if exc.filename is not None or exc.errno is None:
        return exc
    return OSError(exc.errno, os.strerror(exc.errno), str(path))


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


def _fix(code: int, path: str, data_dir: Path, access: str) -> str:
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


def _storage_error(exc: OSError, data_dir: Path) -> StorageError:
    """A write of the running writer failed: it keeps the rows and retries."""
    path = exc.filename or str(data_dir)
    code = exc.errno or 0
    return StorageError(
        f"cannot write {path}: {exc.strerror} ({errno.errorcode.get(code, '?')}); "
        f"{_fix(code, path, data_dir, 'write')}. Rows are kept in memory and writing resumes "
        "by itself once fixed; producers wait while the queue is full",
        path=str(path),
        errno=code,
    )


def read_error(exc: OSError, data_dir: Path) -> StorageError:
    """The error to raise when reading ``data_dir`` fails with ``exc``: a
    :class:`DataDirUnusable` (exit code 2) for permissions and paths, else a
    :class:`StorageError`; the message names the path and the fix."""
    return _path_error(exc, data_dir, "read")


def _path_error(exc: OSError, data_dir: Path, action: str, *, start: bool = False) -> StorageError:
    """Taking DATA_DIR at start-up (``start``, ``action`` "write") or reading it failed:
    nothing is retried, so the message says what to fix, and a path problem is
    :class:`DataDirUnusable`."""
    path = exc.filename or str(data_dir)
    code = exc.errno or 0
    kind = DataDirUnusable if code in _PATH_ERRNOS else StorageError
    where = f"DATA_DIR {data_dir} cannot be used: " if start else ""
    return kind(
        f"{where}cannot {action} {path}: {exc.strerror} ({errno.errorcode.get(code, '?')}); "
        f"{_fix(code, path, data_dir, action)}",
        path=str(path),
        errno=code,
    )


# -- operations: each is safe to repeat after a failure ----------------------------------


@dataclass(slots=True)
class _WriteFile:
    batch: Batch[Row] | Batch[ReorgRecord]
    data: bytes | None = None
    published: Path | None = None  # renamed into place; only the directory fsync remains
    replaces: _WriteFile | None = None  # the snapshot of the same open file it supersedes
    checkpoint: bool = False  # a snapshot of a file still open, superseded later

    @property
    def new_rows(self) -> int:
        """Rows this file makes durable that the snapshot it replaces did not."""
        old = self.replaces
        held = len(old.batch.items) if old is not None and old.published is not None else 0
        return len(self.batch.items) - held


@dataclass(slots=True)
class _Append:
    path: Path
    line: bytes
    offset: int | None = None  # where the line goes; a retry rewrites from here


@dataclass(slots=True)
class _Delete:
    chain: str
    number: int
    buffered: int  # rows dropped from memory, for the report
    victims: list[Path] | None = None  # files to remove, highest blocks first
    survivors: list[tuple[Path, Path]] = field(default_factory=list)  # (temp, final)
    rows: int = 0  # rows removed from disk


@dataclass(slots=True)
class _Resolve:
    flush: Flush


_Op: TypeAlias = _WriteFile | _Append | _Delete | _Resolve


# -- the writer --------------------------------------------------------------------------


class ParquetWriter:
    """The single writer of ``data_dir``: ``start()``, ``put()`` items, ``close()``."""

    def __init__(
        self,
        data_dir: Path | str,
        settings: WriterSettings | None = None,
        *,
        observer: WriterObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
        files: Files | None = None,
        logger: logging.Logger | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.settings = settings or WriterSettings()
        self._observer: WriterObserver = observer or _NullObserver()
        self._clock = clock
        self._files = files or Files()
        self._log = logger or log
        self._rng = rng or random.Random()
        # Bounded: when full, put() waits, so producers slow to the disk's pace, and to a
        # halt while writes fail.  In memory: this many items plus the open files.
        self._queue: asyncio.Queue[Item | _Stop] = asyncio.Queue(self.settings.queue_size)
        self._rows: Rotator[Row] = Rotator(self.settings.policy)
        self._reorgs: Rotator[ReorgRecord] = Rotator(self.settings.policy)
        self._ops: deque[_Op] = deque()  # operations due, in order; the head may be retrying
        self._task: asyncio.Task[None] | None = None
        self._lock_fd: int | None = None
        self._stopping = False  # no more intake; the task drains and ends
        self._close_started = False
        self._closed = asyncio.Event()
        self._failing_since: float | None = None
        # Rows of each chain put and not yet durable (queued, buffered or being written).
        self._pending: dict[str, int] = {}
        # The last snapshot of each open file of rows, by (dataset, chain), and when it
        # was taken; the file's next snapshot or final write replaces it.
        self._snapshots: dict[tuple[str, str], tuple[_WriteFile, float]] = {}
        self.status = WriterStatus.NEW
        self.error: StorageError | None = None  # the current write failure, if any

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Take DATA_DIR's lock, remove temp files left by a crash, start the task."""
        if self._task is not None:
            return
        await asyncio.to_thread(self._prepare)
        self.status = WriterStatus.RUNNING
        self._observer.write_succeeded()  # it created DATA_DIR's lock: it can write
        self._task = asyncio.create_task(self._run(), name="parquet-writer")
        self._task.add_done_callback(self._on_done)

    async def close(self, timeout: float = 30.0) -> None:
        """Stop intake, drain the queue, write every open file; give up after ``timeout``.

        Idempotent.  Rows still in memory when time runs out are logged and dropped (the
        next start fetches them again).  Raises the writer's fatal error, if it had one.
        """
        if self._close_started:
            await self._closed.wait()
            return
        self._close_started = self._stopping = True
        task = self._task
        try:
            if task is not None:
                # When full, the task is busy rather than waiting; it sees _stopping anyway.
                with contextlib.suppress(asyncio.QueueFull):
                    self._queue.put_nowait(_Stop())
                done, _ = await asyncio.wait({task}, timeout=timeout)
                if not done:
                    self._give_up(f"{timeout:g} s shutdown deadline passed")
                    task.cancel()
                    await asyncio.wait({task})
        except asyncio.CancelledError:
            if task is not None:
                task.cancel()
            raise
        finally:
            self._abandon_queue()
            self._release_lock()
            self.status = WriterStatus.CLOSED
            self._closed.set()
        if task is not None and not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]

    async def join(self) -> None:
        """Wait until the writer task ends; raise its fatal error (for the app's TaskGroup)."""
        if self._task is not None:
            await asyncio.shield(self._task)

    async def __aenter__(self) -> ParquetWriter:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- intake --------------------------------------------------------------------------

    async def put(self, item: Item) -> None:
        """Queue one item, waiting while the queue is full."""
        if not isinstance(item, _ITEM_TYPES):
            raise TypeError(f"the writer does not take {type(item).__name__}")
        if self._stopping or self._task is None or self._task.done():
            raise WriterClosed(f"the writer of {self.data_dir} is {self.status}")
        await self._queue.put(item)
        if isinstance(item, Row):
            self._count_pending(item.chain, 1)
        elif isinstance(item, list) and item:
            if item[0].chain == item[-1].chain and len(set(map(_CHAIN, item))) == 1:
                self._count_pending(item[0].chain, len(item))
            else:
                for chain, rows in Counter(map(_CHAIN, item)).items():
                    self._count_pending(chain, rows)

    async def flush(self) -> None:
        """Return once everything put before this call is durable."""
        request = Flush()
        await self.put(request)
        await request

    async def delete_from(self, chain: str, block_number: int) -> None:
        await self.put(DeleteFrom(chain, block_number))

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    @property
    def pending_rows(self) -> dict[str, int]:
        """Rows of each chain put and not yet durable: queued, buffered or being written."""
        return dict(self._pending)

    def _count_pending(self, chain: str, rows: int) -> None:
        self._pending[chain] = held = self._pending.get(chain, 0) + rows
        self._observer.rows_pending(chain, held)

    @property
    def buffered_rows(self) -> int:
        """Rows in memory, not yet in a file (open files and files waiting to be written)."""
        return self._rows.buffered + sum(
            len(op.batch.items)
            for op in self._ops
            if isinstance(op, _WriteFile) and op.batch.partition.dataset == ROWS
        )

    # -- the task ------------------------------------------------------------------------

    async def _run(self) -> None:
        delays: Iterator[float] | None = None
        while True:
            if self._ops:
                try:
                    await self._apply_ops()
                except OSError as exc:
                    if delays is None:
                        s = self.settings
                        delays = backoff(s.retry_initial, 2.0, s.retry_cap, self._rng)
                        next(delays)  # its first delay is 0: an immediate retry
                    self._failed(exc)
                    await asyncio.sleep(next(delays))
                    continue
                if delays is not None:
                    delays = None
                    self._recovered()
            elif self._stopping and self._queue.empty():
                self._schedule(RollReason.SHUTDOWN)
                if not self._ops:
                    return
            else:
                item = await self._next_item()
                now = self._clock()
                if item is not None:
                    self._handle(item, now)
                self._write(self._rows.due(now))
                self._ops.extend(map(_WriteFile, self._reorgs.due(now)))
                self._checkpoint(now)

    async def _next_item(self) -> Item | None:
        if self._queue.empty():
            timeout = self.settings.poll_interval
            deadlines = [self._rows.next_deadline(), self._reorgs.next_deadline()]
            if due := [d for d in deadlines if d is not None]:
                timeout = min(timeout, max(0.0, min(due) - self._clock()))
            try:
                async with asyncio.timeout(timeout):
                    item = await self._queue.get()
            except TimeoutError:
                return None
        else:
            item = self._queue.get_nowait()
        self._observer.queue_length(self._queue.qsize())
        return None if isinstance(item, _Stop) else item

    def _handle(self, item: Item, now: float) -> None:
        if isinstance(item, Row):
            self._add_rows((item,), now)
        elif isinstance(item, list):
            self._add_rows(item, now)
        elif isinstance(item, ReorgRecord):
            batches = self._reorgs.add(reorg_partition(item), item.new_tip_number, item, now)
            self._ops.extend(map(_WriteFile, batches))
        elif isinstance(item, Reconciliation):
            path = self.data_dir / "reconciliation" / f"{item.chain}.jsonl"
            self._ops.append(_Append(path, item.line))
        elif isinstance(item, DeleteFrom):
            if any(chain == item.chain for _, chain in self._snapshots):
                # Its open file is partly on disk: write it whole first, so that the
                # repair below sees every row in one place.
                self._schedule(RollReason.FLUSH)
            dropped = self._rows.discard_from(ROWS, item.chain, item.block_number)
            if dropped:
                self._count_pending(item.chain, -dropped)
            self._ops.append(_Delete(item.chain, item.block_number, dropped))
        elif isinstance(item, Flush):
            self._schedule(RollReason.FLUSH)
            self._ops.append(_Resolve(item))

    def _add_rows(self, rows: Sequence[Row], now: float) -> None:
        """Buffer rows, a run of the same chain and UTC day at a time (the hot path)."""
        if not rows:
            return
        stamps = list(map(_TIMESTAMP, rows))
        if min(stamps) // DAY_MS == max(stamps) // DAY_MS and len(set(map(_CHAIN, rows))) == 1:
            self._add_run(rows, now)  # the usual case, without a loop in Python
            return
        start, key = 0, None
        for at, row in enumerate(rows):
            here = (row.chain, row.timestamp_ms // DAY_MS)
            if here != key:
                if key is not None:
                    self._add_run(rows[start:at], now)
                start, key = at, here
        if key is not None:
            self._add_run(rows[start:], now)

    def _add_run(self, rows: Sequence[Row], now: float) -> None:
        partition = row_partition(rows[0])
        batches = self._rows.extend(
            partition, list(zip(map(_NUMBER, rows), rows, strict=True)), now
        )
        self._write(batches)

    def _write(self, batches: Sequence[Batch[Row]]) -> None:
        """Write rolled files of rows, each replacing its open file's last snapshot."""
        for batch in batches:
            key = (batch.partition.dataset, batch.partition.chain)
            snapshot = self._snapshots.pop(key, None)
            self._ops.append(_WriteFile(batch, replaces=None if snapshot is None else snapshot[0]))

    def _checkpoint(self, now: float) -> None:
        """Snapshot every open file of rows that gained rows ``checkpoint_s`` ago or more."""
        every = self.settings.checkpoint_s
        if every is None:
            return
        for key, opened_at, count in self._rows.open_files():
            last = self._snapshots.get(key)
            since = opened_at if last is None else last[1]
            if now - since < every:
                continue
            if last is not None and len(last[0].batch.items) == count:
                continue  # nothing new since the last snapshot
            batch = self._rows.copy(key, RollReason.FLUSH)
            op = _WriteFile(batch, replaces=None if last is None else last[0], checkpoint=True)
            self._snapshots[key] = (op, now)
            self._ops.append(op)

    def _schedule(self, reason: RollReason) -> None:
        self._write(self._rows.roll_all(reason))
        self._ops.extend(map(_WriteFile, self._reorgs.roll_all(reason)))

    async def _apply_ops(self) -> None:
        while self._ops:
            op = self._ops[0]
            if isinstance(op, _Resolve):
                if not op.flush.done.done():
                    op.flush.done.set_result(None)
            else:
                # Serializing and fsyncing block; a thread keeps the event loop responsive.
                await asyncio.to_thread(self._apply, op)
                self._report(op)
                self._observer.write_succeeded()
            self._ops.popleft()

    # -- operations (in a worker thread) -------------------------------------------------

    def _apply(self, op: _WriteFile | _Append | _Delete) -> None:
        self._check_lock()
        if isinstance(op, _WriteFile):
            self._write_file(op)
        elif isinstance(op, _Append):
            self._files.makedirs(op.path.parent)
            if op.offset is None:
                op.offset = self._files.line_end(op.path)  # drops a torn line after a crash
            self._files.write_at(op.path, op.offset, op.line)
            if op.offset == 0:
                self._files.fsync_dir(op.path.parent)
        else:
            self._delete(op)

    def _write_file(self, op: _WriteFile) -> None:
        directory = self.data_dir / op.batch.partition.path
        if op.published is None:
            if op.data is None:
                schema = ROW_SCHEMA if op.batch.partition.dataset == ROWS else REORG_SCHEMA
                op.data = _encode(_table(op.batch.items, schema), self.settings.row_group_rows)
            self._files.makedirs(directory)
            old = None if op.replaces is None else op.replaces.published
            op.published = self._publish(directory, op.batch.file_name(_token()), op.data, old)
        self._files.fsync_dir(directory)

    def _publish(self, directory: Path, name: str, data: bytes, old: Path | None = None) -> Path:
        """Write ``data`` under a temp name and rename it to ``name``, replacing ``old``."""
        temp = self._write_temp(directory, name, data)
        final = directory / name
        if old is not None:
            # Removed first: a block is never in two visible files; a crash before the
            # rename leaves the chain's durable rows a prefix, fetched again at start.
            with contextlib.suppress(FileNotFoundError):  # removed by an earlier attempt
                self._files.unlink(old)
        try:
            self._files.replace(temp, final)
        except OSError:
            self._discard(temp)
            raise
        return final

    def _write_temp(self, directory: Path, name: str, data: bytes) -> Path:
        temp = directory / temp_name(name)
        try:
            self._files.write_new(temp, data)
        except OSError:
            self._discard(temp)
            raise
        return temp

    def _discard(self, temp: Path) -> None:
        with contextlib.suppress(OSError):  # hidden from readers; removed at the next start
            self._files.unlink(temp)

    def _delete(self, op: _Delete) -> None:
        if op.victims is None:
            self._plan_delete(op)
        assert op.victims is not None
        # Highest blocks first, so that after a crash what remains is a prefix.
        for path in op.victims:
            with contextlib.suppress(FileNotFoundError):  # removed by an earlier attempt
                self._files.unlink(path)
        for directory in {path.parent for path in op.victims}:
            self._files.fsync_dir(directory)
        while op.survivors:
            temp, target = op.survivors[0]
            self._files.replace(temp, target)
            self._files.fsync_dir(target.parent)
            op.survivors.pop(0)

    def _plan_delete(self, op: _Delete) -> None:
        """Find the files to remove and write the survivors of a straddling file to temp
        files first: when the disk is full this fails while the dataset is intact."""
        victims: list[tuple[int, Path]] = []
        survivors: list[tuple[Path, Path]] = []
        rows = 0
        try:
            for directory in _chain_dirs(self.data_dir, self._files, op.chain):
                for name in self._files.listdir(directory):
                    span = parse_file_name(name)
                    if span is None or span.last < op.number:
                        continue
                    path = directory / name
                    victims.append((span.first, path))
                    # A file that cannot be trusted stops the repair (fatal) before any
                    # file is removed; a filesystem error is retried like any write.
                    if (problem := _inspect_data_file(path)) is not None:
                        raise _invalid_files([(path, problem)], self.data_dir)
                    try:
                        table = self._files.read_table(path)
                    except OSError as exc:
                        if exc.errno is not None:
                            raise
                        raise _invalid_files([(path, str(exc))], self.data_dir) from exc
                    except (pa.ArrowException, ValueError) as exc:
                        raise _invalid_files([(path, str(exc))], self.data_dir) from exc
                    kept = table.filter(pc.less(table["block_number"], op.number))
                    rows += table.num_rows - kept.num_rows
                    if kept.num_rows:
                        numbers = kept["block_number"]
                        first, last = pc.min(numbers).as_py(), pc.max(numbers).as_py()
                        target = directory / file_name(first, last, _token())
                        data = _encode(kept.cast(ROW_SCHEMA), self.settings.row_group_rows)
                        temp = self._write_temp(directory, target.name, data)
                        survivors.append((temp, target))
        except BaseException:
            for temp, _ in survivors:
                self._discard(temp)
            raise
        victims.sort(reverse=True)
        op.victims, op.survivors, op.rows = [path for _, path in victims], survivors, rows

    # -- bookkeeping (on the event loop) -------------------------------------------------

    def _report(self, op: _WriteFile | _Append | _Delete) -> None:
        if isinstance(op, _WriteFile):
            part, rows, new = op.batch.partition, len(op.batch.items), op.new_rows
            if part.dataset == ROWS:
                self._count_pending(part.chain, -new)
            if op.checkpoint:
                self._observer.rows_checkpointed(part.chain, new)
                self._log.debug(
                    "%s: wrote %s, the open file so far (%d rows, blocks %d-%d)",
                    part.chain, op.published, rows, op.batch.first, op.batch.last,
                )  # fmt: skip
                return
            self._observer.file_written(part.dataset, part.chain, new)
            self._log.info(
                "%s: wrote %s (%d rows, blocks %d-%d, %s)",
                part.chain, op.published, rows, op.batch.first, op.batch.last, op.batch.reason,
            )  # fmt: skip
        elif isinstance(op, _Delete):
            self._observer.rows_deleted(op.chain, op.rows + op.buffered)
            self._log.info(
                "%s: removed rows from block %d on: %d in %d files, %d in memory",
                op.chain, op.number, op.rows, len(op.victims or ()), op.buffered,
            )  # fmt: skip

    def _failed(self, exc: OSError) -> None:
        error = _storage_error(exc, self.data_dir)
        # One ERROR line per distinct problem (temp names differ from retry to retry).
        if self.error is None or _where(self.error) != _where(error):
            self._log.error("%s", error)
        else:
            self._log.debug("still failing: %s", error)
        if self._failing_since is None:
            self._failing_since = self._clock()
        self.error = error
        self.status = WriterStatus.FAILING
        self._observer.write_failed(str(error))

    def _recovered(self) -> None:
        since = self._failing_since if self._failing_since is not None else self._clock()
        self._log.info("writing to %s again after %.0f s", self.data_dir, self._clock() - since)
        self._failing_since = None
        self.error = None
        self.status = WriterStatus.RUNNING
        self._observer.write_recovered()

    def _give_up(self, why: str) -> None:
        self._log.error(
            "writer: %s with %d rows not yet in files (%s); the next start fetches them "
            "again from the last durable block",
            why, self.buffered_rows, self.error or "no write error",
        )  # fmt: skip

    def _on_done(self, task: asyncio.Task[None]) -> None:
        self._stopping = True
        if not task.cancelled() and (exc := task.exception()) is not None:
            self._log.critical(
                "writer stopped: %s; %d rows not yet in files are not written (the next "
                "start fetches them again from the last durable block)",
                exc if isinstance(exc, BlocktimesError) else repr(exc),
                sum(self._pending.values()),
            )
        self._abandon_queue()

    def _abandon_queue(self) -> None:
        """Fail pending flushes so nobody waits forever on a writer that has stopped."""
        closed = WriterClosed(f"the writer of {self.data_dir} stopped")
        pending = [op.flush for op in self._ops if isinstance(op, _Resolve)]
        rows = 0
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if isinstance(item, Flush):
                pending.append(item)
            elif isinstance(item, Row | list):
                rows += 1 if isinstance(item, Row) else len(item)
        if rows:
            self._log.warning("writer: %d rows left in the queue were not written", rows)
        for request in pending:
            if not request.done.done():
                request.done.set_exception(closed)

    # -- start-up (in a worker thread) ---------------------------------------------------

    def _prepare(self) -> None:
        try:
            self._files.makedirs(self.data_dir)
            self._lock()
            removed = 0
            for dataset in (ROWS, REORGS):
                for directory, _, names in os.walk(self.data_dir / dataset):
                    for name in filter(is_temp_name, names):
                        self._files.unlink(Path(directory, name))
                        removed += 1
        except OSError as exc:
            self._release_lock()
            raise _path_error(exc, self.data_dir, "write", start=True) from exc
        if removed:
            self._log.info(
                "removed %d temp files left in %s by an interrupted write", removed, self.data_dir
            )

    def _lock(self) -> None:
        fd = os.open(self.data_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DataDirInUse(
                f"another process writes to {self.data_dir}; run one blocktimesd per DATA_DIR"
            ) from None
        self._lock_fd = fd

    def _check_lock(self) -> None:
        """Raise :class:`LockLost` unless the lock path still names the file locked at start."""
        fd = self._lock_fd  # read once: close() may release it meanwhile
        if fd is None:
            raise WriterClosed(f"the writer of {self.data_dir} released its lock")
        held = os.fstat(fd)
        path = self.data_dir / LOCK_NAME
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

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing releases the flock
            self._lock_fd = None


def _where(error: StorageError) -> tuple[int | None, str]:
    return error.errno, str(Path(error.path or "").parent)
