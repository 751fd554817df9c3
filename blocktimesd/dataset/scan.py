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

import contextlib
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


@dataclass(frozen=True, slots=True)
class DataFile:
    """A data file of a chain, with what its name says (None: not the writer's name)."""

    path: Path
    span: FileSpan | None


def chain_files(data_dir: Path, chain: str) -> list[DataFile]:
    """Every data file of ``chain``, by date and then name (so by block number).

    A missing directory holds nothing; any other :class:`OSError` is raised as it is
    (the writer retries it, readers turn it into a :class:`StorageError`).
    """
    base = data_dir / ROWS / f"chain={chain}"
    return [
        DataFile(Path(entry.path), parse_file_name(entry.name))
        for date_dir in _listing(base)
        if date_dir.name.startswith("date=") and date_dir.is_dir()
        for entry in _listing(Path(date_dir.path))
        if entry.name.endswith(".parquet")
    ]


def _listing(directory: Path) -> list[os.DirEntry[str]]:
    """The entries of ``directory``, sorted by name; none when it does not exist."""
    try:
        with os.scandir(directory) as entries:
            return sorted(entries, key=lambda entry: entry.name)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _named_files(data_dir: Path, chain: str) -> list[tuple[FileSpan, Path]]:
    """``chain``'s data files named as the writer names them (unchecked)."""
    try:
        files = chain_files(data_dir, check_chain(chain))
    except OSError as exc:
        raise read_error(exc, data_dir) from exc
    return [(found.span, found.path) for found in files if found.span is not None]


def temp_files(data_dir: Path) -> list[Path]:
    """Temp files left by an interrupted write, in every dataset (raises OSError)."""
    return [
        Path(directory, name)
        for dataset in (ROWS, REORGS)
        for directory, _, names in os.walk(data_dir / dataset)
        for name in filter(is_temp_name, names)
    ]


# -- what is on disk for the daemon and the backfill -------------------------------------


def last_durable_row(data_dir: Path | str, chain: str) -> Row | None:
    """The row of ``chain`` with the highest block number on disk, or None.

    File names give the candidate file; its footer must agree with its name (else
    :class:`InvalidDataFile`), and only its last row group is read.  Temp files and
    strangers are ignored.
    """
    data_dir = Path(data_dir)
    spans = _named_files(data_dir, chain)
    if not spans:
        return None
    import pyarrow.compute as pc  # type: ignore[import-untyped, unused-ignore]
    import pyarrow.parquet as pq  # type: ignore[import-untyped, unused-ignore]

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
    files = _named_files(data_dir, chain)
    if not files:
        return rows
    import pyarrow.parquet as pq  # type: ignore[import-untyped, unused-ignore]

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


def durable_runs(data_dir: Path | str, chain: str, span: Span) -> list[Span]:
    """Runs of ``chain``'s block numbers inside ``span`` that are on disk.

    A file whose row count equals its name's block range is gap-free and costs a footer
    read; only other files have their ``block_number`` column read.
    """
    paths = _files_over(Path(data_dir), chain, span)
    if not paths:
        return []
    import pyarrow.compute as pc  # type: ignore[import-untyped, unused-ignore]
    import pyarrow.parquet as pq  # type: ignore[import-untyped, unused-ignore]

    # A truncated or foreign file is named in one clear error (InvalidDataFile), not
    # met as a pyarrow traceback halfway through the walk.
    check_data_files([path for path, _ in paths], Path(data_dir))
    found: list[Span] = []
    for path, name in paths:
        with pq.ParquetFile(path) as parquet:
            if parquet.metadata.num_rows == name.count:
                found.append(name)
                continue
            column = parquet.read(columns=["block_number"])["block_number"]
        inside = pc.filter(
            column,
            pc.and_(pc.greater_equal(column, span.first), pc.less_equal(column, span.last)),
        )
        found.extend(runs(inside.to_pylist()))
    clipped = [
        Span(max(s.first, span.first), min(s.last, span.last))
        for s in found
        if s.last >= span.first and s.first <= span.last
    ]
    return merge(clipped)


