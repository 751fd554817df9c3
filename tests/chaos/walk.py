"""The oracle: a node's canonical chain walked over plain JSON-RPC, and a dataset
compared with it block by block.

Deliberately independent of blocktimesd: a WebSocket, orjson, xxhash and pyarrow, and
nothing from the package, so a bug in the daemon's decoding or fork handling cannot
hide itself by being repeated here.  Used by the chaos tests and by ``bench/soak.py``.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson
import pyarrow.parquet as pq  # type: ignore[import-untyped, unused-ignore]
import xxhash
from websockets.asyncio.client import ClientConnection, connect

__all__ = [
    "NOW_KEY",
    "Canonical",
    "ChainVerdict",
    "Rpc",
    "Verdict",
    "compare",
    "read_reconciliation",
    "read_rows",
    "twox128",
    "walk",
]

_PIPELINE = 64  # requests in flight on the oracle's connection (a node buffers 64)
_RGTR_PREFIX = "0x06" + b"RGTR".hex() + "80"  # PreRuntime, engine RGTR, 32 bytes follow


def twox128(data: bytes) -> bytes:
    """Substrate's TwoX128: two xxHash64 (seeds 0 and 1), each little-endian."""
    return b"".join(xxhash.xxh64_intdigest(data, seed).to_bytes(8, "little") for seed in (0, 1))


NOW_KEY = "0x" + (twox128(b"Timestamp") + twox128(b"Now")).hex()


class RpcFailure(Exception):
    """The node answered a call with an error."""


class Rpc:
    """A bare JSON-RPC client: one connection, calls pipelined, answers matched by id."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._ws: ClientConnection | None = None
        self._ids = itertools.count(1)

    async def __aenter__(self) -> Rpc:
        self._ws = await connect(self.url, max_size=None, open_timeout=10)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._ws is not None:
            await self._ws.close()

    async def call(self, method: str, *params: Any) -> Any:
        (result,) = await self.call_many([(method, list(params))])
        return result

    async def call_many(self, calls: Sequence[tuple[str, list[Any]]]) -> list[Any]:
        """Answers in the order of ``calls``, with at most ``_PIPELINE`` in flight."""
        assert self._ws is not None, "use 'async with Rpc(url)'"
        results: list[Any] = []
        for start in range(0, len(calls), _PIPELINE):
            chunk = calls[start : start + _PIPELINE]
            ids = [next(self._ids) for _ in chunk]
            for req_id, (method, params) in zip(ids, chunk, strict=True):
                message = {"jsonrpc": "2.0", "id": req_id, "method": method, "params": params}
                await self._ws.send(orjson.dumps(message).decode())
            answers: dict[int, Any] = {}
            while len(answers) < len(ids):
                reply = orjson.loads(await self._ws.recv())
                if "id" not in reply:
                    continue  # a notification
                if "error" in reply:
                    raise RpcFailure(f"{self.url}: {reply['error']}")
                answers[reply["id"]] = reply["result"]
            results.extend(answers[i] for i in ids)
        return results


@dataclass(frozen=True, slots=True)
class Block:
    number: int
    hash: str
    parent_hash: str
    timestamp_ms: int | None  # Timestamp.Now in the block's state; None at genesis
    source: str | None  # domain: the consensus block named by the RGTR digest item


@dataclass(frozen=True, slots=True)
class Canonical:
    """A stretch of a node's canonical chain, as of the head it was walked from."""

    head: int
    blocks: dict[int, Block]

    def get(self, number: int) -> Block | None:
        return self.blocks.get(number)


def _rgtr_source(header: dict[str, Any]) -> str | None:
    logs: list[str] = header["digest"]["logs"]
    for log in logs:
        if log.startswith(_RGTR_PREFIX):
            return "0x" + log[len(_RGTR_PREFIX) : len(_RGTR_PREFIX) + 64]
    return None


def _timestamp(value: str | None) -> int | None:
    return None if value is None else int.from_bytes(bytes.fromhex(value[2:]), "little")


