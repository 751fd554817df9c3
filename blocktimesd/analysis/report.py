"""The block-time report (``blocktimesd report``): metrics from the dataset, by DuckDB.

Every aggregate runs inside DuckDB over ``DATA_DIR/block_times/*/*/*.parquet`` (only
the files of the chains asked for; row groups outside ``--since``/``--until`` are
skipped by their statistics), so tens of millions of rows take seconds; Python only
formats the small results.

Definitions (all in milliseconds of ``delta_since_parent_ms``, null deltas ignored):

- pNN: nearest rank, the smallest delta with at least NN % of the deltas at or below
  it (DuckDB ``quantile_disc``), so always a delta that occurred;
- stddev: sample standard deviation (jitter); null with fewer than two deltas;
- rolling_mean: mean of every delta in this window and the ``--rolling`` - 1 windows
  before it (by time: windows without blocks count as windows);
- outlier: delta > ``--expected-block-ms`` x ``--outlier-factor``; stall: delta >
  ``--stall-seconds``;
- gaps: block numbers absent between a chain's lowest and highest block in the range;
- cross-chain latency: a domain row's timestamp minus the timestamp of the consensus
  row whose hash is its ``consensus_block_hash``.  A domain block's timestamp is
  copied from that consensus block, so every value but 0 is a finding;
- impossible values (the summary counts them per chain; ``blocktimesd validate`` fails
  on them and names the blocks and the fix): ``non_positive_deltas``, blocks stamped
  at or before their parent, which the runtimes refuse; ``timestamp_disagreements``,
  domain rows whose timestamp differs from their consensus row's (on disk).  The
  daemon keeps what the node served, so these come from a lying node or a bug; the
  distributions include them.

The figures come from the files' contents, never from their names, so the files are
not checked up front (that would read every footer twice).  When DuckDB cannot read
them, every footer is checked to name each damaged file and the fix
(:func:`~blocktimesd.dataset.scan.check_files`); ``blocktimesd validate`` checks them always.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import duckdb

from blocktimesd.analysis.queries import (
    Table,
    attach,
    connect,
    query,
    rows_globs,
    sql_literal,
)
from blocktimesd.dataset.objects import DataPath

__all__ = [
    "SECTIONS",
    "WINDOW_MS",
    "ReportParams",
    "build_report",
    "data_span",
    "describe",
    "heading",
    "impossible",
]

log = logging.getLogger(__name__)

SECTIONS = (
    "summary",
    "windows",
    "segments",
    "cross_chain",
    "latency",
    "outliers",
    "gaps",
    "stalls",
)
WINDOW_MS = {"hour": 3_600_000, "day": 86_400_000}
DEFAULT_ROLLING = {"hour": 24, "day": 7}
DEFAULT_DOMAIN_CHAINS = ("auto-evm",)


@dataclass(frozen=True, slots=True)
class ReportParams:
    data_dir: DataPath  # a local folder or an s3:// prefix
    chains: tuple[str, ...] = ()  # empty: every chain on disk
    since_ms: int | None = None  # inclusive
    until_ms: int | None = None  # exclusive
    window: str = "hour"
    expected_block_ms: int = 6000
    outlier_factor: float = 3.0
    stall_ms: int = 60_000
    rolling: int | None = None  # windows; None: 24 hourly, 7 daily
    top: int = 10  # rows listed per chain in outliers, latency, gaps and stalls
    sections: tuple[str, ...] = SECTIONS
    domain_chains: tuple[str, ...] = field(default=DEFAULT_DOMAIN_CHAINS)

    @property
    def outlier_ms(self) -> float:
        return self.expected_block_ms * self.outlier_factor

    @property
    def rolling_windows(self) -> int:
        return self.rolling or DEFAULT_ROLLING[self.window]


# -- SQL ---------------------------------------------------------------------------------

_MACROS = """
CREATE OR REPLACE TEMP MACRO iso(ms) AS strftime(epoch_ms(ms), '%Y-%m-%dT%H:%M:%SZ');
CREATE OR REPLACE TEMP MACRO iso_ms(ms) AS strftime(epoch_ms(ms), '%Y-%m-%dT%H:%M:%S.%gZ');
"""

# The distribution of delta (a column of the FROM), selected after "SELECT key, ".
_DIST = """
    count(delta) AS deltas,
    round(avg(delta), 3) AS mean_ms,
    quantile_disc(delta, [0.5, 0.9, 0.99]) AS q,
    max(delta) AS max_ms,
    round(stddev_samp(delta), 3) AS stddev_ms"""
_DIST_COLUMNS = "deltas, mean_ms, q[1] AS p50_ms, q[2] AS p90_ms, q[3] AS p99_ms, max_ms, stddev_ms"


def _setup(con: duckdb.DuckDBPyConnection, p: ReportParams) -> None:
    attach(con, p.data_dir)
    con.execute(_MACROS)
    where = []
    if p.since_ms is not None:
        where.append(f"timestamp_ms >= {p.since_ms}")
    if p.until_ms is not None:
        where.append(f"timestamp_ms < {p.until_ms}")
    con.execute(f"""
        CREATE OR REPLACE TEMP VIEW all_rows AS
        SELECT * FROM read_parquet({sql_literal(rows_globs(p.data_dir))},
                                   hive_partitioning = false)""")
    con.execute(f"""
        CREATE OR REPLACE TEMP VIEW sel AS
        SELECT chain, block_number::BIGINT AS block_number, timestamp_ms,
               delta_since_parent_ms AS delta,
               contained_store_segment_headers AS segment_headers, slot,
               consensus_block_hash, consensus_block_number, filename
        FROM read_parquet({sql_literal(rows_globs(p.data_dir, p.chains))},
                          hive_partitioning = false, filename = true)
        {"WHERE " + " AND ".join(where) if where else ""}""")


def _gaps(con: duckdb.DuckDBPyConnection) -> None:
    """``gaps``: one row per run of missing block numbers.

    The writer's files hold consecutive, sorted block numbers and never overlap, so
    gaps are found between files from per-file aggregates.  A chain where that does
    not hold (a file with holes or duplicates, overlapping files) is searched row by
    row instead: exact either way, fast on a healthy dataset.
    """
    con.execute("""
        CREATE OR REPLACE TEMP TABLE files AS
        SELECT chain, filename, min(block_number) AS lo, max(block_number) AS hi,
               count(*) AS n, arg_min(timestamp_ms, block_number) AS lo_ts,
               arg_max(timestamp_ms, block_number) AS hi_ts
        FROM sel GROUP BY chain, filename""")
    con.execute("""
        CREATE OR REPLACE TEMP TABLE row_by_row AS
        SELECT DISTINCT chain
        FROM (SELECT chain, lo, hi, n,
                     max(hi) OVER (PARTITION BY chain ORDER BY lo, hi ROWS BETWEEN
                                   UNBOUNDED PRECEDING AND 1 PRECEDING) AS before
              FROM files)
        WHERE hi - lo + 1 <> n OR lo <= before""")
    con.execute("""
        CREATE OR REPLACE TEMP TABLE gaps AS
        SELECT chain, prev + 1 AS first_missing, lo - 1 AS last_missing,
               lo - prev - 1 AS missing, prev_ts, lo_ts AS next_ts
        FROM (SELECT chain, lo, lo_ts, lag(hi) OVER w AS prev, lag(hi_ts) OVER w AS prev_ts
              FROM files WHERE chain NOT IN (SELECT chain FROM row_by_row)
              WINDOW w AS (PARTITION BY chain ORDER BY lo))
        WHERE lo > prev + 1
        UNION ALL
        SELECT chain, prev + 1, block_number - 1, block_number - prev - 1, prev_ts,
               timestamp_ms
        FROM (SELECT chain, block_number, timestamp_ms,
                     lag(block_number) OVER w AS prev, lag(timestamp_ms) OVER w AS prev_ts
              FROM sel WHERE chain IN (SELECT chain FROM row_by_row)
              WINDOW w AS (PARTITION BY chain ORDER BY block_number))
        WHERE block_number > prev + 1""")


def _summary(con: duckdb.DuckDBPyConnection, p: ReportParams) -> Table:
    return query(
        con,
        "summary",
        "Per chain: deltas (ms), outliers, stalls, missing blocks, impossible values",
        f"""
        WITH s AS (
            SELECT chain, count(*) AS blocks,
                   min(block_number) AS first_block, max(block_number) AS last_block,
                   min(timestamp_ms) AS first_ts, max(timestamp_ms) AS last_ts, {_DIST},
                   count(*) FILTER (delta > {p.outlier_ms}) AS outliers,
                   count(*) FILTER (delta > {p.stall_ms}) AS stalls,
                   count(*) FILTER (delta <= 0) AS non_positive
            FROM sel GROUP BY chain),
        g AS (SELECT chain, sum(missing) AS missing FROM gaps GROUP BY chain),
        x AS (SELECT chain, count(*) FILTER (latency <> 0) AS disagreements
              FROM xc GROUP BY chain)
        SELECT chain, blocks, first_block, last_block,
               iso(first_ts) AS first_time, iso(last_ts) AS last_time, {_DIST_COLUMNS},
               outliers, stalls, coalesce(g.missing, 0)::BIGINT AS missing_blocks,
               non_positive AS non_positive_deltas,
               coalesce(x.disagreements, 0) AS timestamp_disagreements
        FROM s LEFT JOIN g USING (chain) LEFT JOIN x USING (chain)
        ORDER BY chain""",
    )


def _windows(con: duckdb.DuckDBPyConnection, p: ReportParams) -> Table:
    width = WINDOW_MS[p.window]
    return query(
        con,
        "windows",
        f"Per chain and {p.window} (UTC): deltas (ms); rolling mean over "
        f"{p.rolling_windows} {p.window}s",
        f"""
        WITH w AS (
            SELECT chain, timestamp_ms // {width} * {width} AS start_ms,
                   count(*) AS blocks, sum(delta) AS total, {_DIST},
                   count(*) FILTER (delta > {p.outlier_ms}) AS outliers,
                   count(*) FILTER (delta > {p.stall_ms}) AS stalls
            FROM sel GROUP BY ALL)
        SELECT chain, iso(start_ms) AS window_start, blocks, {_DIST_COLUMNS},
               round(sum(total) OVER r / nullif(sum(deltas) OVER r, 0), 3)
                   AS rolling_mean_ms,
               outliers, stalls
        FROM w
        WINDOW r AS (PARTITION BY chain ORDER BY start_ms
                     RANGE BETWEEN {(p.rolling_windows - 1) * width} PRECEDING AND CURRENT ROW)
        ORDER BY chain, start_ms""",
    )


def _segments(con: duckdb.DuckDBPyConnection) -> Table:
    return query(
        con,
        "segments",
        "Consensus deltas (ms) by contained_store_segment_headers",
        f"""
        SELECT chain, segment_headers, blocks, {_DIST_COLUMNS}
        FROM (SELECT chain, segment_headers, count(*) AS blocks, {_DIST}
              FROM sel WHERE segment_headers IS NOT NULL GROUP BY ALL)
        ORDER BY chain, segment_headers""",
    )


def _cross_chain_rows(con: duckdb.DuckDBPyConnection, p: ReportParams) -> None:
    """``xc``: the domain rows in range, each with its consensus row (if on disk).

    Domain chains: no row has a slot (every consensus row has one), and some row is
    mapped or the chain is named in ``domain_chains``.  A mapped row has both the
    consensus hash and number (the follower sets both or neither), so the cheap
    number column tells them apart.  Consensus rows are those with a slot, of any
    chain, in or out of the time range.
    """
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE domain_chains AS
        SELECT chain FROM sel GROUP BY chain
        HAVING NOT bool_or(slot IS NOT NULL)
           AND (bool_or(consensus_block_number IS NOT NULL)
                OR list_contains({sql_literal(p.domain_chains)}, chain))""")
    low, high = con.execute("""
        SELECT min(consensus_block_number), max(consensus_block_number)
        FROM sel WHERE chain IN (SELECT chain FROM domain_chains)""").fetchall()[0]
    # Constant bounds let DuckDB skip consensus row groups by their statistics.
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE xc AS
        SELECT d.chain, d.block_number, d.timestamp_ms, d.consensus_block_number,
               d.consensus_block_hash IS NOT NULL AS mapped,
               c.block_number AS c_number, c.timestamp_ms AS c_ts,
               d.timestamp_ms - c.timestamp_ms AS latency
        FROM (SELECT * FROM sel WHERE chain IN (SELECT chain FROM domain_chains)) AS d
        LEFT JOIN (SELECT hash, block_number, timestamp_ms FROM all_rows
                   WHERE slot IS NOT NULL
                     AND block_number BETWEEN {low or 0} AND {-1 if high is None else high}
                  ) AS c
               ON d.consensus_block_hash = c.hash""")


def _cross_chain(con: duckdb.DuckDBPyConnection) -> Table:
    return query(
        con,
        "cross_chain",
        "Cross-chain latency (ms): domain timestamp - its consensus block's (0 = healthy)",
        """
        SELECT chain, count(*) AS blocks,
               count(*) FILTER (mapped) AS mapped,
               count(*) FILTER (NOT mapped) AS unmapped,
               count(c_number) AS matched,
               count(*) FILTER (mapped AND c_number IS NULL) AS source_not_on_disk,
               count(*) FILTER (consensus_block_number <> c_number) AS number_mismatch,
               min(latency) AS min_ms, round(avg(latency), 3) AS mean_ms,
               quantile_disc(latency, 0.5) AS p50_ms, quantile_disc(latency, 0.99) AS p99_ms,
               max(latency) AS max_ms,
               count(*) FILTER (latency <> 0) AS nonzero
        FROM xc GROUP BY chain ORDER BY chain""",
    )


def _latency(con: duckdb.DuckDBPyConnection, p: ReportParams) -> Table:
    return query(
        con,
        "latency",
        f"Non-zero cross-chain latencies, the {p.top} largest per chain",
        f"""
        SELECT chain, block_number, iso_ms(timestamp_ms) AS time,
               c_number AS consensus_block_number, iso_ms(c_ts) AS consensus_time,
               latency AS latency_ms
        FROM xc WHERE latency <> 0
        QUALIFY row_number() OVER (PARTITION BY chain
                                   ORDER BY abs(latency) DESC, block_number) <= {p.top}
        ORDER BY chain, abs(latency) DESC, block_number""",
    )


def _notable(con: duckdb.DuckDBPyConnection, p: ReportParams) -> None:
    """``notable``: the rows that are outliers or stalls, without their hashes."""
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE notable AS
        SELECT chain, block_number, timestamp_ms, delta, segment_headers FROM sel
        WHERE delta > {min(p.outlier_ms, p.stall_ms)}""")