def _files_over(data_dir: Path, chain: str, span: Span) -> list[tuple[Path, Span]]:
    """``chain``'s data files whose names say they hold blocks of ``span``."""
    return [
        (path, Span(name.first, name.last))
        for name, path in _named_files(data_dir, chain)
        if name.last >= span.first and name.first <= span.last
    ]


# -- what is on disk for report and validate ---------------------------------------------


def dataset_chains(data_dir: Path) -> list[str]:
    """The chains with at least one data file; ConfigError when there is no dataset."""
    chains = sorted(dataset_files(data_dir))
    if not chains:
        raise ConfigError(
            f"no Parquet files under {data_dir / ROWS}/chain=*/date=*/: is {data_dir} the "
            "daemon's DATA_DIR, and has it written a file yet?"
        )
    return chains


def dataset_files(data_dir: Path) -> dict[str, list[Path]]:
    """The data files of each chain with any, strangers included (a glob reads them).

    ConfigError when ``data_dir`` is not a directory; :class:`DataDirUnusable` (or
    :class:`StorageError`) when a directory cannot be read.
    """
    try:
        is_dir = stat.S_ISDIR(os.stat(data_dir).st_mode)
    except (FileNotFoundError, NotADirectoryError):
        is_dir = False
    except OSError as exc:
        raise read_error(exc, data_dir) from exc
    if not is_dir:
        raise ConfigError(
            f"DATA_DIR {data_dir} does not exist or is not a directory; "
            "pass --data DIR or set DATA_DIR"
        )
    found: dict[str, list[Path]] = {}
    try:
        for chain_dir in _listing(data_dir / ROWS):
            if not chain_dir.name.startswith("chain=") or not chain_dir.is_dir():
                continue
            chain = chain_dir.name.removeprefix("chain=")
            if files := [found.path for found in chain_files(data_dir, chain)]:
                found[chain] = files
    except OSError as exc:
        raise read_error(exc, data_dir) from exc
    return found


def check_files(data_dir: Path) -> None:
    """Check every data file's footer against its name (see :func:`check_data_files`);
    raise naming each bad file."""
    files = dataset_files(data_dir)
    check_data_files([path for chain in sorted(files) for path in files[chain]], data_dir)


# -- one data file -----------------------------------------------------------------------


def check_data_files(paths: Sequence[Path], data_dir: Path) -> None:
    """Check that each data file can be read and that its footer agrees with its name.

    Only the footers are read (row count, ``block_number`` statistics).  Every file that
    cannot be trusted is named in one :class:`InvalidDataFile`; a filesystem error (no
    permission, ...) raises a :class:`StorageError` at once.
    """
    bad: list[tuple[Path, str]] = []
    for path in paths:
        try:
            problem = inspect_data_file(path)
        except OSError as exc:
            raise read_error(naming(exc, path), data_dir) from exc
        if problem is not None:
            bad.append((path, problem))
    if bad:
        raise invalid_files(bad, data_dir)


def inspect_data_file(path: Path) -> str | None:
    """Why the data file ``path`` cannot be trusted, or None.

    Raises :class:`OSError` (with an errno) when the filesystem fails; a file that is
    not Parquet, is truncated or disagrees with its name is a problem, not an error.
    """
    import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
    import pyarrow.parquet as pq  # type: ignore[import-untyped, unused-ignore]

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
    import pyarrow.compute as pc  # type: ignore[import-untyped, unused-ignore]
    import pyarrow.parquet as pq  # type: ignore[import-untyped, unused-ignore]

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


def invalid_files(bad: Sequence[tuple[Path, str]], data_dir: Path) -> InvalidDataFile:
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
def _reading(path: Path, data_dir: Path) -> Iterator[None]:
    """Turn the errors of reading a data file into :class:`StorageError`\\ s."""
    import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]

    try:
        yield
    except OSError as exc:
        if exc.errno is None:
            raise invalid_files([(path, f"it cannot be read ({exc})")], data_dir) from exc
        raise read_error(naming(exc, path), data_dir) from exc
    except (pa.ArrowException, ValueError) as exc:
        raise invalid_files([(path, f"it cannot be read ({exc})")], data_dir) from exc
