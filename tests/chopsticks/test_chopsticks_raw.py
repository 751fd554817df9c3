"""Raw JSON-RPC facts about chopsticks (Rococo Asset Hub genesis) that blocktimesd relies on.

A real runtime (``statemine`` spec 900, aura, 12 s slots) answers over a plain
``websockets`` client.  Blocks are made on demand with ``dev_newBlock``; each one's
``Timestamp.Now`` is its parent's plus the slot duration, and ``dev_timeTravel`` to T
makes the next block's timestamp T + slot.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

pytestmark = pytest.mark.chopsticks

CHAIN = "asset-hub-rococo"
TIMESTAMP_NOW = "0xf0c365c3cf59d671eb72da0e7a4113c49f1f0515f462cdcf84e0f1d6045dfcbb"
GENESIS_HASH = "0x" + "45" * 32  # chopsticks' placeholder, not blake2 of the genesis header
ZERO_HASH = "0x" + "00" * 32
METADATA_V14 = "0x6d657461" + "0e"  # b"meta" + version 14
AURA_PRE_RUNTIME = "0x06" + b"aura".hex() + "20"  # PreRuntime, engine id, 8-byte slot
SLOT_MS = 12_000
WAIT = 30.0


class Rpc:
    """Matches responses to requests by id; queues notifications by subscription."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.notes: defaultdict[str, asyncio.Queue[dict[str, Any]]] = defaultdict(asyncio.Queue)
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                message = orjson.loads(raw)
                if "id" in message:
                    future = self.pending.pop(message["id"], None)
                    if future is not None and not future.done():
                        future.set_result(message)
                else:
                    params = message["params"]
                    self.notes[params["subscription"]].put_nowait(message)
        except ConnectionClosed:
            pass
        finally:
            for future in self.pending.values():
                if not future.done():
                    future.set_exception(ConnectionError("connection closed"))

    async def call_raw(self, method: str, *params: Any) -> dict[str, Any]:
        request_id = next(self.ids)
        future = asyncio.get_running_loop().create_future()
        self.pending[request_id] = future
        request = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": list(params)}
        await self.ws.send(orjson.dumps(request).decode())
        return await asyncio.wait_for(future, WAIT)

    async def call(self, method: str, *params: Any) -> Any:
        reply = await self.call_raw(method, *params)
        assert "error" not in reply, reply
        return reply["result"]

    async def notification(self, subscription: str) -> dict[str, Any]:
        return await asyncio.wait_for(self.notes[subscription].get(), WAIT)

    async def close(self) -> None:
        self.reader.cancel()
        await asyncio.gather(self.reader, return_exceptions=True)


@asynccontextmanager
async def rpc(url: str) -> AsyncIterator[Rpc]:
    async with connect(url, proxy=None, max_size=None) as ws:
        client = Rpc(ws)
        try:
            yield client
        finally:
            await client.close()


def u64(value: str) -> int:
    raw = bytes.fromhex(value.removeprefix("0x"))
    assert len(raw) == 8, value
    return int.from_bytes(raw, "little")


def aura_slot(header: dict[str, Any]) -> int:
    (log,) = [x for x in header["digest"]["logs"] if x.startswith(AURA_PRE_RUNTIME)]
    return u64(log.removeprefix(AURA_PRE_RUNTIME))


async def timestamp_at(client: Rpc, block_hash: str) -> int:
    return u64(await client.call("state_getStorage", TIMESTAMP_NOW, block_hash))


async def head(client: Rpc) -> tuple[int, str]:
    block_hash = await client.call("chain_getBlockHash")
    header = await client.call("chain_getHeader", block_hash)
    return int(header["number"], 16), block_hash


async def test_identity_runtime_and_metadata(chopsticks_url: str) -> None:
    async with rpc(chopsticks_url) as client:
        assert await client.call("system_chain") == CHAIN
        assert await client.call("system_name") == "Rococo Asset Hub"
        version = await client.call("state_getRuntimeVersion")
        assert (version["specName"], version["specVersion"]) == ("statemine", 900)
        metadata = await client.call("state_getMetadata")
        assert metadata.startswith(METADATA_V14)
        # the slot duration comes from the runtime (chopsticks' fallback is 12000 too)
        assert u64(await client.call("state_call", "AuraApi_slot_duration", "0x")) == SLOT_MS

        methods = set((await client.call("rpc_methods"))["methods"])
        assert {
            "chain_getBlockHash",
            "chain_getHeader",
            "chain_getBlock",
            "chain_getFinalizedHead",
            "chain_subscribeNewHeads",
            "chain_unsubscribeNewHeads",
            "chain_subscribeFinalizedHeads",
            "state_getRuntimeVersion",
            "state_getMetadata",
            "state_getStorage",
            "state_queryStorageAt",
            "state_call",
            "dev_newBlock",
            "dev_timeTravel",
            "dev_setHead",
            "chainHead_v1_follow",
        } <= methods

        # genesis: a placeholder hash, a zero-padded number, and no Timestamp.Now yet
        assert await client.call("chain_getBlockHash", 0) == GENESIS_HASH
        genesis = await client.call("chain_getHeader", GENESIS_HASH)
        assert genesis["number"] == "0x00000000"
        assert genesis["parentHash"] == GENESIS_HASH
        assert await client.call("state_getStorage", TIMESTAMP_NOW, GENESIS_HASH) is None
        # chopsticks builds block 1 at start-up; the head is final at once
        number, best = await head(client)
        assert number >= 1
        assert await client.call("chain_getFinalizedHead") == best


