"""One ``blocktimesd backfill`` of the consensus chain into a given dataset; prints JSON.

    python bench/peers/backfill_once.py WS_URL FIRST LAST DATA_DIR

Output: {"seconds": wall time of the backfill, "exit": its exit code}.  The dataset is
left in DATA_DIR for bench/peers/run.py to read back; run in its own process, like the
peers.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

import uvloop

from blocktimesd.commands.backfill import add_backfill_arguments, run_backfill


def main() -> None:
    url, first, last, data = sys.argv[1:]
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    parser = argparse.ArgumentParser()
    add_backfill_arguments(parser)
    args = parser.parse_args(
        ["--chain", "consensus", "--rpc", url, "--kind", "consensus", "--start", first,
         "--end", last, "--k", "0", "--data", data]
    )  # fmt: skip
    started = time.perf_counter()
    code = uvloop.run(run_backfill(args))
    print(json.dumps({"seconds": time.perf_counter() - started, "exit": code}))


if __name__ == "__main__":
    main()
