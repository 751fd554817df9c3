"""The dataset in S3 against a local disk: backfill speed, requests per file, and resume
over a large prefix.  S3 is moto's server on loopback (tests/s3server.py), reached
through the counting proxy in front of it (faults off), so every request is counted.

1. Backfill of the consensus chain (`blocktimesd backfill`, bench/backfill_run.py, each
   in its own process) from a `blocktimesd devnet`, to a temp directory and to
   ``s3://``, in back-to-back pairs; blocks/s of each and their ratio per pair.
2. Requests per file written: the S3 requests of each S3 run over the data files it
   left.
3. Resume with ``--resume-files`` files (10,000 by default) in the prefix: the time and
   requests of what the daemon reads at start (the last durable row of a chain) and
   of what a backfill reads (the durable runs of the whole range).

    python bench/s3.py [--blocks 20000] [--repeat 3] [--resume-files 10000]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import boto3  # type: ignore[import-untyped]  # noqa: E402
import uvloop  # noqa: E402
from backfill_vs_reference import run  # noqa: E402
from devnet_process import PYTHON, devnet_process  # noqa: E402

from blocktimesd.core.ranges import Span  # noqa: E402
from blocktimesd.dataset import objects  # noqa: E402
from blocktimesd.dataset.layout import file_name, new_token  # noqa: E402
from blocktimesd.dataset.scan import durable_runs, last_durable_row  # noqa: E402
from blocktimesd.dataset.schema import ROW_SCHEMA, encode, to_table  # noqa: E402
from tests.handmade import chain_rows  # noqa: E402
from tests.s3server import FaultProxy, aws_env, moto_server  # noqa: E402


async def backfill(url: str, blocks: int, data: str | None) -> dict[str, Any]:
    """One backfill of blocks 1..``blocks`` to ``data`` (None: a temp directory)."""
    where = () if data is None else ("--data", data)
    out = await run(
        PYTHON, str(HERE / "backfill_run.py"), url, "1", str(blocks),
        "--storage", "per-block", *where,
    )  # fmt: skip
    result: dict[str, Any] = json.loads(out.splitlines()[-1])
    if result["exit"] != 0 or result["blocks"] != blocks:
        raise RuntimeError(f"backfill to {data} did not complete: {result}")
    return result


def data_objects(client: Any, bucket: str, prefix: str) -> int:
    pages = client.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=f"{prefix}/block_times/"
    )
    return sum(
        1 for page in pages for item in page.get("Contents", []) if item["Key"].endswith(".parquet")
    )


def seed_files(bucket: str, prefix: str, count: int) -> int:
    """``count`` data files of 10 consensus rows each, uploaded in parallel; the last
    block number."""
    fs = objects.filesystem()
    rows = chain_rows("consensus", [None, *([6000] * (count * 10 - 1))])

    def put(index: int) -> None:
        part = rows[index * 10 : index * 10 + 10]
        day = "2023-11-14"
        name = file_name(part[0].block_number, part[-1].block_number, new_token())
        key = f"{bucket}/{prefix}/block_times/chain=consensus/date={day}/{name}"
        with fs.open_output_stream(key) as out:
            out.write(encode(to_table(part, ROW_SCHEMA), 65_536))

    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        list(pool.map(put, range(count)))
    return count * 10


def resume_figures(bucket: str, files: int, proxy: FaultProxy) -> None:
    prefix = "resume"
    started = time.perf_counter()
    last = seed_files(bucket, prefix, files)
    print(f"seeded {files} files in {time.perf_counter() - started:.1f} s")
    where = objects.data_location(f"s3://{bucket}/{prefix}")
    for what, call in (
        ("last durable row (the daemon's resume)", lambda: last_durable_row(where, "consensus")),
        (
            "durable runs of the range (a backfill's resume)",
            lambda: durable_runs(where, "consensus", Span(1, last)),
        ),
    ):
        objects.reset_filesystem()
        before = proxy.forwarded
        started = time.perf_counter()
        result = call()
        seconds = time.perf_counter() - started
        assert result, what
        print(f"  {what}: {seconds:.2f} s, {proxy.forwarded - before} requests")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blocks", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--resume-files", type=int, default=10_000)
    args = parser.parse_args()
    with moto_server() as endpoint, FaultProxy(endpoint) as proxy:
        env = aws_env(proxy.endpoint)
        os.environ.update(env)
        objects.reset_filesystem()
        client: Any = boto3.client("s3")
        bucket = f"bench-{uuid.uuid4().hex[:12]}"
        client.create_bucket(Bucket=bucket)
        flags = ("--history", str(args.blocks + 10), "--chain-stall-every", "0")
        async with devnet_process(*flags) as (url, _):
            print(f"backfill of {args.blocks} blocks, local disk vs s3:// (moto on loopback)")
            ratios = []
            for r in range(args.repeat):
                local = await backfill(url, args.blocks, None)
                prefix = f"run-{r}"
                before = proxy.forwarded
                s3 = await backfill(url, args.blocks, f"s3://{bucket}/{prefix}")
                requests = proxy.forwarded - before
                files = data_objects(client, bucket, prefix)
                ratio = local["seconds"] / s3["seconds"]
                ratios.append(ratio)
                print(
                    f"  pair {r + 1}: local {args.blocks / local['seconds']:,.0f} blocks/s, "
                    f"s3 {args.blocks / s3['seconds']:,.0f} blocks/s (s3/local speed "
                    f"{ratio:.2f}); {requests} S3 requests for {files} data files "
                    f"({requests / max(files, 1):.1f} per file, lease and listings included)"
                )
            print(f"  median s3/local speed: {statistics.median(ratios):.2f}")
        print(f"resume with {args.resume_files} files in the prefix")
        resume_figures(bucket, args.resume_files, proxy)


if __name__ == "__main__":
    uvloop.run(main())
