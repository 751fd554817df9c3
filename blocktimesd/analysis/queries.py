"""DuckDB over the ``block_times`` dataset, for the report and the validation.

Read-only: an in-memory DuckDB reads the Parquet files in place (the daemon may be
writing beside it; files appear atomically, see ``docs/schema.md``).  The SQL scripts
in ``scripts/duckdb/`` are run statement by statement, exactly as the DuckDB CLI runs
them, with their inputs set as DuckDB variables (``SET VARIABLE``).

The dataset may live in S3 (an :class:`~blocktimesd.dataset.objects.ObjectPath`): the
globs are then ``s3://`` URLs, which a connection reads once :func:`attach` has given
it the S3 filesystem (:mod:`blocktimesd.analysis.s3`).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from blocktimesd.dataset.layout import ROWS
from blocktimesd.dataset.objects import DataPath, ObjectPath
from blocktimesd.errors import ConfigError

__all__ = [
    "SCRIPTS_DIR",
    "Table",
    "attach",
    "check_chains",
    "connect",
    "query",
    "rows_globs",
    "run_script",
    "sql_literal",
]


def _scripts_dir() -> Path:
    """``scripts/duckdb`` beside the package (a source tree), else the copy that pip
    installs under ``<prefix>/share/blocktimesd/duckdb`` (pyproject's data-files)."""
    source = Path(__file__).resolve().parents[2] / "scripts" / "duckdb"
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


def check_chains(wanted: Sequence[str], present: Sequence[str], data_dir: DataPath) -> None:
    """ConfigError naming each chain asked for that has no rows: a misspelt ``--chain``
    would otherwise read as a chain without blocks."""
    missing = [chain for chain in wanted if chain not in present]
    if missing:
        raise ConfigError(
            f"no rows of chain {', '.join(missing)} under {data_dir / ROWS}; "
            f"chains present: {', '.join(present)}"
        )


def rows_globs(data_dir: DataPath, chains: Sequence[str] = ()) -> list[str]:
    """Globs of the data files: all of them, or only those of ``chains`` (``s3://``
    URLs for a dataset in S3)."""
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


def connect(data_dir: DataPath | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory database; DuckDB spills to a temp directory beyond its memory limit.
    It can read ``data_dir`` (see :func:`attach`).

    Every query that returns rows orders them, so DuckDB need not keep insertion order
    (less memory); no progress bar on the terminal in the middle of a report.
    """
    con = duckdb.connect(":memory:")
    con.execute("SET enable_progress_bar = false")
    con.execute("SET preserve_insertion_order = false")
    if data_dir is not None:
        attach(con, data_dir)
    return con


def attach(con: duckdb.DuckDBPyConnection, data_dir: DataPath) -> None:
    """Let ``con`` read the dataset at ``data_dir``: nothing to do for a local folder;
    the S3 filesystem for one in S3 (imported only then: fsspec costs start-up time)."""
    if isinstance(data_dir, ObjectPath):
        from blocktimesd.analysis.s3 import register

        register(con)


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
