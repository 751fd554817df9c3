"""Snapshots of open files: rows durable within ``checkpoint_s``, files as few as before."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from pathlib import Path

import pytest

from blocktimesd.dataset.layout import parse_file_name
from blocktimesd.dataset.records import Row
from blocktimesd.dataset.writer import DeleteFrom, ParquetWriter
from tests.dataset.test_writer import (
    SETTINGS,
    FakeClock,
    FlakyFiles,
    Recorder,
    assert_exactly,
    data_files,
    eventually,
    row,
    temp_files,
)

CHECKPOINTED = dataclasses.replace(SETTINGS, max_rows=1000, max_minutes=15, checkpoint_s=60)


@dataclasses.dataclass
class CheckpointRecorder(Recorder):
    checkpointed: int = 0

    def rows_checkpointed(self, chain: str, rows: int) -> None:
        self.checkpointed += rows


def no_block_twice(root: Path) -> None:
    blocks: list[int] = []
    for path in data_files(root):
        span = parse_file_name(path.name)
        assert span is not None
        blocks.extend(range(span.first, span.last + 1))
    assert len(blocks) == len(set(blocks)), "a block is in two visible files"


async def test_rows_are_durable_within_a_minute_and_make_one_file(tmp_path: Path) -> None:
    clock, recorder, files = FakeClock(), CheckpointRecorder([], [], []), FlakyFiles()
    # After every rename, no block may be visible twice.
    files.hook = lambda op, path: no_block_twice(tmp_path) if op == "replace" else None
    writer = ParquetWriter(tmp_path, CHECKPOINTED, observer=recorder, files=files, clock=clock)
    await writer.start()
    await writer.put([row(n) for n in range(1, 11)])
    await eventually(lambda: writer.buffered_rows == 10)  # taken at the clock's start
    clock.now += 59
    await asyncio.sleep(0.05)
    assert data_files(tmp_path) == []  # not yet a minute
    clock.now += 1
    await eventually(lambda: recorder.pending.get("consensus") == 0)
    assert_exactly(tmp_path, [row(n) for n in range(1, 11)])
    assert recorder.checkpointed == 10
    assert recorder.files == []  # a snapshot, not a completed file
    # More rows: the next snapshot replaces the first; nothing new, no snapshot.
    await writer.put([row(n) for n in range(11, 21)])
    await eventually(lambda: writer.buffered_rows == 20)
    clock.now += 60
    await eventually(lambda: recorder.checkpointed == 20)
    assert_exactly(tmp_path, [row(n) for n in range(1, 21)])
    snapshot = data_files(tmp_path)
    assert len(snapshot) == 1
    clock.now += 60
    await asyncio.sleep(0.05)
    assert data_files(tmp_path) == snapshot
    # Rows a minute after the last snapshot are written at once; the next wait a minute.
    await writer.put([row(n) for n in range(21, 26)])
    await eventually(lambda: recorder.checkpointed == 25)
    await writer.put([row(n) for n in range(26, 31)])
    await eventually(lambda: writer.buffered_rows == 30)
    assert recorder.pending["consensus"] == 5
    # At MAX_FILE_MINUTES the file is completed: still one file, each row counted once.
    clock.now += 12 * 60
    await eventually(lambda: bool(recorder.files))
    assert recorder.files == [("block_times", "consensus", 5)]
    assert_exactly(tmp_path, [row(n) for n in range(1, 31)])
    assert len(data_files(tmp_path)) == 1
    await writer.close(timeout=5)
    assert temp_files(tmp_path) == []
    assert recorder.pending == {"consensus": 0}


async def test_a_repair_below_a_snapshot_leaves_each_block_once(tmp_path: Path) -> None:
    clock, recorder = FakeClock(), CheckpointRecorder([], [], [])
    writer = ParquetWriter(tmp_path, CHECKPOINTED, observer=recorder, clock=clock)
    await writer.start()
    await writer.put([row(n) for n in range(1, 11)])
    await eventually(lambda: writer.buffered_rows == 10)
    clock.now += 61
    await eventually(lambda: recorder.checkpointed == 10)
    await writer.put([row(n) for n in range(11, 16)])  # buffered, not in the snapshot
    await writer.put(DeleteFrom("consensus", 8))
    await writer.put([row(n, fork="f") for n in range(8, 13)])
    await writer.close(timeout=5)
    assert_exactly(
        tmp_path, [row(n) for n in range(1, 8)] + [row(n, fork="f") for n in range(8, 13)]
    )
    assert recorder.pending == {"consensus": 0}


async def test_without_checkpoints_rows_wait_for_the_file(tmp_path: Path) -> None:
    clock = FakeClock()
    settings = dataclasses.replace(CHECKPOINTED, checkpoint_s=None)
    async with ParquetWriter(tmp_path, settings, clock=clock) as writer:
        await writer.put([row(n) for n in range(1, 11)])
        await eventually(lambda: writer.buffered_rows == 10)
        clock.now += 5 * 60
        await asyncio.sleep(0.05)
        assert data_files(tmp_path) == []


def visible_blocks(root: Path) -> list[int]:
    blocks: list[int] = []
    for path in data_files(root / "block_times"):
        span = parse_file_name(path.name)
        assert span is not None
        blocks.extend(range(span.first, span.last + 1))
    return sorted(blocks)


@pytest.mark.parametrize("seed", range(10))
async def test_random_snapshots_rolls_and_repairs_keep_a_gap_free_prefix(
    tmp_path: Path, seed: int
) -> None:
    """Rows, time, repairs and flushes in random order: at every step the visible rows
    are a prefix of the chain, each block once; at the end, exactly the chain."""
    rng = random.Random(seed)
    clock = FakeClock()
    settings = dataclasses.replace(
        CHECKPOINTED, max_rows=rng.randint(7, 40), max_minutes=3, checkpoint_s=60
    )
    writer = ParquetWriter(tmp_path, settings, observer=CheckpointRecorder([], [], []), clock=clock)
    await writer.start()
    chain: dict[int, Row] = {}
    forks = iter("abcdef0123456789" * 4)
    fork, following = "", 1
    for _ in range(40):
        action = rng.random()
        if action < 0.45:
            rows = [row(n, fork=fork) for n in range(following, following + rng.randint(1, 6))]
            await writer.put(rows)
            chain.update((r.block_number, r) for r in rows)
            following += len(rows)
        elif action < 0.75:
            clock.now += rng.choice([10, 30, 59, 60, 61, 120, 200])
        elif action < 0.9 and following > 2:
            cut = rng.randint(1, following - 1)
            await writer.put(DeleteFrom("consensus", cut))
            chain = {n: r for n, r in chain.items() if n < cut}
            fork, following = next(forks), cut
        else:
            await writer.flush()
        await asyncio.sleep(0.02)
        blocks = visible_blocks(tmp_path)
        assert blocks == list(range(1, len(blocks) + 1)), "not a gap-free prefix, or a block twice"
    await writer.close(timeout=5)
    assert_exactly(tmp_path, chain.values())
