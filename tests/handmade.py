"""Small hand-made ``block_times`` datasets for the report and validate tests.

Files are laid out as the writer lays them out (``chain=<c>/date=<d>/part-...``, rows
sorted by block number, ``ROW_SCHEMA``) but written directly with pyarrow, so a test
can also write what the writer never would (duplicates, broken links, bad deltas).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from blocktimesd.dataset.layout import ROWS, file_name, utc_date
from blocktimesd.dataset.records import COLUMNS, Row
from blocktimesd.dataset.schema import ROW_SCHEMA

T0 = 1_754_006_400_000  # 2025-08-01T00:00:00Z
HOUR = 3_600_000

_tokens = itertools.count(1)


def block_hash(chain: str, n: int) -> str:
    return "0x" + f"{chain.encode().hex()}{n:x}".rjust(64, "0")[-64:]


def chain_rows(
    chain: str,
    deltas: Sequence[int | None],
    *,
    first: int = 1,
    start_ms: int = T0,
    segments: Sequence[bool] | None = None,
    consensus: bool | None = None,
) -> list[Row]:
    """Consecutive, correctly linked rows ``first``, ``first + 1``, ... whose deltas are
    ``deltas`` (None for block 1); the first row's timestamp is ``start_ms``."""
    is_consensus = chain == "consensus" if consensus is None else consensus
    rows = []
    ts = start_ms
    for i, delta in enumerate(deltas):
        n = first + i
        if i and delta is not None:
            ts += delta
        rows.append(
            Row(
                chain=chain,
                block_number=n,
                hash=block_hash(chain, n),
                parent_hash=block_hash(chain, n - 1),
                timestamp_ms=ts,
                delta_since_parent_ms=delta,
                ingestion_ts_ms=ts + 600_000,
                contained_store_segment_headers=(
                    (bool(segments[i]) if segments else False) if is_consensus else None
                ),
                bundle_count=1 if is_consensus else None,
                consensus_block_hash=None,
                slot=n * 6 if is_consensus else None,
                spec_version=1,
                consensus_block_number=None,
            )
        )
    return rows


def domain_of(consensus: Sequence[Row], chain: str = "auto-evm") -> list[Row]:
    """One domain row per consensus row, mapped to it, with its timestamp."""
    rows = []
    previous: Row | None = None
    for i, c in enumerate(consensus):
        n = i + 1
        rows.append(
            Row(
                chain=chain,
                block_number=n,
                hash=block_hash(chain, n),
                parent_hash=block_hash(chain, n - 1),
                timestamp_ms=c.timestamp_ms,
                delta_since_parent_ms=(
                    None if previous is None else c.timestamp_ms - previous.timestamp_ms
                ),
                ingestion_ts_ms=c.ingestion_ts_ms,
                contained_store_segment_headers=None,
                bundle_count=None,
                consensus_block_hash=c.hash,
                slot=None,
                spec_version=0,
                consensus_block_number=c.block_number,
            )
        )
        previous = c
    return rows


def write_rows(data_dir: Path, rows: Iterable[Row], *, per_file: int = 1000) -> list[Path]:
    """Write ``rows`` as the writer would: per chain and UTC date, sorted, named by span.

    The partition comes from each row's own chain and timestamp unless rows are put
    somewhere else on purpose with :func:`write_file`.
    """
    groups: dict[tuple[str, str], list[Row]] = {}
    for row in rows:
        groups.setdefault((row.chain, utc_date(row.timestamp_ms)), []).append(row)
    paths = []
    for (chain, day), group in sorted(groups.items()):
        group.sort(key=lambda r: r.block_number)
        for at in range(0, len(group), per_file):
            paths.append(write_file(data_dir, chain, day, group[at : at + per_file]))
    return paths


def write_file(data_dir: Path, chain: str, day: str, rows: Sequence[Row]) -> Path:
    directory = data_dir / ROWS / f"chain={chain}" / f"date={day}"
    directory.mkdir(parents=True, exist_ok=True)
    numbers = [r.block_number for r in rows]
    path = directory / file_name(min(numbers), max(numbers), f"{next(_tokens):08x}")
    columns = {name: [getattr(r, name) for r in rows] for name in COLUMNS}
    pq.write_table(pa.table(columns, schema=ROW_SCHEMA), path, compression="zstd")
    return path


def with_changes(rows: list[Row], index: int, **changes: object) -> list[Row]:
    """``rows`` with row ``index`` changed."""
    copy = list(rows)
    copy[index] = copy[index]._replace(**changes)
    return copy
