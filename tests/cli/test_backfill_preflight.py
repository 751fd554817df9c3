"""The checks before a backfill (or the daemon) uses a node, in as few round trips as
they allow: every question that needs no earlier answer goes out at once."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import pytest

from blocktimesd.aio.preflight import REQUIRED_METHODS, NodeExpectations, Preflight
from blocktimesd.aio.rpc import RpcClient
from blocktimesd.errors import NodeUnusable, RpcError, WrongChain

GENESIS = "0x" + "ab" * 32


class FakeNode:
    """Answers the preflight's calls and records them, one list per round trip."""

    shown_endpoint = "ws://node"

    def __init__(self, *, syncing: int = 0, unsafe: bool = True, **answers: Any) -> None:
        self.syncing = syncing  # health answers saying "syncing" before one says synced
        self.unsafe = unsafe
        self.answers: dict[str, Any] = {
            "system_chain": "Autonomys Devnet",
            "system_name": "node",
            "system_version": "1.0",
            "chain_getBlockHash": GENESIS,
            "state_getRuntimeVersion": {"specName": "subspace", "specVersion": 1},
            "rpc_methods": {"methods": sorted(REQUIRED_METHODS)},
            **answers,
        }
        self.rounds: list[list[str]] = []

    def answer(self, method: str, params: Sequence[Any]) -> Any:
        if method == "system_health":
            self.syncing -= 1
            return {"isSyncing": self.syncing >= 0, "peers": 3}
        if method == "state_queryStorage":
            if not self.unsafe:
                return RpcError(-32601, "Method not found")
            return [] if params[1] == GENESIS else RpcError(4003, "unknown block")
        return self.answers[method]

    async def call_many(self, calls: Sequence[tuple[str, list[Any]]], **_: Any) -> list[Any]:
        self.rounds.append([method for method, _ in calls])
        return [self.answer(method, params) for method, params in calls]

    async def call(self, method: str, *params: Any) -> Any:
        self.rounds.append([method])
        answer = self.answer(method, params)
        if isinstance(answer, RpcError):
            raise answer
        return answer


async def preflight(node: FakeNode, **expect: Any) -> Preflight:
    check = Preflight(NodeExpectations(syncing_poll_s=0.0, **expect), "consensus")
    await check(cast(RpcClient, node))
    return check


@pytest.mark.parametrize("unsafe", [True, False])
async def test_an_expected_genesis_makes_it_one_round_trip(unsafe: bool) -> None:
    node = FakeNode(unsafe=unsafe)
    check = await preflight(node, genesis_hash=GENESIS)
    assert len(node.rounds) == 1
    assert {"system_chain", "system_health", "state_queryStorage"} <= set(node.rounds[0])
    assert check.info is not None
    assert check.info.unsafe_allowed is unsafe


@pytest.mark.parametrize("unsafe", [True, False])
async def test_without_one_the_unsafe_question_waits_for_the_genesis(unsafe: bool) -> None:
    node = FakeNode(unsafe=unsafe)
    check = await preflight(node)
    assert len(node.rounds) == 2
    assert "system_health" in node.rounds[0]
    assert node.rounds[1] == ["state_queryStorage"]
    assert check.info is not None
    assert check.info.unsafe_allowed is unsafe


async def test_a_syncing_node_is_asked_again_until_it_is_synced() -> None:
    node = FakeNode(syncing=2)
    check = await preflight(node, genesis_hash=GENESIS)
    assert check.info is not None
    assert node.rounds[1:] == [["system_health"], ["system_health"]]


async def test_a_node_still_syncing_after_the_wait_is_refused() -> None:
    node = FakeNode(syncing=1_000)
    check = Preflight(NodeExpectations(syncing_wait_s=0.0, syncing_poll_s=0.0), "consensus")
    with pytest.raises(NodeUnusable, match="still syncing"):
        await check(cast(RpcClient, node))


async def test_the_chain_checks_come_before_the_health_answer() -> None:
    """A node of another network is named as such, whatever else it answers."""
    node = FakeNode(system_chain="Polkadot")
    original = node.answer

    def failing_health(method: str, params: Sequence[Any]) -> Any:
        return (
            RpcError(-32601, "Method not found")
            if method == "system_health"
            else original(method, params)
        )

    node.answer = failing_health  # type: ignore[method-assign]
    with pytest.raises(WrongChain, match="serves chain 'Polkadot'"):
        await preflight(node, chain_name="Autonomys Devnet", genesis_hash=GENESIS)


async def test_wrong_genesis_and_missing_methods_keep_their_messages() -> None:
    with pytest.raises(WrongChain, match="this is another network"):
        await preflight(FakeNode(), genesis_hash="0x" + "cd" * 32)
    methods = {"methods": sorted(REQUIRED_METHODS - {"state_getMetadata"})}
    with pytest.raises(NodeUnusable, match="does not offer state_getMetadata"):
        await preflight(FakeNode(rpc_methods=methods))
