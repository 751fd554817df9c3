"""``blocktimesd backfill``, ``validate`` and ``report`` with ``--data s3://...``, run as
the commands a user types, against the simulated network and moto's S3.

The nodes misbehave (errors, dropped connections, jitter) and so does the store
(throttling, server errors, resets, answers lost after the work was done); the rows
read back from S3 (with boto3 and pyarrow, straight from moto) must be the simulator's
canonical chains, every block exactly once, and the same rows the same backfill writes
to a local folder.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import socket
import sys
import tempfile
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import boto3  # type: ignore[import-untyped, unused-ignore]
import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
import pyarrow.parquet as pq  # type: ignore[import-untyped, unused-ignore]
import pytest

from blocktimesd.dataset.layout import parse_file_name
from blocktimesd.dataset.lease import LEASE_NAME
from blocktimesd.devnet.app import Devnet
from blocktimesd.devnet.params import ChainParams, FaultParams
from tests.s3.test_lease import hold_lease_script
from tests.s3server import FAULT_KINDS, FaultProxy
from tests.test_backfill import check_consensus, check_domain, read_rows, without_ingestion

K = 20
PARAMS = ChainParams(seed=7, history=500, fork_rate=0.3, stall_every_s=0)
FAULTS = FaultParams(error_rate=0.01, drop_connections_every_s=0.5, latency_jitter_ms=2)
S3_FAULTS: dict[str, Any] = {"slowdown": 0.1, "internal": 0.06, "reset": 0.06, "lost": 0.06}
# The simulated clock all but stands still: the tip, and so the range, stay put.
FROZEN = 1e-6
PREFIX = "fleet/ds"
CHAINS = ("consensus", "auto-evm")
COMMAND_TIMEOUT_S = 120.0
# Small windows and batches: a window's calls end before the next dropped connection.
NODE_FLAGS = ("--window", "32", "--batch-size", "16")


# -- the dataset in S3, read with boto3 straight from moto --------------------------------


def moto_client(moto_endpoint: str) -> Any:
    return boto3.client("s3", endpoint_url=moto_endpoint)


def s3_objects(client: Any, bucket: str, prefix: str = PREFIX) -> dict[str, str]:
    """Every object under ``prefix``: its key below the prefix and its ETag."""
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/")
    return {
        item["Key"].removeprefix(prefix + "/"): item["ETag"]
        for page in pages
        for item in page.get("Contents", [])
    }


def data_keys(found: Mapping[str, str], chain: str) -> list[str]:
    return sorted(
        key
        for key in found
        if key.startswith(f"block_times/chain={chain}/date=") and key.endswith(".parquet")
    )


def s3_rows(
    client: Any, bucket: str, chain: str, keys: list[str] | None = None, prefix: str = PREFIX
) -> list[dict[str, Any]]:
    """The rows of ``chain``'s data files (or of ``keys`` only), by block number."""
    if keys is None:
        keys = data_keys(s3_objects(client, bucket, prefix), chain)
    rows: list[dict[str, Any]] = []
    for key in keys:
        body = client.get_object(Bucket=bucket, Key=f"{prefix}/{key}")["Body"].read()
        rows.extend(pq.read_table(pa.BufferReader(body)).to_pylist())
    return sorted(rows, key=lambda r: r["block_number"])


def check_exactly_once(found: Mapping[str, str], rows: list[dict[str, Any]], chain: str) -> None:
    """No block twice, no two files whose spans overlap, every name a data file's."""
    numbers = [r["block_number"] for r in rows]
    assert len(numbers) == len(set(numbers)), f"{chain}: a block written twice"
    spans = []
    for key in data_keys(found, chain):
        span = parse_file_name(key.rsplit("/", 1)[1])
        assert span is not None, f"not a data file: {key}"
        spans.append((span.first, span.last))
    spans.sort()
    for (_, last), (first, _) in itertools.pairwise(spans):
        assert first > last, f"{chain}: files overlap"
    assert not [key for key in found if key.endswith(".tmp")], "a temp object left"


# -- the commands ---------------------------------------------------------------------------


def command_env(devnet: Devnet, rows_per_file: int = 20) -> dict[str, str]:
    """This process's environment (the AWS settings the S3 fixtures set included), the
    simulator's endpoints, and no dataset or depth settings from outside the test."""
    assert devnet.urls is not None
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATA_DIR", "K_CONSENSUS", "K_AUTO_EVM", "MAX_ROWS_PER_FILE")
    }
    env["CONSENSUS_RPC_WS"] = devnet.urls.consensus
    env["AUTO_EVM_RPC_WS"] = devnet.urls.domain
    env["MAX_ROWS_PER_FILE"] = str(rows_per_file)  # the default: many objects per chain
    return env


