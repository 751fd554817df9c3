"""The writer lease on S3, against moto's server over real HTTP: directly, and through
the fault proxy throttling, failing and dropping a share of the requests."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from blocktimesd.dataset.lease import (
    BREAK_FLAG,
    LEASE_NAME,
    Holder,
    S3Lease,
    lease_key,
    process_identity,
    s3_client,
)
from blocktimesd.errors import DataDirInUse, LockLost, WriterClosed
from tests.s3server import FaultProxy

TTL = 60.0
KEY = lease_key("chains/consensus")
ALPHA = Holder("alpha.example", 101, "a1")
BETA = Holder("beta.example", 202, "b2")
GAMMA = Holder("gamma.example", 303, "c3")


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t


@pytest.fixture(params=["direct", "faulty"])
def client(request: pytest.FixtureRequest, s3_env: dict[str, str]) -> Iterator[Any]:
    """A client built by :func:`s3_client` from the environment: pointing at moto, or at
    the fault proxy with a quarter of the requests failing."""
    if request.param == "faulty":
        proxy: FaultProxy = request.getfixturevalue("s3_faulty")
        proxy.set_faults(slowdown=0.1, internal=0.05, reset=0.05, lost=0.05, seed=11)
    made = s3_client()
    yield made
    made.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def lease(client: Any, bucket: str, holder: Holder, clock: Clock) -> S3Lease:
    return S3Lease(client, bucket, KEY, ttl_s=TTL, holder=holder, now=clock)


def stored(client: Any, bucket: str) -> dict[str, Any] | None:
    """The lease object's JSON, or None if there is none."""
    try:
        answer = client.get_object(Bucket=bucket, Key=KEY)
    except client.exceptions.NoSuchKey:
        return None
    document: dict[str, Any] = orjson.loads(answer["Body"].read())
    return document


def holder_of(client: Any, bucket: str) -> str | None:
    """The ``holder`` field of the lease object, or None if there is none."""
    document = stored(client, bucket)
    return None if document is None else str(document["holder"])


def test_the_key_is_under_the_prefix() -> None:
    assert lease_key("a/b/") == f"a/b/{LEASE_NAME}"
    assert lease_key("") == LEASE_NAME


def test_acquire_writes_the_lease_and_release_deletes_it(
    client: Any, s3_bucket: str, clock: Clock
) -> None:
    a = lease(client, s3_bucket, ALPHA, clock)
    a.acquire()
    assert stored(client, s3_bucket) == {
        "holder": "alpha.example:101:a1",
        "host": "alpha.example",
        "pid": 101,
        "token": "a1",
        "process": "",
        "created_at": clock.t,
        "renewed_at": clock.t,
        "ttl_s": TTL,
    }
    a.check()
    a.release()
    assert stored(client, s3_bucket) is None
    with pytest.raises(WriterClosed):
        a.check()


def test_a_second_writer_is_refused_with_the_holder_and_the_fix(
    client: Any, s3_bucket: str, clock: Clock
) -> None:
    lease(client, s3_bucket, ALPHA, clock).acquire()
    clock.t += 15
    with pytest.raises(DataDirInUse) as refused:
        lease(client, s3_bucket, BETA, clock).acquire()
    message = str(refused.value)
    assert "host alpha.example, pid 101" in message
    assert "last renewed its lease at 2027-01-15T08:00:00+00:00 (15 s ago)" in message
    assert "stop that writer" in message
    assert BREAK_FLAG in message
    assert holder_of(client, s3_bucket) == ALPHA.id


def test_a_stale_lease_is_broken_only_with_the_flag(
    client: Any, s3_bucket: str, clock: Clock
) -> None:
    a = lease(client, s3_bucket, ALPHA, clock)
    a.acquire()
    clock.t += TTL + 1
    b = lease(client, s3_bucket, BETA, clock)
    with pytest.raises(DataDirInUse, match=BREAK_FLAG):
        b.acquire()
    b.acquire(break_stale=True)
    assert holder_of(client, s3_bucket) == BETA.id
    b.check()
    with pytest.raises(LockLost, match=r"taken over by host beta\.example pid 202"):
        a.check()


