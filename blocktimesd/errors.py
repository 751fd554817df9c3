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
    ├── NodeFault              a node's answer is malformed, inconsistent or impossible
    │   ├── MalformedAnswer    a field missing or of the wrong shape
    │   └── HashMismatch       a header whose hash is not the hash asked for
    ├── NodeUnusable           this node cannot serve us (wrong chain, pruned, ...)
    │   ├── WrongChain         chain name or genesis hash differ from the configuration
    │   └── PrunedNode         the node discarded state or bodies we need
    ├── StorageError           the dataset cannot be written or read (disk full, ...);
    │   │                      a running writer keeps the rows and retries until fixed
    │   ├── DataDirInUse       another process writes to the same DATA_DIR (fatal)
    │   ├── LockLost           DATA_DIR's lock file vanished or was replaced (fatal)
    │   ├── DataDirUnusable    DATA_DIR cannot be used as configured: not a directory,
    │   │                      no permission, read-only (also a ConfigError: exit 2)
    │   └── InvalidDataFile    a data file is unreadable or disagrees with its name
    ├── WriterClosed           an item was offered to a writer that has closed
    └── ChainStopped           a chain gave up after bounded retries (fatal, exit 1)

Messages name the problem and, where there is one, the fix.

The retry policy
----------------
:func:`classify` is the one place that decides what an error means for the caller:

* :attr:`Outcome.TRANSIENT`: the connection or the node's load (connection loss,
  timeouts, internal errors, rate limiting, a block just announced but not yet
  served).  Back off with jitter and try again, without limit: nothing is wrong with
  the data, only with its delivery.
* :attr:`Outcome.NODE_FAULT`: the node answered, and the answer is wrong (malformed,
  a hash that does not match, a value that cannot be).  Try again a bounded number
  of times, then fail over to another endpoint, then stop the chain loudly.
* :attr:`Outcome.FATAL`: nothing another attempt could change (wrong chain, pruned
  state the run needs, an unsupported runtime, bad configuration, a full dataset
  lock).  End the run with the error's message.

:class:`RetryPolicy` carries the classification and the delays; every caller that
retries (the RPC client, the followers, start-up, the backfill) takes one, so tests
inject their own.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "BlocktimesError",
    "ChainStopped",
    "ConfigError",
    "ConnectionLost",
    "DataDirInUse",
    "DataDirUnusable",
    "DecodeError",
    "HashMismatch",
    "InvalidDataFile",
    "LockLost",
    "MalformedAnswer",
    "NodeFault",
    "NodeUnusable",
    "Outcome",
    "ProtocolError",
    "PrunedNode",
    "RetryPolicy",
    "RpcError",
    "RpcTimeout",
    "StorageError",
    "SubscriptionGap",
    "TransportError",
    "UnsupportedRuntime",
    "WriterClosed",
    "WrongChain",
    "classify",
    "is_retryable",
    "pruned_state",
    "raise_node_errors",
]

# JSON-RPC error codes that mean "try again": internal error, server busy and rate
# limited (jsonrpsee), and the "too many requests" some public RPC gateways send.
_TRANSIENT_CODES = frozenset({-32603, -32009, -32005, -32029, 429})


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


class NodeFault(BlocktimesError):
    """A node's answer is wrong: malformed, inconsistent with what was asked, or a value
    that cannot be.  The node is at fault, not the data: ask again, then elsewhere."""


class MalformedAnswer(NodeFault):
    """A field of a node's answer is missing or not of the shape the protocol defines."""


class HashMismatch(NodeFault):
    """A header whose hash is not the hash it was asked for (or linked from)."""


class ChainStopped(BlocktimesError):
    """A chain's follower gave up after its bounded retries; the message says why."""


class NodeUnusable(BlocktimesError):
    """The node cannot serve this tool's needs; another endpoint might."""


class WrongChain(NodeUnusable):
    """The node follows a different chain than the configuration names."""