async def blocktimesd(env: Mapping[str, str], *argv: str) -> tuple[int, str, str]:
    """Run ``python -m blocktimesd ARGV``; its exit code, standard output and error.  The
    simulator keeps serving meanwhile: this waits without blocking the event loop."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "blocktimesd", *argv,
            stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=err, env=dict(env),
        )  # fmt: skip
        try:
            code = await asyncio.wait_for(process.wait(), COMMAND_TIMEOUT_S)
        except TimeoutError:
            process.kill()
            await process.wait()
            err.seek(0)
            said = err.read().decode()
            raise AssertionError(f"blocktimesd {' '.join(argv)} did not finish:\n{said}") from None
        out.seek(0)
        err.seek(0)
        return code, out.read().decode(), err.read().decode()


async def backfill(env: Mapping[str, str], data: str, *argv: str) -> str:
    """Run a backfill that must succeed; its standard error."""
    code, _, err = await blocktimesd(env, "backfill", "--data", data, "--k", str(K), *NODE_FLAGS,
                                     *argv)  # fmt: skip
    assert code == 0, err
    assert "Traceback" not in err
    return err


@asynccontextmanager
async def frozen_devnet(faults: FaultParams = FAULTS) -> AsyncIterator[Devnet]:
    devnet = Devnet(PARAMS, faults, speed=FROZEN)
    async with devnet:
        yield devnet


def written(err: str, chain: str) -> tuple[int, int]:
    """Rows written and blocks skipped, from a backfill's summary line of ``chain``."""
    found = re.search(
        rf"^{chain}: blocks \S+: ([\d,]+) rows? written, ([\d,]+) blocks? already", err, re.M
    )
    assert found is not None, err
    return int(found[1].replace(",", "")), int(found[2].replace(",", ""))


# -- the tests ------------------------------------------------------------------------------


async def test_backfill_to_s3_through_faults_is_the_canonical_chains_and_the_local_rows(
    tmp_path: Path, s3_bucket: str, s3_faulty: FaultProxy, moto_endpoint: str
) -> None:
    where = f"s3://{s3_bucket}/{PREFIX}"
    local = tmp_path / "local"
    async with frozen_devnet() as devnet:
        env = command_env(devnet)
        tip = devnet.network.consensus.best.number
        s3_faulty.set_faults(**S3_FAULTS, seed=3)
        s3_faulty.script(*FAULT_KINDS)  # each at least once, the lease's first write first
        await backfill(env, where, "--start", "1", "--end", str(tip))
        s3_faulty.set_faults()
        injected = dict(s3_faulty.counts)
        await backfill(env, str(local), "--start", "1", "--end", str(tip))
        node_faults = devnet.injected()
    assert sum(injected.values()) > 2 * len(FAULT_KINDS), injected  # drawn ones too
    assert sum(node_faults.values()) > 0, node_faults

    network = devnet.network
    client = moto_client(moto_endpoint)
    found = s3_objects(client, s3_bucket)
    assert LEASE_NAME not in found  # released at the end
    consensus = s3_rows(client, s3_bucket, "consensus")
    assert [r["block_number"] for r in consensus] == list(range(1, tip - K + 1))
    check_consensus(consensus, network)
    domain = s3_rows(client, s3_bucket, "auto-evm")
    domain_last = network.domain.best.number - K
    assert domain_last > 300
    assert [r["block_number"] for r in domain] == list(range(1, domain_last + 1))
    check_domain(domain, network)
    for chain, rows in (("consensus", consensus), ("auto-evm", domain)):
        check_exactly_once(found, rows, chain)
        assert len(data_keys(found, chain)) > 1
        assert without_ingestion(rows) == without_ingestion(read_rows(local, chain)), chain


async def test_validate_and_report_of_the_dataset_in_s3_equal_those_of_a_local_copy(
    tmp_path: Path, s3_bucket: str
) -> None:
    where = f"s3://{s3_bucket}/{PREFIX}"
    local = tmp_path / "local"
    async with frozen_devnet(FaultParams()) as devnet:
        # Few objects: DuckDB reads each over HTTP, which takes a while.
        env = command_env(devnet, rows_per_file=200)
        tip = devnet.network.consensus.best.number
        await backfill(env, where, "--start", "1", "--end", str(tip))
        await backfill(env, str(local), "--start", "1", "--end", str(tip))
        code, _, err = await blocktimesd(env, "validate", "--data", where)
        assert code == 0, err
        for args in (("--format", "json"), ("--format", "table", "--window", "day")):
            code, remote_out, err = await blocktimesd(env, "report", "--data", where, *args)
            assert code == 0, err
            code, local_out, err = await blocktimesd(env, "report", "--data", str(local), *args)
            assert code == 0, err
            assert "consensus" in local_out
            assert "auto-evm" in local_out
            assert remote_out.replace(where, "DATA") == local_out.replace(str(local), "DATA")