def _with_hashes(con: duckdb.DuckDBPyConnection, p: ReportParams, picked: str) -> None:
    """``picked`` (a few rows of ``notable``) with the ``hash`` of each row, as ``listed``.

    Hashes are long and random, the costliest column to read; fetching them for the
    listed block numbers only reads a few row groups.
    """
    con.execute(f"CREATE OR REPLACE TEMP TABLE picked AS {picked}")
    fetches = [
        f"""SELECT chain, block_number, any_value(hash) AS hash
            FROM read_parquet({sql_literal(rows_globs(p.data_dir, [chain]))},
                              hive_partitioning = false)
            WHERE block_number IN ({", ".join(str(n) for n in numbers)})
            GROUP BY ALL"""
        for chain, numbers in con.execute(
            "SELECT chain, list(DISTINCT block_number) FROM picked GROUP BY chain"
        ).fetchall()
    ]
    hashes = " UNION ALL ".join(fetches) or (
        "SELECT NULL::VARCHAR AS chain, NULL::UINTEGER AS block_number, "
        "NULL::VARCHAR AS hash WHERE false"
    )
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE listed AS
        SELECT picked.*, h.hash FROM picked LEFT JOIN ({hashes}) AS h
        USING (chain, block_number)""")


def _outliers(con: duckdb.DuckDBPyConnection, p: ReportParams) -> Table:
    _with_hashes(
        con,
        p,
        f"""SELECT * FROM notable WHERE delta > {p.outlier_ms}
            QUALIFY row_number() OVER (PARTITION BY chain ORDER BY delta DESC, block_number)
                    <= {p.top}""",
    )
    return query(
        con,
        "outliers",
        f"Outliers: deltas > {p.outlier_ms:g} ms, the {p.top} largest per chain",
        """
        SELECT chain, block_number, hash, iso_ms(timestamp_ms) AS time, delta AS delta_ms,
               segment_headers
        FROM listed ORDER BY chain, delta DESC, block_number""",
    )


def _gap_list(con: duckdb.DuckDBPyConnection, p: ReportParams) -> Table:
    return query(
        con,
        "gaps",
        f"Missing block numbers, the {p.top} largest gaps per chain",
        f"""
        SELECT chain, first_missing, last_missing, missing,
               iso_ms(prev_ts) AS after_time, iso_ms(next_ts) AS before_time
        FROM gaps
        QUALIFY row_number() OVER (PARTITION BY chain ORDER BY missing DESC, first_missing)
                <= {p.top}
        ORDER BY chain, first_missing""",
    )


def _stalls(con: duckdb.DuckDBPyConnection, p: ReportParams) -> Table:
    _with_hashes(
        con,
        p,
        f"""SELECT * FROM notable WHERE delta > {p.stall_ms}
            QUALIFY row_number() OVER (PARTITION BY chain ORDER BY block_number DESC)
                    <= {p.top}""",
    )
    return query(
        con,
        "stalls",
        f"Stalls: deltas > {p.stall_ms / 1000:g} s, the {p.top} latest per chain",
        """
        SELECT chain, block_number, hash, iso_ms(timestamp_ms - delta) AS parent_time,
               iso_ms(timestamp_ms) AS time, delta AS delta_ms
        FROM listed ORDER BY chain, block_number""",
    )


def build_report(params: ReportParams, con: duckdb.DuckDBPyConnection | None = None) -> list[Table]:
    """The report's tables, in ``SECTIONS`` order, for the sections asked for (on ``con``
    if given, which is then made able to read ``params.data_dir``)."""
    con = con or connect()
    _setup(con, params)
    wanted = set(params.sections)
    if wanted & {"summary", "gaps"}:
        _gaps(con)
    if wanted & {"summary", "cross_chain", "latency"}:  # the summary counts disagreements
        _cross_chain_rows(con, params)
    if wanted & {"outliers", "stalls"}:
        _notable(con, params)
    builders = {
        "summary": lambda: _summary(con, params),
        "windows": lambda: _windows(con, params),
        "segments": lambda: _segments(con),
        "cross_chain": lambda: _cross_chain(con),
        "latency": lambda: _latency(con, params),
        "outliers": lambda: _outliers(con, params),
        "gaps": lambda: _gap_list(con, params),
        "stalls": lambda: _stalls(con, params),
    }
    return [builders[name]() for name in SECTIONS if name in wanted]


def data_span(con: duckdb.DuckDBPyConnection) -> tuple[int | None, int | None]:
    """The first and last ``timestamp_ms`` of the rows selected, after :func:`build_report`
    on ``con``; (None, None) when none are."""
    first, last = con.execute("SELECT min(timestamp_ms), max(timestamp_ms) FROM sel").fetchall()[0]
    return first, last


def describe(p: ReportParams, span: tuple[int | None, int | None]) -> dict[str, Any]:
    """The report's parameters and the time span found, as ``--format json`` heads it:
    a script reading the figures can tell what they cover."""
    described = asdict(p)
    described["data_dir"] = str(p.data_dir)
    described["rolling"] = p.rolling_windows
    described["outlier_ms"] = p.outlier_ms
    for key in ("since_ms", "until_ms"):
        ms = described.pop(key)
        described[key.removesuffix("_ms")] = None if ms is None else _iso(ms)
    # What was found, as opposed to the bounds asked for (null: no rows).
    described["first_time"], described["last_time"] = (
        None if ms is None else _iso(ms) for ms in span
    )
    return described


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def heading(p: ReportParams, span: tuple[int | None, int | None]) -> str:
    """The line above the tables and the page: what was reported on, and the thresholds."""
    chains = ", ".join(p.chains) or "all chains"
    return (
        f"blocktimesd report: {p.data_dir} ({chains}; {_span(p, *span)}; window {p.window}; "
        f"outlier > {p.outlier_ms:g} ms; stall > {p.stall_ms / 1000:g} s)"
    )


def _span(p: ReportParams, first: int | None, last: int | None) -> str:
    """The bounds asked for, else the first and last timestamps of the rows selected."""
    if first is None or last is None:
        since = f"from {_iso(p.since_ms)}" if p.since_ms is not None else ""
        until = f"before {_iso(p.until_ms)}" if p.until_ms is not None else ""
        return " ".join(filter(None, ["no rows", since, until]))
    low = _iso(first if p.since_ms is None else p.since_ms)
    high = _iso(last) if p.until_ms is None else f"before {_iso(p.until_ms)}"
    everything = "all data, " if p.since_ms is None and p.until_ms is None else ""
    return f"{everything}{low} .. {high}"


def impossible(tables: Sequence[Table]) -> str:
    """A line under the heading when the summary counts impossible values, else ""."""
    found = [
        f"{r['chain']}: {r[column]} {what}"
        for table in tables
        if table.name == "summary"
        for r in table.records()
        for column, what in (
            ("non_positive_deltas", "non-positive delta(s)"),
            ("timestamp_disagreements", "timestamp disagreement(s)"),
        )
        if r[column]
    ]
    if not found:
        return ""
    return (
        f"IMPOSSIBLE VALUES ({'; '.join(found)}): served by a lying node (or a bug), and "
        "included in the figures; `blocktimesd validate` names the blocks and the fix."
    )