class PrunedNode(NodeUnusable):
    """The node no longer has state or bodies that are needed."""


_DISCARDED = "State already discarded"  # what Substrate answers for pruned state


def pruned_state(
    exc: RpcError, label: str, where: str, number: int, block_hash: str
) -> PrunedNode | RpcError:
    """The error to raise for ``exc``, a node's answer to a state query at block
    ``number``: :class:`PrunedNode` when the node says it discarded that state,
    ``exc`` itself otherwise."""
    if _DISCARDED in exc.message:
        return PrunedNode(
            f"{label}: this node is pruned; use an archive node. {where} no longer has "
            f"the state of block {number} ({block_hash}): {exc.message}"
        )
    return exc


def raise_node_errors(results: Sequence[Any]) -> Sequence[Any]:
    """``results`` of a batch, after raising the first node error among them."""
    for result in results:
        if isinstance(result, RpcError):
            raise result
    return results


class StorageError(BlocktimesError):
    """A file under DATA_DIR could not be written; the message names the path and the fix."""

    def __init__(self, message: str, path: str | None = None, errno: int | None = None) -> None:
        self.path = path
        self.errno = errno
        super().__init__(message)


class DataDirInUse(StorageError):
    """Another process holds DATA_DIR's writer lock: there must be one writer per dataset."""


class LockLost(StorageError):
    """The lock file this writer holds is no longer DATA_DIR's (removed or replaced): another
    writer may start, so this one stops before it writes again."""


class DataDirUnusable(StorageError, ConfigError):
    """DATA_DIR, or a path in it, cannot be used as configured (not a directory, no
    permission, a read-only filesystem): the operator must fix the path, so it is also a
    :class:`ConfigError` and ends a command with exit code 2."""


class InvalidDataFile(StorageError):
    """A data file cannot be read, or its contents disagree with its name: it cannot be
    trusted to say where the dataset ends.  The message names the file and the fix."""


class WriterClosed(BlocktimesError):
    """The writer no longer accepts items (it closed or failed)."""


class Outcome(enum.Enum):
    """What an error means for the caller (see the module docstring)."""

    TRANSIENT = "transient"
    NODE_FAULT = "node fault"
    FATAL = "fatal"


def classify(exc: BaseException) -> Outcome:
    """The one classification of errors into transient, node fault and fatal."""
    if isinstance(exc, TransportError | SubscriptionGap | TimeoutError | ConnectionError):
        return Outcome.TRANSIENT
    if isinstance(exc, RpcError):
        return Outcome.TRANSIENT if exc.code in _TRANSIENT_CODES else Outcome.NODE_FAULT
    if isinstance(exc, UnsupportedRuntime):
        return Outcome.FATAL
    if isinstance(exc, NodeFault | DecodeError | ProtocolError):
        return Outcome.NODE_FAULT
    return Outcome.FATAL


def is_retryable(exc: BaseException) -> bool:
    """Whether the same request, sent again (perhaps elsewhere), may succeed."""
    return classify(exc) is not Outcome.FATAL


def _backoff(initial: float, cap: float, rng: random.Random) -> Iterator[float]:
    # Kept here (not in core.backoff) so that errors stays at the root of the import graph.
    delay = initial
    while True:
        yield rng.uniform(delay / 2, delay)
        delay = min(delay * 2, cap)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a caller retries: the classification, the delays, and the bound on node
    faults before it fails over (and, after ``node_fault_limit`` more on every
    endpoint, stops)."""

    initial: float = 0.5
    cap: float = 30.0
    node_fault_limit: int = 3
    classify: Callable[[BaseException], Outcome] = classify
    rng: random.Random = field(default_factory=random.Random, compare=False)

    def delays(self) -> Iterator[float]:
        """Delays in seconds before each retry: exponential with jitter, capped."""
        return _backoff(self.initial, self.cap, self.rng)
