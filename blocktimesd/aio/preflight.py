"""Checks run on every (re)connection, before a node is used.

Chain name and genesis hash (against the configuration when set), runtime version,
the methods the node offers and whether it allows unsafe ones, whether it is still
syncing (wait, and say so), and whether it still has the history we need (a pruned
node gets a clear "use an archive node" error).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass
from typing import Any, NamedTuple

from blocktimesd.aio.chain import call_in_place, call_one_in_place
from blocktimesd.aio.rpc import RpcClient
from blocktimesd.core.chains import TIMESTAMP_NOW_KEY
from blocktimesd.errors import (
    MalformedAnswer,
    NodeUnusable,
    PrunedNode,
    RetryPolicy,
    RpcError,
    WrongChain,
    pruned_state,
    raise_node_errors,
)

__all__ = ["REQUIRED_METHODS", "NodeExpectations", "NodeInfo", "Preflight", "check_history"]

log = logging.getLogger(__name__)

REQUIRED_METHODS = frozenset(
    {
        "chain_getBlockHash",
        "chain_getHeader",
        "chain_getBlock",
        "chain_subscribeNewHeads",
        "state_getStorage",
        "state_getRuntimeVersion",
        "state_getMetadata",
    }
)


@dataclass(frozen=True, slots=True)
class NodeExpectations:
    chain_name: str | None = None
    genesis_hash: str | None = None
    syncing_wait_s: float = 3600.0
    syncing_poll_s: float = 10.0
    needed_from: int | None = None  # a block whose state and body must still be there


class NodeInfo(NamedTuple):
    endpoint: str
    chain_name: str
    node_name: str
    node_version: str
    genesis_hash: str
    spec_name: str
    spec_version: int
    methods: frozenset[str]
    unsafe_allowed: bool

    def __repr__(self) -> str:  # without the methods: a node offers a hundred or more
        shown = self._asdict()
        del shown["methods"]
        return f"NodeInfo({', '.join(f'{name}={value!r}' for name, value in shown.items())})"


_PREFLIGHT_CALLS: list[tuple[str, list[Any]]] = [
    ("system_chain", []),
    ("system_name", []),
    ("system_version", []),
    ("chain_getBlockHash", [0]),
    ("state_getRuntimeVersion", []),
    ("rpc_methods", []),
    ("system_health", []),  # asked with the rest: one round trip, not one each
]
_HEALTH = len(_PREFLIGHT_CALLS) - 1
# The node's transient error answers (busy, internal error) are asked again in place
# instead of costing the connection (see call_in_place).
_RETRY = RetryPolicy(initial=0.1, cap=1.0)


_GENESIS = re.compile(r"^0x[0-9a-fA-F]{64}$")


def _check_shapes(
    chain: str, url: str, chain_name: Any, genesis: Any, version: Any, methods: Any
) -> None:
    """Answers of the wrong shape are the node's fault (retried, then failed over), not
    a sign of another network."""
    wrong = [
        what
        for what, ok in (
            ("system_chain is not a string", isinstance(chain_name, str)),
            ("chain_getBlockHash(0) is not a 32-byte hex hash",
             isinstance(genesis, str) and _GENESIS.match(genesis) is not None),
            ("state_getRuntimeVersion is not an object", isinstance(version, dict)),
            ("rpc_methods is not an object", isinstance(methods, dict)),
        )
        if not ok
    ]  # fmt: skip
    if wrong:
        raise MalformedAnswer(f"{chain}: {url} answered the preflight wrongly: {'; '.join(wrong)}")


class Preflight:
    """The ``on_connect`` hook of an :class:`RpcClient`; remembers what it found."""

    def __init__(self, expect: NodeExpectations, chain: str) -> None:
        self.expect = expect
        self.chain = chain
        self.info: NodeInfo | None = None

    async def __call__(self, client: RpcClient) -> None:
        url = client.shown_endpoint or "?"
        expect = self.expect
        calls = list(_PREFLIGHT_CALLS)
        if expect.genesis_hash is not None:
            # The genesis is known beforehand: the unsafe-RPC question goes in the same
            # round trip (its answer counts only once the genesis is found to match).
            calls.append(_unsafe_call(expect.genesis_hash))
        results = await call_in_place(
            client,
            calls,
            retry=_RETRY,
            batch_size=1,  # pipelined: a node runs a batch's calls one after another
        )
        chain_name, node_name, node_version, genesis, version, methods_obj = raise_node_errors(
            results[:_HEALTH]
        )
        _check_shapes(self.chain, url, chain_name, genesis, version, methods_obj)
        if expect.chain_name is not None and chain_name != expect.chain_name:
            raise WrongChain(
                f"{self.chain}: {url} serves chain {chain_name!r}, but the configuration expects "
                f"{expect.chain_name!r}; point the endpoint at the right chain or change the "
                "expected chain name"
            )
        if expect.genesis_hash is not None and str(genesis).lower() != expect.genesis_hash.lower():
            raise WrongChain(
                f"{self.chain}: {url} has genesis {genesis}, but the configuration expects "
                f"{expect.genesis_hash}; this is another network"
            )
        methods = frozenset(methods_obj.get("methods", []))
        missing = sorted(REQUIRED_METHODS - methods) if methods else []
        if missing:
            raise NodeUnusable(f"{self.chain}: {url} does not offer {', '.join(missing)}")
        await self._wait_while_syncing(client, url, raise_node_errors([results[_HEALTH]])[0])
        if len(results) > len(_PREFLIGHT_CALLS):
            unsafe = not isinstance(results[-1], RpcError)
        else:
            unsafe = await self._unsafe_allowed(client, str(genesis))
        self.info = NodeInfo(
            endpoint=url,
            chain_name=str(chain_name),
            node_name=str(node_name),
            node_version=str(node_version),
            genesis_hash=str(genesis),
            spec_name=str(version.get("specName")),
            spec_version=int(version.get("specVersion", -1)),
            methods=methods,
            unsafe_allowed=unsafe,
        )
        log.info(
            "%s: %s is %r (%s %s), runtime %s/%d, unsafe RPC %s",
            self.chain,
            url,
            self.info.chain_name,
            self.info.node_name,
            self.info.node_version,
            self.info.spec_name,
            self.info.spec_version,
            "allowed" if unsafe else "denied",
        )
        if expect.needed_from is not None:
            await check_history(client, expect.needed_from, self.chain)

    async def _wait_while_syncing(self, client: RpcClient, url: str, health: Any) -> None:
        """Wait while ``health`` (the node's first ``system_health`` answer), and each
        asked again after a pause, says the node is syncing."""
        waited_since = time.monotonic()
        while True:
            if not (isinstance(health, dict) and health.get("isSyncing")):
                return
            waited = time.monotonic() - waited_since
            if waited >= self.expect.syncing_wait_s:
                raise NodeUnusable(
                    f"{self.chain}: {url} is still syncing after {waited:.0f} s; use a synced node"
                )
            log.info(
                "%s: %s is syncing (%s peers); waiting for it to catch up",
                self.chain,
                url,
                health.get("peers"),
            )
            await asyncio.sleep(self.expect.syncing_poll_s)
            health = await call_one_in_place(client, "system_health", retry=_RETRY)

    @staticmethod
    async def _unsafe_allowed(client: RpcClient, genesis: str) -> bool:
        method, params = _unsafe_call(genesis)
        try:
            await call_one_in_place(client, method, *params, retry=_RETRY)
        except RpcError:
            return False
        return True


def _unsafe_call(genesis: str) -> tuple[str, list[Any]]:
    """A harmless unsafe call: a node that denies unsafe RPC answers it with an error."""
    return "state_queryStorage", [[], genesis, genesis]


async def check_history(client: RpcClient, number: int, chain: str) -> None:
    """Raise :class:`PrunedNode` unless the node keeps block ``number``'s state and body."""
    url = client.shown_endpoint or "?"
    block_hash = await client.call("chain_getBlockHash", number)
    if block_hash is None:
        best = await client.call("chain_getHeader")
        raise NodeUnusable(
            f"{chain}: {url} does not know block {number} (its best block is "
            f"{int(best['number'], 16)}); choose a range the node has"
        )
    try:
        await client.call("state_getStorage", TIMESTAMP_NOW_KEY, block_hash)
    except RpcError as exc:
        raise pruned_state(exc, chain, url, number, block_hash) from None
    if await client.call("chain_getBlock", block_hash) is None:
        raise PrunedNode(
            f"{chain}: this node is pruned; use an archive node. {url} no longer has the "
            f"body of block {number} ({block_hash})"
        )