def test_a_live_lease_is_never_broken(client: Any, s3_bucket: str, clock: Clock) -> None:
    a = lease(client, s3_bucket, ALPHA, clock)
    a.acquire()
    clock.t += TTL - 1
    with pytest.raises(DataDirInUse, match="not stale") as refused:
        lease(client, s3_bucket, BETA, clock).acquire(break_stale=True)
    assert "host alpha.example, pid 101" in str(refused.value)
    assert "wait 1 s more" in str(refused.value)
    a.check()
    a.renew()


def test_renewal_keeps_a_lease_live(client: Any, s3_bucket: str, clock: Clock) -> None:
    a = lease(client, s3_bucket, ALPHA, clock)
    a.acquire()
    for _ in range(3):
        clock.t += TTL - 1
        a.renew()
        a.check()
    assert (stored(client, s3_bucket) or {}).get("renewed_at") == clock.t
    with pytest.raises(DataDirInUse, match="not stale"):
        lease(client, s3_bucket, BETA, clock).acquire(break_stale=True)


def test_a_writer_whose_lease_was_broken_loses_it(
    client: Any, s3_bucket: str, clock: Clock
) -> None:
    a = lease(client, s3_bucket, ALPHA, clock)
    a.acquire()
    clock.t += TTL + 1
    lease(client, s3_bucket, BETA, clock).acquire(break_stale=True)
    with pytest.raises(LockLost, match=r"taken over by host beta\.example pid 202"):
        a.renew()
    assert not a.held
    a.release()  # no longer ours: left in place
    assert holder_of(client, s3_bucket) == BETA.id


def test_a_deleted_lease_is_lost(client: Any, s3_bucket: str, clock: Clock) -> None:
    a = lease(client, s3_bucket, ALPHA, clock)
    a.acquire()
    client.delete_object(Bucket=s3_bucket, Key=KEY)
    with pytest.raises(LockLost, match="was deleted"):
        a.renew()


def test_release_leaves_another_writers_lease(client: Any, s3_bucket: str, clock: Clock) -> None:
    a = lease(client, s3_bucket, ALPHA, clock)
    a.acquire()
    clock.t += TTL + 1
    b = lease(client, s3_bucket, BETA, clock)
    b.acquire(break_stale=True)
    a.release()
    assert holder_of(client, s3_bucket) == BETA.id
    b.release()
    assert stored(client, s3_bucket) is None


def test_something_else_at_the_key_is_not_taken(client: Any, s3_bucket: str, clock: Clock) -> None:
    client.put_object(Bucket=s3_bucket, Key=KEY, Body=b"not json")
    with pytest.raises(DataDirInUse, match="not a blocktimesd lease"):
        lease(client, s3_bucket, ALPHA, clock).acquire(break_stale=True)


class Gate:
    """A client that holds every conditional replacement until ``parties`` are waiting,
    so concurrent breakers all read the stale lease before any of them writes."""

    def __init__(self, client: Any, parties: int) -> None:
        self.client = client
        self.barrier = threading.Barrier(parties, timeout=60)

    def put_object(self, **kwargs: Any) -> dict[str, Any]:
        if "IfMatch" in kwargs:
            self.barrier.wait()
        answer: dict[str, Any] = self.client.put_object(**kwargs)
        return answer

    def get_object(self, **kwargs: Any) -> dict[str, Any]:
        answer: dict[str, Any] = self.client.get_object(**kwargs)
        return answer

    def head_object(self, **kwargs: Any) -> dict[str, Any]:
        answer: dict[str, Any] = self.client.head_object(**kwargs)
        return answer

    def delete_object(self, **kwargs: Any) -> dict[str, Any]:
        answer: dict[str, Any] = self.client.delete_object(**kwargs)
        return answer