async def test_error_shapes(chopsticks_url: str) -> None:
    async with rpc(chopsticks_url) as client:
        reply = await client.call_raw("foo_bar")
        assert reply["error"] == {"code": -32601, "message": "Method not found: foo_bar"}
        assert "result" not in reply
        number, _ = await head(client)
        assert await client.call("chain_getBlockHash", number + 1000) is None
        reply = await client.call_raw("dev_timeTravel", "not a date")
        assert reply["error"] == {"code": 1, "message": "Invalid date"}


async def test_three_new_blocks_are_one_slot_apart(chopsticks_url: str) -> None:
    async with rpc(chopsticks_url) as client:
        subscription = await client.call("chain_subscribeNewHeads")
        assert isinstance(subscription, str)
        first = await client.notification(subscription)  # the current head, sent at once
        assert first["method"] == "chain_newHead"
        start = int(first["params"]["result"]["number"], 16)
        assert (start, first["params"]["result"]) == (
            (await head(client))[0],
            await client.call("chain_getHeader"),
        )

        last_hash = await client.call("dev_newBlock", {"count": 3})
        notified = [await client.notification(subscription) for _ in range(3)]
        numbers = [int(n["params"]["result"]["number"], 16) for n in notified]
        assert numbers == [start + 1, start + 2, start + 3]
        assert await client.call("chain_getBlockHash") == last_hash

        hashes = await client.call("chain_getBlockHash", list(range(start, start + 4)))
        assert hashes[-1] == last_hash
        headers = [await client.call("chain_getHeader", h) for h in hashes]
        assert [n["params"]["result"] for n in notified] == headers[1:]
        for parent_hash, header, number in zip(hashes[:-1], headers[1:], numbers, strict=True):
            assert header["parentHash"] == parent_hash
            assert header["number"] == f"0x{number:08x}"  # zero-padded u32, not "0x5"
            assert header["stateRoot"] == ZERO_HASH  # chopsticks does not compute it

        stamps = [await timestamp_at(client, h) for h in hashes]
        assert [b - a for a, b in itertools.pairwise(stamps)] == [SLOT_MS] * 3
        slots = [aura_slot(h) for h in headers[1:]]
        assert slots == [s // SLOT_MS for s in stamps[1:]]
        assert [b - a for a, b in itertools.pairwise(slots)] == [1, 1]

        # the same value through state_queryStorageAt and a whole block
        value = await client.call("state_getStorage", TIMESTAMP_NOW, last_hash)
        changes = {"block": last_hash, "changes": [[TIMESTAMP_NOW, value]]}
        assert await client.call("state_queryStorageAt", [TIMESTAMP_NOW], last_hash) == [changes]
        block = await client.call("chain_getBlock", last_hash)
        assert block["block"]["header"] == headers[-1]
        assert block["justifications"] is None
        assert len(block["block"]["extrinsics"]) >= 2  # the inherents
        assert await client.call("chain_unsubscribeNewHeads", subscription) is None


async def test_time_travel_sets_the_next_block_time(chopsticks_url: str) -> None:
    async with rpc(chopsticks_url) as client:
        _, best = await head(client)
        target = await timestamp_at(client, best) + 3_600_000 + 5_000  # not slot-aligned
        assert await client.call("dev_timeTravel", target) == target
        # the head's own storage is rewritten in place: same hash, new Timestamp.Now
        assert await client.call("chain_getBlockHash") == best
        assert await timestamp_at(client, best) == target

        made = [await client.call("dev_newBlock") for _ in range(2)]
        assert [await timestamp_at(client, h) for h in made] == [
            target + SLOT_MS,
            target + 2 * SLOT_MS,
        ]
        header = await client.call("chain_getHeader", made[0])
        assert aura_slot(header) == (target + SLOT_MS) // SLOT_MS

        # a date string is parsed by JavaScript's Date.parse; the result is in ms
        later = (target // 1000 + 2 * 86_400) * 1000
        text = datetime.fromtimestamp(later / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        assert await client.call("dev_timeTravel", text) == later
        made_after = await client.call("dev_newBlock", {})
        assert await timestamp_at(client, made_after) == later + SLOT_MS


async def test_an_unknown_hash_becomes_the_genesis_block(private_chopsticks_url: str) -> None:
    """Chopsticks asks its genesis "upstream" about unknown hashes, which answers for any.

    So no call fails for an unknown block hash: headers, blocks and runtime versions
    come back as the genesis ones, storage reads as genesis storage, and the hash is
    then what ``chain_getBlockHash(0)`` returns.  A private node, as this sticks.
    """
    unknown = "0x" + "ab" * 32
    async with rpc(private_chopsticks_url) as client:
        assert await client.call("chain_getBlockHash", 0) == GENESIS_HASH
        genesis = await client.call("chain_getHeader", GENESIS_HASH)
        assert genesis["number"] == "0x00000000"
        assert await client.call("chain_getHeader", unknown) == genesis
        assert await client.call("state_getStorage", TIMESTAMP_NOW, unknown) is None
        version = await client.call("state_getRuntimeVersion", unknown)
        assert version["specVersion"] == 900
        block = await client.call("chain_getBlock", unknown)
        assert block["block"] == {"header": genesis, "extrinsics": []}
        assert await client.call("chain_getBlockHash", 0) == unknown