async def walk(url: str, lowest: int) -> Canonical:
    """The canonical chain from the node's best block down to block ``lowest``: each
    header found by its child's parent hash, then its ``Timestamp.Now``."""
    async with Rpc(url) as rpc:
        block_hash = await rpc.call("chain_getBlockHash")
        headers: list[tuple[str, dict[str, Any]]] = []
        while True:
            header = await rpc.call("chain_getHeader", block_hash)
            assert header is not None, f"{url}: the node does not know {block_hash}"
            headers.append((block_hash, header))
            number = int(header["number"], 16)
            if number <= max(lowest, 0):
                break
            block_hash = header["parentHash"]
        values = await rpc.call_many(
            [("state_getStorage", [NOW_KEY, block_hash]) for block_hash, _ in headers]
        )
        by_number = await rpc.call("chain_getBlockHash", [int(h["number"], 16) for _, h in headers])
    blocks: dict[int, Block] = {}
    for (block_hash, header), value in zip(headers, values, strict=True):
        number = int(header["number"], 16)
        blocks[number] = Block(
            number, block_hash, header["parentHash"], _timestamp(value), _rgtr_source(header)
        )
    head = int(headers[0][1]["number"], 16)
    # The walk by parent links and the node's own index by number must agree below the
    # tip (a natural fork may have moved the last few blocks since).
    for (block_hash, header), indexed in zip(headers, by_number, strict=True):
        if int(header["number"], 16) < head - 20:
            assert indexed == block_hash, f"{url}: #{header['number']} walked {block_hash}"
    return Canonical(head, blocks)


async def canonical_numbers(url: str, hashes: Iterable[str]) -> dict[str, int]:
    """The number of each of these blocks that is on the node's canonical chain."""
    wanted = sorted(set(hashes))
    async with Rpc(url) as rpc:
        headers = await rpc.call_many([("chain_getHeader", [h]) for h in wanted])
        known = {
            h: int(header["number"], 16)
            for h, header in zip(wanted, headers, strict=True)
            if header is not None
        }
        at = await rpc.call("chain_getBlockHash", list(known.values()))
    return {h: n for (h, n), canonical in zip(known.items(), at, strict=True) if canonical == h}


# -- the dataset -------------------------------------------------------------------------


def read_rows(data: Path, chain: str) -> list[dict[str, Any]]:
    """Every row of a chain's ``block_times`` files, sorted by block number."""
    rows: list[dict[str, Any]] = []
    for path in sorted((data / "block_times" / f"chain={chain}").glob("date=*/*.parquet")):
        rows.extend(pq.read_table(path).to_pylist())
    return sorted(rows, key=lambda r: int(r["block_number"]))


def read_reconciliation(data: Path, chain: str) -> list[dict[str, Any]]:
    path = data / "reconciliation" / f"{chain}.jsonl"
    if not path.exists():
        return []
    records: list[dict[str, Any]] = []
    for line in path.read_bytes().splitlines():
        try:
            records.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            continue  # a torn last line after a crash
    return records


# -- the comparison ----------------------------------------------------------------------


def _ranges(numbers: Iterable[int]) -> str:
    """``[3, 4, 5, 9]`` -> ``3-5, 9``."""
    parts: list[str] = []
    for _, group in itertools.groupby(enumerate(sorted(numbers)), lambda p: p[1] - p[0]):
        run = [n for _, n in group]
        parts.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
    return ", ".join(parts)


@dataclass(slots=True)
class ChainVerdict:
    """What is wrong with one chain's rows; every list empty means exactly once, right."""

    chain: str
    rows: int = 0
    first: int | None = None
    last: int | None = None
    head: int = 0  # the node's best block when it was walked
    missing: list[int] = field(default_factory=list)  # holes inside first..last
    duplicated: list[int] = field(default_factory=list)
    orphaned: list[int] = field(default_factory=list)  # hash or parent not canonical
    wrong_timestamp: list[int] = field(default_factory=list)
    wrong_delta: list[int] = field(default_factory=list)
    wrong_link: list[int] = field(default_factory=list)  # domain -> consensus mapping
    excluded: list[int] = field(default_factory=list)  # timestamps not checked (lied about)

    def problems(self) -> list[str]:
        found = [
            (name, numbers)
            for name, numbers in (
                ("missing", self.missing),
                ("duplicated", self.duplicated),
                ("orphaned", self.orphaned),
                ("wrong timestamp", self.wrong_timestamp),
                ("wrong delta", self.wrong_delta),
                ("wrong consensus link", self.wrong_link),
            )
            if numbers
        ]
        return [f"{name} {len(numbers)}: {_ranges(numbers)}" for name, numbers in found]

    def summary(self) -> str:
        rows = "no rows" if self.first is None else f"{self.rows} rows #{self.first}..#{self.last}"
        problems = "; ".join(self.problems()) or "exactly once"
        return f"{self.chain}: {rows} (node head #{self.head}): {problems}"


