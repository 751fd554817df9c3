"""Reading ``DATA_DIR``: the one walk of its directories and what a data file is.

A *data file* is a file named ``*.parquet`` in ``block_times/chain=<c>/date=<d>/``:
exactly what a DuckDB glob over the dataset reads.  One whose name parses as
``part-<first>-<last>-<token>.parquet`` (:func:`~blocktimesd.dataset.layout.parse_file_name`)
is the writer's, and is trusted once its footer agrees with its name (row count,
``block_number`` statistics); any other (a stranger) is ignored by the daemon and
refused by ``report`` and ``validate``, which would otherwise read it.  Temp files
(``.part-....parquet.tmp``) are not data files.

Everything that needs the files on disk asks here: the daemon on resume
(:func:`last_durable_row`, :func:`durable_tail`), the backfill (:func:`durable_runs`),
``report`` and ``validate`` (:func:`dataset_chains`, :func:`dataset_files`,
:func:`check_files`), the writer for its repairs (:func:`chain_files`) and its start-up
clean-up (:func:`temp_files`).  A file that cannot be read or disagrees with its name
is :class:`InvalidDataFile`, naming the file and the fix, never a pyarrow traceback; a
filesystem error is a :class:`StorageError` (:class:`DataDirUnusable` for permissions
and paths).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

# pyarrow (about 150 ms to import) is imported by the functions that read or write
# Parquet, so that a command sends its first request before paying for it.
from blocktimesd.core.ranges import Span, merge, runs
from blocktimesd.dataset.files import naming, read_error
from blocktimesd.dataset.layout import (
    REORGS,
    ROWS,
    FileSpan,
    check_chain,
    is_temp_name,
    parse_file_name,
    span_disagreement,
)
from blocktimesd.dataset.objects import DataPath, ObjectPath, as_data_path, filesystem
from blocktimesd.dataset.records import COLUMNS, Row
from blocktimesd.errors import ConfigError, InvalidDataFile

__all__ = [
    "DataFile",
    "chain_files",
    "check_data_files",
    "check_files",
    "dataset_chains",
    "dataset_files",
    "durable_runs",
    "durable_tail",
    "inspect_data_file",
    "invalid_files",
    "last_durable_row",
    "temp_files",
]


# -- the walk ----------------------------------------------------------------------------


class DataFile(NamedTuple):
    """A data file of a chain, with what its name says (None: not the writer's name)."""

    path: DataPath
    span: FileSpan | None


def chain_files(data_dir: DataPath, chain: str) -> list[DataFile]:
    """Every data file of ``chain``, by date and then name (so by block number).

    A missing directory holds nothing; any other :class:`OSError` is raised as it is
    (the writer retries it, readers turn it into a :class:`StorageError`).
    """
    base = data_dir / ROWS / f"chain={chain}"
    return [
        DataFile(path, parse_file_name(name))
        for date_name, date_path, is_dir in _listing(base)
        if date_name.startswith("date=") and is_dir
        for name, path, _ in _listing(date_path)
        if name.endswith(".parquet")
    ]


def _listing(directory: DataPath) -> list[tuple[str, DataPath, bool]]:
    """The entries of ``directory`` (name, path, whether a directory), sorted by name;
    none when it does not exist.  In S3, a "directory" is a common prefix."""
    if isinstance(directory, ObjectPath):
        from pyarrow import fs  # type: ignore[import-untyped, unused-ignore]

        selector = fs.FileSelector(directory.key, allow_not_found=True)
        found = [
            (info.base_name, directory / info.base_name, info.type == fs.FileType.Directory)
            for info in filesystem().get_file_info(selector)
        ]
        return sorted(found)
    try:
        with os.scandir(directory) as entries:
            return sorted((e.name, Path(e.path), e.is_dir()) for e in entries)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _named_files(data_dir: DataPath, chain: str) -> list[tuple[FileSpan, DataPath]]:
    """``chain``'s data files named as the writer names them (unchecked)."""
    try:
        files = chain_files(data_dir, check_chain(chain))
    except OSError as exc:
        raise read_error(exc, data_dir) from exc
    return [(found.span, found.path) for found in files if found.span is not None]


def _parquet(path: DataPath) -> Any:
    """``path`` opened as a Parquet file (its footer read)."""
    import pyarrow.parquet as pq  # type: ignore[import-untyped, unused-ignore]

    if isinstance(path, ObjectPath):
        return pq.ParquetFile(path.key, filesystem=filesystem())
    return pq.ParquetFile(path)


def _read_table(path: DataPath, **kwargs: Any) -> Any:
    import pyarrow.parquet as pq  # type: ignore[import-untyped, unused-ignore]

    if isinstance(path, ObjectPath):
        return pq.read_table(path.key, filesystem=filesystem(), partitioning=None, **kwargs)
    return pq.read_table(path, partitioning=None, **kwargs)


def temp_files(data_dir: DataPath) -> list[DataPath]:
    """Temp files left by an interrupted write, in every dataset (raises OSError)."""
    if isinstance(data_dir, ObjectPath):
        from pyarrow import fs  # type: ignore[import-untyped, unused-ignore]

        bucket = ObjectPath(data_dir.bucket)
        return [
            bucket / info.path.split("/", 1)[1]
            for dataset in (ROWS, REORGS)
            for info in filesystem().get_file_info(
                fs.FileSelector((data_dir / dataset).key, allow_not_found=True, recursive=True)
            )
            if is_temp_name(info.base_name)
        ]
    return [
        Path(directory, name)
        for dataset in (ROWS, REORGS)
        for directory, _, names in os.walk(data_dir / dataset)
        for name in filter(is_temp_name, names)
    ]


# -- what is on disk for the daemon and the backfill -------------------------------------


def last_durable_row(data_dir: DataPath | str, chain: str) -> Row | None:
    """The row of ``chain`` with the highest block number on disk, or None.

    File names give the candidate file; its footer must agree with its name (else
    :class:`InvalidDataFile`), and only its last row group is read.  Temp files and
    strangers are ignored.
    """
    data_dir = as_data_path(data_dir)
    spans = _named_files(data_dir, chain)
    if not spans:
        return None
    import pyarrow.compute as pc  # type: ignore[import-untyped, unused-ignore]

    span, path = max(spans, key=lambda found: found[0].last)
    check_data_files([path], data_dir)
    with _reading(path, data_dir), _parquet(path) as parquet:
        table = parquet.read_row_group(parquet.metadata.num_row_groups - 1)
        if pc.max(table["block_number"]).as_py() != span.last:  # not sorted: read it all
            table = parquet.read()
    at = pc.index(table["block_number"], span.last).as_py()
    return Row(*(table[name][at].as_py() for name in COLUMNS))


def durable_tail(data_dir: DataPath | str, chain: str, count: int) -> list[Row]:
    """Up to ``count`` rows of ``chain`` with the highest block numbers, ascending.

    Read from the files with the highest block numbers only, each checked as in
    :func:`last_durable_row`; used on resume to find where the dataset and the node's
    canonical chain last agree.
    """
    data_dir = as_data_path(data_dir)
    rows: list[Row] = []
    files = _named_files(data_dir, chain)
    if not files:
        return rows

    for _, path in sorted(files, key=lambda found: found[0].last, reverse=True):
        check_data_files([path], data_dir)
        with _reading(path, data_dir):
            table = _read_table(path)
        rows.extend(
            Row(*values) for values in zip(*(table[c].to_pylist() for c in COLUMNS), strict=True)
        )
        if len(rows) >= count:
            break
    rows.sort(key=lambda row: row.block_number)
    return rows[-count:]


def durable_runs(data_dir: DataPath | str, chain: str, span: Span) -> list[Span]:
    """Runs of ``chain``'s block numbers inside ``span`` that are on disk.

    A file whose row count equals its name's block range is gap-free and costs a footer
    read; only other files have their ``block_number`` column read.
    """
    paths = _files_over(as_data_path(data_dir), chain, span)
    if not paths:
        return []
    import pyarrow.compute as pc  # type: ignore[import-untyped, unused-ignore]

    where = as_data_path(data_dir)

    def runs_of(item: tuple[DataPath, Span]) -> tuple[DataPath, str | None, list[Span]]:
        path, name = item
        try:
            problem, meta = _inspect(path)  # one footer read checks the file and counts it
        except OSError as exc:
            raise read_error(naming(exc, path), where) from exc
        if problem is not None:
            return path, problem, []
        if meta.num_rows == name.count:
            return path, None, [name]
        with _reading(path, where):
            column = _read_table(path, columns=["block_number"])["block_number"]
        inside = pc.filter(
            column,
            pc.and_(pc.greater_equal(column, span.first), pc.less_equal(column, span.last)),
        )
        return path, None, runs(inside.to_pylist())

    walked = _each(runs_of, paths, where)
    # A truncated or foreign file is named in one clear error (InvalidDataFile), with
    # every other such file, not met as a pyarrow traceback halfway through the walk.
    if bad := [(path, problem) for path, problem, _ in walked if problem is not None]:
        raise invalid_files(bad, where)
    found = [run for _, _, file_runs in walked for run in file_runs]
    clipped = [
        Span(max(s.first, span.first), min(s.last, span.last))
        for s in found
        if s.last >= span.first and s.first <= span.last
    ]
    return merge(clipped)


def _files_over(data_dir: DataPath, chain: str, span: Span) -> list[tuple[DataPath, Span]]:
    """``chain``'s data files whose names say they hold blocks of ``span``."""
    return [
        (path, Span(name.first, name.last))
        for name, path in _named_files(data_dir, chain)
        if name.last >= span.first and name.first <= span.last
    ]


# -- what is on disk for report and validate ---------------------------------------------


def dataset_chains(data_dir: DataPath) -> list[str]:
    """The chains with at least one data file; ConfigError when there is no dataset."""
    chains = sorted(dataset_files(data_dir))
    if not chains:
        raise ConfigError(
            f"no Parquet files under {data_dir / ROWS}/chain=*/date=*/: is {data_dir} the "
            "daemon's DATA_DIR, and has it written a file yet?"
        )
    return chains


def dataset_files(data_dir: DataPath) -> dict[str, list[DataPath]]:
    """The data files of each chain with any, strangers included (a glob reads them).

    ConfigError when ``data_dir`` is not a directory; :class:`DataDirUnusable` (or
    :class:`StorageError`) when a directory cannot be read.
    """
    try:
        is_dir = _is_directory(data_dir)
    except OSError as exc:
        raise read_error(exc, data_dir) from exc
    if not is_dir:
        raise ConfigError(
            f"DATA_DIR {data_dir} does not exist or is not a directory; "
            "pass --data DIR or set DATA_DIR"
            if not isinstance(data_dir, ObjectPath)
            else f"DATA_DIR {data_dir}: the bucket {data_dir.bucket} does not exist (or these "
            "credentials cannot see it); check the URL, AWS_ENDPOINT_URL and the credentials"
        )
    found: dict[str, list[DataPath]] = {}
    try:
        for name, _, is_dir in _listing(data_dir / ROWS):
            if not name.startswith("chain=") or not is_dir:
                continue
            chain = name.removeprefix("chain=")
            if files := [found.path for found in chain_files(data_dir, chain)]:
                found[chain] = files
    except OSError as exc:
        raise read_error(exc, data_dir) from exc
    return found


def _is_directory(data_dir: DataPath) -> bool:
    """Whether ``data_dir`` is a directory (in S3: whether its bucket exists)."""
    if isinstance(data_dir, ObjectPath):
        from pyarrow import fs  # type: ignore[import-untyped, unused-ignore]

        info = filesystem().get_file_info(data_dir.bucket)
        return bool(info.type == fs.FileType.Directory)
    try:
        return stat.S_ISDIR(os.stat(data_dir).st_mode)
    except (FileNotFoundError, NotADirectoryError):
        return False


def check_files(data_dir: DataPath) -> None:
    """Check every data file's footer against its name (see :func:`check_data_files`);
    raise naming each bad file."""
    files = dataset_files(data_dir)
    check_data_files([path for chain in sorted(files) for path in files[chain]], data_dir)


# -- one data file -----------------------------------------------------------------------


def check_data_files(paths: Sequence[DataPath], data_dir: DataPath) -> None:
    """Check that each data file can be read and that its footer agrees with its name.

    Only the footers are read (row count, ``block_number`` statistics).  Every file that
    cannot be trusted is named in one :class:`InvalidDataFile`; a filesystem error (no
    permission, ...) raises a :class:`StorageError` at once.
    """

    def inspect(path: DataPath) -> tuple[DataPath, str | None]:
        try:
            return path, inspect_data_file(path)
        except OSError as exc:
            raise read_error(naming(exc, path), data_dir) from exc

    bad = [
        (path, problem) for path, problem in _each(inspect, paths, data_dir) if problem is not None
    ]
    if bad:
        raise invalid_files(bad, data_dir)


def inspect_data_file(path: DataPath) -> str | None:
    """Why the data file ``path`` cannot be trusted, or None.

    Raises :class:`OSError` (with an errno) when the filesystem fails; a file that is
    not Parquet, is truncated or disagrees with its name is a problem, not an error.
    """
    return _inspect(path)[0]


def _inspect(path: DataPath) -> tuple[str | None, Any]:
    """:func:`inspect_data_file`'s answer, and the footer read (None if unreadable)."""
    import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]

    span = parse_file_name(path.name)
    if span is None:
        return "its name is not part-<first>-<last>-<token>.parquet (the daemon ignores it)", None
    try:
        meta = _parquet(path).metadata
        names = meta.schema.names
        if "block_number" not in names:
            return "it has no block_number column", None
        first, last = _block_range(path, meta, names.index("block_number"))
    except OSError as exc:
        if exc.errno is not None or _store_failed(exc):
            raise
        return f"it cannot be read as Parquet ({exc})", None  # pyarrow's own IOError
    except (pa.ArrowException, ValueError) as exc:
        return f"it cannot be read as Parquet ({exc})", None
    return span_disagreement(span, meta.num_rows, first, last), meta


