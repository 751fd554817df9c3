"""Matplotlib figures as inline SVG: small inputs in, one ``<svg>`` string out.

No pyplot: each figure is a :class:`~matplotlib.figure.Figure` of its own, so nothing
global is left behind.  Text is drawn as paths (``svg.fonttype = path``), so the page
needs no font; the Okabe-Ito palette stays distinct for colour-blind readers, and each
series also has its own marker or line style, so it survives printing in grey.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import matplotlib
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter
from matplotlib.typing import RcKeyType

from blocktimesd.analysis.report_html.queries import BucketStats, Histogram, Span

__all__ = [
    "PALETTE",
    "Quantiles",
    "Series",
    "bars",
    "distribution",
    "latency",
    "over_time",
    "production",
    "segments",
    "summary",
]

# Okabe & Ito (2008), "Color Universal Design".
PALETTE = {
    "black": "#000000",
    "orange": "#E69F00",
    "sky": "#56B4E9",
    "green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "purple": "#CC79A7",
}
# Readable on a laptop at 100 % and in print on A4: 9 in wide, 10 pt text.
WIDTH_IN = 9.0
_RC: dict[RcKeyType, Any] = {
    "svg.fonttype": "path",
    "svg.hashsalt": "blocktimesd",  # stable ids: the same data gives the same file
    "font.size": 10,
    "axes.titlesize": 10,
    "axes.grid": True,
    "grid.color": "#dddddd",
    "grid.linewidth": 0.6,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "timezone": "UTC",
    "date.epoch": "1970-01-01T00:00:00",  # what _when assumes
    "legend.fontsize": 9,
    "legend.frameon": False,
}
# Lines of more points than this are drawn as an embedded PNG (a data: URI inside the
# SVG; axes and text stay vector): 8,000 hourly windows as vector paths made a 1.5 MB
# figure that took seconds to write, for detail finer than a pixel.
DENSE = 1000
RASTER_DPI = 150  # sharp on a 2x laptop screen at the page's width
# The quantile markers: (label, colour, line style), the same in every figure.
_MARKS = (
    ("p50", PALETTE["blue"], "-"),
    ("p90", PALETTE["orange"], "--"),
    ("p99", PALETTE["vermillion"], "-."),
)


@dataclass(frozen=True, slots=True)
class Quantiles:
    """A distribution's summary, in seconds (None: not computed, e.g. no deltas)."""

    mean: float | None
    p50: float | None
    p90: float | None
    p99: float | None
    max: float | None


@dataclass(frozen=True, slots=True)
class Series:
    """One chain's windows over time, in seconds."""

    chain: str
    starts_ms: tuple[int, ...]
    p50: tuple[float | None, ...]
    p90: tuple[float | None, ...]
    p99: tuple[float | None, ...]
    mean: tuple[float | None, ...]
    stalls: tuple[Span, ...]
    gaps: tuple[Span, ...]
    upgrades: tuple[tuple[int, int], ...]  # (timestamp ms, new spec_version)


@contextmanager
def _figure(rows: int, row_height: float, cols: int = 1) -> Iterator[tuple[Figure, list[Axes]]]:
    """A figure of ``rows`` x ``cols`` axes with fixed margins (in inches): constrained
    layout measured every tick label again and took half of the drawing time on log
    axes.  The right margin holds the legends drawn beside the axes."""
    top, bottom, gap = 0.35, 0.6, 0.75  # title above each row, axis label below
    height = top + bottom + rows * row_height + (rows - 1) * gap
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(WIDTH_IN, height))
        fig.subplots_adjust(
            left=0.85 / WIDTH_IN,
            right=1 - 1.75 / WIDTH_IN,
            top=1 - top / height,
            bottom=bottom / height,
            hspace=gap / row_height,
            wspace=0.25,
        )
        axes = fig.subplots(rows, cols, squeeze=False)
        yield fig, [ax for row in axes for ax in row]