@dataclass(slots=True)
class Verdict:
    chains: dict[str, ChainVerdict]

    def problems(self) -> list[str]:
        return [f"{c.chain}: {p}" for c in self.chains.values() for p in c.problems()]

    def summary(self) -> str:
        return "\n".join(c.summary() for c in self.chains.values())


def _check_chain(
    chain: str,
    rows: list[dict[str, Any]],
    canonical: Canonical,
    excluded: Collection[str] = (),
) -> ChainVerdict:
    """``excluded``: hashes of blocks whose timestamp a node lied about; their rows keep
    the lie, so neither their timestamp nor their delta is checked, nor the delta of
    their children's rows (it starts from the lie).  Their presence and hashes are."""
    verdict = ChainVerdict(chain, rows=len(rows), head=canonical.head)
    excluded = frozenset(excluded)
    if not rows:
        return verdict
    numbers = [int(r["block_number"]) for r in rows]
    verdict.first, verdict.last = numbers[0], numbers[-1]
    counts = Counter(numbers)
    verdict.duplicated = sorted(n for n, c in counts.items() if c > 1)
    verdict.missing = sorted(set(range(numbers[0], numbers[-1] + 1)) - set(counts))
    for row in rows:
        n = int(row["block_number"])
        block = canonical.get(n)
        if block is None or row["hash"] != block.hash or row["parent_hash"] != block.parent_hash:
            verdict.orphaned.append(n)
            continue
        if row["hash"] in excluded:
            verdict.excluded.append(n)
            continue
        if row["timestamp_ms"] != block.timestamp_ms:
            verdict.wrong_timestamp.append(n)
        if row["parent_hash"] in excluded:
            continue
        parent = canonical.get(n - 1)
        assert parent is not None, f"{chain}: the walk stops above #{n - 1}"
        expected = (
            None
            if parent.timestamp_ms is None or block.timestamp_ms is None
            else block.timestamp_ms - parent.timestamp_ms
        )
        if row["delta_since_parent_ms"] != expected:
            verdict.wrong_delta.append(n)
    return verdict


def _check_links(
    verdict: ChainVerdict,
    rows: list[dict[str, Any]],
    canonical: Canonical,
    sources: dict[str, int],
    reconciled: set[tuple[int, str]],
) -> None:
    """A domain row names its block's consensus source, or is null with a record."""
    orphaned = set(verdict.orphaned)
    for row in rows:
        n = int(row["block_number"])
        block = canonical.get(n)
        if n in orphaned or block is None:
            continue
        if row["consensus_block_hash"] is None:
            ok = row["consensus_block_number"] is None and (n, row["hash"]) in reconciled
        else:
            ok = (
                block.source is not None
                and row["consensus_block_hash"] == block.source
                and row["consensus_block_number"] is not None
                and row["consensus_block_number"] == sources.get(block.source)
            )
        if not ok:
            verdict.wrong_link.append(n)


async def compare(
    data: Path,
    consensus_url: str,
    domain_url: str,
    names: tuple[str, str] = ("consensus", "auto-evm"),
    excluded: Mapping[str, Collection[str]] | None = None,
) -> Verdict:
    """Compare the dataset in ``data`` with the canonical chains the nodes serve now;
    ``excluded``: per chain, hashes of blocks lied about (see :func:`_check_chain`)."""
    consensus_name, domain_name = names
    verdicts: dict[str, ChainVerdict] = {}
    domain_rows: list[dict[str, Any]] = []
    domain_chain: Canonical | None = None
    for name, url in ((consensus_name, consensus_url), (domain_name, domain_url)):
        rows = read_rows(data, name)
        lowest = int(rows[0]["block_number"]) - 1 if rows else 0
        canonical = await walk(url, lowest)
        verdicts[name] = _check_chain(name, rows, canonical, (excluded or {}).get(name, ()))
        if name == domain_name:
            domain_rows, domain_chain = rows, canonical
    if domain_rows and domain_chain is not None:
        wanted = (domain_chain.blocks[n].source for n in domain_chain.blocks)
        sources = await canonical_numbers(consensus_url, (s for s in wanted if s is not None))
        reconciled = {
            (int(r["block_number"]), str(r["hash"])) for r in read_reconciliation(data, domain_name)
        }
        _check_links(verdicts[domain_name], domain_rows, domain_chain, sources, reconciled)
    return Verdict(verdicts)
