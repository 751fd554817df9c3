"""How :class:`~blocktimesd.aio.pool.RpcPool` hands out calls, with clients that answer
when the test says so: no member holds more than twice its in-flight cap, the calls
past that wait in the pool in order, and a connection the pool opens takes the waiting
calls at once instead of leaving them queued behind the older connections."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, cast

import pytest

from blocktimesd.aio.pool import RpcPool
from blocktimesd.aio.rpc import RpcClient, RpcObserver, RpcSettings

SETTINGS = RpcSettings(("ws://node.invalid",), max_inflight=4)


class FakeClient:
    """A connected client whose answers wait until :meth:`answer` releases them."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.chain = "consensus"
        self.settings = SETTINGS
        self.shown_endpoint = "ws://node.invalid"
        self.ready = True
        self.settled = (0, 0.0)
        self.pending: list[tuple[list[str], asyncio.Future[None]]] = []
        self.closed = False

    async def start(self) -> None:
        pass

    async def wait_ready(self, timeout: float | None = None) -> None:
        pass

    async def close(self) -> None:
        self.closed = True

    async def call_many(
        self,
        calls: Sequence[tuple[str, list[Any]]],
        timeout: float | None = None,
        batch_size: int | None = None,
    ) -> list[Any]:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        tags = [str(params[0]) for _, params in calls]
        self.pending.append((tags, done))
        await done
        return tags

    def answer(self) -> list[str]:
        """Answer every list sent so far; the tags answered."""
        answered = []
        for tags, done in self.pending:
            done.set_result(None)
            answered += tags
        self.pending.clear()
        return answered

    def holding(self) -> int:
        return sum(len(tags) for tags, _ in self.pending)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


@pytest.fixture
def clients() -> list[FakeClient]:
    return [FakeClient("first")]


def pool_of(clients: list[FakeClient], size: int | None) -> RpcPool:
    def make(settings: RpcSettings, observer: RpcObserver) -> RpcClient:
        client = FakeClient(f"more-{len(clients)}")
        clients.append(client)
        return cast(RpcClient, client)

    return RpcPool(cast(RpcClient, clients[0]), make, size=size)


async def test_calls_past_a_members_depth_wait_in_the_pool_in_order(
    clients: list[FakeClient],
) -> None:
    pool = pool_of(clients, 1)
    await pool.start()
    first = clients[0]
    # Lists of two calls: the member takes 2 x 4 = 8 messages, four lists; the rest wait.
    tasks = [
        asyncio.create_task(pool.call_many([("m", [f"{n}a"]), ("m", [f"{n}b"])])) for n in range(10)
    ]
    await settle()
    assert first.holding() == 8
    order: list[str] = []
    while len(order) < 20:
        order += first.answer()
        await settle()
        assert first.holding() <= 8
    assert order == [f"{n}{x}" for n in range(10) for x in "ab"]  # in the order asked
    assert [t.result() for t in tasks] == [[f"{n}a", f"{n}b"] for n in range(10)]
    await pool.close()


async def test_a_new_connection_takes_the_waiting_calls_at_once(
    clients: list[FakeClient],
) -> None:
    pool = pool_of(clients, 1)
    await pool.start()
    tasks = [asyncio.create_task(pool.call_many([("m", [n])])) for n in range(20)]
    await settle()
    assert clients[0].holding() == 8  # twelve wait in the pool
    assert await pool._grow()
    await settle()
    assert len(clients) == 2
    # Nothing was answered, yet the new connection carries calls: the waiting ones.
    assert clients[1].holding() == 8
    assert clients[0].holding() == 8
    assert pool.served == [8, 8]
    while not all(t.done() for t in tasks):
        for client in clients:
            client.answer()
        await settle()
    assert sorted(n for t in tasks for n in t.result()) == sorted(str(n) for n in range(20))
    await pool.close()
    assert clients[1].closed
    assert not clients[0].closed


async def test_a_cancelled_waiting_call_gives_up_its_place(clients: list[FakeClient]) -> None:
    pool = pool_of(clients, 1)
    await pool.start()
    held = [asyncio.create_task(pool.call_many([("m", [n])])) for n in range(8)]
    waiting = [asyncio.create_task(pool.call_many([("m", [f"w{n}"])])) for n in range(3)]
    await settle()
    waiting[0].cancel()
    await settle()
    clients[0].answer()
    await settle()
    assert [tags for tags, _ in clients[0].pending] == [["w1"], ["w2"]]
    clients[0].answer()
    await settle()
    assert all(t.done() for t in held + waiting[1:])
    assert waiting[0].cancelled()
    assert pool._members[0].outstanding == 0
    await pool.close()


async def test_spare_connections_join_at_once_and_unused_ones_are_closed(
    clients: list[FakeClient],
) -> None:
    pool = pool_of(clients, None)  # probing: up to 8, not started (no monitor)
    pool._prepare(3)
    assert pool._preparing is not None
    await pool._preparing
    assert len(clients) == 4  # three spares, connected, not members yet
    assert pool.connections == 1
    tasks = [asyncio.create_task(pool.call_many([("m", [n])])) for n in range(20)]
    await settle()
    assert await pool._grow()
    assert len(clients) == 4  # a spare joined: no connection was opened for it
    await settle()
    assert pool.connections == 2
    assert sum(c.holding() for c in clients) == 16
    while not all(t.done() for t in tasks):
        for client in clients:
            client.answer()
        await settle()
    await pool.close()
    assert all(c.closed for c in clients[1:])  # the member and both unused spares
    assert not clients[0].closed
