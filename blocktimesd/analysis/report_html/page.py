"""The sections of the HTML report and the page around them.

Each section is a figure and a one-line caption with the numbers behind it; what
cannot be drawn (no deltas, no domain rows, no reorgs) is said in words instead of an
empty axis.  The summary's numbers are the report's ``summary`` table, cell for cell
(each ``<td>`` carries the JSON value in ``data-value``), so the page and
``--format json`` cannot disagree.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from blocktimesd.analysis.queries import Table
from blocktimesd.analysis.report import WINDOW_MS, ReportParams
from blocktimesd.analysis.report_html import figures
from blocktimesd.analysis.report_html.figures import Quantiles, Series
from blocktimesd.analysis.report_html.queries import Extras, Histogram
from blocktimesd.analysis.tables import render_json

__all__ = ["Section", "render_page", "sections"]

Record = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Section:
    key: str
    title: str
    svgs: tuple[str, ...]
    caption: str
    missing: tuple[str, ...] = ()  # what is not drawn, and why
    extra_html: str = ""


def sections(p: ReportParams, tables: Sequence[Table], x: Extras) -> list[Section]:
    by_name = {t.name: t for t in tables}
    summary = by_name["summary"].records()
    return [
        _summary(p, by_name["summary"]),
        _distribution(p, summary, x),
        _over_time(p, summary, by_name["windows"].records(), x),
        _segments(by_name["segments"].records(), x),
        _cross_chain(p, by_name["cross_chain"].records(), x),
        _reorgs(p, x),
    ]


# -- numbers as people read them ---------------------------------------------------------


def _s(ms: Any) -> str:
    return "-" if ms is None else f"{float(ms) / 1000:.4g} s"


def _quantiles(r: Record) -> Quantiles:
    def s(key: str) -> float | None:
        return None if r[key] is None else float(r[key]) / 1000

    return Quantiles(s("mean_ms"), s("p50_ms"), s("p90_ms"), s("p99_ms"), s("max_ms"))


def _duration(first: str, last: str) -> str:
    seconds = (datetime.fromisoformat(last) - datetime.fromisoformat(first)).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.3g} {unit}"
    return f"{seconds:g} s"


def _share(part: int, whole: int) -> str:
    return f"{100 * part / whole:.2g} %" if whole else "-"


# -- 1. summary --------------------------------------------------------------------------

# The summary table's rows: column, label, unit ("ms": shown in seconds).
_SUMMARY_ROWS = (
    ("blocks", "blocks", ""),
    ("first_block", "first block", ""),
    ("last_block", "last block", ""),
    ("first_time", "first time (UTC)", ""),
    ("last_time", "last time (UTC)", ""),
    ("deltas", "deltas", ""),
    ("mean_ms", "mean delta", "ms"),
    ("p50_ms", "p50 delta", "ms"),
    ("p90_ms", "p90 delta", "ms"),
    ("p99_ms", "p99 delta", "ms"),
    ("max_ms", "max delta", "ms"),
    ("stddev_ms", "stddev (jitter)", "ms"),
    ("outliers", "outliers", ""),
    ("stalls", "stalls", ""),
    ("missing_blocks", "missing blocks (gaps)", ""),
    ("non_positive_deltas", "non-positive deltas", ""),
    ("timestamp_disagreements", "timestamp disagreements", ""),
)


def _summary(p: ReportParams, table: Table) -> Section:
    records = table.records()
    title = "Summary per chain"
    if not records:
        return Section("summary", title, (), "", ("no rows in the range asked for",))
    target = p.expected_block_ms / 1000
    drawn = [r for r in records if r["deltas"]]
    svgs = (
        (figures.summary([r["chain"] for r in drawn], [_quantiles(r) for r in drawn], target),)
        if drawn
        else ()
    )
    missing = tuple(
        f"{r['chain']}: no delta to plot ({r['blocks']} block, no parent in range)"
        for r in records
        if not r["deltas"]
    )
    caption = (
        f"Expected block time {target:g} s; outlier > {p.outlier_ms / 1000:g} s, "
        f"stall > {p.stall_ms / 1000:g} s. "
        + "; ".join(
            f"{r['chain']}: {r['blocks']:,} blocks over "
            f"{_duration(r['first_time'], r['last_time'])}"
            f", mean {_s(r['mean_ms'])}, p50 {_s(r['p50_ms'])}, p90 {_s(r['p90_ms'])}, "
            f"p99 {_s(r['p99_ms'])}, max {_s(r['max_ms'])}, "
            f"{_share(r['outliers'], r['deltas'])} outliers, {r['stalls']} stalls, "
            f"{r['missing_blocks']} missing blocks"
            for r in records
        )
    )
    return Section("summary", title, svgs, caption, missing, _summary_table(table))


def _summary_table(table: Table) -> str:
    plain = json.loads(render_json([table]))["summary"]  # the values --format json prints
    head = "".join(f"<th scope='col'>{html.escape(r['chain'])}</th>" for r in plain)
    body = []
    for key, label, unit in _SUMMARY_ROWS:
        cells = "".join(
            f"<td data-chain='{html.escape(r['chain'])}' data-key='{key}' "
            f"data-value='{html.escape(json.dumps(r[key]))}'>{_cell(r[key], unit)}</td>"
            for r in plain
        )
        body.append(f"<tr><th scope='row'>{label}</th>{cells}</tr>")
    return (
        "<table class='summary'><thead><tr><th></th>"
        f"{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    )


def _cell(value: Any, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "ms":
        return f"{value / 1000:.3f} s"
    return f"{value:,}" if isinstance(value, int) else html.escape(str(value))


# -- 2. distribution ---------------------------------------------------------------------


def _distribution(p: ReportParams, summary: Sequence[Record], x: Extras) -> Section:
    title = "Distribution of delta_since_parent"
    panels = [
        (r["chain"], x.deltas[r["chain"]], _quantiles(r))
        for r in summary
        if x.deltas.get(r["chain"], Histogram((), (), ())).total
    ]
    missing = tuple(
        f"{r['chain']}: no positive delta" for r in summary if r["chain"] not in x.deltas
    )
    if not panels:
        return Section("distribution", title, (), "", missing or ("no rows",))
    target = p.expected_block_ms / 1000
    svg = figures.distribution(panels, target, "distribution")
    caption = "Blocks per log-spaced delta bin (both axes log-scaled); " + "; ".join(
        f"{chain}: {h.total:,} deltas from {h.lo_s[0]:.3g} s to {h.hi_s[-1]:.3g} s, "
        f"p50 {q.p50:g} s, p90 {q.p90:g} s, p99 {q.p99:g} s (expected {target:g} s)"
        for chain, h, q in panels
    )
    return Section("distribution", title, (svg,), caption, missing)


# -- 3. over time ------------------------------------------------------------------------


def _over_time(
    p: ReportParams, summary: Sequence[Record], windows: Sequence[Record], x: Extras
) -> Section:
    title = f"Over time, per {p.window}"
    rows: dict[str, list[Record]] = {}
    for w in windows:
        if w["deltas"]:
            rows.setdefault(w["chain"], []).append(w)
    missing = tuple(f"{r['chain']}: no delta" for r in summary if r["chain"] not in rows)
    if not rows:
        return Section("over_time", title, (), "", missing or ("no rows",))
    panels = [_series(chain, ws, x) for chain, ws in rows.items()]
    caption = "p50/p90/p99/mean per window; stalls and gaps shaded; runtime upgrades marked. " + (
        "; ".join(
            f"{s.chain}: {len(s.starts_ms)} {p.window}s, "
            f"{x.stalls_total.get(s.chain, 0)} stalls, {len(s.gaps)} gaps, "
            + (
                "upgrades to spec " + ", ".join(str(v) for _, v in s.upgrades)
                if s.upgrades
                else "no runtime upgrade"
            )
            for s in panels
        )
    )
    return Section(
        "over_time", title, (figures.over_time(panels, p.window, "over_time"),), caption, missing
    )


def _series(chain: str, ws: Sequence[Record], x: Extras) -> Series:
    def seconds(key: str) -> tuple[float | None, ...]:
        return tuple(None if w[key] is None else float(w[key]) / 1000 for w in ws)

    return Series(
        chain=chain,
        starts_ms=tuple(
            int(datetime.fromisoformat(w["window_start"]).timestamp() * 1000) for w in ws
        ),
        p50=seconds("p50_ms"),
        p90=seconds("p90_ms"),
        p99=seconds("p99_ms"),
        mean=seconds("mean_ms"),
        stalls=x.stalls.get(chain, ()),
        gaps=x.gaps.get(chain, ()),
        upgrades=x.upgrades.get(chain, ()),
    )


# -- 4. segments -------------------------------------------------------------------------


def _segments(table: Sequence[Record], x: Extras) -> Section:
    title = "Consensus: segment headers and bundles"
    chains = sorted({chain for chain, _ in x.segments} | set(x.bundles))
    if not chains:
        return Section(
            "segments",
            title,
            (),
            "",
            (
                "no consensus rows with deltas (contained_store_segment_headers and "
                "bundle_count are consensus columns)",
            ),
        )
    empty = Histogram((), (), ())
    panels = [
        (
            c,
            x.segments.get((c, True), empty),
            x.segments.get((c, False), empty),
            x.bundles.get(c, ()),
        )
        for c in chains
    ]
    missing = tuple(
        f"{c}: no block {'with' if flag else 'without'} segment headers"
        for c in chains
        for flag in (True, False)
        if (c, flag) not in x.segments
    )
    caption = (
        "; ".join(
            f"{r['chain']} {'with' if r['segment_headers'] else 'without'} segment headers: "
            f"{r['blocks']:,} blocks, mean {_s(r['mean_ms'])}, p50 {_s(r['p50_ms'])}, "
            f"p99 {_s(r['p99_ms'])}"
            for r in table
        )
        + ". By bundle_count: "
        + "; ".join(
            f"{c} {b.label}: {b.blocks:,} blocks, p50 {b.p50_s:g} s"
            for c in chains
            for b in x.bundles.get(c, ())
        )
    )
    return Section("segments", title, (figures.segments(panels, "segments"),), caption, missing)


# -- 5. cross-chain ----------------------------------------------------------------------


def _cross_chain(p: ReportParams, table: Sequence[Record], x: Extras) -> Section:
    title = "Cross-chain latency and domain block production"
    if not table:
        return Section(
            "cross_chain",
            title,
            (),
            "",
            ("no domain rows (a chain without slots, mapped to consensus blocks)",),
        )
    svgs = []
    panels = [(chain, h) for chain, h in x.latency.items() if h.total]
    if panels:
        svgs.append(figures.latency(panels, "latency"))
    if x.production:
        svgs.append(figures.production(x.production, p.window, "production"))
    missing = tuple(
        f"{r['chain']}: no domain row has its consensus block on disk"
        for r in table
        if not r["matched"]
    )
    caption = (
        "; ".join(
            f"{r['chain']}: {r['blocks']:,} blocks, {r['matched']:,} matched to their consensus "
            f"block, latency p50 {_s(r['p50_ms'])}, p99 {_s(r['p99_ms'])}, max {_s(r['max_ms'])}, "
            f"{r['nonzero']:,} non-zero (0 = healthy)"
            for r in table
        )
        + "; "
        + ", ".join(
            f"{name}: {sum(n for _, n in pts):,} blocks" for name, pts in x.production.items()
        )
    )
    return Section("cross_chain", title, tuple(svgs), caption, missing)


# -- 6. reorgs ---------------------------------------------------------------------------


def _reorgs(p: ReportParams, x: Extras) -> Section:
    title = "Reorgs"
    r = x.reorgs
    if not r.files:
        return Section(
            "reorgs",
            title,
            (),
            "",
            ("no reorgs dataset: DATA_DIR/reorgs has no file for these chains",),
        )
    if not r.by_depth:
        return Section(
            "reorgs",
            title,
            (),
            "",
            (f"no reorg in the range asked for ({r.files} reorg files read)",),
        )
    svgs = (
        figures.bars(r.by_depth, "depth (blocks retracted)", "reorg_depth"),
        figures.bars(r.by_window, "", "reorg_time", WINDOW_MS[p.window] / 86_400_000),
    )
    caption = "Reorgs by depth, then per window; " + "; ".join(
        f"{chain}: {sum(n for _, n in pairs):,} reorgs, deepest {max(d for d, _ in pairs)} blocks"
        for chain, pairs in r.by_depth.items()
    )
    return Section("reorgs", title, svgs, caption)


# -- the page ----------------------------------------------------------------------------

# No request may leave the page: everything is inline, and the policy says so.
_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
_CSS = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 1.5rem auto; max-width: 62rem;
       padding: 0 1rem; color: #111; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.2rem; margin-top: 2rem; }
figure { margin: 0.5rem 0; } figure svg { max-width: 100%; height: auto; display: block; }
figcaption, .meta { color: #333; font-size: 0.9rem; }
.missing { background: #fff4e0; border-left: 4px solid #E69F00; padding: 0.3rem 0.6rem; }
.impossible { background: #fde8e0; border-left: 4px solid #D55E00; padding: 0.3rem 0.6rem; }
table.summary { border-collapse: collapse; font-size: 0.85rem; margin-top: 0.5rem; }
table.summary th, table.summary td { padding: 0.15rem 0.6rem; border-bottom: 1px solid #ddd; }
table.summary td { text-align: right; font-variant-numeric: tabular-nums; }
table.summary th[scope=row] { text-align: left; font-weight: normal; }
@media print { section { break-inside: avoid; } }
"""


def render_page(heading: str, impossible: str, parts: Sequence[Section]) -> str:
    body = "\n".join(_section(s) for s in parts)
    warn = f"<p class='impossible'>{html.escape(impossible)}</p>" if impossible else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{_CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>blocktimesd report</title><style>{_CSS}</style></head>
<body><h1>Block times</h1><p class="meta">{html.escape(heading)}</p>{warn}
{body}
</body></html>
"""


def _section(s: Section) -> str:
    # One figure per section (its panels as SVGs), its caption inside it.
    caption = f"<figcaption>{html.escape(s.caption)}</figcaption>" if s.caption else ""
    svgs = "".join(s.svgs)
    figure = f"<figure>{svgs}{caption}</figure>" if svgs or caption else ""
    missing = "".join(f"<p class='missing'>{html.escape(m)}</p>" for m in s.missing)
    return (
        f"<section id='{s.key}' data-section='{s.key}'><h2>{html.escape(s.title)}</h2>"
        f"{figure}{missing}{s.extra_html}</section>"
    )