def _store_failed(exc: OSError) -> bool:
    """Whether pyarrow's ``exc`` (no errno) is S3's failure rather than the file's."""
    return "AWS Error" in str(exc) or "curlCode" in str(exc)


_READERS = 16  # footers read at once from S3 (each is a round trip or two)
_T = TypeVar("_T")
_R = TypeVar("_R")


def _each(fn: Callable[[_T], _R], items: Sequence[_T], data_dir: DataPath) -> list[_R]:
    """``fn`` of each item, in order: in S3, in threads, since each costs round trips;
    on a disk, one after the other."""
    if len(items) < 2 or not isinstance(data_dir, ObjectPath):
        return [fn(item) for item in items]
    with concurrent.futures.ThreadPoolExecutor(_READERS) as pool:
        return list(pool.map(fn, items))


def _block_range(path: DataPath, meta: Any, column: int) -> tuple[int | None, int | None]:
    """The lowest and highest block_number: from the statistics, else from the column."""
    import pyarrow.compute as pc  # type: ignore[import-untyped, unused-ignore]

    lows: list[int] = []
    highs: list[int] = []
    for index in range(meta.num_row_groups):
        group = meta.row_group(index)
        if group.num_rows == 0:
            continue
        stats = group.column(column).statistics
        if stats is None or not stats.has_min_max:
            numbers = _read_table(path, columns=["block_number"])["block_number"]
            low, high = pc.min(numbers).as_py(), pc.max(numbers).as_py()
            return low, high
        lows.append(stats.min)
        highs.append(stats.max)
    return (min(lows), max(highs)) if lows else (None, None)


def invalid_files(bad: Sequence[tuple[DataPath, str]], data_dir: DataPath) -> InvalidDataFile:
    """The error naming data files that cannot be trusted, each with its problem, and
    the fix."""
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
def _reading(path: DataPath, data_dir: DataPath) -> Iterator[None]:
    """Turn the errors of reading a data file into :class:`StorageError`\\ s."""
    import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]

    try:
        yield
    except OSError as exc:
        if exc.errno is None and not _store_failed(exc):
            raise invalid_files([(path, f"it cannot be read ({exc})")], data_dir) from exc
        raise read_error(naming(exc, path), data_dir) from exc
    except (pa.ArrowException, ValueError) as exc:
        raise invalid_files([(path, f"it cannot be read ({exc})")], data_dir) from exc
