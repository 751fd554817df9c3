"""Metrics on a fresh registry, the HTTP endpoints on a real server, and a real Prometheus."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import platform
import socket
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import uvloop
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest

from blocktimesd import __version__
from blocktimesd.aio.http import HttpServer
from blocktimesd.aio.metrics import DELTA_BUCKETS, DeltaWindow, Metrics
from blocktimesd.aio.rpc import RpcClient, RpcSettings
from blocktimesd.devnet.app import Devnet
from blocktimesd.devnet.params import ChainParams, FaultParams
from blocktimesd.errors import RpcError, RpcTimeout
from tests.prometheus import PROMETHEUS_CONFIG, query, running_prometheus

NOW_KEY = "0xf0c365c3cf59d671eb72da0e7a4113c49f1f0515f462cdcf84e0f1d6045dfcbb"
T0 = 1_750_000_000.0  # the fake clock's start, seconds since the epoch


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def metrics(registry: CollectorRegistry, clock: Clock) -> Metrics:
    return Metrics(registry, chains=["consensus", "auto-evm"], delta_window=4, clock=clock)


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


# -- metrics ----------------------------------------------------------------------------------


def test_every_metric_is_registered(registry: CollectorRegistry, metrics: Metrics) -> None:
    metrics.observe_head("consensus", 1, 1)
    metrics.observe_confirmed("consensus", 1, 6000)
    metrics.rpc_observer("consensus").request_done("chain_getHeader", "ok", 0.01)
    names = {family.name for family in registry.collect()}
    assert names >= {
        "blocktimes_up",
        "blocktimes_build",
        "blocktimes_chain_following",
        "blocktimes_best_block",
        "blocktimes_confirmed_block",
        "blocktimes_head_lag_seconds",
        "blocktimes_seconds_since_last_head",
        "blocktimes_block_delta_seconds",
        "blocktimes_block_delta_quantile_seconds",
        "blocktimes_block_delta_window_deltas",
        "blocktimes_reorgs",
        "blocktimes_reorg_depth",
        "blocktimes_deep_reorgs",
        "blocktimes_rows_written",
        "blocktimes_files_written",
        "blocktimes_writer_queue_rows",
        "blocktimes_writer_errors",
        "blocktimes_rpc_requests",
        "blocktimes_rpc_request_duration_seconds",
        "blocktimes_rpc_reconnects",
        "blocktimes_unresolved_mappings",
    }


def test_up_build_info_and_chains_start_at_zero(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    assert value(registry, "blocktimes_up") == 1
    python = platform.python_version()
    build = value(registry, "blocktimes_build_info", version=__version__, python=python)
    assert build == 1
    for chain in ("consensus", "auto-evm"):
        for counter in (
            "blocktimes_reorgs_total",
            "blocktimes_deep_reorgs_total",
            "blocktimes_rows_written_total",
            "blocktimes_files_written_total",
            "blocktimes_rpc_reconnects_total",
            "blocktimes_unresolved_mappings_total",
            "blocktimes_block_delta_seconds_count",
            "blocktimes_chain_following",
        ):
            assert value(registry, counter, chain=chain) == 0, counter
    # Nothing is known about a head yet, so there is no lag to report.
    assert value(registry, "blocktimes_head_lag_seconds", chain="consensus") is None
    metrics.set_up(False)
    assert value(registry, "blocktimes_up") == 0


def test_head_lag_and_time_since_head_follow_the_clock(
    registry: CollectorRegistry, metrics: Metrics, clock: Clock
) -> None:
    # The head was produced 1.5 s before it arrived; it arrived at T0.
    metrics.observe_head("consensus", 1000, int((T0 - 1.5) * 1000))
    assert value(registry, "blocktimes_best_block", chain="consensus") == 1000
    assert value(registry, "blocktimes_head_lag_seconds", chain="consensus") == pytest.approx(1.5)
    assert value(registry, "blocktimes_seconds_since_last_head", chain="consensus") == 0
    clock.now += 20  # a stall: both keep growing between heads
    assert value(registry, "blocktimes_head_lag_seconds", chain="consensus") == pytest.approx(21.5)
    assert value(registry, "blocktimes_seconds_since_last_head", chain="consensus") == 20
    # An explicit arrival time wins over the clock; a fork head may lower the number.
    metrics.observe_head("consensus", 999, int(T0 * 1000), now=T0 + 19)
    assert value(registry, "blocktimes_best_block", chain="consensus") == 999
    assert value(registry, "blocktimes_seconds_since_last_head", chain="consensus") == 1
    # A head without a timestamp (genesis) still counts as a head.
    metrics.observe_head("auto-evm", 0, None)
    clock.now += 3
    assert value(registry, "blocktimes_seconds_since_last_head", chain="auto-evm") == 3
    assert value(registry, "blocktimes_head_lag_seconds", chain="auto-evm") is None


def test_head_lag_is_never_negative_when_the_chain_clock_runs_ahead(
    registry: CollectorRegistry, metrics: Metrics, clock: Clock
) -> None:
    # The simulated network (or a host clock that is behind): the head is stamped 3377 s
    # after it arrived.  The lag counts from its arrival instead; the gap is shown apart.
    metrics.observe_head("consensus", 7, int((T0 + 3377) * 1000))
    assert value(registry, "blocktimes_head_lag_seconds", chain="consensus") == 0
    ahead = value(registry, "blocktimes_head_timestamp_ahead_seconds", chain="consensus")
    assert ahead == pytest.approx(3377)
    clock.now += 4
    assert value(registry, "blocktimes_head_lag_seconds", chain="consensus") == pytest.approx(4)
    # A head stamped in the past: the usual lag, nothing ahead.
    metrics.observe_head("consensus", 8, int((T0 + 2) * 1000))
    assert value(registry, "blocktimes_head_lag_seconds", chain="consensus") == pytest.approx(2)
    ahead = value(registry, "blocktimes_head_timestamp_ahead_seconds", chain="consensus")
    assert ahead == 0


def test_confirmed_deltas_fill_the_histogram_and_the_window(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    deltas_ms = [6000, 5000, 7000, 61000, 6000, 12000]
    for number, delta in enumerate(deltas_ms, start=10):
        metrics.observe_confirmed("consensus", number, delta)
    metrics.observe_confirmed("consensus", 16, None)  # no parent timestamp: no delta
    assert value(registry, "blocktimes_confirmed_block", chain="consensus") == 16
    hist = "blocktimes_block_delta_seconds"
    assert value(registry, f"{hist}_count", chain="consensus") == 6
    assert value(registry, f"{hist}_sum", chain="consensus") == sum(deltas_ms) / 1000
    expected_le = {5.0: 1, 6.0: 3, 8.0: 4, 12.0: 5, 60.0: 5, 90.0: 6, 300.0: 6}
    for le, count in expected_le.items():
        assert value(registry, f"{hist}_bucket", chain="consensus", le=str(le)) == count
    assert value(registry, f"{hist}_bucket", chain="consensus", le="+Inf") == 6
    # The window keeps the last 4: 7, 61, 6, 12 s.
    quantile = "blocktimes_block_delta_quantile_seconds"
    got = {q: value(registry, quantile, chain="consensus", quantile=q) for q in ("0.5", "1")}
    assert got == {"0.5": 7.0, "1": 61.0}
    assert value(registry, quantile, chain="consensus", quantile="0.9") == 61.0
    assert value(registry, quantile, chain="consensus", quantile="0.99") == 61.0
    assert value(registry, "blocktimes_block_delta_window_deltas", chain="consensus") == 4
    assert value(registry, quantile, chain="auto-evm", quantile="0.5") is None


def test_delta_buckets_suit_six_second_blocks_and_stalls() -> None:
    assert 6 in DELTA_BUCKETS
    assert list(DELTA_BUCKETS) == sorted(DELTA_BUCKETS)
    assert DELTA_BUCKETS[-1] >= 300


def seconds(values: range) -> list[float]:
    return [float(x) for x in values]


@pytest.mark.parametrize(
    ("deltas", "expected"),
    [
        ([], []),
        ([6.0], [(0.5, 6.0), (0.9, 6.0), (0.99, 6.0), (1.0, 6.0)]),
        ([1.0, 2.0], [(0.5, 1.0), (0.9, 2.0), (0.99, 2.0), (1.0, 2.0)]),
        (seconds(range(100, 0, -1)), [(0.5, 50.0), (0.9, 90.0), (0.99, 99.0), (1.0, 100.0)]),
        (seconds(range(1, 1001)), [(0.5, 950.0), (0.9, 990.0), (0.99, 999.0), (1.0, 1000.0)]),
    ],
)
def test_delta_window_quantiles_are_nearest_rank(
    deltas: list[float], expected: list[tuple[float, float]]
) -> None:
    window = DeltaWindow(size=100)  # the 1000-long case keeps its last 100: 901..1000
    for delta in deltas:
        window.add(delta)
    assert window.quantiles((0.5, 0.9, 0.99, 1.0)) == expected
    assert len(window) == min(len(deltas), 100)


def test_reorgs_writer_and_mappings(registry: CollectorRegistry, metrics: Metrics) -> None:
    metrics.observe_reorg("consensus", 1, deep=False)
    metrics.observe_reorg("consensus", 3, deep=False)
    metrics.observe_reorg("auto-evm", 120, deep=True)
    assert value(registry, "blocktimes_reorgs_total", chain="consensus") == 2
    assert value(registry, "blocktimes_deep_reorgs_total", chain="consensus") == 0
    assert value(registry, "blocktimes_deep_reorgs_total", chain="auto-evm") == 1
    assert value(registry, "blocktimes_reorg_depth_sum", chain="consensus") == 4
    assert value(registry, "blocktimes_reorg_depth_bucket", chain="consensus", le="2.0") == 1
    metrics.observe_rows_written("consensus", 500)
    metrics.observe_rows_written("consensus", 20)
    metrics.observe_file_written("consensus")
    metrics.set_writer_queue(42)
    metrics.observe_writer_error()
    metrics.observe_unresolved_mapping("auto-evm", 2)
    metrics.set_following("consensus", True)
    assert value(registry, "blocktimes_rows_written_total", chain="consensus") == 520
    assert value(registry, "blocktimes_files_written_total", chain="consensus") == 1
    assert value(registry, "blocktimes_writer_queue_rows") == 42
    assert value(registry, "blocktimes_writer_errors_total") == 1
    assert value(registry, "blocktimes_unresolved_mappings_total", chain="auto-evm") == 2
    assert value(registry, "blocktimes_chain_following", chain="consensus") == 1


def test_registries_are_independent(clock: Clock) -> None:
    first, second = CollectorRegistry(), CollectorRegistry()
    Metrics(first, clock=clock).observe_head("consensus", 5, None)
    Metrics(second, clock=clock)
    assert value(first, "blocktimes_best_block", chain="consensus") == 5
    assert value(second, "blocktimes_best_block", chain="consensus") is None


@pytest.mark.parametrize("openmetrics", [False, True])
def test_no_created_series_are_exported(
    registry: CollectorRegistry, metrics: Metrics, openmetrics: bool
) -> None:
    metrics.observe_confirmed("consensus", 1, 6000)
    metrics.observe_reorg("consensus", 2, deep=True)
    metrics.observe_rows_written("consensus", 3)
    metrics.observe_writer_error()
    metrics.rpc_observer("consensus").request_done("chain_getHeader", "ok", 0.01)
    text = (openmetrics_latest if openmetrics else generate_latest)(registry).decode()
    assert "blocktimes_reorgs_total" in text
    assert "blocktimes_block_delta_seconds_count" in text
    assert "_created" not in text


def test_an_endpoint_is_never_a_label(registry: CollectorRegistry, metrics: Metrics) -> None:
    observer = metrics.rpc_observer("consensus")
    observer.reconnected("wss://alice:S3cret@node.example:9944/ws?apikey=KEY")
    assert value(registry, "blocktimes_rpc_reconnects_total", chain="consensus") == 1
    text = generate_latest(registry).decode()
    for secret in ("alice", "S3cret", "KEY", "node.example"):
        assert secret not in text


@pytest.fixture
async def devnet() -> AsyncIterator[Devnet]:
    net = Devnet(ChainParams(seed=3, history=20), FaultParams())
    async with net:
        yield net


async def test_rpc_client_reports_to_the_observer(
    registry: CollectorRegistry, metrics: Metrics, devnet: Devnet
) -> None:
    assert devnet.urls is not None
    settings = RpcSettings(
        endpoints=(devnet.urls.consensus,),
        request_timeout=0.3,
        backoff_initial=0.05,
        backoff_cap=0.2,
    )
    observer = metrics.rpc_observer("consensus")
    async with RpcClient(settings, "consensus", observer=observer) as client:
        await client.wait_ready(5)
        await client.call("system_chain")
        await client.call("system_chain")
        with pytest.raises(RpcError):
            await client.call("state_getStorage", NOW_KEY, "0x" + "00" * 32)
        devnet.stall(1.0)
        with pytest.raises(RpcTimeout):
            await client.call("chain_getHeader")
        await asyncio.sleep(0.8)
        devnet.drop_connections()
        for _ in range(100):
            if client.connects == 2 and client.ready:
                break
            await asyncio.sleep(0.05)
    requests = "blocktimes_rpc_requests_total"
    assert value(registry, requests, chain="consensus", method="system_chain", outcome="ok") == 2
    assert (
        value(
            registry, requests, chain="consensus", method="state_getStorage", outcome="error 4003"
        )
        == 1
    )
    assert (
        value(registry, requests, chain="consensus", method="chain_getHeader", outcome="timeout")
        == 1
    )
    duration = "blocktimes_rpc_request_duration_seconds_count"
    assert value(registry, duration, chain="consensus", method="system_chain") == 2
    assert value(registry, "blocktimes_rpc_reconnects_total", chain="consensus") == 1


# -- HTTP -------------------------------------------------------------------------------------


class Readiness:
    def __init__(self) -> None:
        self.chains = {"consensus": "connecting", "auto-evm": "connecting"}
        self.alive = True

    def __call__(self) -> tuple[bool, Mapping[str, Any]]:
        return all(s == "following" for s in self.chains.values()), dict(self.chains)


@pytest.fixture
async def served(
    registry: CollectorRegistry, metrics: Metrics
) -> AsyncIterator[tuple[str, Readiness]]:
    readiness = Readiness()
    server = HttpServer(registry, "127.0.0.1", 0, alive=lambda: readiness.alive, ready=readiness)
    host, port = await server.start()
    assert server.address == (host, port)
    assert port != 0
    try:
        yield f"http://{host}:{port}", readiness
    finally:
        await server.stop()


async def test_metrics_endpoint_serves_the_registry(
    served: tuple[str, Readiness], metrics: Metrics
) -> None:
    base, _ = served
    metrics.observe_head("consensus", 4321, int(T0 * 1000))
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/metrics") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain; version=")
            text = await resp.text()
        openmetrics = {"Accept": "application/openmetrics-text; version=1.0.0"}
        async with session.get(f"{base}/metrics", headers=openmetrics) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
            assert (await resp.text()).endswith("# EOF\n")
    assert 'blocktimes_best_block{chain="consensus"} 4321.0' in text
    assert "# TYPE blocktimes_block_delta_seconds histogram" in text
    assert 'blocktimes_seconds_since_last_head{chain="consensus"} 0.0' in text


async def test_healthz_follows_liveness(served: tuple[str, Readiness]) -> None:
    base, readiness = served
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/healthz") as resp:
            assert (resp.status, await resp.text()) == (200, "ok\n")
        readiness.alive = False
        async with session.get(f"{base}/healthz") as resp:
            assert resp.status == 503


async def test_readyz_is_503_until_every_chain_follows(served: tuple[str, Readiness]) -> None:
    base, readiness = served
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/readyz") as resp:
            assert resp.status == 503
            assert resp.headers["Content-Type"].startswith("application/json")
            assert await resp.json() == {
                "ready": False,
                "details": {"consensus": "connecting", "auto-evm": "connecting"},
            }
        readiness.chains["consensus"] = "following"
        async with session.get(f"{base}/readyz") as resp:
            assert resp.status == 503
        readiness.chains["auto-evm"] = "following"
        async with session.get(f"{base}/readyz") as resp:
            assert resp.status == 200
            body = await resp.json()
    assert body == {"ready": True, "details": {"consensus": "following", "auto-evm": "following"}}


async def test_a_failing_check_is_not_ready(registry: CollectorRegistry) -> None:
    def broken() -> tuple[bool, Mapping[str, Any]]:
        raise RuntimeError("boom")

    def dead() -> bool:
        raise RuntimeError("boom")

    async with HttpServer(registry, "127.0.0.1", 0, alive=dead, ready=broken) as server:
        assert server.address is not None
        base = "http://{}:{}".format(*server.address)
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{base}/readyz") as resp:
                assert resp.status == 503
                assert await resp.json() == {
                    "ready": False,
                    "details": {"error": "RuntimeError: boom"},
                }
            async with session.get(f"{base}/healthz") as resp:
                assert resp.status == 503


async def test_stop_is_idempotent_and_closes_the_port(registry: CollectorRegistry) -> None:
    server = HttpServer(registry, "127.0.0.1", 0, alive=lambda: True, ready=lambda: (True, {}))
    host, port = await server.start()
    assert await server.start() == (host, port)
    await server.stop()
    await server.stop()
    assert server.address is None
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection(host, port)
    with pytest.raises(RuntimeError, match="stopped"):
        await server.start()


async def test_a_busy_port_raises(registry: CollectorRegistry) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        server = HttpServer(
            registry, "127.0.0.1", port, alive=lambda: True, ready=lambda: (True, {})
        )
        with pytest.raises(OSError, match="already in use") as info:
            await server.start()
        assert info.value.errno == errno.EADDRINUSE
        assert server.address is None


# -- a real Prometheus scraping /metrics --------------------------------------------------------


async def wait_for_series(
    session: aiohttp.ClientSession, api: str, promql: str, expected: dict[str, float]
) -> None:
    got: dict[str, float] = {}
    for _ in range(120):
        try:
            got = await query(session, api, promql)
        except aiohttp.ClientError:
            got = {}  # Prometheus is still starting
        if got == expected:
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"{promql}: Prometheus has {got}, expected {expected}")


async def test_real_prometheus_scrapes_the_metrics(
    prometheus_binary: str,
    served: tuple[str, Readiness],
    metrics: Metrics,
    tmp_path: Path,
) -> None:
    base, _ = served
    metrics.observe_head("consensus", 100, int(T0 * 1000))
    metrics.observe_head("auto-evm", 200, int(T0 * 1000))
    for delta in (6000, 6000, 12000):
        metrics.observe_confirmed("consensus", 1, delta)
    config = tmp_path / "prometheus.yml"
    config.write_text(PROMETHEUS_CONFIG.format(target=base.removeprefix("http://")))
    async with (
        running_prometheus(prometheus_binary, config, tmp_path) as api,
        aiohttp.ClientSession() as session,
    ):
        await wait_for_series(
            session, api, "blocktimes_best_block", {"consensus": 100, "auto-evm": 200}
        )
        await wait_for_series(session, api, 'up{job="blocktimesd"}', {"": 1})
        await wait_for_series(
            session,
            api,
            'blocktimes_block_delta_quantile_seconds{quantile="0.5"}',
            {"consensus": 6.0},
        )
        await wait_for_series(
            session,
            api,
            "blocktimes_block_delta_seconds_count",
            {"consensus": 3, "auto-evm": 0},
        )
        metrics.observe_head("consensus", 101, int(T0 * 1000))  # the next scrape sees it
        await wait_for_series(
            session, api, "blocktimes_best_block", {"consensus": 101, "auto-evm": 200}
        )


# -- limits: slow and idle clients ---------------------------------------------------------------


async def closed_by_peer(reader: asyncio.StreamReader, within: float) -> bool:
    """True once the server closes the connection (EOF or reset) within ``within`` s."""
    try:
        async with asyncio.timeout(within):
            while await reader.read(4096):
                pass  # a response, if any, then the close
    except TimeoutError:
        return False
    except ConnectionError:
        pass
    return True


async def trickle(writer: asyncio.StreamWriter, head: bytes, every: float) -> None:
    """A slowloris client: a request head one byte at a time, never finished."""
    with contextlib.suppress(ConnectionError):
        for byte in head:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(every)


async def get_metrics(base: str) -> int:
    async with aiohttp.ClientSession() as session, session.get(f"{base}/metrics") as resp:
        await resp.read()
        return resp.status


@pytest.fixture
async def bounded(registry: CollectorRegistry, metrics: Metrics) -> AsyncIterator[tuple[str, int]]:
    """A server allowing 6 connections, each idle for at most half a second."""
    server = HttpServer(
        registry,
        "127.0.0.1",
        0,
        alive=lambda: True,
        ready=lambda: (True, {}),
        max_connections=6,
        idle_timeout=0.5,
    )
    _, port = await server.start()
    try:
        yield f"http://127.0.0.1:{port}", port
    finally:
        await server.stop()


async def test_slow_request_heads_are_cut_off_and_metrics_still_answer(
    bounded: tuple[str, int],
) -> None:
    base, port = bounded
    clients = [await asyncio.open_connection("127.0.0.1", port) for _ in range(4)]
    head = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200
    trickles = [asyncio.create_task(trickle(w, head, every=0.05)) for _, w in clients]
    try:
        assert await get_metrics(base) == 200  # while they trickle
        # Each sends a byte every 50 ms, yet none may hold its connection past the bound.
        closed = await asyncio.gather(*(closed_by_peer(r, within=5.0) for r, _ in clients))
        assert closed == [True] * 4
        assert await get_metrics(base) == 200
    finally:
        for task in trickles:
            task.cancel()
        for _, writer in clients:
            writer.close()


async def test_an_idle_kept_alive_connection_is_closed(bounded: tuple[str, int]) -> None:
    _, port = bounded
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        assert await reader.readexactly(3) == b"ok\n"
        # Kept alive after the response, then idle (or slow: half a request line).
        writer.write(b"GET /met")
        assert await closed_by_peer(reader, within=5.0)
    finally:
        writer.close()


async def test_connections_beyond_the_limit_are_closed_at_once(
    registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    await connections_beyond_the_limit(registry)
    # One line for the operator, not one per refused connection.
    full = [r for r in caplog.records if "the most allowed" in r.getMessage()]
    assert [r.levelname for r in full] == ["WARNING"]


def test_connections_beyond_the_limit_are_closed_at_once_on_uvloop(
    registry: CollectorRegistry,
) -> None:
    # The daemon's loop: its transports are not asyncio's classes.
    uvloop.run(connections_beyond_the_limit(registry))


async def connections_beyond_the_limit(registry: CollectorRegistry) -> None:
    # Idle connections may stay for a minute here: those closed sooner were refused.
    server = HttpServer(
        registry, "127.0.0.1", 0, alive=lambda: True, ready=lambda: (True, {}),
        max_connections=6, idle_timeout=60,
    )  # fmt: skip
    _, port = await server.start()
    base = f"http://127.0.0.1:{port}"
    idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(6)]
    # 1,100 of these would exhaust the usual 1,024 descriptors if each were kept.
    extra = [await asyncio.open_connection("127.0.0.1", port) for _ in range(40)]
    try:
        closed = await asyncio.gather(*(closed_by_peer(r, within=10.0) for r, _ in extra))
        assert closed == [True] * 40
        with pytest.raises(aiohttp.ClientError):
            await get_metrics(base)  # no room while the six idle ones stay
        # The six admitted ones still count; once they go, scrapers get in again.
        for _, writer in idle:
            writer.close()
        for _ in range(50):
            with contextlib.suppress(aiohttp.ClientError):
                if await get_metrics(base) == 200:
                    break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("/metrics stayed unreachable after the idle clients left")
    finally:
        for _, writer in idle + extra:
            writer.close()
        await server.stop()


async def test_limits_must_be_positive(registry: CollectorRegistry) -> None:
    with pytest.raises(ValueError, match="max_connections"):
        HttpServer(
            registry, "127.0.0.1", 0, alive=lambda: True, ready=lambda: (True, {}),
            max_connections=0,
        )  # fmt: skip
