"""DuckDB over the ``block_times`` dataset, for ``report`` and ``validate``.

Read-only: an in-memory DuckDB reads the Parquet files in place (the daemon may be
writing beside it; files appear atomically, see ``docs/schema.md``).  The SQL scripts
in ``scripts/duckdb/`` are run statement by statement, exactly as the DuckDB CLI runs
them, with their inputs set as DuckDB variables (``SET VARIABLE``).

The directories are listed here, not by a glob that skips what it cannot read: a
missing DATA_DIR is a :class:`ConfigError` and one that cannot be read a
:class:`DataDirUnusable` (both exit code 2), naming the path and the fix.
:func:`check_files` reads the data files' footers, so that a file that is damaged or
disagrees with its name is named (:class:`InvalidDataFile`, exit code 1) rather than
left to a DuckDB error.
"""

from __future__ import annotations

import argparse
import os
import stat
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from blocktimesd.dataset.rotation import ROWS
from blocktimesd.dataset.writer import check_data_files, read_error
from blocktimesd.errors import ConfigError

__all__ = [
    "SCRIPTS_DIR",
    "Table",
    "check_files",
    "connect",
    "data_dir_from",
    "dataset_chains",
    "dataset_files",
    "rows_globs",
    "run_script",
    "sql_literal",
]


def add_dataset_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    """``--data`` and ``--chain``, as ``report`` and ``validate`` take them."""
    parser.add_argument(
        "--data", metavar="DIR", help="dataset directory (default: $DATA_DIR, else data)"
    )
    parser.add_argument(
        "--chain",
        action="append",
        metavar="NAME",
        help=f"a chain to {what}; repeat for several (default: every chain on disk)",
    )


def _scripts_dir() -> Path:
    """``scripts/duckdb`` beside the package (a source tree), else the copy that pip
    installs under ``<prefix>/share/blocktimesd/duckdb`` (pyproject's data-files)."""
    source = Path(__file__).resolve().parent.parent / "scripts" / "duckdb"
    installed = Path(sys.prefix) / "share" / "blocktimesd" / "duckdb"
    return source if source.is_dir() or not installed.is_dir() else installed


SCRIPTS_DIR = _scripts_dir()


@dataclass(frozen=True, slots=True)
class Table:
    """One result: a named, titled table of rows (values as DuckDB returns them)."""

    name: str
    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]

    def records(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


def data_dir_from(option: str | None) -> Path:
    """``--data``, else ``$DATA_DIR``, else ``data`` (as the daemon resolves it)."""
    return Path(option or os.environ.get("DATA_DIR") or "data")


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
    """The ``*.parquet`` files of each chain with any, in ``chain=*/date=*/``.

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
    for chain_dir in _listing(data_dir / ROWS, data_dir):
        if not chain_dir.name.startswith("chain=") or not chain_dir.is_dir():
            continue
        files = [
            Path(entry.path)
            for date_dir in _listing(Path(chain_dir.path), data_dir)
            if date_dir.name.startswith("date=") and date_dir.is_dir()
            for entry in _listing(Path(date_dir.path), data_dir)
            if entry.name.endswith(".parquet")
        ]
        if files:
            found[chain_dir.name.removeprefix("chain=")] = files
    return found


def _listing(directory: Path, data_dir: Path) -> list[os.DirEntry[str]]:
    """The entries of ``directory``, sorted by name; none when it does not exist."""
    try:
        with os.scandir(directory) as entries:
            return sorted(entries, key=lambda entry: entry.name)
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:
        raise read_error(exc, data_dir) from exc


def check_files(data_dir: Path) -> None:
    """Check every data file's footer against its name (see
    :func:`~blocktimesd.dataset.writer.check_data_files`); raise naming each bad file."""
    files = dataset_files(data_dir)
    check_data_files([path for chain in sorted(files) for path in files[chain]], data_dir)


def check_chains(wanted: Sequence[str], present: Sequence[str], data_dir: Path) -> None:
    missing = [chain for chain in wanted if chain not in present]
    if missing:
        raise ConfigError(
            f"no rows of chain {', '.join(missing)} under {data_dir / ROWS}; "
            f"chains present: {', '.join(present)}"
        )


def rows_globs(data_dir: Path, chains: Sequence[str] = ()) -> list[str]:
    """Globs of the data files: all of them, or only those of ``chains``."""
    base = data_dir / ROWS
    if not chains:
        return [str(base / "*" / "*" / "*.parquet")]
    return [str(base / f"chain={chain}" / "*" / "*.parquet") for chain in chains]


def sql_literal(value: Any) -> str:
    """``value`` as a DuckDB literal (strings quoted, lists of them as lists)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, list | tuple):
        if not value:
            return "[]::VARCHAR[]"
        return "[" + ", ".join(sql_literal(item) for item in value) + "]"
    raise TypeError(f"no SQL literal for {value!r}")


def connect() -> duckdb.DuckDBPyConnection:
    """An in-memory database; DuckDB spills to a temp directory beyond its memory limit.

    Every query that returns rows orders them, so DuckDB need not keep insertion order
    (less memory); no progress bar on the terminal in the middle of a report.
    """
    con = duckdb.connect(":memory:")
    con.execute("SET enable_progress_bar = false")
    con.execute("SET preserve_insertion_order = false")
    return con


def query(con: duckdb.DuckDBPyConnection, name: str, title: str, sql: str) -> Table:
    result = con.execute(sql)
    columns = tuple(column[0] for column in result.description or ())
    return Table(name, title, columns, tuple(result.fetchall()))


def run_script(
    con: duckdb.DuckDBPyConnection, path: Path, variables: Mapping[str, Any]
) -> list[Table]:
    """Run ``path`` after setting ``variables``; the tables its SELECTs return, in order.

    Tables are named ``<script stem>:<n>``, titled with the comment lines just above
    their statement in the script.
    """
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read the SQL script {path}: {exc.strerror}") from None
    for name, value in variables.items():
        con.execute(f"SET VARIABLE {name} = {sql_literal(value)}")
    tables: list[Table] = []
    cursor = 0  # where in the text the next statement starts, for its title
    for statement in con.extract_statements(text):
        result = con.execute(statement)
        body = statement.query.strip()
        at = text.find(body, cursor)
        cursor = max(cursor, at)
        if statement.type != duckdb.StatementType.SELECT:
            continue
        columns = tuple(column[0] for column in result.description or ())
        title = _comment_above(text[:at] if at >= 0 else "") or path.name
        tables.append(Table(f"{path.stem}:{len(tables)}", title, columns, tuple(result.fetchall())))
    return tables


def _comment_above(text: str) -> str:
    """The first sentence of the ``--`` comment block at the end of ``text``."""
    lines = text.rstrip("\n").split("\n")
    comment: list[str] = []
    while lines and lines[-1].startswith("--"):
        comment.insert(0, lines.pop().removeprefix("--").strip())
    sentence = " ".join(comment).split(". ")[0].strip()
    return sentence.rstrip(".:")
