"""Tables for people (aligned text) and for machines (JSON, CSV), without dependencies."""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import io
import json
from collections.abc import Mapping, Sequence
from typing import Any

from blocktimesd.analysis.queries import Table

__all__ = ["FORMATS", "render_csv", "render_json", "render_text"]

FORMATS = ("table", "json", "csv")


def render_text(tables: Sequence[Table]) -> str:
    """Each table under its title, columns aligned (numbers to the right)."""
    return "\n".join(_text_table(table) for table in tables)


def _text_table(table: Table) -> str:
    lines = [table.title, "=" * len(table.title)]
    if not table.rows:
        return "\n".join([*lines, "(none)", ""])
    cells = [[_cell(value) for value in row] for row in table.rows]
    widths = [
        max(len(column), *(len(row[i]) for row in cells)) for i, column in enumerate(table.columns)
    ]
    numeric = [
        all(_is_number(row[i]) for row in table.rows if row[i] is not None)
        for i in range(len(table.columns))
    ]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            value.rjust(width) if right else value.ljust(width)
            for value, width, right in zip(values, widths, numeric, strict=True)
        ).rstrip()

    lines.append(line(table.columns))
    lines.append(line(["-" * width for width in widths]))
    lines.extend(line(row) for row in cells)
    return "\n".join([*lines, ""])


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | decimal.Decimal) and not isinstance(value, bool)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.1f}"
    if isinstance(value, list | tuple):
        return ",".join(_cell(item) for item in value)
    return str(value)


def _plain(value: Any) -> Any:
    """``value`` as JSON has it: Decimal -> int/float, dates -> ISO strings."""
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def render_json(tables: Sequence[Table], header: Mapping[str, Any] | None = None) -> str:
    """One object: ``header``'s keys, then one list of row objects per table name."""
    document: dict[str, Any] = dict(header or {})
    for table in tables:
        document[table.name] = [
            {key: _plain(value) for key, value in record.items()} for record in table.records()
        ]
    return json.dumps(document, indent=2) + "\n"


def render_csv(table: Table) -> str:
    """One table: a header line, then one line per row (null as an empty field)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(table.columns)
    for row in table.rows:
        writer.writerow(["" if value is None else _csv_value(value) for value in row])
    return out.getvalue()


def _csv_value(value: Any) -> Any:
    plain = _plain(value)
    if isinstance(plain, list):
        return ",".join(str(item) for item in plain)
    if isinstance(plain, bool):
        return "true" if plain else "false"
    return plain
