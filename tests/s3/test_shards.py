"""A backfill split across workers (``--shard I/N``) writing to one S3 prefix at once:
every block exactly once, as the simulator's canonical chains say, with the nodes and
the store misbehaving meanwhile."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import boto3  # type: ignore[import-untyped, unused-ignore]
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from blocktimesd.commands.backfill import run_backfill
from blocktimesd.dataset import objects
from blocktimesd.dataset.layout import parse_file_name
from blocktimesd.dataset.lease import S3Lease, lease_key, s3_client
from blocktimesd.devnet.app import Devnet
from blocktimesd.devnet.params import ChainParams, FaultParams
from tests.s3server import FaultProxy
from tests.test_backfill import check_consensus, check_domain, parse

K = 20
PARAMS = ChainParams(seed=5, history=600, fork_rate=0.3, stall_every_s=0)
NODE_FAULTS = FaultParams(error_rate=0.005, drop_connections_every_s=1.0, latency_jitter_ms=2)
PREFIX = "shared/ds"


def s3_rows(bucket: str, chain: str) -> tuple[list[dict[str, Any]], list[tuple[int, int]]]:
    """Every row of ``chain`` under the prefix, and each file's named block range, read
    with boto3 and pyarrow (not the code under test)."""
    client: Any = boto3.client("s3")
    pages = client.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=f"{PREFIX}/block_times/chain={chain}/"
    )
    rows: list[dict[str, Any]] = []
    spans: list[tuple[int, int]] = []
    for page in pages:
        for item in page.get("Contents", []):
            name = item["Key"].rsplit("/", 1)[1]
            span = parse_file_name(name)
            assert span is not None, f"a stranger or temp object: {item['Key']}"
            spans.append((span.first, span.last))
            body = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            rows.extend(pq.read_table(pa.BufferReader(body)).to_pylist())
    return sorted(rows, key=lambda r: r["block_number"]), sorted(spans)


@pytest.mark.parametrize("workers", [2, 3])
async def test_workers_write_each_block_once(
    s3_bucket: str,
    s3_faulty: FaultProxy,
    monkeypatch: pytest.MonkeyPatch,
    workers: int,
) -> None:
    objects.reset_filesystem()
    for name in ("DATA_DIR", "K_CONSENSUS", "K_AUTO_EVM"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MAX_ROWS_PER_FILE", "64")  # chunks of 64 blocks
    devnet = Devnet(PARAMS, NODE_FAULTS)
    async with devnet:
        assert devnet.urls is not None
        monkeypatch.setenv("CONSENSUS_RPC_WS", devnet.urls.consensus)
        monkeypatch.setenv("AUTO_EVM_RPC_WS", devnet.urls.domain)
        tip = devnet.network.consensus.best.number
        s3_faulty.set_faults(slowdown=0.05, internal=0.03, reset=0.02, lost=0.02, seed=3)
        argv = (
            "--data",
            f"s3://{s3_bucket}/{PREFIX}",
            "--window",
            "50",
            "--k",
            str(K),
            "--start",
            "1",
        )
        codes = await asyncio.gather(
            *(
                run_backfill(
                    parse(*argv, "--start", "1", "--end", str(tip), "--shard", f"{i}/{workers}")
                )
                for i in range(1, workers + 1)
            )
        )
        s3_faulty.set_faults()
    assert codes == [0] * workers
    assert sum(s3_faulty.counts.values()) > 0
    network = devnet.network
    consensus, spans = s3_rows(s3_bucket, "consensus")
    assert [r["block_number"] for r in consensus] == list(range(1, tip - K + 1))
    check_consensus(consensus, network)
    for (_, last), (first, _) in itertools.pairwise(spans):
        assert first > last, "files overlap"
    assert all(first // 64 == last // 64 for first, last in spans)  # within a chunk
    domain, _ = s3_rows(s3_bucket, "auto-evm")
    assert [r["block_number"] for r in domain] == list(range(1, len(domain) + 1))
    assert len(domain) > 300
    check_domain(domain, network)
    # The workers' leases are released, and none was the dataset's own.
    client = s3_client()
    listed = client.list_objects_v2(Bucket=s3_bucket, Prefix=f"{PREFIX}/.")
    assert listed.get("KeyCount", 0) == 0


async def test_a_worker_does_not_start_while_a_writer_holds_the_dataset(
    s3_bucket: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    objects.reset_filesystem()
    monkeypatch.delenv("DATA_DIR", raising=False)
    lease = S3Lease(s3_client(), s3_bucket, lease_key(PREFIX))
    lease.acquire()
    try:
        devnet = Devnet(PARAMS)
        async with devnet:
            assert devnet.urls is not None
            monkeypatch.setenv("CONSENSUS_RPC_WS", devnet.urls.consensus)
            argv = ("--data", f"s3://{s3_bucket}/{PREFIX}", "--chain", "consensus", "--start", "1")
            code = await run_backfill(parse(*argv, "--end", "50", "--shard", "1/2"))
    finally:
        lease.release()
    assert code == 1  # a runtime failure, as for a local DATA_DIR held by another writer
    err = capsys.readouterr().err
    assert "pid" in err
    assert ".blocktimesd.lease" in err
