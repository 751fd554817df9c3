"""The writer lease on S3: one writer per dataset prefix.

Object storage has no ``flock``; a writer holds the dataset by owning the object
``<prefix>/.blocktimesd.lease``, a small JSON document naming it (host, pid and a
random token), when it took and last renewed the lease, and for how long a renewal
stands (``ttl_s``).  Every change to that object is a conditional write, so S3 itself
decides races:

* taking a free lease writes with ``If-None-Match: *``: of two writers, one wins;
* renewing writes with ``If-Match: <the ETag we last wrote>``: if anyone replaced or
  deleted the lease meanwhile, the write fails and the writer stops (:class:`LockLost`);
* breaking a dead writer's lease (``--break-lease``) replaces it with ``If-Match: <its
  ETag>``, and only once ``renewed_at + ttl_s`` has passed: of two breakers, one wins,
  and a live writer's lease is never broken;
* releasing deletes with ``If-Match``, so a writer never deletes a lease that is no
  longer its own.

Transient S3 errors (5xx, ``SlowDown``, dropped connections) are retried by botocore
(see :func:`s3_client`).  A retried conditional write may find its own first attempt
already done (the answer was lost on the way back): the lease is then read back, and
a body equal to the one sent means the write was ours.  :class:`S3Lease` is
synchronous; the writer calls it from a thread.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, NoReturn, Protocol

import orjson
from botocore.exceptions import (  # type: ignore[import-untyped, unused-ignore]
    BotoCoreError,
    ClientError,
)

from blocktimesd.errors import (
    DataDirInUse,
    DataDirUnusable,
    LockLost,
    StorageError,
    WriterClosed,
)

__all__ = [
    "BREAK_FLAG",
    "DEFAULT_TTL_S",
    "LEASE_NAME",
    "Holder",
    "LeaseRecord",
    "S3Client",
    "S3Lease",
    "in_use_message",
    "lease_key",
    "s3_client",
]

log = logging.getLogger(__name__)

LEASE_NAME = ".blocktimesd.lease"
BREAK_FLAG = "--break-lease"
# A writer renews well within this (a third of it is the usual rhythm); a lease not
# renewed for this long belongs to a writer that is dead or cut off.
DEFAULT_TTL_S = 120.0
# Conditional writes that race a delete or a concurrent conditional write start over
# (re-read, decide again) this many times before giving up.
_ROUNDS = 5
_UNUSABLE = frozenset(
    {"NoSuchBucket", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"}
)


class S3Client(Protocol):
    """The calls the lease makes on a boto3 S3 client."""

    def put_object(self, **kwargs: Any) -> dict[str, Any]: ...
    def get_object(self, **kwargs: Any) -> dict[str, Any]: ...
    def head_object(self, **kwargs: Any) -> dict[str, Any]: ...
    def delete_object(self, **kwargs: Any) -> dict[str, Any]: ...


def s3_client(endpoint_url: str | None = None) -> Any:
    """A boto3 S3 client from the standard AWS chain (environment, shared files, instance
    role); ``endpoint_url`` overrides ``AWS_ENDPOINT_URL``.  Transient errors (5xx,
    throttling, dropped connections) are retried with botocore's standard backoff, up
    to 10 attempts in all."""
    import boto3  # type: ignore[import-untyped, unused-ignore]
    from botocore.config import Config  # type: ignore[import-untyped, unused-ignore]

    config = Config(
        retries={"mode": "standard", "total_max_attempts": 10},
        connect_timeout=10,
        read_timeout=30,
    )
    return boto3.session.Session().client("s3", endpoint_url=endpoint_url, config=config)


def lease_key(prefix: str) -> str:
    """The key of the lease object of the dataset under ``prefix`` ("" for the bucket root)."""
    prefix = prefix.strip("/")
    return f"{prefix}/{LEASE_NAME}" if prefix else LEASE_NAME


@dataclass(frozen=True, slots=True)
class Holder:
    """Who holds a lease: this host and process, and a token unique to the holding.

    ``process`` tells this process from a later one with the same pid (a restarted
    container's daemon is often pid 1 again): the kernel's boot id and the process's
    start time, "" where ``/proc`` does not say."""

    host: str
    pid: int
    token: str
    process: str = ""

    @classmethod
    def this_process(cls) -> Holder:
        pid = os.getpid()
        return cls(socket.gethostname(), pid, secrets.token_hex(8), process_identity(pid))

    @property
    def id(self) -> str:
        return f"{self.host}:{self.pid}:{self.token}"


def process_identity(pid: int) -> str:
    """``<boot id>:<start time>`` of process ``pid`` on this host; "" if it runs no
    process or ``/proc`` does not tell."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as file:
            boot = file.read().strip()
        with open(f"/proc/{pid}/stat") as file:
            stat = file.read()
    except OSError:
        return ""
    # Field 22 (start time), counted after the parenthesised command name.
    fields = stat[stat.rfind(")") + 2 :].split()
    return f"{boot}:{fields[19]}" if len(fields) > 19 else ""


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    """The contents of a lease object (times in Unix seconds)."""

    holder: Holder
    created_at: float
    renewed_at: float
    ttl_s: float

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "holder": self.holder.id,
                "host": self.holder.host,
                "pid": self.holder.pid,
                "token": self.holder.token,
                "process": self.holder.process,
                "created_at": self.created_at,
                "renewed_at": self.renewed_at,
                "ttl_s": self.ttl_s,
            },
            option=orjson.OPT_SORT_KEYS,
        )

    @classmethod
    def decode(cls, data: bytes) -> LeaseRecord | None:
        """The record in ``data``, or None if it is not a lease this version wrote."""
        try:
            fields = orjson.loads(data)
            holder = Holder(
                str(fields["host"]),
                int(fields["pid"]),
                str(fields["token"]),
                str(fields.get("process", "")),
            )
            return cls(
                holder,
                float(fields["created_at"]),
                float(fields["renewed_at"]),
                float(fields["ttl_s"]),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None

    def expires_at(self) -> float:
        return self.renewed_at + self.ttl_s

    def is_stale(self, now: float) -> bool:
        """Whether the holder failed to renew within its TTL (it is dead or cut off)."""
        return self.expires_at() < now

    def died_here(self, me: Holder) -> bool:
        """Whether the holder was a process of this host that is gone (no process of
        its identity runs): such a lease is taken over without waiting for its TTL, as
        a local disk's lock dies with its process."""
        holder = self.holder
        if holder.host != me.host or not holder.process or not me.process:
            return False
        return process_identity(holder.pid) != holder.process


def _when(t: float, now: float) -> str:
    stamp = datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")
    return f"{stamp} ({now - t:.0f} s ago)"


def in_use_message(where: str, record: LeaseRecord, now: float, *, breaking: bool) -> str:
    """Why the lease at ``where`` cannot be taken, and the fix."""
    holder = record.holder
    said = (
        f"the dataset at {where} is held by another blocktimesd (host {holder.host}, "
        f"pid {holder.pid}), which last renewed its lease at {_when(record.renewed_at, now)} "
        f"with a TTL of {record.ttl_s:.0f} s"
    )
    if breaking:
        left = record.expires_at() - now
        return (
            f"{said}: the lease is not stale, so {BREAK_FLAG} does not break it (that "
            f"writer may be alive). Stop that writer, or if it is dead, wait {left:.0f} s "
            "more for its lease to expire and run again"
        )
    return (
        f"{said}. Run one writer per dataset: stop that writer, or, if it is dead and its "
        f"lease older than its TTL, run again with {BREAK_FLAG}"
    )


@dataclass(frozen=True, slots=True)
class _Found:
    data: bytes
    etag: str
    record: LeaseRecord | None


def _code(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: Any) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def _failed_precondition(exc: Any) -> bool:
    return _status(exc) == 412 or _code(exc) == "PreconditionFailed"


def _missing(exc: Any) -> bool:
    return _status(exc) == 404 or _code(exc) in ("NoSuchKey", "404", "NotFound")


def _conflict(exc: Any) -> bool:
    # S3 answers 409 to a conditional write that races another on the same key.
    return _status(exc) == 409 or _code(exc) == "ConditionalRequestConflict"


class S3Lease:
    """The writer lease at ``s3://bucket/key`` (see the module docstring).

    ``now`` is the clock (Unix seconds) the lease's times are read from; the writer
    passes ``time.time``, tests their own.
    """

    def __init__(
        self,
        client: S3Client,
        bucket: str,
        key: str,
        *,
        ttl_s: float = DEFAULT_TTL_S,
        holder: Holder | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.key = key
        self.ttl_s = ttl_s
        self.holder = holder if holder is not None else Holder.this_process()
        self._now = now
        self._record: LeaseRecord | None = None
        self._etag: str | None = None  # of the body we last wrote; None: not held

    @property
    def where(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    @property
    def held(self) -> bool:
        return self._etag is not None

    # -- S3 calls -------------------------------------------------------------------------

    def _storage_error(self, action: str, exc: Exception) -> StorageError:
        # A bucket that is not there or credentials refused: the configuration must
        # change (exit code 2); anything else may mend by itself.
        code = _code(exc) if isinstance(exc, ClientError) else ""
        kind = DataDirUnusable if code in _UNUSABLE else StorageError
        return kind(
            f"could not {action} the writer lease {self.where}: {exc}. Check the bucket, "
            "the endpoint, the credentials' permissions and the network",
            path=self.where,
        )

    def _put(self, body: bytes, **condition: str) -> str:
        """Write ``body`` on ``condition``; its ETag.  :class:`ClientError` is the caller's."""
        answer = self.client.put_object(
            Bucket=self.bucket,
            Key=self.key,
            Body=body,
            ContentType="application/json",
            **condition,
        )
        return str(answer["ETag"])

    def _read(self) -> _Found | None:
        """The lease object as it is now, or None if there is none."""
        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=self.key)
            data = answer["Body"].read()
        except ClientError as exc:
            if _missing(exc):
                return None
            raise self._storage_error("read", exc) from exc
        except BotoCoreError as exc:
            raise self._storage_error("read", exc) from exc
        return _Found(data, str(answer["ETag"]), LeaseRecord.decode(data))

    # -- the API --------------------------------------------------------------------------

    def acquire(self, break_stale: bool = False) -> None:
        """Take the lease: :class:`DataDirInUse` when another writer holds it.

        A lease whose holder was a process of this host that is gone is taken over.
        With ``break_stale``, so is a lease whose holder has not renewed it within its
        TTL (one that is not stale is still refused).
        """
        now = self._now()
        record = LeaseRecord(self.holder, created_at=now, renewed_at=now, ttl_s=self.ttl_s)
        body = record.encode()
        for _ in range(_ROUNDS):
            try:
                self._took(record, self._put(body, IfNoneMatch="*"), broke=None)
                return
            except ClientError as exc:
                if not (_failed_precondition(exc) or _conflict(exc)):
                    raise self._storage_error("create", exc) from exc
            except BotoCoreError as exc:
                raise self._storage_error("create", exc) from exc
            found = self._read()
            if found is None:
                continue  # released meanwhile: try again
            if found.data == body:  # our own write, its answer lost and the retry refused
                self._took(record, found.etag, broke=None)
                return
            if found.record is None:
                raise DataDirInUse(
                    f"{self.where} exists but is not a blocktimesd lease: if no writer uses "
                    "the dataset, delete that object and run again",
                    path=self.where,
                )
            dead = found.record.died_here(self.holder)
            if not dead and (not break_stale or not found.record.is_stale(now)):
                raise DataDirInUse(
                    in_use_message(self.where, found.record, now, breaking=break_stale),
                    path=self.where,
                )
            if self._break(found, record):
                return
        raise self._storage_error("create", RuntimeError(f"{_ROUNDS} rounds of races lost"))

    def ensure_free(self) -> None:
        """:class:`DataDirInUse` if a live writer holds this lease (one neither stale nor
        of a process of this host that is gone); nothing is written."""
        found = self._read()
        if found is None or found.record is None:
            return
        now = self._now()
        if found.record.is_stale(now) or found.record.died_here(self.holder):
            return
        raise DataDirInUse(
            in_use_message(self.where, found.record, now, breaking=False), path=self.where
        )

    def _break(self, stale: _Found, record: LeaseRecord) -> bool:
        """Replace the stale lease ``stale`` with ours; False if it vanished meanwhile."""
        body = record.encode()
        try:
            etag = self._put(body, IfMatch=stale.etag)
        except ClientError as exc:
            if _missing(exc):
                return False
            if not (_failed_precondition(exc) or _conflict(exc)):
                raise self._storage_error("replace", exc) from exc
            found = self._read()
            if found is None:
                return False
            if found.data != body:
                winner = found.record.holder if found.record else None
                who = f" (host {winner.host}, pid {winner.pid})" if winner else ""
                raise DataDirInUse(
                    f"another blocktimesd{who} took over the stale lease {self.where} "
                    "first; run one writer per dataset",
                    path=self.where,
                ) from exc
            etag = found.etag  # our own replacement, its answer lost
        except BotoCoreError as exc:
            raise self._storage_error("replace", exc) from exc
        self._took(record, etag, broke=stale.record)
        return True

    def _took(self, record: LeaseRecord, etag: str, broke: LeaseRecord | None) -> None:
        self._record, self._etag = record, etag
        if broke is None:
            log.info("took the writer lease %s (TTL %.0f s)", self.where, record.ttl_s)
        else:
            log.warning(
                "took over the writer lease %s of host %s pid %s, which is gone or stale "
                "(last renewed %s)",
                self.where,
                broke.holder.host,
                broke.holder.pid,
                _when(broke.renewed_at, record.created_at),
            )

    def renew(self) -> None:
        """Extend the lease by its TTL from now; :class:`LockLost` if it is no longer ours."""
        current, etag = self._record, self._etag
        if current is None or etag is None:
            raise WriterClosed(f"the writer lease {self.where} is not held")
        record = replace(current, renewed_at=self._now())
        body = record.encode()
        for _ in range(_ROUNDS):
            try:
                self._record, self._etag = record, self._put(body, IfMatch=etag)
                return
            except ClientError as exc:
                if not (_failed_precondition(exc) or _missing(exc) or _conflict(exc)):
                    raise self._storage_error("renew", exc) from exc
            except BotoCoreError as exc:
                raise self._storage_error("renew", exc) from exc
            found = self._read()
            if found is not None and found.data == body:  # ours, its answer lost
                self._record, self._etag = record, found.etag
                return
            if found is None or found.etag != etag:
                self._lost(found)
            # Unchanged: a conflicting write that did not land; try again.
        raise self._storage_error("renew", RuntimeError(f"{_ROUNDS} rounds of races lost"))

    def check(self) -> None:
        """:class:`LockLost` unless the lease object is still the one this writer wrote."""
        etag = self._etag
        if etag is None:
            raise WriterClosed(f"the writer lease {self.where} is not held")
        try:
            answer = self.client.head_object(Bucket=self.bucket, Key=self.key)
        except ClientError as exc:
            if _missing(exc):
                self._lost(None)
            raise self._storage_error("check", exc) from exc
        except BotoCoreError as exc:
            raise self._storage_error("check", exc) from exc
        if answer["ETag"] != etag:
            self._lost(self._read())

    def _lost(self, found: _Found | None) -> NoReturn:
        self._record = self._etag = None
        if found is None:
            how = "was deleted"
        elif found.record is None:
            how = "was replaced by an object that is not a lease"
        else:
            how = f"was taken over by host {found.record.holder.host} pid {found.record.holder.pid}"
        raise LockLost(
            f"the writer lease {self.where} {how} while this writer held it (was it broken "
            f"with {BREAK_FLAG} while this writer could not renew it?): another blocktimesd "
            "may now write there, so this one stops before writing again. Make sure one "
            "writer runs per dataset and start the daemon again: it resumes after the last "
            "durable block",
            path=self.where,
        )

    def release(self) -> None:
        """Delete the lease if it is still ours (best effort: an error is only logged)."""
        etag, self._record, self._etag = self._etag, None, None
        if etag is None:
            return
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self.key)
            if head["ETag"] != etag:
                log.warning("the writer lease %s is no longer ours; left in place", self.where)
                return
            self.client.delete_object(Bucket=self.bucket, Key=self.key, IfMatch=etag)
        except ClientError as exc:
            if not _missing(exc):
                log.warning("could not release the writer lease %s: %s", self.where, exc)
            return
        except BotoCoreError as exc:
            log.warning("could not release the writer lease %s: %s", self.where, exc)
            return
        log.info("released the writer lease %s", self.where)
