"""One ``blocktimesd backfill`` of the consensus chain, in this process; prints JSON.

    python bench/backfill_run.py WS_URL FIRST LAST [backfill flags...]

Output: {"blocks": rows written, "seconds": wall time, "cpu_seconds": this process's CPU
time (all threads) over the same span, "peak_rss_mib": its peak resident memory}.  Used
by bench/backfill_vs_reference.py, which runs it in its own process so that its memory
is its own.  The rows go to a temp directory, or where a ``--data`` flag says
(``s3://...`` included: bench/s3.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import sys
import tempfile
import time

import uvloop

from blocktimesd.commands.backfill import add_backfill_arguments, run_backfill
from blocktimesd.core.ranges import Span
from blocktimesd.dataset.objects import data_location
from blocktimesd.dataset.scan import durable_runs


def rows_in(data: str, first: int, last: int) -> int:
    """The consensus rows of blocks ``first``..``last`` in the dataset at ``data``."""
    runs = durable_runs(data_location(data), "consensus", Span(first, last))
    return sum(run.count for run in runs)


def main() -> None:
    url, first, last, *flags = sys.argv[1:]
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if os.environ.get("POOL_LOG"):  # how the pool of connections grows, for a look
        logging.getLogger("blocktimesd.aio.pool").setLevel(logging.DEBUG)
    parser = argparse.ArgumentParser()
    add_backfill_arguments(parser)
    with tempfile.TemporaryDirectory() as temp:
        data = temp if "--data" not in flags else flags[flags.index("--data") + 1]
        args = parser.parse_args(
            ["--chain", "consensus", "--rpc", url, "--kind", "consensus", "--start", first,
             "--end", last, "--k", "0", "--data", temp, *flags]
        )  # fmt: skip
        started, cpu_started = time.perf_counter(), time.process_time()
        code = uvloop.run(run_backfill(args))
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        blocks = rows_in(data, int(first), int(last))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "blocks": blocks,
                "seconds": seconds,
                "cpu_seconds": cpu,
                "peak_rss_mib": peak,
                "exit": code,
            }
        )
    )


if __name__ == "__main__":
    main()
