"""What goes into the Parquet writer, how it is set up, and what it reports: the items
producers put (rows, reorg records, :class:`Reconciliation` records, :class:`DeleteFrom`
repairs, :class:`Flush` barriers), :class:`WriterSettings`, :class:`WriterStatus` and
the :class:`WriterObserver` the metrics layer implements.  The task itself is
:mod:`blocktimesd.dataset.writer`."""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias

import orjson

from blocktimesd.dataset.layout import check_chain
from blocktimesd.dataset.records import ReorgRecord, Row
from blocktimesd.dataset.rotation import RotationPolicy

__all__ = [
    "ITEM_TYPES",
    "DeleteFrom",
    "Flush",
    "Item",
    "NullObserver",
    "Reconciliation",
    "Stop",
    "WriterObserver",
    "WriterSettings",
    "WriterStatus",
]


# -- items -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reconciliation:
    """One record for ``reconciliation/<chain>.jsonl``; ``record`` is anything orjson
    serializes (a dataclass instance, typically).  Serialized here, so a record that
    cannot be written fails in the producer, not in the writer."""

    chain: str
    record: Any
    line: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        check_chain(self.chain)
        object.__setattr__(
            self, "line", orjson.dumps(self.record, option=orjson.OPT_APPEND_NEWLINE)
        )


@dataclass(frozen=True, slots=True)
class DeleteFrom:
    """Remove ``chain``'s rows with ``block_number >= block_number``, buffered and on disk."""

    chain: str
    block_number: int

    def __post_init__(self) -> None:
        check_chain(self.chain)
        if self.block_number < 0:
            raise ValueError(f"cannot delete from block {self.block_number}")


def _new_future() -> asyncio.Future[None]:
    return asyncio.get_running_loop().create_future()


@dataclass(frozen=True, slots=True, eq=False)
class Flush:
    """Await it: done when everything queued before it is durable."""

    done: asyncio.Future[None] = field(default_factory=_new_future)

    def __await__(self) -> Generator[Any, None, None]:
        return self.done.__await__()


Item: TypeAlias = Row | list[Row] | ReorgRecord | Reconciliation | DeleteFrom | Flush
ITEM_TYPES = (Row, list, ReorgRecord, Reconciliation, DeleteFrom, Flush)


class Stop:
    """Wakes the writer task when close() is called."""


# -- settings, status, observer ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WriterSettings:
    max_rows: int = 50_000  # rows per file
    max_minutes: float = 10.0  # a file is written at most this long after its first row
    queue_size: int = 1024  # items (a list of rows counts as one)
    row_group_rows: int = 65_536
    poll_interval: float = 1.0  # seconds between checks of open files' age
    # Seconds the task waits, after a lone row wakes it, for more rows to take together
    # (0: none).  One wake per row costs more than the row itself when rows come one at
    # a time, as the daemon's do; a flush or a stop does not wait.
    gather_s: float = 0.0
    # Seconds between snapshots of an open file of rows (None: written only when rolled).
    checkpoint_s: float | None = None
    retry_initial: float = 1.0  # seconds before retrying a failed write; doubles ...
    retry_cap: float = 60.0  # ... up to this

    def __post_init__(self) -> None:
        if self.queue_size < 1 or self.row_group_rows < 1 or self.poll_interval <= 0:
            raise ValueError("queue_size, row_group_rows and poll_interval must be positive")
        if self.checkpoint_s is not None and self.checkpoint_s <= 0:
            raise ValueError("checkpoint_s must be positive (or None)")
        if self.gather_s < 0:
            raise ValueError("gather_s must not be negative")

    @property
    def policy(self) -> RotationPolicy:
        return RotationPolicy(self.max_rows, self.max_minutes * 60)


class WriterStatus(enum.StrEnum):
    NEW = "new"
    RUNNING = "running"
    FAILING = "failing"  # writes fail (see .error) and are being retried
    CLOSED = "closed"


class WriterObserver(Protocol):
    """Where the writer reports what it does (the metrics layer implements this)."""

    def file_written(self, dataset: str, chain: str, rows: int) -> None: ...

    def rows_deleted(self, chain: str, rows: int) -> None: ...

    def write_failed(self, reason: str) -> None: ...

    def write_recovered(self) -> None: ...

    def queue_length(self, items: int) -> None: ...

    def rows_pending(self, chain: str, rows: int) -> None:
        """``chain`` has ``rows`` rows put and not yet durable (queued or buffered)."""

    def rows_checkpointed(self, chain: str, rows: int) -> None:
        """A snapshot of an open file made ``rows`` more rows of ``chain`` durable."""

    def write_succeeded(self) -> None:
        """DATA_DIR was taken, or an operation completed: the writer can write."""


class NullObserver:
    """Hears nothing: the observer of a writer without metrics."""

    def _ignore(self, *args: object, **kwargs: object) -> None:
        pass

    file_written = rows_deleted = write_failed = write_recovered = _ignore
    queue_length = rows_pending = rows_checkpointed = write_succeeded = _ignore
