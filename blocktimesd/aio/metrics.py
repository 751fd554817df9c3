"""The daemon's Prometheus metrics, registered on an injected registry.

Live metrics follow the best head; the dataset follows confirmation.  The best block,
the head lag and the time since the last head move with every new best head, forks
included, so they show at once when a chain stalls.  Block deltas (histogram and
sliding-window quantiles), the confirmed block, reorg and writer counts move only as
blocks are confirmed at depth k, so they agree with the rows in the dataset and a
reorg never counts a delta twice.

Head lag, time since the last head and the delta quantiles are computed when
Prometheus scrapes, from the injected clock (seconds since the epoch, like the
on-chain timestamps), so they keep growing while a chain is stuck.  All methods are
called from the event loop that also serves ``/metrics``.

Head lag is how old the best head is: now minus its on-chain timestamp, or minus the
time it arrived when its timestamp is later than that.  A head cannot have been made
after it arrived, so a timestamp in the future says that this host's clock is behind
the chain's (or that the chain's clock runs fast, as the simulated network's does at
``--speed`` above 1); counting from the arrival keeps the lag a true lower bound that
is never negative, and ``blocktimes_head_timestamp_ahead_seconds`` shows by how much
the timestamp was ahead (0 on a healthy host).
"""

from __future__ import annotations

import math
import platform
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from blocktimesd import __version__
from blocktimesd.aio.rpc import RpcObserver

__all__ = [
    "DELTA_BUCKETS",
    "QUANTILES",
    "REORG_DEPTH_BUCKETS",
    "RPC_DURATION_BUCKETS",
    "DeltaWindow",
    "Metrics",
]

# Consensus blocks come every ~6 s; the top buckets tell a slow block from a stall.
DELTA_BUCKETS = (0.5, 1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 30, 45, 60, 90, 120, 300)
REORG_DEPTH_BUCKETS = (1, 2, 3, 4, 5, 6, 8, 10, 16, 32, 64, 100, 256)
RPC_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
QUANTILES = (0.5, 0.9, 0.99, 1.0)


class DeltaWindow:
    """The last ``size`` block deltas of one chain, in seconds."""

    __slots__ = ("_deltas",)

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("a delta window holds at least one delta")
        # Bounded: when full, the oldest delta drops out.
        self._deltas: deque[float] = deque(maxlen=size)

    def add(self, seconds: float) -> None:
        self._deltas.append(seconds)

    def __len__(self) -> int:
        return len(self._deltas)

    def quantiles(self, qs: Iterable[float]) -> list[tuple[float, float]]:
        """Nearest-rank quantiles: each is a delta that was observed; q=1 is the maximum."""
        ordered = sorted(self._deltas)
        if not ordered:
            return []
        n = len(ordered)
        return [(q, ordered[max(0, math.ceil(q * n) - 1)]) for q in qs]


@dataclass(slots=True)
class _Head:
    number: int
    timestamp_ms: int | None
    seen_at: float  # our clock when this head arrived


