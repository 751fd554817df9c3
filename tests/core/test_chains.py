"""What each kind of chain needs from a runtime: every item checked, all missing named."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from blocktimesd.core.chains import REQUIRED_ITEMS, ChainKind, check_runtime
from blocktimesd.errors import UnsupportedRuntime

ALL = {item for items in REQUIRED_ITEMS.values() for item in items}


@dataclass(frozen=True)
class _Version:
    label: str = "subspace/7"


class FakeRuntime:
    """A runtime that has exactly ``items`` (what, pallet, item)."""

    def __init__(self, items: set[tuple[str, str, str]]) -> None:
        self.items = items
        self.version = _Version()

    def _lookup(self, what: str, pallet: str, item: str) -> Any:
        if (what, pallet, item) not in self.items:
            raise UnsupportedRuntime(f"no {what} {pallet}.{item}")
        return (what, pallet, item)

    def storage_entry(self, pallet: str, item: str) -> Any:
        return self._lookup("storage", pallet, item)

    def call_index(self, pallet: str, call: str) -> Any:
        return self._lookup("call", pallet, call)


@pytest.mark.parametrize("kind", list(ChainKind))
def test_a_runtime_with_every_item_passes(kind: ChainKind) -> None:
    check_runtime(FakeRuntime(set(REQUIRED_ITEMS[kind])), kind, "chain")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kind", "missing", "named"),
    [
        (ChainKind.GENERIC, {("storage", "Timestamp", "Now")}, "Timestamp.Now"),
        (ChainKind.AUTO_EVM, {("storage", "Timestamp", "Now")}, "Timestamp.Now"),
        (
            ChainKind.CONSENSUS,
            {
                ("storage", "Domains", "SuccessfulBundles"),
                ("call", "Subspace", "store_segment_headers"),
            },
            "Domains.SuccessfulBundles, Subspace.store_segment_headers",
        ),
    ],
)
def test_every_missing_item_is_named_with_the_way_out(
    kind: ChainKind, missing: set[tuple[str, str, str]], named: str
) -> None:
    runtime = FakeRuntime(ALL - missing)
    with pytest.raises(UnsupportedRuntime) as caught:
        check_runtime(runtime, kind, "taurus")  # type: ignore[arg-type]
    assert str(caught.value) == (
        f"taurus: runtime subspace/7 lacks {named}, which a chain of kind {kind.value!r} "
        "needs; configure this chain as kind 'generic' to measure block times only"
    )


def test_a_consensus_runtime_serves_every_other_kind() -> None:
    runtime = FakeRuntime(set(REQUIRED_ITEMS[ChainKind.CONSENSUS]))
    for kind in ChainKind:
        check_runtime(runtime, kind, "consensus")  # type: ignore[arg-type]
