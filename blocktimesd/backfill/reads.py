"""What the backfill asks a node outside the blocks it fetches: the best block, the
block of a date-time, how many calls a batch should carry, and each such question asked
again, a bounded number of times, when it fails."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from blocktimesd.aio.pool import Caller
from blocktimesd.aio.rpc import RpcClient
from blocktimesd.core import decode, hexfacts
from blocktimesd.core.chains import TIMESTAMP_NOW_KEY
from blocktimesd.core.header import hex_to_bytes
from blocktimesd.core.redact import redact_url
from blocktimesd.errors import (
    BlocktimesError,
    ChainStopped,
    DecodeError,
    MalformedAnswer,
    Outcome,
    RetryPolicy,
    RpcError,
    pruned_state,
)

__all__ = [
    "Tries",
    "best_number",
    "block_at_time",
    "choose_batch_size",
    "header_of",
    "retrying",
    "shown",
    "timestamp_at",
]

log = logging.getLogger(__name__)

_T = TypeVar("_T")


def shown(client: Caller) -> str:
    """The endpoint that answers (between connections: the configured ones), as messages
    may show it: without credentials."""
    return client.shown_endpoint or ", ".join(map(redact_url, client.settings.endpoints))


def header_of(obj: Any) -> tuple[int, str, str, hexfacts.DigestFacts]:
    """:func:`hexfacts.header_facts` of a node's answer; a malformed one is a node fault."""
    try:
        return hexfacts.header_facts(obj)
    except DecodeError as exc:
        raise MalformedAnswer(f"chain_getHeader answered {obj!r:.60}: {exc}") from None


async def best_number(client: RpcClient) -> int:
    """The number of the node's best block."""
    return header_of(await client.call("chain_getHeader"))[0]


@dataclass(slots=True)
class Tries:
    """The tries of one request.  Node faults (wrong or malformed answers, errors that
    the same node will give again) and transient errors (a dropped connection, a
    timeout, a busy node) are counted apart, each against its own bound: a node that
    drops connections every few seconds slows a window down but does not fail it,
    while three wrong answers do."""

    node_faults: int  # at most this many node faults
    transient: int  # at most this many transient errors
    faults_seen: int = 0
    transient_seen: int = 0

    def failed(self, outcome: Outcome) -> bool:
        """Count one failure of kind ``outcome``; True when its bound is reached."""
        if outcome is Outcome.TRANSIENT:
            self.transient_seen += 1
            return self.transient_seen >= self.transient
        self.faults_seen += 1
        return self.faults_seen >= self.node_faults

    @property
    def count(self) -> int:
        """Tries so far: each one failed."""
        return self.faults_seen + self.transient_seen

    def spent(self) -> str:
        """What the tries ended on, for an error message."""
        return (
            f"{self.count} tries: {self.faults_seen} node fault(s) of {self.node_faults} "
            f"allowed, {self.transient_seen} transient error(s) of {self.transient} allowed"
        )


async def retrying(
    call: Callable[[], Awaitable[_T]],
    what: str,
    client: RpcClient,
    label: str,
    retry: RetryPolicy,
    tries: Tries,
) -> _T:
    """``call()``, asked again after a node fault or a transient error (bounded by
    ``tries``, with the policy's delays); then :class:`ChainStopped` saying what failed,
    for which chain and where.  A fatal error is raised at once."""
    delays = retry.delays()
    while True:
        try:
            return await call()
        except BlocktimesError as exc:
            outcome = retry.classify(exc)
            if outcome is Outcome.FATAL:
                raise
            if tries.failed(outcome):
                raise ChainStopped(
                    f"{label}: {what} failed ({tries.spent()}; {shown(client)}): {exc}"
                ) from exc
            log.warning(
                "%s: %s failed (%s): %s; asking again (try %d)",
                label, what, shown(client), exc, tries.count + 1,
            )  # fmt: skip
            await asyncio.sleep(next(delays))


# -- resolving date-times -------------------------------------------------------------------


