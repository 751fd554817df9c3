"""The aggregates the plots need beyond the report's tables, computed by DuckDB.

Run on the connection :func:`blocktimesd.analysis.report.build_report` has prepared (its
``sel``, ``gaps``, ``xc``, ``domain_chains`` and ``notable`` relations), so the plots
and the table report read the same rows.  Every query returns at most a few thousand
rows whatever the dataset's size: deltas are binned and windows aggregated in SQL,
never fetched.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from blocktimesd.analysis.queries import rows_globs, sql_literal
from blocktimesd.analysis.report import WINDOW_MS, ReportParams
from blocktimesd.dataset.layout import REORGS

__all__ = [
    "BINS_PER_DECADE",
    "BUNDLE_BUCKETS",
    "MAX_SPANS",
    "BucketStats",
    "Extras",
    "Histogram",
    "Reorgs",
    "Span",
    "extras",
]

# Log-spaced delta bins: narrow enough to show the one-second slot ladder (~6 % wide).
BINS_PER_DECADE = 40
# Spans drawn per chain and kind; the longest are kept (thousands of 1-pixel spans
# would only grow the file).
MAX_SPANS = 500
# bundle_count buckets: label, low, high (inclusive; None: no bound).
BUNDLE_BUCKETS: tuple[tuple[str, int, int | None], ...] = (
    ("0", 0, 0),
    ("1", 1, 1),
    ("2", 2, 2),
    ("3", 3, 3),
    ("4-7", 4, 7),
    ("8+", 8, None),
)


@dataclass(frozen=True, slots=True)
class Histogram:
    """Counts in bins ``[lo, hi)`` (seconds), sparse: empty bins are absent."""

    lo_s: tuple[float, ...]
    hi_s: tuple[float, ...]
    counts: tuple[int, ...]

    @property
    def total(self) -> int:
        return sum(self.counts)


@dataclass(frozen=True, slots=True)
class BucketStats:
    label: str
    blocks: int
    p50_s: float
    p90_s: float
    p99_s: float


@dataclass(frozen=True, slots=True)
class Span:
    start_ms: int
    end_ms: int


@dataclass(frozen=True, slots=True)
class Reorgs:
    """Reorgs in range per chain: counts by depth, and per window (start ms, count)."""

    files: int
    by_depth: dict[str, tuple[tuple[int, int], ...]]
    by_window: dict[str, tuple[tuple[int, int], ...]]


@dataclass(frozen=True, slots=True)
class Extras:
    deltas: dict[str, Histogram]  # per chain, positive deltas
    segments: dict[tuple[str, bool], Histogram]  # (chain, contained segment headers)
    bundles: dict[str, tuple[BucketStats, ...]]  # consensus chains
    upgrades: dict[str, tuple[tuple[int, int], ...]]  # (first timestamp, new spec_version)
    stalls: dict[str, tuple[Span, ...]]
    stalls_total: dict[str, int]
    gaps: dict[str, tuple[Span, ...]]
    latency: dict[str, Histogram]  # domain chains, in seconds (any sign)
    production: dict[str, tuple[tuple[int, int], ...]]  # chain -> (window start, blocks)
    reorgs: Reorgs


def extras(con: duckdb.DuckDBPyConnection, p: ReportParams) -> Extras:
    """Every aggregate of the plots; ``con`` as :func:`build_report` with all sections
    left it."""
    _extended_view(con, p)
    deltas, segments = _delta_histograms(con)
    stalls, stalls_total = _stalls(con, p)
    return Extras(
        deltas=deltas,
        segments=segments,
        bundles=_bundles(con),
        upgrades=_upgrades(con),
        stalls=stalls,
        stalls_total=stalls_total,
        gaps=_gaps(con),
        latency=_latency(con),
        production=_production(con, p),
        reorgs=_reorgs(con, p),
    )


def _time_filter(column: str, p: ReportParams) -> str:
    where = ["true"]
    if p.since_ms is not None:
        where.append(f"{column} >= {p.since_ms}")
    if p.until_ms is not None:
        where.append(f"{column} < {p.until_ms}")
    return " AND ".join(where)


def _extended_view(con: duckdb.DuckDBPyConnection, p: ReportParams) -> None:
    """``ext``: the columns the report's ``sel`` leaves out, over the same files and
    range (a view: DuckDB reads only the columns each query uses)."""
    con.execute(f"""
        CREATE OR REPLACE TEMP VIEW ext AS
        SELECT chain, timestamp_ms, delta_since_parent_ms AS delta, bundle_count,
               spec_version
        FROM read_parquet({sql_literal(rows_globs(p.data_dir, p.chains))},
                          hive_partitioning = false)
        WHERE {_time_filter("timestamp_ms", p)}""")


def _histogram(rows: list[tuple[float, float, int]]) -> Histogram:
    lo, hi, counts = zip(*rows, strict=True) if rows else ((), (), ())
    return Histogram(tuple(lo), tuple(hi), tuple(counts))


def _log_edges(k: int) -> tuple[float, float]:
    return 10 ** (k / BINS_PER_DECADE) / 1000, 10 ** ((k + 1) / BINS_PER_DECADE) / 1000


def _delta_histograms(
    con: duckdb.DuckDBPyConnection,
) -> tuple[dict[str, Histogram], dict[tuple[str, bool], Histogram]]:
    """One scan: counts per (chain, segment headers, log bin); the per-chain and the
    per-segment-flag histograms are sums of it."""
    rows = con.execute(f"""
        SELECT chain, segment_headers, floor(log10(delta) * {BINS_PER_DECADE})::INTEGER AS k,
               count(*) AS n
        FROM sel WHERE delta > 0 GROUP BY ALL ORDER BY chain, k""").fetchall()
    per_chain: dict[str, dict[int, int]] = {}
    per_flag: dict[tuple[str, bool], dict[int, int]] = {}
    for chain, flag, k, n in rows:
        bins = per_chain.setdefault(chain, {})
        bins[k] = bins.get(k, 0) + n
        if flag is not None:
            per_flag.setdefault((chain, flag), {})[k] = n

    def build(bins: dict[int, int]) -> Histogram:
        return _histogram([(*_log_edges(k), bins[k]) for k in sorted(bins)])

    return (
        {chain: build(bins) for chain, bins in per_chain.items()},
        {key: build(bins) for key, bins in per_flag.items()},
    )


def _bundles(con: duckdb.DuckDBPyConnection) -> dict[str, tuple[BucketStats, ...]]:
    cases = " ".join(
        f"WHEN bundle_count >= {lo}{'' if hi is None else f' AND bundle_count <= {hi}'} THEN {i}"
        for i, (_, lo, hi) in enumerate(BUNDLE_BUCKETS)
    )
    rows = con.execute(f"""
        SELECT chain, CASE {cases} END AS bucket, count(*) AS n,
               quantile_disc(delta, [0.5, 0.9, 0.99]) AS q
        FROM ext WHERE bundle_count IS NOT NULL AND delta IS NOT NULL
        GROUP BY ALL ORDER BY chain, bucket""").fetchall()
    out: dict[str, list[BucketStats]] = {}
    for chain, bucket, n, q in rows:
        label = BUNDLE_BUCKETS[bucket][0]
        out.setdefault(chain, []).append(BucketStats(label, n, *(v / 1000 for v in q)))
    return {chain: tuple(stats) for chain, stats in out.items()}


def _upgrades(con: duckdb.DuckDBPyConnection) -> dict[str, tuple[tuple[int, int], ...]]:
    """Runtime upgrades: where each spec_version but a chain's first appears.

    Grouping by version (a hash aggregate) costs far less than comparing each row
    with its parent (a sort); versions only go up, so the two agree.
    """
    rows = con.execute("""
        SELECT chain, min(timestamp_ms) AS first_ts, spec_version
        FROM ext WHERE spec_version IS NOT NULL
        GROUP BY chain, spec_version ORDER BY chain, first_ts""").fetchall()
    out: dict[str, list[tuple[int, int]]] = {}
    for chain, first_ts, version in rows:
        out.setdefault(chain, []).append((first_ts, version))
    return {chain: tuple(found[1:]) for chain, found in out.items() if len(found) > 1}


def _stalls(
    con: duckdb.DuckDBPyConnection, p: ReportParams
) -> tuple[dict[str, tuple[Span, ...]], dict[str, int]]:
    """The longest stalls per chain (from ``notable``, already small), and how many."""
    rows = con.execute(f"""
        SELECT chain, timestamp_ms - delta, timestamp_ms, count(*) OVER (PARTITION BY chain)
        FROM notable WHERE delta > {p.stall_ms}
        QUALIFY row_number() OVER (PARTITION BY chain ORDER BY delta DESC) <= {MAX_SPANS}
        ORDER BY chain, timestamp_ms""").fetchall()
    spans: dict[str, list[Span]] = {}
    totals: dict[str, int] = {}
    for chain, start, end, total in rows:
        spans.setdefault(chain, []).append(Span(start, end))
        totals[chain] = total
    return {chain: tuple(s) for chain, s in spans.items()}, totals


def _gaps(con: duckdb.DuckDBPyConnection) -> dict[str, tuple[Span, ...]]:
    rows = con.execute(f"""
        SELECT chain, prev_ts, next_ts FROM gaps
        QUALIFY row_number() OVER (PARTITION BY chain ORDER BY missing DESC) <= {MAX_SPANS}
        ORDER BY chain, prev_ts""").fetchall()
    out: dict[str, list[Span]] = {}
    for chain, start, end in rows:
        out.setdefault(chain, []).append(Span(start, end))
    return {chain: tuple(s) for chain, s in out.items()}


def _latency(con: duckdb.DuckDBPyConnection) -> dict[str, Histogram]:
    """Linear bins over each domain chain's latency range (about 60 of them, at least
    one millisecond wide), so a healthy chain is one bar at 0."""
    rows = con.execute("""
        WITH r AS (SELECT chain, min(latency) AS low,
                          greatest(1, ceil((max(latency) - min(latency) + 1) / 60))::BIGINT
                              AS width
                   FROM xc WHERE latency IS NOT NULL GROUP BY chain)
        SELECT chain, low + (latency - low) // width * width AS lo, width, count(*) AS n
        FROM xc JOIN r USING (chain) WHERE latency IS NOT NULL
        GROUP BY ALL ORDER BY chain, lo""").fetchall()
    out: dict[str, list[tuple[float, float, int]]] = {}
    for chain, lo, width, n in rows:
        out.setdefault(chain, []).append((lo / 1000, (lo + width) / 1000, n))
    return {chain: _histogram(bins) for chain, bins in out.items()}


def _production(
    con: duckdb.DuckDBPyConnection, p: ReportParams
) -> dict[str, tuple[tuple[int, int], ...]]:
    """Per window: blocks of each domain chain, and consensus blocks with bundles
    (keyed ``<chain> (with bundles)``): a domain block is built from bundles."""
    width = WINDOW_MS[p.window]
    rows = con.execute(f"""
        SELECT chain, timestamp_ms // {width} * {width} AS start, count(*) AS n
        FROM sel WHERE chain IN (SELECT chain FROM domain_chains) GROUP BY ALL
        UNION ALL
        SELECT chain || ' (with bundles)', timestamp_ms // {width} * {width}, count(*)
        FROM ext WHERE bundle_count > 0 GROUP BY ALL
        ORDER BY 1, 2""").fetchall()
    out: dict[str, list[tuple[int, int]]] = {}
    for chain, start, n in rows:
        out.setdefault(chain, []).append((start, n))
    return {chain: tuple(points) for chain, points in out.items()}


def _reorgs(con: duckdb.DuckDBPyConnection, p: ReportParams) -> Reorgs:
    # Listed by DuckDB, as it lists the rows: the same globbing, local or in S3.
    files = [
        file
        for chain in p.chains or ("*",)
        for (file,) in con.execute(
            "SELECT file FROM glob(?)", [str(p.data_dir / REORGS / f"chain={chain}" / "*.parquet")]
        ).fetchall()
    ]
    if not files:
        return Reorgs(0, {}, {})
    width = WINDOW_MS[p.window]
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE reorgs_in_range AS
        SELECT chain, detected_ts_ms, depth
        FROM read_parquet({sql_literal(files)}, hive_partitioning = false)
        WHERE {_time_filter("detected_ts_ms", p)}""")
    return Reorgs(
        len(files),
        _pairs(con, "SELECT chain, depth, count(*) FROM reorgs_in_range GROUP BY ALL"),
        _pairs(
            con,
            f"SELECT chain, detected_ts_ms // {width} * {width}, count(*) "
            "FROM reorgs_in_range GROUP BY ALL",
        ),
    )


def _pairs(con: duckdb.DuckDBPyConnection, sql: str) -> dict[str, tuple[tuple[int, int], ...]]:
    out: dict[str, list[tuple[int, int]]] = {}
    for chain, key, n in con.execute(sql + " ORDER BY 1, 2").fetchall():
        out.setdefault(chain, []).append((key, n))
    return {chain: tuple(pairs) for chain, pairs in out.items()}