def _svg(fig: Figure, prefix: str) -> str:
    """The figure as an ``<svg>`` element whose ids start with ``prefix``: several
    figures share one page, and matplotlib names clip paths and glyphs alike in each."""
    out = io.StringIO()
    with matplotlib.rc_context(_RC):
        fig.savefig(out, format="svg", metadata={"Date": None}, dpi=RASTER_DPI)
    text = out.getvalue()
    text = text[text.index("<svg") :]
    text = re.sub(r'\bid="', f'id="{prefix}-', text)
    return text.replace('href="#', f'href="#{prefix}-').replace("url(#", f"url(#{prefix}-")


def _when(ms: int) -> float:
    """Milliseconds since the epoch as matplotlib's date number (days since the epoch,
    ``date.epoch``)."""
    return ms / 86_400_000


def _dates(ax: Axes) -> None:
    ax.xaxis_date(tz="UTC")
    ax.set_xlabel("time (UTC)")


def _mark_quantiles(ax: Axes, q: Quantiles, target_s: float) -> None:
    for label, colour, style in _MARKS:
        value = getattr(q, label)
        if value is not None and value > 0:
            ax.axvline(value, color=colour, linestyle=style, label=f"{label} {value:g} s")
    ax.axvline(target_s, color=PALETTE["black"], linestyle=":", label=f"expected {target_s:g} s")


def summary(chains: Sequence[str], stats: Sequence[Quantiles], target_s: float) -> str:
    """Per chain, on one log-scaled seconds axis: mean, p50, p90, p99 and max."""
    shapes = {"mean": ("x", PALETTE["black"]), "max": ("D", PALETTE["purple"])}
    shapes |= {label: (m, colour) for (label, colour, _), m in zip(_MARKS, "os^", strict=True)}
    with _figure(1, 0.35 + 0.45 * len(chains)) as (fig, [ax]):
        for name, (marker, colour) in shapes.items():
            points = [(getattr(q, name), y) for y, q in enumerate(stats)]
            drawn = [(x, y) for x, y in points if x]  # log axis: no zero, no None
            ax.scatter(
                [x for x, _ in drawn],
                [y for _, y in drawn],
                marker=marker,
                color=colour,
                s=46,
                label=name,
                zorder=3,
            )
        ax.axvline(target_s, color=PALETTE["black"], linestyle=":", label="expected")
        _seconds_log(ax)
        ax.set_yticks(range(len(chains)), chains)
        ax.set_ylim(-0.6, len(chains) - 0.4)
        ax.set_xlabel("delta since parent (s, log scale)")
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5))
        return _svg(fig, "summary")


def distribution(
    panels: Sequence[tuple[str, Histogram, Quantiles]], target_s: float, prefix: str
) -> str:
    """One histogram per chain: log-scaled seconds, log-scaled counts, quantiles marked."""
    with _figure(len(panels), 2.4) as (fig, axes):
        for ax, (chain, hist, q) in zip(axes, panels, strict=True):
            _log_bars(ax, hist, PALETTE["sky"])
            _mark_quantiles(ax, q, target_s)
            ax.set_title(f"{chain}: {hist.total:,} deltas")
            ax.set_ylabel("blocks (log)")
            ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5))
        axes[-1].set_xlabel("delta since parent (s, log scale)")
        return _svg(fig, prefix)


def _seconds_log(ax: Axes) -> None:
    """A log-scaled seconds axis labelled 1, 2, 5, 10, ... (people read "20 s" faster
    than 10^1.3)."""
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _log_bars(ax: Axes, hist: Histogram, colour: str, label: str | None = None) -> None:
    widths = [hi - lo for lo, hi in zip(hist.lo_s, hist.hi_s, strict=True)]
    ax.bar(hist.lo_s, hist.counts, width=widths, align="edge", color=colour, label=label)
    _seconds_log(ax)
    ax.set_yscale("log")


def over_time(panels: Sequence[Series], window: str, prefix: str) -> str:
    """Per chain: p50/p90/p99/mean per window as lines; stalls (vermillion) and gaps
    (grey) shaded; runtime upgrades as vertical purple lines."""
    with _figure(len(panels), 2.6) as (fig, axes):
        for ax, series in zip(axes, panels, strict=True):
            _window_lines(ax, series)
            _spans(ax, series)
            ax.set_title(f"{series.chain}: per {window}")
            ax.set_ylabel("delta (s)")
            ax.set_ylim(bottom=0)
            _dates(ax)
            ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5))
        return _svg(fig, prefix)


