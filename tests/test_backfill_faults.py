"""``blocktimesd backfill`` against a node that lies: the simulator behind a proxy that
rewrites chosen answers (tests/lying_node.py).

Whatever the node says, the backfill either writes the canonical chain's rows or lists
the blocks it could not verify and exits 1; it never writes an unverified row, never
retries without bound, and never ends in a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from blocktimesd.aio.rpc import RpcClient, RpcSettings
from blocktimesd.backfill.mapping import ConsensusMap
from blocktimesd.commands.backfill import add_backfill_arguments, run_backfill
from blocktimesd.core.chains import TIMESTAMP_NOW_KEY
from blocktimesd.core.header import PRE_RUNTIME, Header
from blocktimesd.dataset.writer import ParquetWriter
from blocktimesd.devnet.app import Devnet
from blocktimesd.devnet.chain import Block
from blocktimesd.devnet.params import ChainParams
from blocktimesd.errors import HashMismatch
from tests.daemon import row_of
from tests.lying_node import lying_node

K = 20
PARAMS = ChainParams(seed=7, history=300, fork_rate=0.3, stall_every_s=0)
SECRET = "S3cret"


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("DATA_DIR", "K_CONSENSUS", "K_AUTO_EVM", "CONSENSUS_RPC_WS", "AUTO_EVM_RPC_WS"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


async def backfill(data: Path, *argv: str) -> int:
    parser = argparse.ArgumentParser()
    add_backfill_arguments(parser)
    args = parser.parse_args(["--chain", "consensus", "--data", str(data), "--window", "64",
                              "--k", str(K), *argv])  # fmt: skip
    return await run_backfill(args)


def rows(data: Path) -> dict[int, dict[str, Any]]:
    found: dict[int, dict[str, Any]] = {}
    for path in sorted((data / "block_times" / "chain=consensus").glob("date=*/*.parquet")):
        for row in pq.read_table(path).to_pylist():
            assert row["block_number"] not in found, "a row written twice"
            found[row["block_number"]] = row
    return found


def assert_canonical(found: dict[int, dict[str, Any]], devnet: Devnet) -> None:
    canonical = devnet.network.consensus.canonical
    for number, row in found.items():
        block = canonical[number]
        assert row["hash"] == block.hash_hex, f"block {number} is not canonical"
        assert row["slot"] == block.facts.slot


def lies(count: int | None) -> Callable[[], bool]:
    """Whether to lie this time: ``count`` times, or always (None)."""
    told = 0

    def again() -> bool:
        nonlocal told
        told += 1
        return count is None or told <= count

    return again


def failure_line(err: str) -> str:
    lines = [line for line in err.splitlines() if "FAILED" in line]
    assert len(lines) == 1, err
    return lines[0]


# -- 1. the last block of a range is linked to its successor ------------------------------


def first_of_a_fork(devnet: Devnet, low: int, high: int) -> Block:
    """A block off the canonical chain whose parent is on it."""
    store = devnet.network.consensus
    for block in store.by_hash.values():
        if (
            low <= block.number <= high
            and not store.is_canonical(block)
            and block.parent is not None
            and store.is_canonical(block.parent)
        ):
            return block
    raise AssertionError("no fork in the simulated history; change the seed")


@pytest.mark.parametrize(
    ("times", "hide_child"),
    [(None, False), (1, False), (None, True)],
    ids=["always", "once", "always, its child hidden"],
)
async def test_a_lie_about_the_last_block_of_a_range_is_caught(
    tmp_path: Path,
    env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    times: int | None,
    hide_child: bool,
) -> None:
    devnet = Devnet(PARAMS)
    async with devnet as urls:
        fork = first_of_a_fork(devnet, 40, devnet.network.consensus.best.number - K - 5)
        last = fork.number
        lie = lies(times)

        def rewrite(method: str, params: list[Any], result: Any) -> Any:
            numbers = params[0] if method == "chain_getBlockHash" else None
            if isinstance(numbers, list) and last in numbers and lie():
                result[numbers.index(last)] = fork.hash_hex
                if hide_child and last + 1 in numbers:  # as if the lie were the best block
                    result[numbers.index(last + 1)] = None
            return result

        async with lying_node(urls.consensus, rewrite) as url:
            env.setenv("CONSENSUS_RPC_WS", url)
            code = await backfill(tmp_path, "--start", "1", "--end", str(last))
    found = rows(tmp_path)
    assert_canonical(found, devnet)
    if times is None:
        assert code == 1
        assert last not in found
        assert f"block {last}" in failure_line(capsys.readouterr().err)
    else:
        assert code == 0
        assert sorted(found) == list(range(1, last + 1))


async def test_with_k_0_the_range_may_end_at_the_best_block(
    tmp_path: Path, env: pytest.MonkeyPatch
) -> None:
    devnet = Devnet(dataclasses.replace(PARAMS, history=150))
    async with devnet as urls:
        env.setenv("CONSENSUS_RPC_WS", urls.consensus)
        tip = devnet.network.consensus.best.number
        code = await backfill(tmp_path, "--start", "1", "--end", str(tip), "--k", "0")
    assert code == 0
    found = rows(tmp_path)
    assert sorted(found)[:tip] == list(range(1, tip + 1))  # and any block made meanwhile
    assert_canonical(found, devnet)


# -- 2. every header hashes to the hash it was asked for --------------------------------------


def with_another_slot(header: Header) -> dict[str, Any]:
    """``header`` with its slot changed: well formed, but not the header of its hash."""
    digest = list(header.digest)
    for i, item in enumerate(digest):
        if item.kind == PRE_RUNTIME and item.engine == b"SUB_":
            slot = int.from_bytes(item.payload[1:9], "little") + 1
            payload = item.payload[:1] + slot.to_bytes(8, "little") + item.payload[9:]
            digest[i] = dataclasses.replace(item, payload=payload)
            return dataclasses.replace(header, digest=tuple(digest)).to_json()
    raise AssertionError("no SUB_ pre-digest")


@pytest.mark.parametrize("times", [None, 1], ids=["always", "once"])
async def test_a_header_that_does_not_hash_to_its_hash_is_never_written(
    tmp_path: Path, env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], times: int | None
) -> None:
    devnet = Devnet(PARAMS)
    async with devnet as urls:
        target = devnet.network.consensus.canonical[70]
        forged = with_another_slot(target.header)
        lie = lies(times)

        def rewrite(method: str, params: list[Any], result: Any) -> Any:
            if method == "chain_getHeader" and params == [target.hash_hex] and lie():
                return forged
            return result

        async with lying_node(urls.consensus, rewrite) as url:
            env.setenv("CONSENSUS_RPC_WS", url)
            code = await backfill(tmp_path, "--start", "1", "--end", "150")
    found = rows(tmp_path)
    assert_canonical(found, devnet)  # the slot of block 70 included
    if times is None:
        assert code == 1
        assert 70 not in found
        assert sorted(found) == [*range(1, 65), *range(129, 151)]  # windows of 64
        line = failure_line(capsys.readouterr().err)
        assert "FAILED blocks: 65-128" in line
        assert "block 70" in line
        assert "hashes to" in line
    else:
        assert code == 0
        assert sorted(found) == list(range(1, 151))


async def test_consensus_headers_named_by_domain_blocks_are_checked_too() -> None:
    devnet = Devnet(PARAMS)
    async with devnet as urls:
        target = devnet.network.consensus.canonical[50]
        forged = with_another_slot(target.header)

        def rewrite(method: str, params: list[Any], result: Any) -> Any:
            return forged if method == "chain_getHeader" and params == [target.hash_hex] else result

        async with (
            lying_node(urls.consensus, rewrite) as url,
            RpcClient(RpcSettings((url,)), "consensus") as client,
        ):
            await client.wait_ready(10)
            mapping = ConsensusMap(client, 200)
            with pytest.raises(HashMismatch, match="block 50"):
                await mapping.resolve([target.hash_hex])


# -- 3. malformed answers fail their blocks, loudly, with no traceback -----------------------


def timestamp_now_of(block_hash: str, value: str | None) -> Callable[[str, list[Any], Any], Any]:
    def rewrite(method: str, params: list[Any], result: Any) -> Any:
        if method == "state_queryStorageAt" and params[1] == block_hash:
            changes = result[0]["changes"]
            result[0]["changes"] = [
                [key, value if key == TIMESTAMP_NOW_KEY else old] for key, old in changes
            ]
        return result

    return rewrite


def header_of(block_hash: str, change: Callable[[dict[str, Any]], Any]) -> Callable[..., Any]:
    def rewrite(method: str, params: list[Any], result: Any) -> Any:
        if method == "chain_getHeader" and params == [block_hash]:
            return change(result)
        return result

    return rewrite


def hashes_not_a_list(number: int) -> Callable[..., Any]:
    def rewrite(method: str, params: list[Any], result: Any) -> Any:
        if method == "chain_getBlockHash" and isinstance(params[0], list) and number in params[0]:
            return {"hashes": result}
        return result

    return rewrite


MALFORMED: dict[str, Callable[[Block], Callable[..., Any]]] = {
    "header without digest": lambda b: header_of(
        b.hash_hex, lambda h: {k: v for k, v in h.items() if k != "digest"}
    ),
    "number not hex": lambda b: header_of(b.hash_hex, lambda h: {**h, "number": "0xzz"}),
    "header not an object": lambda b: header_of(b.hash_hex, lambda h: 42),
    "header a list": lambda b: header_of(b.hash_hex, lambda h: [h]),
    "null Timestamp.Now": lambda b: timestamp_now_of(b.hash_hex, None),
    "Timestamp.Now not hex": lambda b: timestamp_now_of(b.hash_hex, "0xnothex"),
    "hashes not a list": lambda b: hashes_not_a_list(b.number),
}


@pytest.mark.parametrize("lie", list(MALFORMED), ids=list(MALFORMED))
async def test_malformed_answers_fail_their_blocks_naming_chain_endpoint_and_block(
    tmp_path: Path, env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], lie: str
) -> None:
    devnet = Devnet(PARAMS)
    async with devnet as urls:
        target = devnet.network.consensus.canonical[70]
        async with lying_node(urls.consensus, MALFORMED[lie](target), f"alice:{SECRET}") as url:
            env.setenv("CONSENSUS_RPC_WS", url)
            code = await backfill(tmp_path, "--start", "1", "--end", "150")
    assert code == 1
    found = rows(tmp_path)
    assert_canonical(found, devnet)
    assert sorted(found) == [*range(1, 65), *range(129, 151)]
    line = failure_line(capsys.readouterr().err)
    assert line.startswith("consensus: ")
    assert "FAILED blocks: 65-128" in line
    assert url.replace(f"alice:{SECRET}", "***") in line  # the endpoint, without credentials
    assert SECRET not in line
    if lie != "hashes not a list":  # that answer covers blocks 65-128 at once
        assert "block 70" in line


async def test_a_malformed_best_block_ends_the_run_with_a_message(
    tmp_path: Path, env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    devnet = Devnet(PARAMS)
    async with devnet as urls:

        def rewrite(method: str, params: list[Any], result: Any) -> Any:
            if method == "chain_getHeader" and not params:
                return {k: v for k, v in result.items() if k != "number"}
            return result

        async with lying_node(urls.consensus, rewrite, f"alice:{SECRET}") as url:
            env.setenv("CONSENSUS_RPC_WS", url)
            code = await backfill(tmp_path, "--start", "1", "--end", "150")
    assert code == 1
    err = capsys.readouterr().err
    message = [line for line in err.splitlines() if "best block" in line]
    assert message, err
    assert "consensus" in message[0]
    assert url.replace(f"alice:{SECRET}", "***") in message[0]
    assert SECRET not in err
    assert rows(tmp_path) == {}


# -- 4. timestamps no later than the parent's: kept, warned about, counted ---------------------


async def test_timestamps_not_after_the_parent_s_are_kept_warned_and_counted(
    tmp_path: Path,
    env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    devnet = Devnet(dataclasses.replace(PARAMS, fork_rate=0.0))
    async with devnet as urls:
        canonical = devnet.network.consensus.canonical
        same = canonical[60].timestamp_ms  # block 61 claims its parent's time
        before = canonical[79].timestamp_ms  # block 80 claims a second before its parent's
        assert same is not None
        assert before is not None
        forged = {
            canonical[61].hash_hex: same,
            canonical[80].hash_hex: before - 1000,
        }

        def rewrite(method: str, params: list[Any], result: Any) -> Any:
            if method == "state_queryStorageAt" and params[1] in forged:
                value = "0x" + forged[params[1]].to_bytes(8, "little").hex()
                return timestamp_now_of(params[1], value)(method, params, result)
            return result

        async with lying_node(urls.consensus, rewrite) as url:
            env.setenv("CONSENSUS_RPC_WS", url)
            with caplog.at_level(logging.WARNING, logger="blocktimesd.backfill"):
                code = await backfill(tmp_path, "--start", "1", "--end", "100")
    assert code == 0
    found = rows(tmp_path)
    assert sorted(found) == list(range(1, 101))
    assert found[61]["timestamp_ms"] == same  # as the chain says
    assert found[61]["delta_since_parent_ms"] == 0
    assert found[80]["delta_since_parent_ms"] == -1000
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for number in (61, 80):
        assert any("consensus" in w and f"block {number} " in w for w in warnings), warnings
    summary = [line for line in capsys.readouterr().err.splitlines() if "rows written" in line]
    assert "2 blocks stamped no later than their parent" in summary[0]


# -- 5. what is on disk already: a file that cannot be read is named, not a traceback -------


async def test_a_truncated_data_file_is_named_in_a_clear_error(
    tmp_path: Path, env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    devnet = Devnet(PARAMS)
    async with devnet as urls:
        env.setenv("CONSENSUS_RPC_WS", urls.consensus)
        async with ParquetWriter(tmp_path) as writer:
            await writer.put([row_of(devnet.network.consensus.canonical[n]) for n in range(1, 51)])
        (path,) = (tmp_path / "block_times" / "chain=consensus").glob("date=*/*.parquet")
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        code = await backfill(tmp_path, "--start", "1", "--end", "100")
    assert code == 1  # InvalidDataFile: a storage problem, not a usage error
    err = capsys.readouterr().err
    assert f"blocktimesd backfill: cannot trust this file in {tmp_path}: {path}" in err
    assert "Traceback" not in err
    assert path.exists()  # left for the operator to look at


# -- 6. endpoints may hold credentials: never shown -------------------------------------------

APIKEY = "K3yValue"


@pytest.fixture
def all_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every log record of ours, DEBUG included; websockets' own as the CLI lets them
    through (WARNING and above: its DEBUG lines show the request, query and all)."""
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.WARNING, logger="websockets")
    return caplog


