"""The JSON-RPC methods of one simulated node, answered the way Substrate answers them.

Pure: a method call goes in, a JSON-ready result comes out or an :class:`RpcError` is
raised with Substrate's own code and message.  Subscriptions are the server's
business; this module only answers calls.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from blocktimesd import __version__
from blocktimesd.core import jsonrpc, scale
from blocktimesd.core.hashing import blake2_256
from blocktimesd.core.header import to_hex
from blocktimesd.devnet.chain import Block, ChainStore
from blocktimesd.devnet.network import CONSENSUS, Network
from blocktimesd.devnet.params import FaultParams
from blocktimesd.devnet.runtimes.frame import code_bytes, version_bytes
from blocktimesd.errors import RpcError

__all__ = ["ALIASES", "CODE_KEY", "SUBSCRIPTIONS", "UNSAFE_METHODS", "Node"]

# subscribe method -> (notification method, unsubscribe methods)
SUBSCRIPTIONS: dict[str, tuple[str, str]] = {
    "chain_subscribeNewHeads": ("chain_newHead", "chain_unsubscribeNewHeads"),
    "chain_subscribeAllHeads": ("chain_allHead", "chain_unsubscribeAllHeads"),
    "chain_subscribeFinalizedHeads": ("chain_finalizedHead", "chain_unsubscribeFinalizedHeads"),
    "state_subscribeRuntimeVersion": ("state_runtimeVersion", "state_unsubscribeRuntimeVersion"),
}
# The aliases Substrate's RPC modules register (``aliases``/``unsubscribe_aliases`` in
# sc-rpc-api), for the methods served here; clients send some of them.
ALIASES = {
    "chain_getHead": "chain_getBlockHash",
    "chain_subscribeNewHead": "chain_subscribeNewHeads",
    "subscribe_newHead": "chain_subscribeNewHeads",
    "chain_unsubscribeNewHead": "chain_unsubscribeNewHeads",
    "unsubscribe_newHead": "chain_unsubscribeNewHeads",
    "chain_subscribeFinalisedHeads": "chain_subscribeFinalizedHeads",
    "chain_unsubscribeFinalisedHeads": "chain_unsubscribeFinalizedHeads",
    "chain_subscribeRuntimeVersion": "state_subscribeRuntimeVersion",
    "chain_unsubscribeRuntimeVersion": "state_unsubscribeRuntimeVersion",
    "chain_getFinalisedHead": "chain_getFinalizedHead",
    "chain_getRuntimeVersion": "state_getRuntimeVersion",
    "state_getStorageAt": "state_getStorage",
    "state_getStorageHashAt": "state_getStorageHash",
    "state_getStorageSizeAt": "state_getStorageSize",
    "state_callAt": "state_call",
}
# The runtime's code (``:code``): clients derive the runtime's identity from its hash.
CODE_KEY = b":code"
UNSAFE_METHODS = frozenset({"state_queryStorage"})
_UNSAFE_MESSAGE = "RPC call is unsafe to be called externally"


def _invalid(detail: str) -> RpcError:
    return RpcError(jsonrpc.INVALID_PARAMS, "Invalid params", detail)


def _param(params: list[Any] | dict[str, Any], index: int, name: str) -> Any:
    if isinstance(params, dict):
        return params.get(name)
    return params[index] if index < len(params) else None


def _hash_param(value: Any) -> bytes:
    if not isinstance(value, str):
        raise _invalid(f"invalid type: {type(value).__name__}, expected a 0x-prefixed hex string")
    text = value[2:] if value.startswith("0x") else value
    if len(text) != 64:
        raise _invalid(
            f"invalid length {len(text)}, "
            "expected a (both 0x-prefixed or not) hex string with length of 64"
        )
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise _invalid(f"invalid hex string {value!r}") from None


def _bytes_param(value: Any) -> bytes:
    """``sp_core::Bytes``: impl-serde reads hex with or without ``0x`` ("" is empty)."""
    if not isinstance(value, str):
        raise _invalid(
            f"invalid type: {type(value).__name__}, expected a (both 0x-prefixed or not) hex string"
        )
    text = value[2:] if value.startswith("0x") else value
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise _invalid(f"invalid hex string {value!r}") from None


def _number_param(value: Any) -> int:
    if isinstance(value, bool):
        raise _invalid("invalid type: boolean, expected a block number")
    if isinstance(value, int) and value >= 0:
        return value
    if isinstance(value, str):
        try:
            return int(value, 16) if value.startswith("0x") else int(value)
        except ValueError:
            pass
    raise _invalid(f"invalid block number {value!r}")


class Node:
    """Answers calls for one chain of the network."""

    def __init__(self, network: Network, chain: str, faults: FaultParams, chain_name: str) -> None:
        self.network = network
        self.chain = chain
        self.faults = faults
        self.chain_name = chain_name
        self.store: ChainStore = network.consensus if chain == CONSENSUS else network.domain
        self._handlers: dict[str, Callable[[list[Any] | dict[str, Any]], Any]] = {
            "rpc_methods": self._rpc_methods,
            "system_chain": lambda p: self.chain_name,
            "system_name": lambda p: "blocktimesd-devnet",
            "system_version": lambda p: __version__,
            "system_health": lambda p: {"peers": 8, "isSyncing": False, "shouldHavePeers": True},
            "system_properties": self._system_properties,
            "chain_getBlockHash": self._get_block_hash,
            "chain_getHeader": self._get_header,
            "chain_getBlock": self._get_block,
            "chain_getFinalizedHead": lambda p: to_hex(self.network.finalized(self.chain).hash),
            "state_getRuntimeVersion": lambda p: self.runtime_at(
                self._state_block(p, 0)
            ).version_json(),
            "state_getMetadata": lambda p: to_hex(
                self.runtime_at(self._state_block(p, 0)).metadata
            ),
            "state_getStorage": self._get_storage,
            "state_getStorageHash": self._get_storage_hash,
            "state_getStorageSize": self._get_storage_size,
            "state_queryStorageAt": self._query_storage_at,
            "state_queryStorage": self._query_storage,
            "state_call": self._state_call,
        }

    # -- dispatch -------------------------------------------------------------------------

    def method_names(self) -> list[str]:
        names = set(self._handlers) | set(ALIASES) | set(SUBSCRIPTIONS)
        names |= {unsub for _, unsub in SUBSCRIPTIONS.values()}
        return sorted(names)

    def call(self, method: str, params: list[Any] | dict[str, Any]) -> Any:
        method = ALIASES.get(method, method)
        handler = self._handlers.get(method)
        if handler is None:
            raise RpcError(jsonrpc.METHOD_NOT_FOUND, "Method not found")
        if method in UNSAFE_METHODS and not self.faults.unsafe_rpc:
            raise RpcError(4003, _UNSAFE_MESSAGE)
        return handler(params)

    # -- helpers ----------------------------------------------------------------------------

    def runtime_at(self, block: Block) -> Any:
        content = self.network.content
        if self.chain == CONSENSUS:
            return content.consensus_runtime(block.spec_version)
        return content.domain_runtime(block.spec_version)

    def _block_or_best(self, value: Any) -> Block | None:
        if value is None:
            return self.store.best
        return self.store.get(_hash_param(value))

    def _state_block(self, params: list[Any] | dict[str, Any], index: int) -> Block:
        """The block whose state a ``state_*`` call reads, or Substrate's error."""
        value = _param(params, index, "at")
        block = self._block_or_best(value)
        if block is None:
            raise RpcError(
                4003, f"Client error: UnknownBlock: Header was not found in the database: {value}"
            )
        self._check_state_kept(block)
        return block

    def _check_state_kept(self, block: Block) -> None:
        keep = self.faults.prune_state
        if keep > 0 and self.store.best.number - block.number >= keep:
            raise RpcError(
                4003, f"Client error: UnknownBlock: State already discarded for {block.hash_hex}"
            )

    def _storage(self, block: Block, key: bytes) -> bytes | None:
        if key == CODE_KEY:
            return code_bytes(self.runtime_at(block))
        return self.store.storage_value(block, key, self.network.content.lazy_storage)

    # -- methods ----------------------------------------------------------------------------

    def _rpc_methods(self, params: Any) -> dict[str, Any]:
        return {"methods": self.method_names()}

    def _system_properties(self, params: Any) -> dict[str, Any]:
        return {"ss58Format": 6094, "tokenDecimals": 18, "tokenSymbol": "AI3"}

    def _get_block_hash(self, params: list[Any] | dict[str, Any]) -> Any:
        value = _param(params, 0, "n")
        if value is None:
            return self.store.best.hash_hex
        if isinstance(value, list):
            return [self._hash_at(_number_param(v)) for v in value]
        return self._hash_at(_number_param(value))

    def _hash_at(self, number: int) -> str | None:
        if number > 0xFFFFFFFF:
            raise RpcError(3000, f"`{number}` > u32::MAX, the max block number is u32.")
        block = self.store.at_number(number)
        return None if block is None else block.hash_hex

    def _get_header(self, params: list[Any] | dict[str, Any]) -> Any:
        block = self._block_or_best(_param(params, 0, "hash"))
        return None if block is None else block.header.to_json()

    def _get_block(self, params: list[Any] | dict[str, Any]) -> Any:
        block = self._block_or_best(_param(params, 0, "hash"))
        if block is None:
            return None
        keep = self.faults.prune_bodies
        if keep > 0 and self.store.best.number - block.number >= keep:
            return None
        extrinsics = self.network.content.body(self.chain, block)
        return {
            "block": {
                "header": block.header.to_json(),
                "extrinsics": [to_hex(x) for x in extrinsics],
            },
            "justifications": None,
        }

    def _get_storage(self, params: list[Any] | dict[str, Any]) -> Any:
        key = _bytes_param(_param(params, 0, "key"))
        block = self._state_block(params, 1)
        value = self._storage(block, key)
        return None if value is None else to_hex(value)

    def _get_storage_hash(self, params: list[Any] | dict[str, Any]) -> Any:
        key = _bytes_param(_param(params, 0, "key"))
        value = self._storage(self._state_block(params, 1), key)
        return None if value is None else to_hex(blake2_256(value))

    def _get_storage_size(self, params: list[Any] | dict[str, Any]) -> Any:
        key = _bytes_param(_param(params, 0, "key"))
        value = self._storage(self._state_block(params, 1), key)
        return None if value is None else len(value)

    def _keys(self, value: Any) -> list[bytes]:
        if not isinstance(value, list):
            raise _invalid(f"invalid type: {type(value).__name__}, expected a sequence")
        return [_bytes_param(k) for k in value]

    def _query_storage_at(self, params: list[Any] | dict[str, Any]) -> Any:
        keys = self._keys(_param(params, 0, "keys"))
        value = _param(params, 1, "at")
        block = self._block_or_best(value)
        if block is None:
            raise RpcError(
                4001,
                f'Cannot resolve a block range [\'"{value}"\' ... \'"Some({value})"]. '
                f"UnknownBlock: Header was not found in the database: {value}",
            )
        self._check_state_kept(block)
        changes = []
        for key in keys:
            data = self._storage(block, key)
            changes.append([to_hex(key), None if data is None else to_hex(data)])
        return [{"block": block.hash_hex, "changes": changes}]

    def _query_storage(self, params: list[Any] | dict[str, Any]) -> Any:
        keys = self._keys(_param(params, 0, "keys"))
        from_value = _param(params, 1, "block")
        to_value = _param(params, 2, "hash")
        start = self.store.get(_hash_param(from_value))
        end = self._block_or_best(to_value)
        if start is None or end is None or end.number < start.number:
            raise RpcError(
                4001,
                f"Cannot resolve a block range ['{from_value}' ... '{to_value}]. "
                "UnknownBlock: Header was not found in the database",
            )
        path: list[Block] = []
        for block in end.ancestors():
            path.append(block)
            if block is start:
                break
            if block.number <= start.number:
                raise RpcError(
                    4001,
                    f"Cannot resolve a block range ['{from_value}' ... '{to_value}]. "
                    "Blocks are not on the same chain",
                )
        path.reverse()
        for block in path:
            self._check_state_kept(block)
        out: list[dict[str, Any]] = []
        last: dict[bytes, bytes | None] = {}
        for i, block in enumerate(path):
            changes = []
            for key in keys:
                data = self._storage(block, key)
                if i == 0 or last.get(key) != data:
                    changes.append([to_hex(key), None if data is None else to_hex(data)])
                last[key] = data
            if changes:
                out.append({"block": block.hash_hex, "changes": changes})
        return out

    def _state_call(self, params: list[Any] | dict[str, Any]) -> Any:
        name = _param(params, 0, "name")
        _bytes_param(_param(params, 1, "bytes"))
        block = self._state_block(params, 2)
        runtime = self.runtime_at(block)
        if name == "Metadata_metadata_versions":
            return to_hex(scale.compact(1) + scale.u32(14))
        if name == "Metadata_metadata_at_version":
            data = _bytes_param(_param(params, 1, "bytes"))
            if data == scale.u32(14):
                return to_hex(b"\x01" + scale.compact_bytes(runtime.metadata))
            return "0x00"
        if name == "Metadata_metadata":
            return to_hex(scale.compact_bytes(runtime.metadata))
        if name == "Core_version":
            return to_hex(version_bytes(runtime))
        raise RpcError(
            4003, f"Client error: Execution failed: Other: Exported method {name} is not found"
        )
