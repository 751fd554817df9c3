"""The JSON-RPC client against the simulated network, with its faults switched on."""

from __future__ import annotations

import asyncio
import gc
import re
import socket
import time
from collections.abc import AsyncIterator

import pytest
from websockets.exceptions import ConnectionClosed

from blocktimesd.aio.preflight import NodeExpectations, Preflight, check_history
from blocktimesd.aio.rpc import NullRpcObserver, RpcClient, RpcSettings, Subscription
from blocktimesd.aio.rpc_calls import Requests, Slots
from blocktimesd.aio.rpc_connection import RpcConnection
from blocktimesd.devnet.app import Devnet
from blocktimesd.devnet.params import ChainParams, FaultParams
from blocktimesd.errors import (
    ConnectionLost,
    Outcome,
    PrunedNode,
    RpcError,
    RpcTimeout,
    SubscriptionGap,
    WrongChain,
    classify,
    is_retryable,
)

NOW_KEY = "0xf0c365c3cf59d671eb72da0e7a4113c49f1f0515f462cdcf84e0f1d6045dfcbb"


@pytest.fixture
async def devnet() -> AsyncIterator[Devnet]:
    net = Devnet(ChainParams(seed=9, history=80, fork_rate=0.1), FaultParams())
    async with net:
        yield net


def settings(devnet: Devnet, **changes: object) -> RpcSettings:
    assert devnet.urls is not None
    base = {"endpoints": (devnet.urls.consensus,), "backoff_initial": 0.05, "backoff_cap": 0.2}
    base.update(changes)
    return RpcSettings(**base)  # type: ignore[arg-type]


def dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"ws://127.0.0.1:{port}"


async def drain_until_gap(sub: Subscription, pause: float = 0.0) -> SubscriptionGap:
    """Consume until the subscription ends; return how it ended."""
    while True:
        await asyncio.sleep(pause)
        try:
            await anext(sub)
        except SubscriptionGap as gap:
            return gap


async def test_calls_pipelined_and_batched_agree(devnet: Devnet) -> None:
    chain = devnet.network.consensus
    calls = [("state_getStorage", [NOW_KEY, b.hash_hex]) for b in chain.canonical[1:60]]
    calls.append(("no_such_method", []))
    expected = ["0x" + b.timestamp_ms.to_bytes(8, "little").hex() for b in chain.canonical[1:60]]  # type: ignore[union-attr]
    for batch_size in (1, 7, 100):
        async with RpcClient(
            settings(devnet, batch_size=batch_size, max_inflight=4), "consensus"
        ) as client:
            results = await client.call_many(calls)
        assert results[:-1] == expected
        error = results[-1]
        assert isinstance(error, RpcError)
        assert (error.code, error.message) == (-32601, "Method not found")


async def test_node_errors_keep_code_and_message(devnet: Devnet) -> None:
    async with RpcClient(settings(devnet), "consensus") as client:
        with pytest.raises(RpcError) as info:
            await client.call("state_getStorage", NOW_KEY, "0x" + "00" * 32)
    assert info.value.code == 4003
    assert "Header was not found in the database" in info.value.message
    assert classify(info.value) is Outcome.NODE_FAULT  # asked again a few times, then elsewhere


async def test_timeout_on_a_stalled_node(devnet: Devnet) -> None:
    async with RpcClient(settings(devnet, request_timeout=0.3), "consensus") as client:
        await client.wait_ready(5)
        devnet.stall(1.0)
        with pytest.raises(RpcTimeout, match=r"no answer .* within 0\.3 s") as info:
            await client.call("system_chain")
        assert is_retryable(info.value)
        await asyncio.sleep(0.8)
        assert await client.call("system_chain") == "Autonomys Devnet"


async def test_failover_to_the_next_endpoint(devnet: Devnet) -> None:
    assert devnet.urls is not None
    endpoints = (dead_url(), devnet.urls.consensus)
    async with RpcClient(settings(devnet, endpoints=endpoints), "consensus") as client:
        await client.wait_ready(5)
        assert client.endpoint == devnet.urls.consensus
        assert await client.call("system_chain") == "Autonomys Devnet"


async def test_no_endpoint_reachable(devnet: Devnet) -> None:
    async with RpcClient(settings(devnet, endpoints=(dead_url(),)), "consensus") as client:
        with pytest.raises(ConnectionLost, match=r"no usable endpoint within 0\.5 s"):
            await client.wait_ready(0.5)


async def test_reconnect_ends_subscriptions_with_a_gap(devnet: Devnet) -> None:
    async with RpcClient(settings(devnet), "consensus") as client:
        sub = await client.subscribe("chain_subscribeNewHeads", "chain_unsubscribeNewHeads")
        first = await anext(sub)
        assert int(first["number"], 16) == devnet.network.consensus.best.number
        devnet.drop_connections()
        gap = await drain_until_gap(sub)
        assert "connection lost" in str(gap)
        await client.wait_ready(5)
        assert client.connects == 2
        assert await client.call("system_chain") == "Autonomys Devnet"


