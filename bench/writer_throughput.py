"""How fast does the Parquet writer turn rows into durable files, and with how much memory?

Rows of a consensus-like chain (every column filled, a few nulls) are generated lazily
and put into a ParquetWriter in lists; the clock stops when ``close()`` has written
the last file.  Prints rows/s end to end, rows/s of generating rows alone (the part of
the cost that is not the writer's), peak RSS, files and bytes per row.  The rows span
69 days of 6-second blocks, so files also roll at each UTC date.  With --pregenerate
all rows are built before the clock starts (about 0.5 KB of memory per row), which
times the writer alone.

    python bench/writer_throughput.py [--rows 1000000] [--max-rows 50000] [--batch 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from blocktimesd.dataset.records import Row
from blocktimesd.dataset.writer import ParquetWriter, WriterSettings

T0 = 1_700_000_000_000


def make_row(n: int) -> Row:
    timestamp = T0 + 6000 * n
    return Row(
        chain="consensus",
        block_number=n,
        hash=f"0x{n:064x}",
        parent_hash=f"0x{n - 1:064x}",
        timestamp_ms=timestamp,
        delta_since_parent_ms=6000 + n % 13,
        ingestion_ts_ms=timestamp + 40_000,
        contained_store_segment_headers=n % 97 == 0,
        bundle_count=n % 4,
        consensus_block_hash=None,
        slot=n * 6,
        spec_version=7,
        consensus_block_number=None,
    )


def rows(count: int, batch: int) -> Iterator[list[Row]]:
    for start in range(1, count + 1, batch):
        yield [make_row(n) for n in range(start, min(start + batch, count + 1))]


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


async def run(directory: Path, chunks: Iterable[list[Row]], max_rows: int) -> float:
    settings = WriterSettings(max_rows=max_rows, max_minutes=60, queue_size=64)
    start = time.perf_counter()
    async with ParquetWriter(directory, settings) as writer:
        for chunk in chunks:
            await writer.put(chunk)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--max-rows", type=int, default=50_000, help="rows per file")
    parser.add_argument("--batch", type=int, default=1000, help="rows per put()")
    parser.add_argument("--pregenerate", action="store_true", help="time the writer alone")
    args = parser.parse_args()

    start = time.perf_counter()
    for _ in rows(args.rows, args.batch):
        pass
    generate = time.perf_counter() - start
    chunks: Iterable[list[Row]] = rows(args.rows, args.batch)
    if args.pregenerate:
        chunks = list(chunks)
    baseline = peak_rss_mib()

    directory = Path(tempfile.mkdtemp(prefix="writer-bench-"))
    try:
        elapsed = asyncio.run(run(directory, chunks, args.max_rows))
        files = list(directory.rglob("*.parquet"))
        size = sum(f.stat().st_size for f in files)
    finally:
        shutil.rmtree(directory)
    print(f"rows               {args.rows:,} in lists of {args.batch}, {args.max_rows:,} per file")
    what = "writer alone" if args.pregenerate else "end to end"
    print(f"{what:<18} {args.rows / elapsed:,.0f} rows/s ({elapsed:.2f} s)")
    print(f"generating alone   {args.rows / generate:,.0f} rows/s ({generate:.2f} s)")
    print(f"peak RSS           {peak_rss_mib():,.0f} MiB (before the writer: {baseline:,.0f} MiB)")
    print(f"files              {len(files)}, {size / args.rows:.1f} bytes/row on disk")


if __name__ == "__main__":
    main()
