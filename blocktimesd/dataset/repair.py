"""Removing a chain's rows from a block number on, so that what is visible stays a prefix.

A reorg deeper than the confirmation depth means rows already on disk are no longer
canonical; the writer removes them with a :class:`Repair`.  It is planned first: the
files that hold any block from the number on (the victims) are found, and the rows of
a straddling file that survive are written to temp files, so that when the disk is full
the repair fails while the dataset is still intact.  Then the victims are removed from
the highest blocks down, and only then are the survivors renamed into place: after a
crash at any step the visible dataset of the chain is a gap-free prefix, and the daemon
fetches the rest again.  Every step is safe to repeat after a failure.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

# pyarrow (about 150 ms to import) is imported by the functions that read or write
# Parquet, so that a command sends its first request before paying for it.
from blocktimesd.dataset.files import Files
from blocktimesd.dataset.layout import file_name, new_token
from blocktimesd.dataset.objects import DataPath
from blocktimesd.dataset.scan import DataFile, chain_files, inspect_data_file, invalid_files

__all__ = ["Repair", "apply", "doomed", "plan"]


@dataclass(slots=True)
class Repair:
    """Remove ``chain``'s rows with ``block_number >= number`` from disk; it records its
    progress, so a failed step is retried from where it stopped."""

    chain: str
    number: int
    buffered: int  # rows dropped from memory, for the report
    victims: list[DataPath] | None = None  # files to remove, highest blocks first
    survivors: list[tuple[DataPath, DataPath]] = field(default_factory=list)  # (temp, final)
    rows: int = 0  # rows removed from disk


def doomed(files: list[DataFile], number: int) -> list[DataFile]:
    """The writer's files that hold a block from ``number`` on, as their names say, in
    the order given (strangers are not the writer's and are left alone)."""
    return [found for found in files if found.span is not None and found.span.last >= number]


def apply(repair: Repair, data_dir: DataPath, files: Files, row_group_rows: int) -> None:
    """Carry ``repair`` out (planning it first if needed); raises :class:`OSError` to be
    retried, or :class:`~blocktimesd.errors.InvalidDataFile` (fatal) before removing
    anything when a file cannot be trusted."""
    if repair.victims is None:
        plan(repair, data_dir, files, row_group_rows)
    assert repair.victims is not None
    # Highest blocks first, so that after a crash what remains is a prefix.
    for path in repair.victims:
        with contextlib.suppress(FileNotFoundError):  # removed by an earlier attempt
            files.unlink(path)
    for directory in {path.parent for path in repair.victims}:
        files.fsync_dir(directory)
    while repair.survivors:
        temp, target = repair.survivors[0]
        files.replace(temp, target)
        files.fsync_dir(target.parent)
        repair.survivors.pop(0)


def plan(repair: Repair, data_dir: DataPath, files: Files, row_group_rows: int) -> None:
    """Find the files to remove and write the survivors of a straddling file to temp
    files first: when the disk is full this fails while the dataset is intact."""
    victims: list[tuple[int, DataPath]] = []
    survivors: list[tuple[DataPath, DataPath]] = []
    rows = 0
    try:
        for found in doomed(chain_files(data_dir, repair.chain), repair.number):
            assert found.span is not None
            victims.append((found.span.first, found.path))
            kept = _rows_before(found.path, repair.number, data_dir, files)
            rows += kept[1]
            if kept[0].num_rows:
                survivors.append(
                    _write_survivors(found.path.parent, kept[0], files, row_group_rows)
                )
    except BaseException:
        for temp, _ in survivors:
            files.discard(temp)
        raise
    victims.sort(reverse=True)
    repair.victims, repair.survivors, repair.rows = [path for _, path in victims], survivors, rows


def _rows_before(path: DataPath, number: int, data_dir: DataPath, files: Files) -> tuple[Any, int]:
    """The rows of ``path`` below block ``number``, and how many are not.

    A file that cannot be trusted stops the repair (fatal) before any file is removed;
    a filesystem error is raised as it is, to be retried like any write.
    """
    import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
    import pyarrow.compute as pc  # type: ignore[import-untyped, unused-ignore]

    if (problem := inspect_data_file(path)) is not None:
        raise invalid_files([(path, problem)], data_dir)
    try:
        table = files.read_table(path)
    except OSError as exc:
        if exc.errno is not None:
            raise
        raise invalid_files([(path, str(exc))], data_dir) from exc
    except (pa.ArrowException, ValueError) as exc:
        raise invalid_files([(path, str(exc))], data_dir) from exc
    kept = table.filter(pc.less(table["block_number"], number))
    return kept, table.num_rows - kept.num_rows


def _write_survivors(
    directory: DataPath, kept: Any, files: Files, row_group_rows: int
) -> tuple[DataPath, DataPath]:
    """Write ``kept`` to a temp file beside its final name; (temp, final)."""
    import pyarrow.compute as pc  # type: ignore[import-untyped, unused-ignore]

    from blocktimesd.dataset.schema import ROW_SCHEMA, encode

    numbers = kept["block_number"]
    first, last = pc.min(numbers).as_py(), pc.max(numbers).as_py()
    target = directory / file_name(first, last, new_token())
    temp = files.write_temp(directory, target.name, encode(kept.cast(ROW_SCHEMA), row_group_rows))
    return temp, target