def test_of_two_concurrent_breakers_exactly_one_wins(
    client: Any, s3_bucket: str, clock: Clock
) -> None:
    lease(client, s3_bucket, ALPHA, clock).acquire()
    clock.t += TTL + 1
    gate = Gate(client, parties=2)
    breakers = [lease(gate, s3_bucket, holder, clock) for holder in (BETA, GAMMA)]
    outcomes: dict[str, BaseException | None] = {}

    def run(breaker: S3Lease) -> None:
        try:
            breaker.acquire(break_stale=True)
            outcomes[breaker.holder.id] = None
        except BaseException as exc:
            outcomes[breaker.holder.id] = exc

    threads = [threading.Thread(target=run, args=(breaker,)) for breaker in breakers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    winners = [holder for holder, exc in outcomes.items() if exc is None]
    losers = [exc for exc in outcomes.values() if exc is not None]
    assert len(winners) == 1, outcomes
    assert len(losers) == 1, outcomes
    assert isinstance(losers[0], DataDirInUse), outcomes
    assert "took over the stale lease" in str(losers[0])
    assert holder_of(client, s3_bucket) == winners[0]
    assert [b.held for b in breakers].count(True) == 1


def test_the_lease_works_through_faults(
    s3_faulty: FaultProxy, s3_bucket: str, clock: Clock
) -> None:
    s3_faulty.set_faults(slowdown=0.1, internal=0.05, reset=0.05, lost=0.05, seed=5)
    client = s3_client()
    try:
        a = lease(client, s3_bucket, ALPHA, clock)
        for _ in range(3):
            a.acquire()
            for _ in range(10):
                clock.t += TTL / 3
                a.renew()
                a.check()
            a.release()
        assert stored(client, s3_bucket) is None
    finally:
        client.close()
    counts = s3_faulty.counts
    assert all(count > 0 for count in counts.values()), counts


def test_a_lost_answer_to_taking_the_lease_is_recognised(
    s3_faulty: FaultProxy, s3_bucket: str, clock: Clock
) -> None:
    # The write lands, its answer is lost; botocore's retry is refused (the object now
    # exists), and the lease read back is this writer's own.
    s3_faulty.script("lost")
    client = s3_client()
    try:
        a = lease(client, s3_bucket, ALPHA, clock)
        a.acquire()
        assert a.held
        a.check()
        assert holder_of(client, s3_bucket) == ALPHA.id
    finally:
        client.close()
    assert s3_faulty.counts["lost"] == 1


def test_a_lost_answer_to_a_renewal_is_recognised(
    s3_faulty: FaultProxy, s3_bucket: str, clock: Clock
) -> None:
    client = s3_client()
    try:
        a = lease(client, s3_bucket, ALPHA, clock)
        a.acquire()
        clock.t += TTL / 2
        s3_faulty.script("lost")
        a.renew()
        a.check()
        assert (stored(client, s3_bucket) or {}).get("renewed_at") == clock.t
    finally:
        client.close()
    assert s3_faulty.counts["lost"] == 1


def test_a_lost_answer_to_breaking_a_lease_is_recognised(
    s3_faulty: FaultProxy, s3_bucket: str, clock: Clock
) -> None:
    client = s3_client()
    try:
        lease(client, s3_bucket, ALPHA, clock).acquire()
        clock.t += TTL + 1
        b = lease(client, s3_bucket, BETA, clock)
        # The refused create and the read go through; the replacement's answer is lost.
        s3_faulty.script(None, None, "lost")
        b.acquire(break_stale=True)
        b.check()
        assert holder_of(client, s3_bucket) == BETA.id
    finally:
        client.close()
    assert s3_faulty.counts["lost"] == 1


# -- holders that are processes of this host -------------------------------------------------


def hold_lease_script(bucket: str, key: str) -> str:
    """A ``python -c`` program that takes the lease at ``key`` as itself (the S3 of the
    environment, the default TTL), says so, and sleeps."""
    return (
        "import time\n"
        "from blocktimesd.dataset.lease import S3Lease, s3_client\n"
        f"S3Lease(s3_client(), {bucket!r}, {key!r}).acquire()\n"
        "print('held', flush=True)\n"
        "time.sleep(600)\n"
    )


def dead_pid() -> int:
    """The pid of a process of this host that has exited."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_the_lease_of_a_killed_process_of_this_host_is_taken_over_without_the_flag(
    client: Any, s3_bucket: str, caplog: pytest.LogCaptureFixture
) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", hold_lease_script(s3_bucket, KEY)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == b"held\n"
        mine = S3Lease(client, s3_bucket, KEY, ttl_s=TTL)
        # Alive: refused, with the flag too (its lease is fresh).
        for flag in (False, True):
            with pytest.raises(DataDirInUse, match="not stale" if flag else BREAK_FLAG) as refused:
                mine.acquire(break_stale=flag)
            assert f"host {socket.gethostname()}, pid {holder.pid}" in str(refused.value)
        assert (stored(client, s3_bucket) or {}).get("pid") == holder.pid
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
    with caplog.at_level(logging.INFO, logger="blocktimesd.dataset.lease"):
        mine.acquire()
    assert mine.held
    assert holder_of(client, s3_bucket) == mine.holder.id
    assert f"of host {socket.gethostname()} pid {holder.pid}, which is gone" in caplog.text
    mine.check()
    mine.release()
    assert stored(client, s3_bucket) is None


def test_a_lease_of_another_host_is_taken_only_with_the_flag_after_its_ttl(
    client: Any, s3_bucket: str, clock: Clock
) -> None:
    # Its pid runs nothing here, and its identity is a real one's: neither matters, as
    # another host's processes cannot be seen from this one.
    elsewhere = Holder("elsewhere.example", dead_pid(), "e1", process_identity(os.getpid()))
    lease(client, s3_bucket, elsewhere, clock).acquire()
    mine = S3Lease(client, s3_bucket, KEY, ttl_s=TTL, now=clock)
    clock.t += TTL - 1
    with pytest.raises(DataDirInUse, match=BREAK_FLAG):
        mine.acquire()
    with pytest.raises(DataDirInUse, match="not stale"):
        mine.acquire(break_stale=True)
    clock.t += 2
    with pytest.raises(DataDirInUse, match=r"host elsewhere\.example"):
        mine.acquire()
    assert holder_of(client, s3_bucket) == elsewhere.id
    mine.acquire(break_stale=True)
    assert holder_of(client, s3_bucket) == mine.holder.id


def test_a_live_process_of_this_host_keeps_its_lease_and_a_reused_pid_does_not(
    client: Any, s3_bucket: str, clock: Clock
) -> None:
    host, pid = socket.gethostname(), os.getpid()
    live = Holder(host, pid, "l1", process_identity(pid))  # this very process
    lease(client, s3_bucket, live, clock).acquire()
    mine = S3Lease(client, s3_bucket, KEY, ttl_s=TTL, now=clock)
    with pytest.raises(DataDirInUse, match=f"host {host}, pid {pid}"):
        mine.acquire()
    with pytest.raises(DataDirInUse, match="not stale"):
        mine.acquire(break_stale=True)
    assert holder_of(client, s3_bucket) == live.id
    client.delete_object(Bucket=s3_bucket, Key=KEY)
    # The same pid, but another process's start: the holder is gone, the pid reused.
    reused = Holder(host, pid, "r1", process_identity(pid) + "0")
    lease(client, s3_bucket, reused, clock).acquire()
    mine.acquire()
    assert holder_of(client, s3_bucket) == mine.holder.id
