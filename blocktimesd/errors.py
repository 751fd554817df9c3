"""The exception tree of blocktimesd.

Every error the project raises on purpose derives from :class:`BlocktimesError`::

    BlocktimesError
    ├── ConfigError            bad settings or command line (exit code 2)
    ├── DecodeError            bytes that do not match the expected SCALE layout
    │   └── UnsupportedRuntime a runtime lacks an item we need, or has an unknown shape
    ├── ProtocolError          a peer broke JSON-RPC 2.0 framing
    ├── RpcError               a JSON-RPC error object from a node (code, message, data)
    ├── TransportError         the connection failed us; the call may be retried
    │   ├── ConnectionLost     the connection closed with the request open
    │   └── RpcTimeout         no answer within the request timeout
    ├── SubscriptionGap        a subscription ended (lag, drop, stall); fill the gap
    ├── NodeUnusable           this node cannot serve us (wrong chain, pruned, ...)
    │   ├── WrongChain         chain name or genesis hash differ from the configuration
    │   └── PrunedNode         the node discarded state or bodies we need
    ├── StorageError           the dataset cannot be written (disk full, permissions, ...);
    │   │                      the writer keeps the rows and retries until fixed
    │   └── DataDirInUse       another process writes to the same DATA_DIR (fatal)
    └── WriterClosed           an item was offered to a writer that has closed

Messages name the problem and, where there is one, the fix.  :func:`is_retryable`
is the one place that decides whether an error is worth another attempt.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BlocktimesError",
    "ConfigError",
    "ConnectionLost",
    "DataDirInUse",
    "DecodeError",
    "NodeUnusable",
    "ProtocolError",
    "PrunedNode",
    "RpcError",
    "RpcTimeout",
    "StorageError",
    "SubscriptionGap",
    "TransportError",
    "UnsupportedRuntime",
    "WriterClosed",
    "WrongChain",
    "is_retryable",
]

# JSON-RPC error codes that mean "try again": internal error, server busy (jsonrpsee).
_TRANSIENT_CODES = frozenset({-32603, -32009})


class BlocktimesError(Exception):
    """Root of all errors raised by blocktimesd."""


class ConfigError(BlocktimesError):
    """Invalid configuration or command line."""


class DecodeError(BlocktimesError):
    """Bytes that do not decode as the expected SCALE structure."""


class UnsupportedRuntime(DecodeError):
    """A runtime lacks an item this tool needs, or encodes it in an unknown shape."""


class ProtocolError(BlocktimesError):
    """A peer sent something that is not valid JSON-RPC 2.0."""


class RpcError(BlocktimesError):
    """An error object returned by a node, kept exactly as the node sent it."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        self.code = code
        self.message = message
        self.data = data
        detail = f" ({data})" if data is not None else ""
        super().__init__(f"RPC error {code}: {message}{detail}")


class TransportError(BlocktimesError):
    """The connection failed; the request may or may not have reached the node."""


class ConnectionLost(TransportError):
    """The connection closed while the request was open."""


class RpcTimeout(TransportError):
    """No answer within the request timeout."""


class SubscriptionGap(BlocktimesError):
    """A subscription ended: notifications may have been missed and must be filled."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(
            f"subscription ended ({reason}); blocks since the last notification must be fetched"
        )


class NodeUnusable(BlocktimesError):
    """The node cannot serve this tool's needs; another endpoint might."""


class WrongChain(NodeUnusable):
    """The node follows a different chain than the configuration names."""


class PrunedNode(NodeUnusable):
    """The node no longer has state or bodies that are needed."""


class StorageError(BlocktimesError):
    """A file under DATA_DIR could not be written; the message names the path and the fix."""

    def __init__(self, message: str, path: str | None = None, errno: int | None = None) -> None:
        self.path = path
        self.errno = errno
        super().__init__(message)


class DataDirInUse(StorageError):
    """Another process holds DATA_DIR's writer lock: there must be one writer per dataset."""


class WriterClosed(BlocktimesError):
    """The writer no longer accepts items (it closed or failed)."""


def is_retryable(exc: BaseException) -> bool:
    """Whether the same request, sent again (perhaps elsewhere), may succeed."""
    if isinstance(exc, TransportError | ProtocolError):
        return True
    if isinstance(exc, RpcError):
        return exc.code in _TRANSIENT_CODES
    return False