def assert_no_secret(text: str) -> None:
    assert SECRET not in text
    assert APIKEY not in text


async def test_an_unreachable_endpoint_is_shown_without_its_credentials(
    tmp_path: Path,
    env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    all_logs: pytest.LogCaptureFixture,
) -> None:
    env.setattr("blocktimesd.commands.backfill_app.CONNECT_WAIT_S", 1.0)
    url = f"ws://alice:{SECRET}@127.0.0.1:1/rpc?apikey={APIKEY}"
    code = await backfill(tmp_path, "--chain", "x", "--rpc", url, "--kind", "generic",
                          "--start", "1", "--end", "5")  # fmt: skip
    assert code == 1
    out, err = capsys.readouterr()
    assert "ws://***@127.0.0.1:1/rpc?apikey=***" in err
    for text in (out, err, all_logs.text, *(str(r.args) for r in all_logs.records)):
        assert_no_secret(text)


async def test_a_failing_endpoint_is_shown_without_its_credentials(
    tmp_path: Path,
    env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    all_logs: pytest.LogCaptureFixture,
) -> None:
    devnet = Devnet(PARAMS)
    async with devnet as urls:
        target = devnet.network.consensus.canonical[70]
        lie = MALFORMED["number not hex"](target)
        async with lying_node(urls.consensus, lie, f"alice:{SECRET}") as base:
            url = f"{base}/rpc?apikey={APIKEY}"
            env.setenv("CONSENSUS_RPC_WS", url)
            code = await backfill(tmp_path, "--start", "1", "--end", "150")
    assert code == 1
    out, err = capsys.readouterr()
    assert "FAILED blocks: 65-128" in err
    assert "/rpc?apikey=***" in err
    assert "fetching them again" in all_logs.text  # the retries were logged, and checked
    for text in (out, err, all_logs.text, *(str(r.args) for r in all_logs.records)):
        assert_no_secret(text)