def _window_lines(ax: Axes, s: Series) -> None:
    times = [_when(ms) for ms in s.starts_ms]
    few = len(times) < 30  # a handful of windows: points, or a line would hide them
    styles = [("mean", PALETTE["black"], ":"), *_MARKS]
    for label, colour, style in styles:
        values = [float("nan") if v is None else v for v in getattr(s, label)]
        ax.plot(
            times,
            values,
            color=colour,
            linestyle=style,
            label=label,
            linewidth=1.2,
            marker="o" if few else None,
            markersize=3,
            rasterized=len(times) > DENSE,
        )


def _spans(ax: Axes, s: Series) -> None:
    # One collection per kind (hundreds of separate patches took a second to draw); an
    # edge keeps a one-minute stall visible (one pixel) on a year-long axis.
    for kind, spans, colour in (
        ("stall", s.stalls, PALETTE["vermillion"]),
        ("gap", s.gaps, "#888888"),
    ):
        if spans:
            ax.broken_barh(
                [(_when(x.start_ms), _when(x.end_ms) - _when(x.start_ms)) for x in spans],
                (0, 1),
                transform=ax.get_xaxis_transform(),  # y in axes fraction: full height
                facecolor=colour,
                edgecolor=colour,
                alpha=0.3,
                linewidth=0.8,
                label=kind,
            )
    for i, (ms, version) in enumerate(s.upgrades):
        ax.axvline(
            _when(ms),
            color=PALETTE["purple"],
            linestyle="--",
            linewidth=1.2,
            label="runtime upgrade" if i == 0 else None,
        )
        ax.annotate(
            f"spec {version}",
            (_when(ms), 1.0),
            xycoords=("data", "axes fraction"),
            fontsize=8,
            color=PALETTE["purple"],
            ha="left",
            va="top",
        )


def segments(
    panels: Sequence[tuple[str, Histogram, Histogram, Sequence[BucketStats]]], prefix: str
) -> str:
    """Per consensus chain: the delta distribution with vs without segment headers (as
    shares, the groups differ in size), then p50/p90/p99 by bundle_count bucket."""
    with _figure(len(panels), 2.8, cols=2) as (fig, axes):
        for i, (chain, with_h, without_h, buckets) in enumerate(panels):
            left, right = axes[2 * i], axes[2 * i + 1]
            for hist, colour, style, label in (
                (without_h, PALETTE["blue"], "-", "without segment headers"),
                (with_h, PALETTE["orange"], "--", "with segment headers"),
            ):
                _share_steps(left, hist, colour, style, f"{label} ({hist.total:,})")
            left.set_title(f"{chain}: deltas by segment headers")
            left.set_xlabel("delta (s, log scale)")
            left.set_ylabel("share of blocks")
            left.legend(loc="upper right", fontsize=8)
            _bucket_bars(right, buckets)
            right.set_title(f"{chain}: deltas by bundle_count")
        return _svg(fig, prefix)


def _share_steps(ax: Axes, hist: Histogram, colour: str, style: str, label: str) -> None:
    if not hist.total:
        return
    shares = [n / hist.total for n in hist.counts]
    edges = [*hist.lo_s, hist.hi_s[-1]]
    ax.stairs(shares, edges, color=colour, linestyle=style, linewidth=1.4, label=label)
    _seconds_log(ax)
    ax.set_ylim(0, max(ax.get_ylim()[1], 1.3 * max(shares)))  # room for the legend


def _bucket_bars(ax: Axes, buckets: Sequence[BucketStats]) -> None:
    width = 0.27
    for j, (label, colour, _) in enumerate(_MARKS):
        xs = [i + (j - 1) * width for i in range(len(buckets))]
        hatch = ("", "//", "..")[j]  # told apart in grey print too
        ax.bar(
            xs,
            [getattr(b, f"{label}_s") for b in buckets],
            width=width,
            color=colour,
            hatch=hatch,
            edgecolor="white",
            label=label,
        )
    ax.set_xticks(range(len(buckets)), [f"{b.label}\n{_compact(b.blocks)}" for b in buckets])
    ax.set_xlabel("bundle_count (blocks)")
    ax.set_ylabel("delta (s)")
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5))


