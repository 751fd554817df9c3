"""The Arrow schemas of the datasets, and how a file's bytes are made from items.

A column is added in :mod:`blocktimesd.dataset.records` (the row) and here (its Arrow
type), in the same place in both: a guard below refuses to import when they differ.
Files are zstd-compressed, sorted by ``block_number`` (said in the footer, so readers
can skip row groups), and dictionary-encoded except for the hash columns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from operator import attrgetter
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
import pyarrow.parquet as pq  # type: ignore[import-untyped, unused-ignore]

from blocktimesd.dataset.records import COLUMNS, ReorgRecord

__all__ = ["REORG_SCHEMA", "ROW_SCHEMA", "encode", "to_table"]

ROW_SCHEMA = pa.schema(
    [
        pa.field("chain", pa.string(), nullable=False),
        pa.field("block_number", pa.uint32(), nullable=False),
        pa.field("hash", pa.string(), nullable=False),
        pa.field("parent_hash", pa.string(), nullable=False),
        pa.field("timestamp_ms", pa.int64(), nullable=False),
        pa.field("delta_since_parent_ms", pa.int64()),
        pa.field("ingestion_ts_ms", pa.int64(), nullable=False),
        pa.field("contained_store_segment_headers", pa.bool_()),
        pa.field("bundle_count", pa.int32()),
        pa.field("consensus_block_hash", pa.string()),
        pa.field("slot", pa.int64()),
        pa.field("spec_version", pa.int32(), nullable=False),
        pa.field("consensus_block_number", pa.int64()),
    ]
)
REORG_SCHEMA = pa.schema(
    [
        pa.field("chain", pa.string(), nullable=False),
        pa.field("detected_ts_ms", pa.int64(), nullable=False),
        pa.field("depth", pa.int32(), nullable=False),
        pa.field("old_tip_number", pa.uint32(), nullable=False),
        pa.field("old_tip_hash", pa.string(), nullable=False),
        pa.field("new_tip_number", pa.uint32(), nullable=False),
        pa.field("new_tip_hash", pa.string(), nullable=False),
        pa.field("common_ancestor_number", pa.uint32(), nullable=False),
        pa.field("common_ancestor_hash", pa.string(), nullable=False),
        pa.field("beyond_confirmation", pa.bool_(), nullable=False),
    ]
)
if tuple(ROW_SCHEMA.names) != COLUMNS or tuple(REORG_SCHEMA.names) != tuple(
    f.name for f in fields(ReorgRecord)
):  # pragma: no cover - a guard against records.py and this file drifting apart
    raise RuntimeError("the Arrow schemas no longer match blocktimesd.dataset.records")

_BLOCK_SORTED = [pq.SortingColumn(1)]  # files are sorted by block_number
# Block hashes are unique: a dictionary page for them costs CPU and makes files larger.
_DICTIONARY_NOT_FOR = frozenset(
    {"hash", "parent_hash", "consensus_block_hash", "old_tip_hash", "new_tip_hash"}
)


def to_table(items: Sequence[Any], schema: Any) -> Any:
    """A table of ``items``: rows (named tuples, transposed) or records (dataclasses)."""
    if not items:
        return schema.empty_table()
    if isinstance(items[0], tuple):  # rows: transpose them
        columns: Any = zip(*items, strict=True)
    else:
        columns = (list(map(attrgetter(f.name), items)) for f in schema)
    arrays = [pa.array(column, type=f.type) for column, f in zip(columns, schema, strict=True)]
    return pa.Table.from_arrays(arrays, schema=schema)


def encode(table: Any, row_group_rows: int) -> bytes:
    """The bytes of a Parquet file holding ``table``."""
    sink = pa.BufferOutputStream()
    pq.write_table(
        table,
        sink,
        row_group_size=row_group_rows,
        compression="zstd",
        use_dictionary=[name for name in table.schema.names if name not in _DICTIONARY_NOT_FOR],
        sorting_columns=_BLOCK_SORTED if "block_number" in table.schema.names else None,
    )
    data: bytes = sink.getvalue().to_pybytes()
    return data
