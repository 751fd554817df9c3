"""``blocktimesd report --format html``: the report as one self-contained page of plots.

The summary is the report's own ``summary`` table (one computation, two renderings);
the plots' aggregates (log-binned deltas, quantiles per bundle bucket, spans, upgrades,
latency bins, reorg counts) are computed by DuckDB on the same connection and rows
(:mod:`.queries`), drawn by matplotlib as SVG with text as paths (:mod:`.figures`)
and inlined into one HTML file with no script and no external resource (:mod:`.page`).

Imported only for ``--format html``: matplotlib takes a while to load.
"""

from __future__ import annotations

from collections.abc import Sequence

import duckdb

from blocktimesd.analysis.queries import Table
from blocktimesd.analysis.report import ReportParams
from blocktimesd.analysis.report_html.page import render_page, sections
from blocktimesd.analysis.report_html.queries import extras

__all__ = ["render_html"]


def render_html(
    con: duckdb.DuckDBPyConnection,
    params: ReportParams,
    tables: Sequence[Table],
    heading: str,
    impossible: str = "",
) -> str:
    """The page, from ``tables`` (every section of :func:`build_report`, computed on
    ``con``) and the aggregates queried on ``con``."""
    return render_page(heading, impossible, sections(params, tables, extras(con, params)))
