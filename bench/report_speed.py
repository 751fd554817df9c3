"""How long does ``blocktimesd report`` take on tens of millions of rows?

DuckDB itself writes a synthetic dataset in the daemon's layout and schema
(``block_times/chain=<c>/date=<d>/*.parquet``, ROW_SCHEMA types, rows sorted by block
number): half consensus blocks (geometric slot gaps of ~1 s slots with probability 1/6,
so ~6 s blocks; 1 % with segment headers; about one stall of 60-90 s a day), half
Auto-EVM blocks, one per consensus block with its timestamp (one in 100,000 off by a
second).  One file per chain and day, as a backfill writes them (the live daemon
writes many smaller ones).  Then the full report (every section, table format) runs
in-process, and again with --format json; prints rows, seconds to generate, seconds
per report.

    python bench/report_speed.py [--rows 20000000] [--dir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shutil
import tempfile
import time
from pathlib import Path

import duckdb

from blocktimesd.commands.report import add_report_parser, run_report

T0 = 1_700_000_000_000

# Consensus rows: delta = slots x ~1 s (+- 100 ms), slots ~ Geometric(1/6); rare stalls.
_CONSENSUS = """
CREATE OR REPLACE TABLE consensus AS
WITH d AS (
    SELECT range + 1 AS n,
           CASE WHEN random() < 1 / 14400 THEN 60000 + (random() * 30000)::BIGINT
                ELSE ceil(ln(1 - random()) / ln(5 / 6))::BIGINT * 1000
                     + (random() * 200)::BIGINT - 100 END AS delta,
           random() < 0.01 AS seg
    FROM range({count}))
SELECT n, delta, seg, {t0} + sum(delta) OVER (ORDER BY n) AS ts FROM d
"""

_HASH = "'0x' || md5('{salt}' || ({n})::VARCHAR) || md5('{salt}x' || ({n})::VARCHAR)"

_CONSENSUS_ROWS = f"""
SELECT 'consensus' AS chain, n::UINTEGER AS block_number,
       {_HASH.format(salt="c", n="n")} AS hash,
       {_HASH.format(salt="c", n="n - 1")} AS parent_hash,
       ts::BIGINT AS timestamp_ms,
       CASE WHEN n = 1 THEN NULL ELSE delta END::BIGINT AS delta_since_parent_ms,
       (ts + 600000)::BIGINT AS ingestion_ts_ms,
       seg AS contained_store_segment_headers,
       (n % 4)::INTEGER AS bundle_count,
       NULL::VARCHAR AS consensus_block_hash,
       (n * 6)::BIGINT AS slot,
       9::INTEGER AS spec_version,
       NULL::BIGINT AS consensus_block_number,
       strftime(epoch_ms(ts::BIGINT), '%Y-%m-%d') AS date
FROM consensus ORDER BY n
"""

_DOMAIN_ROWS = f"""
SELECT 'auto-evm' AS chain, n::UINTEGER AS block_number,
       {_HASH.format(salt="d", n="n")} AS hash,
       {_HASH.format(salt="d", n="n - 1")} AS parent_hash,
       (ts + CASE WHEN n % 100000 = 0 THEN 1000 ELSE 0 END)::BIGINT AS timestamp_ms,
       CASE WHEN n = 1 THEN NULL ELSE delta END::BIGINT AS delta_since_parent_ms,
       (ts + 600000)::BIGINT AS ingestion_ts_ms,
       NULL::BOOLEAN AS contained_store_segment_headers,
       NULL::INTEGER AS bundle_count,
       {_HASH.format(salt="c", n="n")} AS consensus_block_hash,
       NULL::BIGINT AS slot,
       3::INTEGER AS spec_version,
       n::BIGINT AS consensus_block_number,
       strftime(epoch_ms(ts::BIGINT), '%Y-%m-%d') AS date
FROM consensus ORDER BY n
"""


def generate(data_dir: Path, rows: int) -> None:
    con = duckdb.connect()
    con.execute(_CONSENSUS.format(count=rows // 2, t0=T0))
    for chain, select in (("consensus", _CONSENSUS_ROWS), ("auto-evm", _DOMAIN_ROWS)):
        target = data_dir / "block_times" / f"chain={chain}"
        target.parent.mkdir(parents=True, exist_ok=True)
        # PARTITION_BY leaves the partition column (date) out of the files, as the
        # daemon's files have it only in the path.
        con.execute(
            f"COPY ({select}) TO '{target}' "
            "(FORMAT parquet, COMPRESSION zstd, PARTITION_BY (date), ROW_GROUP_SIZE 65536)"
        )
    con.close()


def time_report(data_dir: Path, *extra: str) -> float:
    parser = argparse.ArgumentParser()
    add_report_parser(parser.add_subparsers(), [])
    args = parser.parse_args(["report", "--data", str(data_dir), *extra])
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        code = run_report(args)
    elapsed = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"report failed with exit code {code}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000_000)
    parser.add_argument("--dir", type=Path, help="where to write (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the dataset")
    options = parser.parse_args()
    data_dir = options.dir or Path(tempfile.mkdtemp(prefix="report-speed-"))
    try:
        start = time.perf_counter()
        generate(data_dir, options.rows)
        print(f"rows {options.rows:,}: generated in {time.perf_counter() - start:.1f} s")
        for label, extra in (
            ("all sections, hourly, table", ()),
            ("all sections, daily, json", ("--window", "day", "--format", "json")),
            (
                "consensus, one day, table",
                ("--chain", "consensus", "--since", "2024-01-01", "--until", "2024-01-02"),
            ),
        ):
            print(f"report ({label}): {time_report(data_dir, *extra):.2f} s")
    finally:
        if not options.keep:
            shutil.rmtree(data_dir, ignore_errors=True)
        else:
            print(f"dataset kept in {data_dir}")


if __name__ == "__main__":
    main()
