"""Several connections to one chain, behind the ``call``/``call_many`` of one client.

A node serves only so many messages at a time per connection (a Substrate node 64: past
them it stops reading the connection), so on a distant node one connection caps a
backfill at about ``64 / round trip`` calls per second.  :class:`RpcPool` spreads the
calls over several :class:`~blocktimesd.aio.rpc.RpcClient` instances (each a connection
of its own, with the client's retry, timeout, failover and in-flight cap), each call
(or list of calls, kept together and in order) to the member with the fewest messages
outstanding.  A member holds at most twice its in-flight cap; past that, calls wait in
the pool, in order, and go to the first member with room, so a new connection takes
work at once instead of the older ones' queues.  Members go to the configured
endpoints in turn.

How many: a fixed number, or found by probing while the calls flow.  Every interval the
pool reads how many messages its connections settled and their mean round trip (from the
send, so the wait for a slot does not count).  While calls queue behind every
connection's cap, it doubles (quadruples while the process mostly waits; up to the cap)
and, once the calls queued before are answered, judges the next interval: the new
connections stay if the messages answered per second rose (by ``_GAIN``), else they are
closed and the size is settled; it grows again only while the round trip did not grow
too (past ``_SLOWER``: the node nears its limit).  A process whose event loop keeps a
core busy (a nearby node) does not probe: only the round trip gains from more
connections.  On a distant node (a mean round trip past ``_DISTANT_S``) the next step's
connections are opened while the current one is measured, so that a step costs no
connection set-up.  The node's answers cap the pool too: a connection refused (HTTP 429
past the node's connection limit, or any other failure to connect), a connection that
stays down, or a rate-limit error shrink it, never below one member; the first member is
the client the caller owns and is never closed here.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from blocktimesd.aio.rpc import RpcClient, RpcObserver, RpcSettings
from blocktimesd.core.redact import redact_url
from blocktimesd.errors import RpcError

__all__ = ["MAX_CONNECTIONS", "Caller", "RpcPool"]

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 8  # probing stops here; a public node would see us as a flood
_GAIN = 1.15  # a connection stays if calls per second rose at least this much
_SLOWER = 1.25  # ... and the time per list of calls grew at most this much
_BUSY = 0.7  # an event loop using more of a core than this does not probe further
_DISTANT_S = 0.01  # a mean round trip past this: spare connections are opened early
_IDLE = 0.35  # one using less than this grows fourfold: the round trip is all that limits it
_MIN_CALLS = 64  # an interval with fewer answers says nothing about the pool
_DRAIN_S = 2.5  # the longest wait for the calls queued before a new connection
_DOWN_S = 1.0  # how long a connection may stay down before it leaves the pool
_PROBE_ROUND_TRIPS = 3  # while probing, the pool is measured over this many round trips
_PROBE_TICK_MIN = 0.1  # ... or this many seconds, whichever is longer
_RATE_LIMITED = frozenset({-32029, 429})  # jsonrpsee's "too many requests", gateways' 429


class Caller(Protocol):
    """What the backfill asks of a client: one :class:`RpcClient` or an :class:`RpcPool`."""

    @property
    def settings(self) -> RpcSettings: ...

    @property
    def shown_endpoint(self) -> str | None: ...

    async def call(self, method: str, *params: Any, timeout: float | None = None) -> Any: ...

    async def call_many(
        self,
        calls: Sequence[tuple[str, list[Any]]],
        timeout: float | None = None,
        batch_size: int | None = None,
    ) -> list[Any]: ...


class _Member:
    """One connection of the pool and what it is doing."""

    __slots__ = ("client", "down", "idle", "index", "limited", "outstanding", "seen")

    def __init__(self, client: RpcClient, index: int = 0) -> None:
        self.client = client
        self.seen = client.settled  # (messages, seconds) when the monitor last looked
        self.limited = ""  # the node's last rate-limit error here, until the monitor acts
        self.index = index  # in the order the pool opened its connections
        self.outstanding = 0  # messages sent to it and not answered yet
        self.idle = asyncio.Event()  # set while nothing is outstanding
        self.idle.set()
        self.down: float | None = None  # since when it is not connected

    def leave(self, count: int) -> None:
        self.outstanding -= count
        if not self.outstanding:
            self.idle.set()

    def take(self) -> tuple[int, float]:
        """Messages settled and their seconds since the last take."""
        now = self.client.settled
        seen, self.seen = self.seen, now
        return now[0] - seen[0], now[1] - seen[1]


class _Refusals:
    """The observer of one more connection's client: the pool gives up at the first
    failed attempt instead of letting the client back off and try again."""

    __slots__ = ("failed", "reason")

    def __init__(self) -> None:
        self.failed = asyncio.Event()
        self.reason = ""

    def request_done(self, method: str, outcome: str, seconds: float) -> None:
        pass

    def reconnected(self, endpoint: str) -> None:
        pass

    def connect_failed(self, endpoint: str, reason: str) -> None:
        self.reason = f"{redact_url(endpoint)}: {reason}"
        self.failed.set()

    def dropped(self, endpoint: str, reason: str) -> None:
        pass


MakeClient = Callable[[RpcSettings, RpcObserver], RpcClient]


class RpcPool:
    """Up to ``size`` connections to ``first``'s chain (``None``: probe, up to ``cap``).

    ``make(settings, observer)`` builds an unstarted client for one
    more connection (the caller gives it its preflight).  :meth:`start` and
    :meth:`close` bracket the pool's use; ``first`` stays the caller's to close.
    """

    def __init__(
        self,
        first: RpcClient,
        make: MakeClient,
        *,
        size: int | None = None,
        cap: int = MAX_CONNECTIONS,
        interval: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
        cpu_clock: Callable[[], float] = time.thread_time,  # the event loop's thread
    ) -> None:
        if (size is not None and size < 1) or cap < 1:
            raise ValueError("size and cap must be at least 1")
        self.first = first
        self.chain = first.chain
        self._make = make
        self.size = size
        self.cap = size if size is not None else cap
        self._probing = size is None
        self._interval = interval
        self._clock = clock
        self._cpu_clock = cpu_clock
        self._cpu_since = 0.0
        self._members = [_Member(first)]
        self._opened = 0  # members made so far: the next goes to the next endpoint
        self._closing: set[asyncio.Task[None]] = set()
        self._monitor: asyncio.Task[None] | None = None
        self._busy = asyncio.Event()  # set by the first call: probing measures from then
        self._since = 0.0  # when the monitor last took the meters
        self.served: list[int] = [0]  # messages sent to each member, by opening order
        self.peak = 1  # the most connections used at once
        self._done = 0  # messages answered (their lists done) so far
        # Messages a member may have outstanding: its in-flight cap, and as many again
        # waiting in it, so that its connection never idles between lists.
        self._depth = 2 * first.settings.max_inflight
        self._waiting: collections.deque[tuple[int, asyncio.Future[_Member]]] = collections.deque()
        self._spares: list[RpcClient] = []  # connected, for the probe's next step
        self._drain_to = 0  # messages answered that end a drain (0: none going on)
        self._drained = asyncio.Event()
        self._preparing: asyncio.Future[None] | None = None

    # -- the client interface -----------------------------------------------------------------

    @property
    def settings(self) -> RpcSettings:
        return self.first.settings

    @property
    def shown_endpoint(self) -> str | None:
        return self.first.shown_endpoint

    @property
    def connections(self) -> int:
        """How many connections the pool uses now."""
        return len(self._members)

    async def call(self, method: str, *params: Any, timeout: float | None = None) -> Any:
        member = await self._pick(1)
        try:
            return await member.client.call(method, *params, timeout=timeout)
        except RpcError as exc:
            if exc.code in _RATE_LIMITED:
                member.limited = str(exc)
            raise
        finally:
            self._leave(member, 1)

    async def call_many(
        self,
        calls: Sequence[tuple[str, list[Any]]],
        timeout: float | None = None,
        batch_size: int | None = None,
    ) -> list[Any]:
        messages = -(-len(calls) // (batch_size or self.settings.batch_size))
        member = await self._pick(messages)
        try:
            answers = await member.client.call_many(calls, timeout, batch_size)
        finally:
            self._leave(member, messages)
        for answer in answers:
            if type(answer) is RpcError and answer.code in _RATE_LIMITED:
                member.limited = str(answer)
                break
        return answers

    async def _pick(self, count: int) -> _Member:
        """A member for ``count`` more messages: the connected one with the fewest
        outstanding, once it has room.  Calls wait here, in order, rather than in one
        connection's queue: a connection the pool opens takes the next calls at once."""
        if not self._waiting:
            member = self._room(count)
            if member is not None:
                return self._assign(member, count)
        waiter: asyncio.Future[_Member] = asyncio.get_running_loop().create_future()
        entry = (count, waiter)
        self._waiting.append(entry)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.cancelled():
                self._waiting.remove(entry)
            else:  # given a member as it was cancelled: give the room back
                self._leave(waiter.result(), count)
            raise

    def _room(self, count: int) -> _Member | None:
        """The connected member with the fewest messages outstanding, if it can take
        ``count`` more (an idle one always can); the first member when none is
        connected (it waits for its connection as a lone client would)."""
        found: _Member | None = None
        for member in self._members:
            if member.client.ready and (found is None or member.outstanding < found.outstanding):
                found = member
        if found is None:
            found = self._members[0]
        if found.outstanding and found.outstanding + count > self._depth:
            return None
        return found

    def _assign(self, member: _Member, count: int) -> _Member:
        member.outstanding += count
        member.idle.clear()
        self.served[member.index] += count
        self._busy.set()
        return member

    def _leave(self, member: _Member, count: int) -> None:
        member.leave(count)
        self._done += count
        if self._drain_to and self._done >= self._drain_to:
            self._drained.set()
        self._hand_out()

    def _hand_out(self) -> None:
        """Give the calls waiting for room the members that have it, in order."""
        waiting = self._waiting
        while waiting:
            count, waiter = waiting[0]
            if waiter.done():
                waiting.popleft()
                continue
            member = self._room(count)
            if member is None:
                return
            waiting.popleft()
            waiter.set_result(self._assign(member, count))

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the fixed number of connections (refused ones lower it), then watch them."""
        if self.size is not None:
            await asyncio.gather(*(self._grow() for _ in range(self.size - 1)))
            log.info("%s: fetching over %d connection(s)", self.chain, len(self._members))
        if self._monitor is None:
            self._monitor = asyncio.create_task(self._watch(), name=f"rpc-pool-{self.chain}")

    async def close(self) -> None:
        """Close the connections the pool opened (not the first)."""
        task, self._monitor = self._monitor, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task})
        await self._drop_spares()
        for member in self._members[1:]:
            self._closing.add(asyncio.ensure_future(member.client.close()))
        del self._members[1:]
        if self._closing:
            await asyncio.wait(self._closing)

    async def _grow(self) -> bool:
        """One more connection (a spare one if ready); False (and the cap lowered) when
        the node refuses it."""
        client = self._spares.pop() if self._spares else await self._open()
        if client is None:
            return False
        member = _Member(client, len(self.served))
        self.served.append(0)
        self._members.append(member)
        self.peak = max(self.peak, len(self._members))
        self._hand_out()
        return True

    async def _open(self) -> RpcClient | None:
        """A connected client for one more connection; None (and the cap lowered) when
        the node refuses it."""
        endpoints = self.settings.endpoints
        self._opened += 1
        turn = self._opened % len(endpoints)
        settings = dataclasses.replace(self.settings, endpoints=endpoints[turn:] + endpoints[:turn])
        refusals = _Refusals()
        client = self._make(settings, refusals)
        await client.start()
        ready = asyncio.ensure_future(client.wait_ready())
        failed = asyncio.ensure_future(refusals.failed.wait())
        try:
            await asyncio.wait(
                {ready, failed},
                timeout=settings.connect_timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            for task in (ready, failed):
                task.cancel()
            await asyncio.wait({ready, failed})
        if not client.ready:
            await client.close()
            self.cap = max(1, min(self.cap, len(self._members) + len(self._spares)))
            log.info(
                "%s: one more connection was refused (%s); the pool stays at %d",
                self.chain, refusals.reason or "not ready in time", len(self._members),
            )  # fmt: skip
            return None
        return client

    def _prepare(self, count: int) -> None:
        """Open up to ``count`` spare connections in the background, for the probe's next
        step: it then grows at once instead of waiting a connection's set-up."""
        count = min(count, self.cap - len(self._members)) - len(self._spares)
        if count <= 0 or (self._preparing is not None and not self._preparing.done()):
            return

        async def open_spares() -> None:
            for client in await asyncio.gather(*(self._open() for _ in range(count))):
                if client is not None:
                    self._spares.append(client)

        self._preparing = asyncio.ensure_future(open_spares())

    async def _drop_spares(self) -> None:
        """Close the spare connections: the probing is over."""
        task, self._preparing = self._preparing, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task})
        spares, self._spares = self._spares, []
        if spares:
            await asyncio.wait({asyncio.ensure_future(c.close()) for c in spares})

    def _shrink(self, member: _Member, why: str) -> None:
        """Stop using ``member`` and lower the cap; the first member stays (the newest
        goes in its place).  A member leaves once its calls are answered.  ``why`` is
        logged, unless empty (the caller says it)."""
        members = self._members
        if member is members[0]:
            if len(members) == 1:
                return
            member = members[-1]
        if member not in members:
            return
        members.remove(member)
        self.cap = len(members)
        if why:
            log.info("%s: %s; the pool shrinks to %d connection(s)", self.chain, why, len(members))
        task = asyncio.ensure_future(self._retire(member))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _retire(self, member: _Member) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(member.idle.wait(), self.settings.request_timeout)
        await member.client.close()

    # -- probing and health -------------------------------------------------------------------

    def _take(self) -> tuple[float, float, float] | None:
        """Messages answered per second, their mean round trip, and the share of a
        core this process used, since the last take; None when too few messages were
        answered to judge."""
        calls, seconds = 0, 0.0
        for member in self._members:
            taken = member.take()
            calls += taken[0]
            seconds += taken[1]
        now, cpu = self._clock(), self._cpu_clock()
        elapsed, self._since = now - self._since, now
        used, self._cpu_since = cpu - self._cpu_since, cpu
        if calls < _MIN_CALLS or elapsed <= 0:
            return None
        return calls / elapsed, seconds / calls, used / elapsed

    def _saturated(self) -> bool:
        """Calls wait for room in the pool, or behind every connection's in-flight cap:
        more connections may help."""
        limit = self.settings.max_inflight
        return bool(self._waiting) or all(m.outstanding > limit for m in self._members)

    async def _end_probe(self) -> None:
        self._probing = False
        await self._drop_spares()

    async def _watch(self) -> None:
        await self._busy.wait()
        self._take()  # what came before the calls flowed says nothing
        messages, seconds = self.first.settled
        if self._probing and messages and seconds / messages > _DISTANT_S:
            # A distant node: the first step's connections (fourfold at most), opened
            # while the first interval is measured.
            self._prepare(3)
        before: tuple[float, float, float] | None = None  # _take() at this size
        added = 0  # connections added in the last step, on trial
        round_trip = seconds / messages if messages else self._interval
        while True:
            # While probing, a few round trips are enough to measure the pool by.
            tick = self._interval
            if self._probing:
                tick = min(tick, max(_PROBE_TICK_MIN, _PROBE_ROUND_TRIPS * round_trip))
            await asyncio.sleep(tick)
            self._check_health()
            self._hand_out()  # a member that connected again may have room
            now = self._take()
            if not self._probing or now is None:
                continue
            round_trip = now[1]
            log.debug(
                "%s: %d connection(s) answer %.0f messages/s, round trip %.1f ms",
                self.chain, len(self._members), now[0], now[1] * 1000,
            )  # fmt: skip
            if added and before is not None:
                if now[0] < before[0] * _GAIN:
                    for member in self._members[-added:]:
                        self._shrink(member, "")
                    log.info(
                        "%s: %d connections answer %.0f messages/s, %d answered %.0f: back to %d",
                        self.chain, len(self._members) + added, now[0],
                        len(self._members), before[0], len(self._members),
                    )  # fmt: skip
                    await self._end_probe()
                    continue
                log.info(
                    "%s: %d connections answer %.0f messages/s in %.1f ms (%d: %.0f in %.1f ms)",
                    self.chain, len(self._members), now[0], now[1] * 1000,
                    len(self._members) - added, before[0], before[1] * 1000,
                )  # fmt: skip
                if now[1] > before[1] * _SLOWER:
                    # More answers, but each takes longer: the node is near its limit.
                    # The gain stays; more connections would only queue at the node.
                    await self._end_probe()
                    continue
            before, added = now, 0
            size = len(self._members)
            if size >= self.cap or not self._saturated():
                continue
            if now[2] > _BUSY:
                # The process, not the connections, is the limit (a nearby node): one
                # more connection would only cost its preflight.
                log.debug("%s: the event loop is busy (%.0f%% of a core)", self.chain, now[2] * 100)
                await self._end_probe()
                continue
            # Double the pool, or quadruple it while the process mostly waits (up to the
            # cap): few steps to a distant node's best.
            step = size * (3 if now[2] < _IDLE else 1)
            backlog, done = sum(m.outstanding for m in self._members), self._done
            if self._preparing is not None:
                await self._preparing  # the spares being opened are the first to join
            grown = await asyncio.gather(*(self._grow() for _ in range(min(step, self.cap - size))))
            added = sum(grown)
            if not added:
                await self._end_probe()
                continue
            self._prepare(3 * len(self._members))  # the next step's, while this one is judged
            await self._drain(done + backlog)
            self._take()  # measure the new size from now on

    async def _drain(self, done: int) -> None:
        """Wait until the calls queued behind the older connections when more came are
        answered (at most ``_DRAIN_S``): only the calls sent since are spread over the
        new size."""
        if self._done >= done:
            return
        self._drain_to = done
        self._drained.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._drained.wait(), _DRAIN_S)
        self._drain_to = 0

    def _check_health(self) -> None:
        """A member rate-limited by the node leaves the pool; so does one that stays
        down (``_DOWN_S``; one the node dropped and the client connects again at once
        stays)."""
        for member in list(self._members):
            if member.limited:
                self._shrink(member, f"the node limits our rate ({member.limited})")
                member.limited = ""
                return
        now = self._clock()
        for member in self._members[1:]:
            if member.client.ready:
                member.down = None
            elif member.down is None:
                member.down = now
            elif now - member.down >= _DOWN_S:
                self._shrink(member, "a connection stays down")
                return