def _compact(n: int) -> str:
    """12,345 -> 12.3k: tick labels stay narrower than their bars."""
    for unit, size in (("M", 1_000_000), ("k", 1_000)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return str(n)


def latency(panels: Sequence[tuple[str, Histogram]], prefix: str) -> str:
    """Per domain chain: timestamp(domain) - timestamp(consensus source), log counts."""
    with _figure(len(panels), 2.2) as (fig, axes):
        for ax, (chain, hist) in zip(axes, panels, strict=True):
            # A healthy chain is one bar at 0, a millisecond wide: show a second around
            # it, and draw every bar at least 1 % of the axis wide so that it is seen.
            pad = max(1.0, 0.1 * (hist.hi_s[-1] - hist.lo_s[0]))
            low, high = min(0, hist.lo_s[0]) - pad, max(0, hist.hi_s[-1]) + pad
            least = 0.01 * (high - low)
            ax.bar(
                [(lo + hi) / 2 for lo, hi in zip(hist.lo_s, hist.hi_s, strict=True)],
                hist.counts,
                width=[max(hi - lo, least) for lo, hi in zip(hist.lo_s, hist.hi_s, strict=True)],
                color=PALETTE["green"],
                label="blocks",
            )
            ax.axvline(0, color=PALETTE["black"], linestyle=":", label="0 s (healthy)")
            ax.set_xlim(low, high)
            ax.set_yscale("log")
            ax.set_title(f"{chain}: {hist.total:,} blocks with their consensus block on disk")
            ax.set_ylabel("blocks (log)")
            ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5))
        axes[-1].set_xlabel("timestamp(domain) - timestamp(consensus source) (s)")
        return _svg(fig, prefix)


def production(series: dict[str, tuple[tuple[int, int], ...]], window: str, prefix: str) -> str:
    """Blocks per window: each domain chain against consensus blocks with bundles."""
    colours = [PALETTE["blue"], PALETTE["orange"], PALETTE["green"], PALETTE["purple"]]
    styles = ["-", "--", "-.", ":"]
    with _figure(1, 2.6) as (fig, [ax]):
        for i, (name, points) in enumerate(series.items()):
            times = [_when(ms) for ms, _ in points]
            ax.plot(
                times,
                [n for _, n in points],
                color=colours[i % 4],
                linestyle=styles[i % 4],
                marker="o" if len(times) < 30 else None,
                markersize=3,
                rasterized=len(times) > DENSE,
                label=name.replace(" (", "\n("),  # fits the legend column
            )
        ax.set_ylabel(f"blocks per {window}")
        ax.set_ylim(bottom=0)
        _dates(ax)
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5))
        return _svg(fig, prefix)


def bars(
    series: dict[str, tuple[tuple[int, int], ...]],
    xlabel: str,
    prefix: str,
    window_days: float | None = None,
) -> str:
    """Counts per key, one colour per chain, side by side: per depth, or per window
    (keys are window starts in ms) when ``window_days`` is given."""
    colours = [PALETTE["vermillion"], PALETTE["blue"], PALETTE["green"], PALETTE["purple"]]
    slot = (window_days or 1.0) * 0.8 / len(series)
    with _figure(1, 2.4) as (fig, [ax]):
        for i, (chain, pairs) in enumerate(series.items()):
            offset = (i - (len(series) - 1) / 2) * slot
            keys: list[Any] = (
                [_when(k) + offset for k, _ in pairs]
                if window_days
                else [k + offset for k, _ in pairs]
            )
            ax.bar(
                keys,
                [n for _, n in pairs],
                width=slot,
                color=colours[i % 4],
                edgecolor=colours[i % 4],
                label=chain,
            )
        ax.set_ylabel("reorgs")
        if window_days:
            ax.xaxis_date()
            _dates(ax)
        else:
            ax.set_xlabel(xlabel)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5))
        return _svg(fig, prefix)
