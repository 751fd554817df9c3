"""The kinds of chain the daemon measures, and what each needs from a runtime.

A chain's kind decides its columns: every kind has block times (``Timestamp.Now``);
the consensus chain adds slots, segment headers and bundle counts, an Auto-EVM
domain its link to the consensus block.  The configuration parses the kind and the
readers check, at start-up, that the runtime carries the items the kind's columns
are read from, so that a chain configured with the wrong kind fails with one message
naming everything it lacks rather than a decoding error later.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

from blocktimesd.core.hashing import twox128
from blocktimesd.errors import UnsupportedRuntime

if TYPE_CHECKING:  # the configuration reads the kinds; only the readers load runtimes
    from blocktimesd.core.runtime import Runtime

__all__ = ["REQUIRED_ITEMS", "TIMESTAMP_NOW_KEY", "ChainKind", "check_runtime"]

# ``Timestamp.Now``'s storage key: a plain value, twox128(pallet) ++ twox128(item), the
# same in every runtime (every block time is read from it).
TIMESTAMP_NOW_KEY = "0x" + (twox128(b"Timestamp") + twox128(b"Now")).hex()


class ChainKind(enum.StrEnum):
    CONSENSUS = "consensus"
    AUTO_EVM = "auto-evm"
    GENERIC = "generic"


# What each kind of chain must have in its runtime for its columns.
REQUIRED_ITEMS: dict[ChainKind, tuple[tuple[str, str, str], ...]] = {
    ChainKind.GENERIC: (("storage", "Timestamp", "Now"),),
    ChainKind.AUTO_EVM: (("storage", "Timestamp", "Now"),),
    ChainKind.CONSENSUS: (
        ("storage", "Timestamp", "Now"),
        ("storage", "Domains", "SuccessfulBundles"),
        ("call", "Domains", "submit_bundle"),
        ("call", "Subspace", "store_segment_headers"),
    ),
}


def check_runtime(runtime: Runtime, kind: ChainKind, chain: str) -> None:
    """Raise :class:`UnsupportedRuntime` listing every item this chain kind lacks."""
    missing = []
    for what, pallet, item in REQUIRED_ITEMS[kind]:
        try:
            if what == "storage":
                runtime.storage_entry(pallet, item)
            else:
                runtime.call_index(pallet, item)
        except UnsupportedRuntime:
            missing.append(f"{pallet}.{item}")
    if missing:
        raise UnsupportedRuntime(
            f"{chain}: runtime {runtime.version.label} lacks {', '.join(missing)}, which a "
            f"chain of kind {kind.value!r} needs; configure this chain as kind 'generic' to "
            "measure block times only"
        )