async def test_a_node_that_drops_idle_connections_is_not_backed_off_from(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A client with nothing to ask (the consensus side of a domain backfill between its
    # mapping reads) on a node that drops every connection within 0.3 s: each dropped
    # connection had served (the preflight) and been held idle for longer than the
    # shortest delay, so the next attempt waits the shortest delay (0.025 to 0.05 s
    # here), not a doubling one (up to 2 s).  A node that drops connections at once is
    # still backed off from (test_rpc_hostile.py).
    net = Devnet(ChainParams(seed=9, history=40), FaultParams(drop_connections_every_s=0.3))
    async with net:
        with caplog.at_level("WARNING", logger="blocktimesd.aio.rpc"):
            async with RpcClient(settings(net, backoff_cap=2.0), "consensus") as client:
                await client.wait_ready(5)
                await asyncio.sleep(3)
                await client.wait_ready(5)
                connects = client.connects
    delays = [
        float(m.group(1))
        for r in caplog.records
        if (m := re.search(r"next attempt in ([0-9.]+) s", r.getMessage()))
    ]
    assert len(delays) >= 5, delays
    assert max(delays) <= 0.1, delays
    assert connects >= len(delays)


async def test_lagging_consumer_gets_a_gap(devnet: Devnet) -> None:
    async with RpcClient(settings(devnet, subscription_queue=3), "consensus") as client:
        sub = await client.subscribe("chain_subscribeAllHeads", "chain_unsubscribeAllHeads")
        devnet.publish(devnet.network.advance(devnet.network.now_ms + 300_000))
        gap = await drain_until_gap(sub, pause=0.05)  # a slow consumer
        assert "fell 3 notifications behind" in str(gap)


async def test_silently_dropped_subscription_is_noticed(devnet: Devnet) -> None:
    async with RpcClient(settings(devnet, stall_timeout=0.5), "consensus") as client:
        sub = await client.subscribe("chain_subscribeNewHeads", "chain_unsubscribeNewHeads")
        await anext(sub)
        assert await client.call("devnet_dropSubscriptions") >= 1
        devnet.publish(devnet.network.advance(devnet.network.now_ms + 60_000))
        with pytest.raises(SubscriptionGap, match=r"no notification for 0\.5 s"):
            await anext(sub)


async def test_injected_errors_are_retryable(devnet: Devnet) -> None:
    devnet.set_faults(error_rate=0.5)
    async with RpcClient(settings(devnet), "consensus") as client:
        await client.wait_ready(10)
        results = await client.call_many([("system_chain", [])] * 200)
    errors = [r for r in results if isinstance(r, RpcError)]
    assert 40 < len(errors) < 160
    assert all(e.code == -32603 and is_retryable(e) for e in errors)


async def test_preflight_rejects_the_wrong_chain(devnet: Devnet) -> None:
    check = Preflight(NodeExpectations(chain_name="Autonomys Mainnet"), "consensus")
    async with RpcClient(settings(devnet), "consensus", on_connect=check) as client:
        with pytest.raises(
            WrongChain, match=r"serves chain 'Autonomys Devnet'.*expects 'Autonomys Mainnet'"
        ):
            await client.wait_ready(5)


async def test_preflight_rejects_another_genesis(devnet: Devnet) -> None:
    check = Preflight(NodeExpectations(genesis_hash="0x" + "66" * 32), "consensus")
    async with RpcClient(settings(devnet), "consensus", on_connect=check) as client:
        with pytest.raises(WrongChain, match="this is another network"):
            await client.wait_ready(5)


@pytest.mark.parametrize("unsafe", [False, True])
async def test_preflight_reports_the_node(devnet: Devnet, unsafe: bool) -> None:
    devnet.set_faults(unsafe_rpc=unsafe)
    genesis = devnet.network.consensus.genesis.hash_hex
    check = Preflight(
        NodeExpectations(chain_name="Autonomys Devnet", genesis_hash=genesis), "consensus"
    )
    async with RpcClient(settings(devnet), "consensus", on_connect=check) as client:
        await client.wait_ready(5)
    assert check.info is not None
    assert check.info.unsafe_allowed is unsafe
    assert (check.info.spec_name, check.info.spec_version) == ("subspace", 6)
    assert check.info.genesis_hash == genesis


async def test_pruned_node_is_named(devnet: Devnet) -> None:
    devnet.set_faults(prune_state=20)
    async with RpcClient(settings(devnet), "consensus") as client:
        await client.wait_ready(5)
        await check_history(client, devnet.network.consensus.best.number - 5, "consensus")
        with pytest.raises(PrunedNode, match="this node is pruned; use an archive node"):
            await check_history(client, 3, "consensus")
    devnet.set_faults(prune_state=0, prune_bodies=10)
    async with RpcClient(settings(devnet), "consensus") as client:
        with pytest.raises(PrunedNode, match="body of block 3"):
            await check_history(client, 3, "consensus")


async def test_preflight_waits_for_history(devnet: Devnet) -> None:
    devnet.set_faults(prune_state=20)
    check = Preflight(NodeExpectations(needed_from=2), "consensus")
    async with RpcClient(settings(devnet), "consensus", on_connect=check) as client:
        with pytest.raises(PrunedNode):
            await client.wait_ready(5)


async def test_out_of_order_answers_under_latency_jitter(devnet: Devnet) -> None:
    # Jitter makes the node answer separate messages out of order; results keep their order.
    devnet.set_faults(latency_ms=2, latency_jitter_ms=30)
    chain = devnet.network.consensus.canonical
    calls = [("chain_getBlockHash", [b.number]) for b in chain[1:50]]
    for batch_size in (1, 5):
        async with RpcClient(settings(devnet, batch_size=batch_size), "consensus") as client:
            assert await client.call_many(calls) == [b.hash_hex for b in chain[1:50]]


async def test_slots_cap_messages_first_come_first_served() -> None:
    # The cap on messages in flight: a freed slot goes to the oldest live waiter; a
    # waiter cancelled while queued is skipped, and one cancelled after being handed a
    # slot passes it on, so no slot is ever lost.
    slots = Slots(2)
    await slots.acquire()
    await slots.acquire()
    served: list[str] = []

    async def waiter(name: str) -> None:
        await slots.acquire()
        served.append(name)

    tasks = {name: asyncio.create_task(waiter(name)) for name in "abcde"}
    await asyncio.sleep(0)
    assert served == []
    tasks["b"].cancel()
    slots.release()
    await asyncio.sleep(0)
    assert served == ["a"]
    slots.release()
    await asyncio.sleep(0)
    assert served == ["a", "c"]
    slots.release()  # handed to d ...
    tasks["d"].cancel()  # ... which is cancelled before it runs: e gets the slot
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert served == ["a", "c", "e"]
    slots.release()  # c and e, the holders, leave: two slots, no more
    slots.release()
    await slots.acquire()
    await slots.acquire()
    third = asyncio.create_task(slots.acquire())
    await asyncio.sleep(0)
    assert not third.done()
    third.cancel()


async def test_call_many_abandons_what_it_still_awaits(devnet: Devnet) -> None:
    # Cancelled while its messages are in flight: the slots come back, nothing is left
    # waiting, and the connection goes on serving calls.
    devnet.set_faults(latency_ms=200)
    chain = devnet.network.consensus.canonical
    calls = [("chain_getBlockHash", [b.number]) for b in chain[1:40]]
    async with RpcClient(settings(devnet, max_inflight=4, batch_size=2), "consensus") as client:
        await client.wait_ready(5)
        task = asyncio.create_task(client.call_many(calls))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        devnet.set_faults(latency_ms=0)
        assert await client.call_many(calls[:8]) == [b.hash_hex for b in chain[1:9]]
        conn = client._conn
        assert conn is not None
        assert not conn.pending


async def test_a_call_failed_while_it_was_being_sent_is_not_reported_as_lost() -> None:
    """The connection ends during a send: the reader fails the call's future, then the
    sender abandons it and raises its own error; asyncio must not log the first one as
    an exception nobody retrieved."""
    loop = asyncio.get_running_loop()
    unretrieved: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _loop, context: unretrieved.append(context))
    conn = RpcConnection(ws=None, url="ws://node", shown="ws://node")  # type: ignore[arg-type]
    key, _ = conn.framing.request("system_health", [])
    fut: asyncio.Future[object] = loop.create_future()
    conn.pending[key] = fut
    fut.set_exception(ConnectionLost("consensus: connection lost"))
    conn.abandon(key, fut)
    del fut
    gc.collect()
    await asyncio.sleep(0)
    assert not unretrieved, unretrieved


class _Transport:
    def abort(self) -> None:
        pass


class EndingSocket:
    """A socket whose connection ends during the send: what it carries fails (the
    request just registered among it), then the send raises."""

    def __init__(self) -> None:
        self.transport = _Transport()
        self.conn: RpcConnection | None = None

    def send_now(self, body: bytes) -> bool:
        assert self.conn is not None
        self.conn.end("connection lost", None)
        return False

    async def send(self, body: bytes, text: bool) -> None:
        raise ConnectionClosed(None, None)


async def test_a_send_that_fails_as_the_connection_ends_leaves_no_error_unseen() -> None:
    """The connection ends during the send and fails the request's future, which leaves
    ``pending`` then; the send fails too.  The caller raises the send's error, and the
    future's is marked seen all the same."""
    loop = asyncio.get_running_loop()
    unseen: list[str] = []
    loop.set_exception_handler(lambda _, context: unseen.append(context["message"]))
    sock = EndingSocket()
    conn = RpcConnection(sock, "ws://node", "ws://node", "consensus")  # type: ignore[arg-type]
    sock.conn = conn

    async def connection() -> RpcConnection:
        return conn

    requests = Requests(
        "consensus", connection, NullRpcObserver(), observed=False, max_inflight=4,
        requests_per_second=0, request_timeout=5, timeouts_to_drop=3, clock=time.monotonic,
    )  # fmt: skip
    with pytest.raises(ConnectionLost, match="closed"):
        await requests.post([("chain_getBlockHash", [1])], None, None)
    await asyncio.sleep(0)
    gc.collect()  # a future's unseen error is reported when the future is collected
    assert unseen == []
    assert conn.pending == {}
