"""The dataset's rows: one per canonical block, one schema for every chain.

Columns, in this order (documented in ``docs/schema.md``):

=================================  ========  =================================================
column                             type      meaning
=================================  ========  =================================================
chain                              string    configured chain name (e.g. ``consensus``)
block_number                       uint32
hash                               string    0x-hex block hash
parent_hash                        string    0x-hex parent hash
timestamp_ms                       int64     ``Timestamp.Now`` at the block (ms since epoch)
delta_since_parent_ms              int64?    timestamp minus the parent's; null when the
                                             parent has no timestamp (block 1)
ingestion_ts_ms                    int64     when blocktimesd confirmed the block
contained_store_segment_headers    bool?     consensus: the block stored segment headers
bundle_count                       int32?    consensus: bundles of all domains in the block
consensus_block_hash               string?   domain: the consensus block it was built from
slot                               int64?    consensus: the block's slot
spec_version                       int32     runtime that produced the block
consensus_block_number             int64?    domain: number of ``consensus_block_hash``
=================================  ========  =================================================
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple

__all__ = [
    "COLUMNS",
    "ReorgRecord",
    "Row",
    "Unmapped",
    "Unresolved",
    "delta_ms",
    "form_row",
    "unmapped_after_lookup",
    "unmapped_before_lookup",
]


class Row(NamedTuple):
    """One canonical block.  A tuple: immutable, cheap to make by the million, and
    its columns transpose with ``zip(*rows)``."""

    chain: str
    block_number: int
    hash: str
    parent_hash: str
    timestamp_ms: int
    delta_since_parent_ms: int | None
    ingestion_ts_ms: int
    contained_store_segment_headers: bool | None
    bundle_count: int | None
    consensus_block_hash: str | None
    slot: int | None
    spec_version: int
    consensus_block_number: int | None


COLUMNS: tuple[str, ...] = Row._fields

_new_tuple = tuple.__new__


def form_row(
    chain: str,
    number: int,
    block_hash: str,
    parent_hash: str,
    timestamp_ms: int,
    parent_timestamp_ms: int | None,
    ingestion_ts_ms: int,
    spec_version: int,
    *,
    segment_headers: int | None = None,
    bundle_count: int | None = None,
    slot: int | None = None,
    consensus_block_hash: str | None = None,
    consensus_block_number: int | None = None,
) -> Row:
    """The one way a block becomes a row: the delta is the block's timestamp minus its
    parent's; consensus facts (segment headers, bundles, slot) are given for consensus
    blocks only, the consensus block for domain blocks only.  Made by tuple.__new__: the
    backfill forms millions of rows."""
    return _new_tuple(
        Row,
        (
            chain,
            number,
            block_hash,
            parent_hash,
            timestamp_ms,
            delta_ms(timestamp_ms, parent_timestamp_ms),
            ingestion_ts_ms,
            None if segment_headers is None else segment_headers > 0,
            bundle_count,
            consensus_block_hash,
            slot,
            spec_version,
            consensus_block_number,
        ),
    )


class Unmapped(enum.StrEnum):
    """Why a domain row's consensus block is not named: the ``reason`` of its
    reconciliation record."""

    NO_DIGEST = "no RGTR digest item in the domain header"
    NO_CONSENSUS_CHAIN = "no consensus chain configured"
    UNKNOWN = "the consensus node does not know the block"
    ORPHANED = "the consensus block was orphaned"


def unmapped_before_lookup(consensus_hash: object, has_consensus_chain: bool) -> Unmapped | None:
    """Why a domain block cannot be mapped before any consensus node is asked, or None
    when its consensus block is to be looked up: its header names no consensus block
    (``consensus_hash`` is None: :attr:`Unmapped.NO_DIGEST`), or there is no consensus
    chain to ask (:attr:`Unmapped.NO_CONSENSUS_CHAIN`).  Checked in this order by the
    follower and the backfill alike, so a row's reason does not depend on which wrote it."""
    if consensus_hash is None:
        return Unmapped.NO_DIGEST
    if not has_consensus_chain:
        return Unmapped.NO_CONSENSUS_CHAIN
    return None


def unmapped_after_lookup(header_known: bool, canonical: bool) -> Unmapped | None:
    """Why a domain block's consensus block is not named once the consensus node was
    asked for it, or None when it is: the node has no header for the hash
    (:attr:`Unmapped.UNKNOWN`), or the block it names is not on the node's canonical
    chain (:attr:`Unmapped.ORPHANED`).  Whether the block is deep enough to be asked
    about is the caller's rule (the follower waits, the backfill stops)."""
    if not header_known:
        return Unmapped.UNKNOWN
    if not canonical:
        return Unmapped.ORPHANED
    return None


@dataclass(frozen=True, slots=True)
class ReorgRecord:
    """One change of the best chain that retracted blocks (``reorgs`` dataset)."""

    chain: str
    detected_ts_ms: int
    depth: int  # blocks retracted from the old best chain
    old_tip_number: int
    old_tip_hash: str
    new_tip_number: int
    new_tip_hash: str
    common_ancestor_number: int
    common_ancestor_hash: str
    beyond_confirmation: bool  # a confirmed block was retracted


@dataclass(frozen=True, slots=True)
class Unresolved:
    """A reconciliation record: a domain row whose consensus block could not be named."""

    chain: str
    block_number: int
    hash: str
    consensus_block_hash: str | None
    reason: str
    detected_ts_ms: int


def delta_ms(timestamp_ms: int | None, parent_timestamp_ms: int | None) -> int | None:
    """``timestamp(N) - timestamp(parent(N))``; None when either is unknown."""
    if timestamp_ms is None or parent_timestamp_ms is None:
        return None
    return timestamp_ms - parent_timestamp_ms