async def timestamp_at(client: RpcClient, number: int, label: str) -> int | None:
    """Block ``number``'s ``Timestamp.Now``; None when the node has no such block (or
    the block no timestamp).  A node that discarded the block's state is a
    :class:`~blocktimesd.errors.PrunedNode`."""
    block_hash = await client.call("chain_getBlockHash", number)
    if block_hash is None:
        return None
    if not isinstance(block_hash, str):
        raise MalformedAnswer(f"block {number}: chain_getBlockHash answered {block_hash!r:.80}")
    try:
        value = await client.call("state_getStorage", TIMESTAMP_NOW_KEY, block_hash)
    except RpcError as exc:
        raise pruned_state(exc, label, shown(client), number, block_hash) from None
    try:
        return decode.timestamp_from_storage(None if value is None else hex_to_bytes(value))
    except DecodeError as exc:
        raise MalformedAnswer(f"block {number} ({block_hash}): Timestamp.Now: {exc}") from None


async def block_at_time(
    client: RpcClient, timestamp_ms: int, tip: int, label: str, *, end: bool
) -> int:
    """The first block stamped at or after ``timestamp_ms``; with ``end``, the last block
    stamped before it.  Binary search on ``Timestamp.Now`` over blocks 1..``tip``."""
    lo, hi = 1, tip + 1  # the answer for "first at or after" lies in [lo, hi]
    while lo < hi:
        mid = (lo + hi) // 2
        stamp = await timestamp_at(client, mid, label)
        if stamp is not None and stamp >= timestamp_ms:
            hi = mid
        else:
            lo = mid + 1
    return lo - 1 if end else lo


# -- batch size ------------------------------------------------------------------------------

_PROBE_CALLS = 4
_FAST_ROUND_TRIP_S = 0.005
_BATCH_BUDGET_S = 0.02  # the least time a batch's own calls may add to its round trip


_PROBE_RETRIES = 3  # single calls timed again when a batch beat the first one


async def choose_batch_size(
    client: RpcClient, label: str, clock: Callable[[], float] = time.perf_counter
) -> int:
    """Calls per JSON-RPC batch for this node, at most the client's ``batch_size``.

    A message costs a round trip plus, per call in it, the node's time for that call
    (nodes run a batch's calls one after another).  Big batches save the per-message
    costs on both sides, so calls are batched up to the point where they would make a
    round trip longer by more than the round trip itself (or 20 ms): a node that
    answers in microseconds gets the largest batches, one that takes tens of
    milliseconds per call gets single requests, many in flight.
    """
    largest = client.settings.batch_size
    if largest == 1:
        return 1
    probe = [("chain_getBlockHash", [0])] * _PROBE_CALLS

    async def timed(calls: list[tuple[str, list[Any]]]) -> float:
        started = clock()
        await client.call_many(calls, batch_size=len(calls))
        return clock() - started

    single = await timed(probe[:1])
    # A fast node's timings are close to the noise: take the best of a few.  A slow one
    # is measured well enough at once, and each probe costs it many milliseconds.
    samples = 3 if single < _FAST_ROUND_TRIP_S else 1
    single = min([single] + [await timed(probe[:1]) for _ in range(samples - 1)])
    batch = min([await timed(probe) for _ in range(samples)])
    for _ in range(_PROBE_RETRIES):
        if batch >= single:
            break
        # A batch answered faster than one call: that call was slowed by something else
        # (a reconnect, a stall); timed again, or every batch would be the largest.
        single = min(single, await timed(probe[:1]))
    per_call = max(batch - single, 0.0) / (_PROBE_CALLS - 1)
    budget = max(single, _BATCH_BUDGET_S)
    size = largest if per_call * largest <= budget else max(1, int(budget / per_call))
    log.info(
        "%s: round trip %.2f ms, %.3f ms more per call in a batch: %d calls per batch",
        label, single * 1000, per_call * 1000, size,
    )  # fmt: skip
    return size
