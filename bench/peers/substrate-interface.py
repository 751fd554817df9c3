"""substrate-interface (PyPI, polkascan): the synchronous ``SubstrateInterface``, as its
documentation shows.  Per block: the hash by number, the header, and ``Timestamp.Now``
with ``query(..., block_hash=)``.

The client is blocking, so CONCURRENCY > 1 runs that many workers, each with its own
connection.  They are processes, not threads: scalecodec attaches the runtime
configuration to its shared decoder classes, so two clients decoding in threads of one
process break each other ("Decoder class for "Compact<u32>" not found").

    python substrate-interface.py WS_URL FIRST LAST [CONCURRENCY]

Runs in its own virtual environment (bench/peers/run.py makes it); prints the JSON line
described in common.mjs.
"""

from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from substrateinterface import SubstrateInterface

_client: SubstrateInterface | None = None  # each worker process's own connection


def _connect(url: str) -> None:
    global _client
    _client = SubstrateInterface(url=url)


def _row(n: int) -> list[Any]:
    assert _client is not None
    block_hash = _client.get_block_hash(n)
    header = _client.get_block_header(block_hash)["header"]
    now = _client.query("Timestamp", "Now", block_hash=block_hash)
    return [header["number"], block_hash, header["parentHash"], int(now.value)]


def fetch_rows(url: str, first: int, last: int, concurrency: int) -> list[list[Any]]:
    numbers = range(first, last + 1)
    if concurrency <= 1:
        _connect(url)
        try:
            return [_row(n) for n in numbers]
        finally:
            assert _client is not None
            _client.close()
    with ProcessPoolExecutor(concurrency, initializer=_connect, initargs=(url,)) as pool:
        return list(pool.map(_row, numbers, chunksize=max(1, len(numbers) // (concurrency * 8))))


def main() -> None:
    url, first, last, *rest = sys.argv[1:]
    concurrency = int(rest[0]) if rest else 1
    started = time.perf_counter()
    rows = fetch_rows(url, int(first), int(last), concurrency)
    seconds = time.perf_counter() - started
    print(json.dumps({"blocks": len(rows), "seconds": seconds, "rows": rows}))


if __name__ == "__main__":
    main()