async def test_a_second_backfill_writes_only_the_missing_blocks(
    s3_bucket: str, s3_faulty: FaultProxy, moto_endpoint: str
) -> None:
    where = f"s3://{s3_bucket}/{PREFIX}"
    client = moto_client(moto_endpoint)
    async with frozen_devnet() as devnet:
        env = command_env(devnet)
        tip = devnet.network.consensus.best.number
        s3_faulty.set_faults(**S3_FAULTS, seed=5)
        first_err = await backfill(env, where, "--chain", "consensus", "--start", "1",
                                   "--end", "230")  # fmt: skip
        before = s3_objects(client, s3_bucket)
        second_err = await backfill(env, where, "--chain", "consensus", "--start", "1",
                                    "--end", str(tip))  # fmt: skip
        s3_faulty.set_faults()
        after = s3_objects(client, s3_bucket)
    last = tip - K
    assert written(first_err, "consensus") == (230, 0)
    assert written(second_err, "consensus") == (last - 230, 230)
    # What the first run wrote is untouched; the new objects hold exactly the blocks after it.
    old = data_keys(before, "consensus")
    assert old
    assert {key: after[key] for key in old} == {key: before[key] for key in old}
    new = [key for key in data_keys(after, "consensus") if key not in before]
    assert [r["block_number"] for r in s3_rows(client, s3_bucket, "consensus", new)] == list(
        range(231, last + 1)
    )
    rows = s3_rows(client, s3_bucket, "consensus")
    assert [r["block_number"] for r in rows] == list(range(1, last + 1))
    check_exactly_once(after, rows, "consensus")
    check_consensus(rows, devnet.network)
    # A third run over the same range finds every block durable and writes nothing.
    async with frozen_devnet() as devnet:
        third_err = await backfill(command_env(devnet), where, "--chain", "consensus",
                                   "--start", "1", "--end", str(tip))  # fmt: skip
    assert written(third_err, "consensus") == (0, last)
    assert s3_objects(client, s3_bucket) == after


@asynccontextmanager
async def lease_holder(bucket: str, key: str) -> AsyncIterator[int]:
    """A live process of this host holding the lease at ``key``; its pid."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        hold_lease_script(bucket, key),
        stdout=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 60)
        assert line == b"held\n", line
        yield process.pid
    finally:
        process.kill()
        await process.wait()


async def test_a_backfill_is_refused_while_a_live_process_holds_the_lease(
    s3_bucket: str, moto_endpoint: str
) -> None:
    where = f"s3://{s3_bucket}/{PREFIX}"
    client = moto_client(moto_endpoint)
    async with frozen_devnet(FaultParams()) as devnet:
        env = command_env(devnet)
        async with lease_holder(s3_bucket, f"{PREFIX}/{LEASE_NAME}") as pid:
            held = client.get_object(Bucket=s3_bucket, Key=f"{PREFIX}/{LEASE_NAME}")["Body"].read()
            for flags in ((), ("--break-lease",)):
                code, _, err = await blocktimesd(
                    env, "backfill", "--data", where, "--chain", "consensus", "--start", "1",
                    "--end", "50", "--k", str(K), *flags,
                )  # fmt: skip
                assert code == 1, err  # a runtime failure, per the backfill's exit codes
                assert f"host {socket.gethostname()}, pid {pid}" in err
                assert "Traceback" not in err
                assert ("not stale" in err) == bool(flags), err
            # Nothing written, the lease still the holder's.
            found = s3_objects(client, s3_bucket)
            assert list(found) == [LEASE_NAME]
            lease = client.get_object(Bucket=s3_bucket, Key=f"{PREFIX}/{LEASE_NAME}")
            assert lease["Body"].read() == held
        # The holder killed: the next backfill takes its lease over without the flag.
        err = await backfill(env, where, "--chain", "consensus", "--start", "1", "--end", "50")
    assert "took over the writer lease" in err
    assert f"pid {pid}" in err
    rows = s3_rows(client, s3_bucket, "consensus")
    assert [r["block_number"] for r in rows] == list(range(1, 51))
    check_consensus(rows, devnet.network)
    assert LEASE_NAME not in s3_objects(client, s3_bucket)


@pytest.fixture(autouse=True)
def _no_outside_dataset(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATA_DIR", "K_CONSENSUS", "K_AUTO_EVM", "CONSENSUS_RPC_WS", "AUTO_EVM_RPC_WS"):
        monkeypatch.delenv(name, raising=False)