class _LiveCollector(Collector):
    """The metrics that depend on the time of the scrape, and the gauges that move with
    every block (read when scraped, rather than set on every block)."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def describe(self) -> Iterable[Metric]:
        return list(self._families())

    def collect(self) -> Iterable[Metric]:
        m = self._metrics
        lag, ahead, since, quantile, window, best, confirmed, waiting, queue, pending = (
            self._families()
        )
        for family, values in (
            (best, m._best),
            (confirmed, m._confirmed),
            (waiting, m._waiting),
            (pending, m._rows_pending),
        ):
            for chain, count in sorted(values.items()):
                family.add_metric([chain], count)
        queue.add_metric([], m._queue_items)
        now = m._clock()
        for chain, head in sorted(m._heads.items()):
            if head.timestamp_ms is not None:
                made = head.timestamp_ms / 1000
                lag.add_metric([chain], now - min(made, head.seen_at))
                ahead.add_metric([chain], max(0.0, made - head.seen_at))
            since.add_metric([chain], now - head.seen_at)
        for chain, deltas in sorted(m._windows.items()):
            window.add_metric([chain], len(deltas))
            for q, value in deltas.quantiles(QUANTILES):
                quantile.add_metric([chain, f"{q:g}"], value)
        return [lag, ahead, since, quantile, window, best, confirmed, waiting, queue, pending]

    @staticmethod
    def _families() -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "blocktimes_head_lag_seconds",
            "How old the best head is: now minus its on-chain timestamp, or minus when it "
            "arrived if the timestamp is later (never negative; see "
            "blocktimes_head_timestamp_ahead_seconds)",
            labels=["chain"],
        )
        yield GaugeMetricFamily(
            "blocktimes_head_timestamp_ahead_seconds",
            "How far the best head's on-chain timestamp was ahead of this host's clock when "
            "it arrived (0 normally; above 0: this clock is behind the chain's, or a "
            "simulated chain runs fast)",
            labels=["chain"],
        )
        yield GaugeMetricFamily(
            "blocktimes_seconds_since_last_head",
            "Seconds since the last new best head arrived",
            labels=["chain"],
        )
        yield GaugeMetricFamily(
            "blocktimes_block_delta_quantile_seconds",
            "Quantiles (nearest rank) of the recent confirmed block deltas",
            labels=["chain", "quantile"],
        )
        yield GaugeMetricFamily(
            "blocktimes_block_delta_window_deltas",
            "How many recent deltas the quantiles are taken over",
            labels=["chain"],
        )
        yield GaugeMetricFamily(
            "blocktimes_best_block", "Number of the best head", labels=["chain"]
        )
        yield GaugeMetricFamily(
            "blocktimes_confirmed_block",
            "Number of the last block confirmed at depth k",
            labels=["chain"],
        )
        yield GaugeMetricFamily(
            "blocktimes_rows_waiting",
            "Confirmed blocks whose rows wait to be formed (e.g. for the consensus chain)",
            labels=["chain"],
        )
        yield GaugeMetricFamily(
            "blocktimes_writer_queue_rows",
            "Items in the writer's queue (a batch of rows counts as one; see "
            "blocktimes_writer_rows_pending for rows)",
            labels=[],
        )
        yield GaugeMetricFamily(
            "blocktimes_writer_rows_pending",
            "Rows the writer holds in memory that are not yet durable in a file (queued, or "
            "buffered since the open file's last snapshot, taken every minute)",
            labels=["chain"],
        )


class Metrics:
    """Every metric of the daemon, and the calls that move them."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        chains: Iterable[str] = (),
        delta_window: int = 1000,
        clock: Callable[[], float] = time.time,
        version: str = __version__,
    ) -> None:
        # No ``*_created`` series: they double the counter and histogram series and no
        # dashboard or alert reads them.  prometheus_client decides this for the whole
        # process, at every scrape; the daemon exports nothing but this registry.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self._clock = clock
        self._window_size = delta_window
        self._heads: dict[str, _Head] = {}
        self._windows: dict[str, DeltaWindow] = {}
        self._deltas: dict[str, Any] = {}  # blocktimes_block_delta_seconds, by chain
        # The gauges that move with every block, by chain (exported by _LiveCollector).
        self._best: dict[str, int] = {}
        self._confirmed: dict[str, int] = {}
        self._waiting: dict[str, int] = {}
        self._rows_pending: dict[str, int] = {}
        self._queue_items = 0
        r = registry
        chain = ["chain"]
        self.up = Gauge("blocktimes_up", "1 while the daemon runs", registry=r)
        self.build = Info("blocktimes_build", "Version of blocktimesd", registry=r)
        self.following = Gauge(
            "blocktimes_chain_following",
            "1 while the chain is connected and followed",
            chain,
            registry=r,
        )
        self.block_delta = Histogram(
            "blocktimes_block_delta_seconds",
            "Timestamp of a confirmed block minus its parent's",
            chain,
            buckets=DELTA_BUCKETS,
            registry=r,
        )
        self.reorgs = Counter("blocktimes_reorgs", "Reorgs of the best chain", chain, registry=r)
        self.reorg_depth = Histogram(
            "blocktimes_reorg_depth",
            "Blocks retracted by a reorg",
            chain,
            buckets=REORG_DEPTH_BUCKETS,
            registry=r,
        )
        self.deep_reorgs = Counter(
            "blocktimes_deep_reorgs", "Reorgs that retracted confirmed blocks", chain, registry=r
        )
        self.unresolved_mappings = Counter(
            "blocktimes_unresolved_mappings",
            "Domain blocks whose consensus block could not be resolved",
            chain,
            registry=r,
        )
        self.follower_retries = Counter(
            "blocktimes_follower_retries",
            "Work a follower had to redo, by what went wrong (transient, node fault)",
            ["chain", "outcome"],
            registry=r,
        )
        self.invariant_violations = Counter(
            "blocktimes_row_invariant_violations",
            "Rows refused because they did not follow the previous row (then re-walked)",
            chain,
            registry=r,
        )
        self.anomalies = Counter(
            "blocktimes_block_anomalies",
            "Blocks written as the chain says but flagged (non_positive_delta, "
            "timestamp_differs_from_consensus)",
            ["chain", "kind"],
            registry=r,
        )
        self.rows_written = Counter(
            "blocktimes_rows_written",
            "Rows made durable in Parquet files (completed files and the minutely snapshots "
            "of open ones; each row counted once)",
            chain,
            registry=r,
        )
        self.files_written = Counter(
            "blocktimes_files_written", "Parquet files completed", chain, registry=r
        )
        self.writer_errors = Counter(
            "blocktimes_writer_errors", "Failed attempts to write a file", registry=r
        )
        self.writer_last_success = Gauge(
            "blocktimes_writer_last_success_timestamp_seconds",
            "When the writer last completed a write (or took DATA_DIR at start), in seconds "
            "since the epoch",
            registry=r,
        )
        self.rpc_requests = Counter(
            "blocktimes_rpc_requests",
            "JSON-RPC requests by outcome (ok, timeout, error <code>, connection lost)",
            ["chain", "method", "outcome"],
            registry=r,
        )
        self.rpc_duration = Histogram(
            "blocktimes_rpc_request_duration_seconds",
            "Time from sending a JSON-RPC request to its answer",
            ["chain", "method"],
            buckets=RPC_DURATION_BUCKETS,
            registry=r,
        )
        self.rpc_reconnects = Counter(
            "blocktimes_rpc_reconnects", "Connections made after the first", chain, registry=r
        )
        self.rpc_connect_failures = Counter(
            "blocktimes_rpc_connect_failures",
            "Connection attempts that did not become ready, by kind (refused, dns, timeout, "
            "tls, handshake, network, invalid url, preflight, unusable, lost, internal)",
            ["chain", "reason"],
            registry=r,
        )
        self.rpc_dropped = Counter(
            "blocktimes_rpc_dropped_connections",
            "Connections the client dropped, by reason (fail over, stalled, timeouts, "
            "protocol error, internal)",
            ["chain", "reason"],
            registry=r,
        )
        r.register(_LiveCollector(self))
        self.up.set(1)
        self.build.info({"version": version, "python": platform.python_version()})
        for name in chains:
            self.add_chain(name)

    def add_chain(self, chain: str) -> None:
        """Make the chain's series exist (at 0) before anything happens on it."""
        for counter in (
            self.reorgs,
            self.deep_reorgs,
            self.unresolved_mappings,
            self.rows_written,
            self.files_written,
            self.rpc_reconnects,
            self.invariant_violations,
        ):
            counter.labels(chain)
        self.following.labels(chain).set(0)
        for gauge in (self._best, self._confirmed, self._waiting, self._rows_pending):
            gauge.setdefault(chain, 0)
        self.reorg_depth.labels(chain)
        self._windows.setdefault(chain, DeltaWindow(self._window_size))
        self._delta(chain)

    def _delta(self, chain: str) -> Any:
        """``chain``'s delta histogram, looked up once (``labels()`` hashes and locks on
        every call)."""
        found = self._deltas.get(chain)
        if found is None:
            found = self._deltas[chain] = self.block_delta.labels(chain)
        return found

    # -- the followers -------------------------------------------------------------------

    def observe_head(
        self, chain: str, number: int, timestamp_ms: int | None, now: float | None = None
    ) -> None:
        """A new best head; ``now`` is when it arrived (default: the clock)."""
        seen_at = self._clock() if now is None else now
        self._heads[chain] = _Head(number, timestamp_ms, seen_at)
        self._best[chain] = number

    def observe_confirmed(self, chain: str, number: int, delta_ms: int | None) -> None:
        """A block confirmed at depth k; ``delta_ms`` is None where it has no parent time."""
        self._confirmed[chain] = number
        if delta_ms is not None:
            seconds = delta_ms / 1000
            self._delta(chain).observe(seconds)
            window = self._windows.get(chain)
            if window is None:
                window = self._windows[chain] = DeltaWindow(self._window_size)
            window.add(seconds)

    def observe_reorg(self, chain: str, depth: int, deep: bool) -> None:
        """The best chain retracted ``depth`` blocks; ``deep`` if any was confirmed."""
        self.reorgs.labels(chain).inc()
        self.reorg_depth.labels(chain).observe(depth)
        if deep:
            self.deep_reorgs.labels(chain).inc()

    def observe_unresolved_mapping(self, chain: str, count: int = 1) -> None:
        self.unresolved_mappings.labels(chain).inc(count)

    def set_following(self, chain: str, following: bool) -> None:
        self.following.labels(chain).set(1 if following else 0)

    def observe_retry(self, chain: str, outcome: str) -> None:
        self.follower_retries.labels(chain, outcome).inc()

    def observe_invariant_violation(self, chain: str) -> None:
        self.invariant_violations.labels(chain).inc()

    def observe_anomaly(self, chain: str, kind: str) -> None:
        self.anomalies.labels(chain, kind).inc()

    def set_rows_waiting(self, chain: str, rows: int) -> None:
        self._waiting[chain] = rows

    # -- the writer ----------------------------------------------------------------------

    def observe_rows_written(self, chain: str, rows: int) -> None:
        self.rows_written.labels(chain).inc(rows)

    def observe_file_written(self, chain: str) -> None:
        self.files_written.labels(chain).inc()

    def set_writer_queue(self, rows: int) -> None:
        self._queue_items = rows

    def observe_writer_error(self) -> None:
        self.writer_errors.inc()

    def set_writer_rows_pending(self, chain: str, rows: int) -> None:
        self._rows_pending[chain] = rows

    def observe_writer_success(self) -> None:
        """The writer completed a write now (the injected clock)."""
        self.writer_last_success.set(self._clock())

    # -- the process ---------------------------------------------------------------------

    def set_up(self, up: bool) -> None:
        self.up.set(1 if up else 0)

    def rpc_observer(self, chain: str) -> RpcObserver:
        """What an :class:`~blocktimesd.aio.rpc.RpcClient` of ``chain`` reports to."""
        return _RpcMetrics(self, chain)


class _RpcMetrics:
    __slots__ = ("_chain", "_done", "_metrics")

    def __init__(self, metrics: Metrics, chain: str) -> None:
        self._metrics = metrics
        self._chain = chain
        self._done: dict[tuple[str, str], tuple[Any, Any]] = {}  # series, looked up once

    def request_done(self, method: str, outcome: str, seconds: float) -> None:
        series = self._done.get((method, outcome))
        if series is None:
            m = self._metrics
            series = self._done[method, outcome] = (
                m.rpc_requests.labels(self._chain, method, outcome),
                m.rpc_duration.labels(self._chain, method),
            )
        series[0].inc()
        series[1].observe(seconds)

    def reconnected(self, endpoint: str) -> None:
        # The endpoint stays out of the labels: URLs can carry API keys.
        self._metrics.rpc_reconnects.labels(self._chain).inc()

    def connect_failed(self, endpoint: str, reason: str) -> None:
        # reason is one of a few fixed kinds; the endpoint stays out, as above.
        self._metrics.rpc_connect_failures.labels(self._chain, reason).inc()

    def dropped(self, endpoint: str, reason: str) -> None:
        self._metrics.rpc_dropped.labels(self._chain, reason).inc()
