"""The exception tree of blocktimesd.

Every error the project raises on purpose derives from :class:`BlocktimesError`::

    BlocktimesError
    ├── ConfigError            bad settings or command line (exit code 2)
    ├── DecodeError            bytes that do not match the expected SCALE layout
    │   └── UnsupportedRuntime a runtime lacks an item we need, or has an unknown shape
    ├── ProtocolError          a peer broke JSON-RPC 2.0 framing
    └── RpcError               a JSON-RPC error object from a node (code, message, data)

Messages name the problem and, where there is one, the fix.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BlocktimesError",
    "ConfigError",
    "DecodeError",
    "ProtocolError",
    "RpcError",
    "UnsupportedRuntime",
]


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
