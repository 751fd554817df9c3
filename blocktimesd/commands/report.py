"""``blocktimesd report``: the command line of the block-time report.

The report itself is :mod:`blocktimesd.analysis.report`, imported when the command is
built or run (DuckDB takes a while to load, and ``blocktimesd --help`` needs none of it).

Exit codes: 0 ok, 1 the files cannot be read (or the report cannot be written), 2 usage
errors, a missing or unreadable DATA_DIR included.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from blocktimesd.argtypes import add_dataset_arguments, data_dir_from, positive
from blocktimesd.errors import ConfigError, StorageError

if TYPE_CHECKING:
    from blocktimesd.analysis.report import ReportParams

__all__ = ["add_report_parser", "params_from_args", "parse_time", "run_report"]


def parse_time(text: str) -> int:
    """``2025-08-01T00:00:00Z`` (any ISO 8601 date-time; no zone: UTC) or ``2025-08-01``
    (its 00:00 UTC), as milliseconds since the epoch."""
    try:
        if len(text) == 10:
            moment = datetime.combine(date.fromisoformat(text), datetime.min.time(), UTC)
        else:
            moment = datetime.fromisoformat(text)
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a UTC date-time or date: {text!r} (e.g. 2025-08-01T00:00:00Z or 2025-08-01)"
        ) from None
    return int(moment.timestamp() * 1000)


_DESCRIPTION = """\
Block-time metrics per chain from the dataset (DATA_DIR/block_times), computed by
DuckDB: count, mean, p50/p90/p99, max and stddev (jitter) of delta_since_parent_ms per
hour or day with a rolling mean; outliers; consensus deltas split by
contained_store_segment_headers; cross-chain latency (domain timestamp minus its
consensus block's: 0 on a healthy chain); missing block numbers; stalls. Times are UTC:
2025-08-01T00:00:00Z or 2025-08-01 (its midnight); --since is inclusive, --until
exclusive. --format csv prints one section (--section, default windows)."""


def add_report_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    from blocktimesd.analysis.report import SECTIONS, WINDOW_MS
    from blocktimesd.analysis.tables import FORMATS

    # Each help states its true default once: ArgumentDefaultsHelpFormatter appended
    # "(default: None)" to options whose default is decided later, and doubled the rest.
    p = sub.add_parser(
        "report",
        parents=parents,
        help="block-time metrics from the dataset (percentiles, jitter, outliers, gaps)",
        description=_DESCRIPTION,
    )
    add_dataset_arguments(p, "report on")
    p.add_argument(
        "--since",
        type=parse_time,
        metavar="T",
        help="first timestamp included (default: the first row's)",
    )
    p.add_argument(
        "--until",
        type=parse_time,
        metavar="T",
        help="first timestamp excluded (default: none, up to the last row)",
    )
    p.add_argument(
        "--window",
        choices=sorted(WINDOW_MS),
        default="hour",
        help="the windows section's period, UTC (default: %(default)s)",
    )
    p.add_argument(
        "--format",
        choices=(*FORMATS, "html"),
        default="table",
        help="table for people, json or csv (one section) for scripts, html: one "
        "self-contained page of plots (default: %(default)s)",
    )
    p.add_argument(
        "--output",
        type=Path,
        metavar="FILE",
        help="write the report to FILE (default: standard output)",
    )
    p.add_argument(
        "--section",
        action="append",
        choices=SECTIONS,
        help="a section to print; repeat for several (default: all; csv: windows)",
    )
    p.add_argument(
        "--expected-block-ms",
        type=positive(int),
        default=6000,
        metavar="MS",
        help="expected block time, for the outliers (default: %(default)s)",
    )
    p.add_argument(
        "--outlier-factor",
        type=positive(float),
        default=3.0,
        metavar="X",
        help="outlier: delta > expected block time x this (default: %(default)s)",
    )
    p.add_argument(
        "--stall-seconds",
        type=positive(float),
        default=60.0,
        metavar="S",
        help="stall: delta > this (default: %(default)s)",
    )
    p.add_argument(
        "--rolling",
        type=positive(int),
        metavar="N",
        help="windows in the rolling mean (default: 24 hourly, 7 daily)",
    )
    p.add_argument(
        "--top",
        type=positive(int),
        default=10,
        metavar="N",
        help="rows listed per chain in outliers, latency, gaps and stalls (default: %(default)s)",
    )


def params_from_args(args: argparse.Namespace) -> ReportParams:
    """The report asked for; :class:`ConfigError` on flags that do not go together."""
    from blocktimesd.analysis.report import SECTIONS, ReportParams

    sections: Sequence[str] = args.section or (("windows",) if args.format == "csv" else SECTIONS)
    if args.format == "html" and args.section:
        raise ConfigError("--format html draws every section: leave out --section")
    if args.format == "csv" and len(set(sections)) != 1:
        raise ConfigError("--format csv prints one table: give exactly one --section")
    if args.since is not None and args.until is not None and args.since >= args.until:
        raise ConfigError("--since must be before --until")
    return ReportParams(
        data_dir=data_dir_from(args.data),
        chains=tuple(dict.fromkeys(args.chain or ())),
        since_ms=args.since,
        until_ms=args.until,
        window=args.window,
        expected_block_ms=args.expected_block_ms,
        outlier_factor=args.outlier_factor,
        stall_ms=round(args.stall_seconds * 1000),
        rolling=args.rolling,
        top=args.top,
        sections=tuple(dict.fromkeys(sections)),
    )


def run_report(args: argparse.Namespace) -> int:
    """Print the report; 0 ok, 1 when the files cannot be read, 2 on usage errors (a
    missing or unreadable DATA_DIR included)."""
    import duckdb

    from blocktimesd.analysis import report
    from blocktimesd.analysis.queries import check_chains, connect
    from blocktimesd.analysis.tables import render_csv, render_json, render_text
    from blocktimesd.dataset.scan import check_files, dataset_chains

    html = ""  # the page, for --format html
    try:
        params = params_from_args(args)
        check_chains(params.chains, dataset_chains(params.data_dir), params.data_dir)
        try:
            con = connect(params.data_dir)
            tables = report.build_report(params, con)
            span = report.data_span(con)
            if args.format == "html":
                # Imported here: matplotlib takes a while to load, and only html needs it.
                from blocktimesd.analysis.report_html import render_html

                heading = report.heading(params, span)
                html = render_html(con, params, tables, heading, report.impossible(tables))
        except duckdb.Error as exc:
            check_files(params.data_dir)  # names the file DuckDB stumbled on, with the fix
            print(f"blocktimesd: cannot read {params.data_dir}: {exc}", file=sys.stderr)
            return 1
    except ConfigError as exc:
        print(f"blocktimesd: {exc}", file=sys.stderr)
        return 2
    except StorageError as exc:
        print(f"blocktimesd: {exc}", file=sys.stderr)
        return 1
    if args.format == "html":
        text = html
    elif args.format == "json":
        text = render_json(tables, {"report": report.describe(params, span)})
    elif args.format == "csv":
        text = render_csv(tables[0])
    else:
        heading = "\n".join(filter(None, [report.heading(params, span), report.impossible(tables)]))
        text = heading + "\n\n" + render_text(tables)
    return _emit(text, args.output)


def _emit(text: str, output: Path | None) -> int:
    """``text`` to ``output`` (replaced whole: written beside it, then renamed), else
    to standard output; 1 when it cannot be written."""
    if output is None:
        sys.stdout.write(text)
        return 0
    partial = output.with_name(output.name + ".partial")
    try:
        partial.write_text(text, encoding="utf-8")
        partial.replace(output)
    except OSError as exc:
        print(f"blocktimesd: cannot write {output}: {exc}", file=sys.stderr)
        return 1
    return 0
