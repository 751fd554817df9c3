"""What the daemon knows about one chain's blocks, read through one RPC client.

Each block costs one round trip for its facts: the header (unless a subscription
brought it) and, in one message, ``Timestamp.Now`` (``state_getStorage``) or, on the
consensus chain, ``Timestamp.Now`` and ``Domains.SuccessfulBundles`` together (one
``state_queryStorageAt``).  Runtime versions are tracked along parent links: a
block runs its parent's runtime, and only a block whose header carries a
``RuntimeEnvironmentUpdated`` item changes the runtime of its children, so
``state_getRuntimeVersion`` is asked once per upgrade rather than once per block.
Metadata is fetched once per spec version.

A read the node answers with a transient error (busy, internal error, rate limited)
is asked again in place, a few times with short delays (:func:`call_in_place`, which
the preflight uses too), so that one such answer does not undo the work around it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, TypeVar

from blocktimesd.aio.rpc import RpcClient
from blocktimesd.core import decode
from blocktimesd.core.chains import ChainKind, check_runtime
from blocktimesd.core.header import RUNTIME_ENVIRONMENT_UPDATED, Header, hex_to_bytes, to_hex
from blocktimesd.core.runtime import Runtime
from blocktimesd.core.runtime_version import RuntimeVersion
from blocktimesd.errors import (
    BlocktimesError,
    DecodeError,
    HashMismatch,
    MalformedAnswer,
    Outcome,
    RetryPolicy,
    RpcError,
    raise_node_errors,
)

__all__ = [
    "IN_PLACE_ATTEMPTS",
    "IN_PLACE_RETRY",
    "REASKS",
    "REASK_DELAY_S",
    "BlockFacts",
    "ChainReader",
    "call_in_place",
    "call_one_in_place",
    "queried",
    "retried_in_place",
    "served_header",
    "verify_hash",
]

log = logging.getLogger(__name__)


REASKS = 3  # a node that does not (yet) serve a block it announced is asked again
REASK_DELAY_S = 1.0
IN_PLACE_ATTEMPTS = 4  # per read in all, for the node's transient error answers
IN_PLACE_RETRY = RetryPolicy(initial=0.05, cap=1.0)  # delays between those attempts
_VERSIONS_KEPT = 8192  # block hash -> spec version, for the blocks around the tip
_T = TypeVar("_T")


async def call_in_place(
    client: RpcClient,
    calls: Sequence[tuple[str, list[Any]]],
    *,
    retry: RetryPolicy = IN_PLACE_RETRY,
    attempts: int = IN_PLACE_ATTEMPTS,
    batch_size: int | None = None,
) -> list[Any]:
    """Many reads, with the node's errors in place (as :class:`RpcError` values).

    The reads the node answers with a transient error (busy, internal error, rate
    limited: ``retry.classify``) are asked again in place, ``attempts`` times in all
    with ``retry``'s short delays between, so that one such answer neither costs the
    connection nor undoes the work around it.  Other errors come back at once; a
    transport error raises (the connection's own retry handles it).
    """
    if len(calls) == 1:
        method, params = calls[0]
        try:
            results: list[Any] = [await client.call(method, *params)]
        except RpcError as exc:
            results = [exc]
    else:
        results = await client.call_many(calls, batch_size=batch_size)
    delays = None
    for _ in range(attempts - 1):
        failed = [
            at
            for at, r in enumerate(results)
            if isinstance(r, RpcError) and retry.classify(r) is Outcome.TRANSIENT
        ]
        if not failed:
            break
        delays = delays or retry.delays()
        await asyncio.sleep(next(delays))
        again = await client.call_many([calls[at] for at in failed], batch_size=batch_size)
        for at, result in zip(failed, again, strict=True):
            results[at] = result
    return results


async def call_one_in_place(
    client: RpcClient, method: str, *params: Any, retry: RetryPolicy = IN_PLACE_RETRY
) -> Any:
    """One read, asked again as :func:`call_in_place` does; the error left raises."""
    return raise_node_errors(await call_in_place(client, [(method, list(params))], retry=retry))[0]


async def retried_in_place(make: Callable[[], Awaitable[_T]]) -> _T:
    """``make()``, made again after a transient error (a dropped connection, a timeout,
    a busy node), ``IN_PLACE_ATTEMPTS`` times in all with ``IN_PLACE_RETRY``'s short
    delays between; other errors, and the last transient one, raise."""
    delays = IN_PLACE_RETRY.delays()
    for _ in range(IN_PLACE_ATTEMPTS - 1):
        try:
            return await make()
        except BlocktimesError as exc:
            if IN_PLACE_RETRY.classify(exc) is not Outcome.TRANSIENT:
                raise
        await asyncio.sleep(next(delays))
    return await make()


@dataclass(frozen=True, slots=True)
class BlockFacts:
    """One block's measurements, before the row is formed."""

    number: int
    hash: bytes
    parent_hash: bytes
    timestamp_ms: int | None  # None only where the state has no Timestamp.Now (genesis)
    spec_version: int  # the runtime that produced the block (its parent's)
    slot: int | None = None  # consensus
    segment_headers: int | None = None  # consensus: segment headers stored in the block
    bundle_count: int | None = None  # consensus
    consensus_hash: bytes | None = None  # domain: the RGTR link


class ChainReader:
    """Block facts for one chain, with the runtime of every block resolved."""

    def __init__(
        self, client: RpcClient, kind: ChainKind, chain: str, domain_ids: tuple[int, ...] = (0,)
    ) -> None:
        self.client = client
        self.kind = kind
        self.chain = chain
        self.domain_ids = domain_ids
        self._runtimes: dict[int, Runtime] = {}
        self._spec_of: OrderedDict[bytes, int] = OrderedDict()
        self._keys: dict[int, list[str]] = {}  # spec version -> the storage keys read per block

    # -- reads -------------------------------------------------------------------------------

    async def call(self, method: str, *params: Any) -> Any:
        """One read, asked again in place if the node answers a transient error (see
        :func:`call_in_place`); what still fails raises."""
        return await call_one_in_place(self.client, method, *params)

    async def call_many(self, calls: Sequence[tuple[str, list[Any]]]) -> list[Any]:
        """Many reads; errors come back in place (see :func:`call_in_place`)."""
        return await call_in_place(self.client, calls)

    # -- runtimes ----------------------------------------------------------------------------

    async def runtime_at(self, block_hash: bytes) -> Runtime:
        """The runtime reported by the state of ``block_hash`` (its children run it)."""
        spec = self._spec_of.get(block_hash)
        if spec is not None and spec in self._runtimes:
            return self._runtimes[spec]
        version = RuntimeVersion.from_json(
            await self.call("state_getRuntimeVersion", to_hex(block_hash))
        )
        runtime = self._runtimes.get(version.spec_version)
        if runtime is None:
            metadata = hex_to_bytes(
                await self.call("state_getMetadata", to_hex(block_hash)), "metadata"
            )
            runtime = Runtime.from_metadata(metadata, version, self.chain)
            self._runtimes[version.spec_version] = runtime
            log.info("%s: loaded metadata of runtime %s", self.chain, version.label)
        self._remember(block_hash, version.spec_version)
        return runtime

    async def runtime_of(self, header: Header) -> Runtime:
        """The runtime that executed ``header``'s block: its parent's."""
        runtime = await self.runtime_at(header.parent_hash)
        if not any(d.kind == RUNTIME_ENVIRONMENT_UPDATED for d in header.digest):
            self._remember(header.hash(), runtime.spec_version)
        return runtime

    def _remember(self, block_hash: bytes, spec: int) -> None:
        self._spec_of[block_hash] = spec
        self._spec_of.move_to_end(block_hash)
        if len(self._spec_of) > _VERSIONS_KEPT:
            self._spec_of.popitem(last=False)

    async def check_runtime(self) -> Runtime:
        """At start-up: the best block's runtime has what this kind of chain needs."""
        best = Header.from_json(await self.call("chain_getHeader"))
        runtime = await self.runtime_at(best.hash())
        check_runtime(runtime, self.kind, self.chain)
        return runtime

    # -- blocks ------------------------------------------------------------------------------

    async def header(self, block_hash: bytes) -> Header | None:
        """The header of ``block_hash`` (None if the node does not know it), checked to
        hash to what was asked: a node that answers another header is at fault."""
        obj = await self.call("chain_getHeader", to_hex(block_hash))
        if obj is None:
            return None
        header = Header.from_json(obj)
        verify_hash(header, block_hash, self.chain)
        return header

    async def facts(self, header: Header) -> BlockFacts:
        """Measure one block whose header is known."""
        return (await self.facts_many([header]))[0]

    async def facts_many(self, headers: Sequence[Header]) -> list[BlockFacts]:
        """Measure blocks whose headers are known, their storage read together (one
        message per block, sent at once, or batches where the client uses them); the
        first error among the answers raises."""
        runtimes = [await self.runtime_of(header) for header in headers]
        calls: list[tuple[str, list[Any]]] = []
        for header, runtime in zip(headers, runtimes, strict=True):
            keys = self._keys.get(runtime.spec_version) or self._storage_keys(runtime)
            at = to_hex(header.hash())
            if len(keys) == 1:
                calls.append(("state_getStorage", [keys[0], at]))
            else:
                calls.append(("state_queryStorageAt", [keys, at]))
        answers = raise_node_errors(await self.call_many(calls))
        return [
            self._measured(header, runtime, answer)
            for header, runtime, answer in zip(headers, runtimes, answers, strict=True)
        ]

    def _measured(self, header: Header, runtime: Runtime, answer: Any) -> BlockFacts:
        """One block's facts, from its header and its storage read's answer."""
        keys = self._keys[runtime.spec_version]
        values: list[Any] = [answer]
        if len(keys) > 1:
            try:
                values = queried(answer, keys)
            except MalformedAnswer as exc:
                raise MalformedAnswer(f"{self.chain} block {header.number}: {exc}") from None
        raw = [None if v is None else hex_to_bytes(v, "storage value") for v in values]
        try:
            timestamp = decode.timestamp_from_storage(raw[0])
        except DecodeError as exc:
            raise DecodeError(f"{self.chain} block {header.number}: {exc}") from None
        slot = segment_headers = bundle_count = consensus_hash = None
        if self.kind is ChainKind.CONSENSUS:
            slot = decode.consensus_slot(header)
            segment_headers = decode.segment_commitment_count(header)
            bundle_count = sum(decode.bundle_count_from_storage(v) for v in raw[1:])
        elif self.kind is ChainKind.AUTO_EVM:
            consensus_hash = decode.domain_consensus_hash(header)
        return BlockFacts(
            header.number,
            header.hash(),
            header.parent_hash,
            timestamp,
            runtime.spec_version,
            slot,
            segment_headers,
            bundle_count,
            consensus_hash,
        )

    def _storage_keys(self, runtime: Runtime) -> list[str]:
        """The storage read for each block: ``Timestamp.Now``, then on the consensus
        chain ``Domains.SuccessfulBundles`` of each domain."""
        keys = [to_hex(runtime.storage_key("Timestamp", "Now"))]
        if self.kind is ChainKind.CONSENSUS:
            keys += [
                to_hex(runtime.storage_key("Domains", "SuccessfulBundles", domain))
                for domain in self.domain_ids
            ]
        self._keys[runtime.spec_version] = keys
        return keys

    async def body(self, block_hash: bytes) -> list[bytes] | None:
        obj = await self.call("chain_getBlock", to_hex(block_hash))
        if obj is None:
            return None
        return [hex_to_bytes(x, "extrinsic") for x in obj["block"]["extrinsics"]]


def queried(answer: Any, keys: Sequence[str]) -> list[Any]:
    """The values of ``keys``, in order, from a ``state_queryStorageAt`` answer
    (``[{block, changes: [[key, value], ...]}]``; a key it does not list has no value).
    An answer of another shape is a :class:`MalformedAnswer` (its caller names the block)."""
    try:
        changes = answer[0]["changes"] if answer else []
        # The node lists the keys in the order asked; anything else is looked up.
        if list(map(_FIRST, changes)) == keys:
            return list(map(_SECOND, changes))
        found = dict(changes)
        return [found.get(key) for key in keys]
    except (KeyError, IndexError, TypeError, ValueError):
        raise MalformedAnswer(f"state_queryStorageAt answered {answer!r:.120}") from None


_FIRST, _SECOND = itemgetter(0), itemgetter(1)


async def served_header(reader: ChainReader, block_hash: bytes) -> Header | None:
    """The header of ``block_hash``, asked again a few times while the node answers it
    does not know it: a node may announce a block before it serves it."""
    for attempt in range(REASKS):
        header = await reader.header(block_hash)
        if header is not None:
            return header
        if attempt + 1 < REASKS:
            await asyncio.sleep(REASK_DELAY_S)
    return None


def verify_hash(header: Header, expected: bytes, chain: str) -> None:
    """Raise :class:`HashMismatch` unless ``header`` hashes to ``expected``."""
    actual = header.hash()
    if actual != expected:
        raise HashMismatch(
            f"{chain}: asked for block {to_hex(expected)}, the node answered a header "
            f"#{header.number} that hashes to {to_hex(actual)}"
        )
