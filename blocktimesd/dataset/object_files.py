"""The writer's file operations and lock when the dataset lives in S3.

:class:`ObjectFiles` does what :class:`~blocktimesd.dataset.files.Files` does on a
disk, with the guarantees object storage gives instead of ``fsync`` and ``rename``:

* an object appears whole or not at all (a single PUT, or a completed multipart
  upload), so a data file is written straight to its final name: no reader ever sees a
  partial file, and no temp object is left for a reader's glob;
* a snapshot that replaces an older one removes the older first (as on disk: a block is
  never in two visible files; a crash between leaves a prefix, fetched again at start);
* the repair's survivors are first written to hidden temp objects
  (``.part-....parquet.tmp``, ignored by Hive-aware readers and by DuckDB's
  ``*.parquet`` glob), then copied to their final names once the doomed files are gone;
* a JSON-lines file is rewritten whole with the new line (objects cannot be appended
  to); its torn tail, if any, is cut at the last newline as on disk.

:class:`ObjectLock` is the writer lease (:mod:`blocktimesd.dataset.lease`), renewed
by a thread every third of its TTL; a writer whose last renewal is older than the TTL
writes nothing until it renews again, so a lease broken as stale never has two
writers.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import threading
import time
from typing import Any

from blocktimesd.dataset.files import DataDirLock, Files
from blocktimesd.dataset.objects import DataPath, ObjectPath, filesystem
from blocktimesd.errors import BlocktimesError, LockLost

__all__ = ["ObjectFiles", "ObjectLock", "files_for", "lock_for"]

log = logging.getLogger(__name__)


def _key(path: DataPath) -> str:
    if not isinstance(path, ObjectPath):
        raise TypeError(f"{path} is a local path, not an object in S3")
    return path.key


def _named(exc: OSError, path: DataPath) -> OSError:
    """``exc`` (pyarrow's, without an errno) naming the object it failed on."""
    if exc.filename is not None:
        return exc
    code = exc.errno if exc.errno is not None else errno.EIO
    return OSError(code, str(exc), str(path))


class ObjectFiles(Files):
    """Every operation of the writer on objects of S3 (paths are :class:`ObjectPath`)."""

    def __init__(self, fs: Any = None) -> None:
        self._fs = fs
        self._read_last: tuple[str, bytes] | None = None  # line_end's object, for write_at

    @property
    def fs(self) -> Any:
        if self._fs is None:
            self._fs = filesystem()
        return self._fs

    def makedirs(self, path: DataPath) -> None:
        """Nothing to do: prefixes exist as soon as an object is under them."""

    def write_new(self, path: DataPath, data: bytes) -> None:
        try:
            with self.fs.open_output_stream(_key(path)) as out:
                out.write(data)
        except OSError as exc:
            raise _named(exc, path) from exc

    def write_at(self, path: DataPath, offset: int, data: bytes) -> None:
        last, self._read_last = self._read_last, None
        if not offset:
            old = b""
        elif last is not None and last[0] == _key(path) and offset <= len(last[1]):
            old = last[1][:offset]  # read by line_end just before: not downloaded again
        else:
            old = self.read_bytes(path)[:offset]
        self.write_new(path, old + data)

    def line_end(self, path: DataPath) -> int:
        try:
            data = self.read_bytes(path)
        except FileNotFoundError:
            return 0
        self._read_last = (_key(path), data)
        return data.rfind(b"\n") + 1

    def read_bytes(self, path: DataPath) -> bytes:
        """The whole object at ``path`` (:class:`FileNotFoundError` if there is none)."""
        try:
            with self.fs.open_input_stream(_key(path)) as stream:
                data: bytes = stream.read()
                return data
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise _named(exc, path) from exc

    def replace(self, source: DataPath, target: DataPath) -> None:
        try:
            self.fs.copy_file(_key(source), _key(target))
            self.fs.delete_file(_key(source))
        except OSError as exc:
            raise _named(exc, target) from exc

    def unlink(self, path: DataPath) -> None:
        try:
            self.fs.delete_file(_key(path))
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise _named(exc, path) from exc

    def fsync_dir(self, path: DataPath) -> None:
        """Nothing to do: an object is durable once its PUT is answered."""

    def read_table(self, path: DataPath) -> Any:
        import pyarrow.parquet as pq  # type: ignore[import-untyped, unused-ignore]

        try:
            return pq.read_table(_key(path), filesystem=self.fs, partitioning=None)
        except OSError as exc:
            raise _named(exc, path) from exc

    def publish(
        self, directory: DataPath, name: str, data: bytes, old: DataPath | None = None
    ) -> DataPath:
        """Write ``data`` straight to ``name`` (an object appears whole), ``old`` removed
        first."""
        final = directory / name
        if old is not None:
            with contextlib.suppress(FileNotFoundError):
                self.unlink(old)
        self.write_new(final, data)
        return final


class ObjectLock:
    """The writer lease of the dataset at ``data_dir`` (an :class:`ObjectPath`), with the
    interface of :class:`~blocktimesd.dataset.files.DataDirLock`."""

    def __init__(
        self,
        data_dir: ObjectPath,
        *,
        break_stale: bool = False,
        shard: str | None = None,
        ttl_s: float | None = None,
        client: Any = None,
        clock: Any = time.monotonic,
    ) -> None:
        from blocktimesd.dataset.lease import DEFAULT_TTL_S

        self.data_dir = data_dir
        self.break_stale = break_stale
        self.shard = shard
        self.ttl_s = DEFAULT_TTL_S if ttl_s is None else ttl_s
        self._client = client
        self._clock = clock
        self._lease: Any = None
        self._renewed: float | None = None  # clock() of the last renewal
        self._lost: BlocktimesError | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> None:
        """Take the lease (:class:`~blocktimesd.errors.DataDirInUse` naming its holder
        when another writer has it) and start renewing it."""
        from blocktimesd.dataset.lease import S3Lease, lease_key, s3_client

        client = self._client if self._client is not None else s3_client()
        key = lease_key(self.data_dir.object_key)
        if self.shard is not None:
            # The dataset's own lease is checked, not taken: the workers share the dataset.
            S3Lease(client, self.data_dir.bucket, key, ttl_s=self.ttl_s).ensure_free()
            key = key.removesuffix(".lease") + f".shard-{self.shard}.lease"
        lease = S3Lease(client, self.data_dir.bucket, key, ttl_s=self.ttl_s)
        lease.acquire(break_stale=self.break_stale)
        self._lease, self._renewed = lease, self._clock()
        self._stop.clear()
        self._thread = threading.Thread(target=self._renewing, name="lease-renewal", daemon=True)
        self._thread.start()

    def _renewing(self) -> None:
        lease = self._lease
        while not self._stop.wait(self.ttl_s / 3):
            try:
                lease.renew()
            except LockLost as exc:
                self._lost = exc
                return
            except BlocktimesError as exc:  # S3 unreachable: the writer pauses meanwhile
                log.warning("could not renew the writer lease: %s", exc)
                continue
            self._renewed = self._clock()

    def check(self) -> None:
        """Raise :class:`LockLost` if the lease was taken over; an :class:`OSError` (to be
        retried) while the last renewal is older than the TTL."""
        if self._lost is not None:
            raise self._lost
        renewed = self._renewed
        if renewed is None:
            raise LockLost(f"the writer lease of {self.data_dir} is not held")
        age = self._clock() - renewed
        if age >= self.ttl_s * 0.9:
            raise OSError(
                errno.ETIMEDOUT,
                f"the writer lease has not been renewed for {age:.0f} s (its TTL is "
                f"{self.ttl_s:.0f} s); nothing is written until it is",
                str(self.data_dir),
            )

    def release(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=5)
        lease, self._lease = self._lease, None
        self._renewed = None
        if lease is not None and self._lost is None:
            lease.release()


def files_for(data_dir: DataPath) -> Files:
    """The file operations of the dataset at ``data_dir``."""
    return ObjectFiles() if isinstance(data_dir, ObjectPath) else Files()


def lock_for(
    data_dir: DataPath, *, break_lease: bool = False, shard: str | None = None
) -> DataDirLock | ObjectLock:
    """The one-writer lock of the dataset at ``data_dir``: a ``flock`` on a disk, the
    writer lease in S3 (``break_lease``: take over a stale one).  A backfill worker of
    several (``shard``, e.g. "1-of-4") takes its own, after checking that no other
    writer holds the dataset's."""
    if isinstance(data_dir, ObjectPath):
        return ObjectLock(data_dir, break_stale=break_lease, shard=shard)
    return DataDirLock(data_dir, shard=shard)
