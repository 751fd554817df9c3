"""async-substrate-interface (PyPI, latent-to): ``AsyncSubstrateInterface`` as an async
context manager, as its README shows.  Per block: the hash by number, the header, and
``Timestamp.Now`` with ``query(..., block_hash=)``; CONCURRENCY blocks at a time with
asyncio tasks on the one connection.

    python async-substrate-interface.py WS_URL FIRST LAST [CONCURRENCY]

Runs in its own virtual environment (bench/peers/run.py makes it); prints the JSON line
described in common.mjs.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from async_substrate_interface import AsyncSubstrateInterface


async def fetch_rows(url: str, first: int, last: int, concurrency: int) -> list[list[Any]]:
    rows: list[list[Any]] = [[] for _ in range(first, last + 1)]
    numbers = iter(range(first, last + 1))
    async with AsyncSubstrateInterface(url) as substrate:

        async def worker() -> None:
            for n in numbers:
                block_hash = await substrate.get_block_hash(n)
                header, now = await asyncio.gather(
                    substrate.get_block_header(block_hash),
                    substrate.query("Timestamp", "Now", block_hash=block_hash),
                )
                h = header["header"]
                rows[n - first] = [h["number"], block_hash, h["parentHash"], int(now.value)]

        await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
    return rows


def main() -> None:
    url, first, last, *rest = sys.argv[1:]
    concurrency = int(rest[0]) if rest else 64
    started = time.perf_counter()
    rows = asyncio.run(fetch_rows(url, int(first), int(last), concurrency))
    seconds = time.perf_counter() - started
    print(json.dumps({"blocks": len(rows), "seconds": seconds, "rows": rows}))


if __name__ == "__main__":
    main()
