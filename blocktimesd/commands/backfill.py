"""``blocktimesd backfill`` (and ``blocktimesd --backfill-range N:M``): rows for a past range.

Exit codes: 0 done; 1 part of the range failed (the failed ranges are listed), the
node is pruned, or another runtime failure; 2 usage or configuration error; 130
interrupted (what was done is flushed to the dataset first, and a re-run resumes).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from blocktimesd.argtypes import add_break_lease_argument, non_negative, positive, shard_of
from blocktimesd.commands import loading_modules
from blocktimesd.config.load import command_line_chain, load_config
from blocktimesd.config.model import ChainConfig, Config
from blocktimesd.core.chains import ChainKind
from blocktimesd.core.ranges import describe
from blocktimesd.errors import ConfigError

if TYPE_CHECKING:
    from blocktimesd.backfill.engine import ChainResult

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_MAX_INFLIGHT",
    "Ends",
    "Job",
    "add_backfill_parser",
    "backfill_args_from_range",
    "rewrite_backfill_range",
    "run_backfill",
    "summary",
]

# Measured with bench/backfill_vs_reference.py against the simulator (which, like a
# Substrate node, runs at most 64 messages per connection at once and the calls of a
# batch one after another): see the figures there.
DEFAULT_MAX_INFLIGHT = 64
MAX_CONNECTIONS = 8  # the most the probe grows to (blocktimesd.aio.pool, not imported here)
DEFAULT_BATCH_SIZE = 256
DEFAULT_WINDOW = 2048
# BackfillSettings.lookahead, for the help: the parser does not load the engine (nor, with
# it, pyarrow), which neither the help nor a usage error needs.
WINDOWS_HELD = 3
EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

_DESCRIPTION = """\
Fetch the rows of a past range of blocks and write them to the dataset, as the daemon
would have. The end is clamped to the tip minus K. Blocks already in the dataset are
skipped, so a re-run, an overlap with the daemon's rows or a resumed interrupted run
never duplicates a row. --start and --end take a block number or a UTC date-time
(2025-08-01T00:00:00Z, or a date): a start date-time means the first block stamped at
or after it, an end date-time the last block stamped before it. Settings as for run
(--config FILE, environment); without a configuration entry for the chain, give
--rpc URL and --kind. Exit codes: 0 done, 1 failed blocks (listed) or runtime failure,
2 usage error, 130 interrupted (done work is kept; run again to resume).

The one-shot form `blocktimesd --backfill-range START:END [options]` runs this command
with --backfill-range START:END."""


def add_backfill_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "backfill",
        parents=parents,
        help="fetch the rows of a past range of blocks",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,  # the paragraphs as written
    )
    add_backfill_arguments(p)


def add_backfill_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--chain",
        default="all",
        metavar="NAME",
        help="a configured chain (consensus, auto-evm, ...), or all (default: all)",
    )
    # Which blocks: --start with --end or --count, or --backfill-range; checked in
    # Ends, so that a message names the flags the user typed.
    p.add_argument("--start", metavar="N|DATETIME", help="first block (or --backfill-range)")
    p.add_argument("--end", metavar="M|DATETIME", help="last block, inclusive (or --count)")
    p.add_argument("--count", type=positive(int), metavar="C", help="number of blocks from --start")
    p.add_argument(
        "--backfill-range",
        metavar="START:END",
        help="the same as --start START --end END, e.g. 1000:2000",
    )
    p.add_argument(
        "--k",
        type=non_negative(int),
        metavar="K",
        help="confirmation depth: only blocks at least K below the tip are written "
        "(default: each chain's configured k; 100 for consensus and generic chains, 64 for "
        "auto-evm, or K_CONSENSUS / K_AUTO_EVM)",
    )
    p.add_argument(
        "--config", metavar="FILE", help="TOML configuration file (default: none; environment only)"
    )
    p.add_argument(
        "--data",
        metavar="DIR",
        help="dataset directory or s3://bucket/prefix (default: DATA_DIR, data_dir in the "
        "configuration, or ./data)",
    )
    add_break_lease_argument(p)
    p.add_argument(
        "--rpc",
        metavar="URL",
        help="ad-hoc chain: its WebSocket endpoint (default: the configured chains)",
    )
    p.add_argument(
        "--kind",
        choices=[k.value for k in ChainKind],
        metavar="KIND",
        help="ad-hoc chain: consensus, auto-evm or generic (default: generic)",
    )
    p.add_argument(
        "--consensus-rpc",
        metavar="URL",
        help="ad-hoc auto-evm chain: the consensus endpoint for consensus_block_number "
        "(default: none; the column is then null)",
    )
    p.add_argument(
        "--max-inflight",
        type=positive(int),
        default=DEFAULT_MAX_INFLIGHT,
        metavar="N",
        help=f"requests in flight per connection (default: {DEFAULT_MAX_INFLIGHT})",
    )
    p.add_argument(
        "--connections",
        type=positive(int),
        default=None,
        metavar="N",
        help="WebSocket connections per node for fetching blocks, each within --max-inflight "
        f"(default: probed, up to {MAX_CONNECTIONS}: more while they raise throughput "
        "without slowing answers; fewer when the node refuses or rate-limits)",
    )
    p.add_argument(
        "--batch-size",
        type=positive(int),
        default=DEFAULT_BATCH_SIZE,
        metavar="N",
        help=f"calls per JSON-RPC batch at most (default: {DEFAULT_BATCH_SIZE}); fewer when the "
        "node takes long per call, 1 for no batches",
    )
    p.add_argument(
        "--shard",
        type=shard_of,
        metavar="I/N",
        help="be worker I of N backfilling the range together (each run with the same "
        "range, N and data location, e.g. on N machines writing to one s3:// prefix): "
        "this one takes every N-th chunk of blocks, chunks as long as a file "
        "(default: all of it)",
    )
    p.add_argument(
        "--window",
        type=positive(int),
        default=DEFAULT_WINDOW,
        metavar="N",
        help=f"blocks checked and written at a time; {WINDOWS_HELD} windows are "
        f"held in memory (default: {DEFAULT_WINDOW})",
    )
    p.add_argument(
        "--storage",
        choices=["auto", "per-block", "range"],
        default="auto",
        metavar="HOW",
        help="how storage values are read: per-block, range (state_queryStorage; needs "
        "a node that allows unsafe RPC), or auto: range where allowed (default: auto)",
    )


# -- block numbers and date-times --------------------------------------------------------------


class Point(NamedTuple):
    """A place on a chain as given: a block number or a UTC time in milliseconds."""

    block: int | None = None
    time_ms: int | None = None


def parse_point(text: str, what: str) -> Point:
    text = text.strip()
    if re.fullmatch(r"\d+", text):
        return Point(block=int(text))
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(
            f"{what}: {text!r} is neither a block number nor a date-time; give e.g. 1000 or "
            "2025-08-01T00:00:00Z"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return Point(time_ms=int(moment.timestamp() * 1000))


def range_problem(start: Point, end: Point) -> tuple[str, str] | None:
    """Why no block can lie from ``start`` to ``end``, when that is known without asking
    a node (both block numbers, or both date-times): how the end stands to the start, and
    where it must be; None otherwise."""
    if start.block is not None and end.block is not None and end.block < start.block:
        return "below", "at or after"  # an end block is inclusive
    if start.time_ms is not None and end.time_ms is not None and end.time_ms <= start.time_ms:
        return "not after", "after"  # an end date-time is exclusive
    return None


def split_range(text: str) -> tuple[str, str]:
    """``START`` and ``END`` of ``--backfill-range START:END``.

    They are block numbers or date-times (the split is at the colon that leaves two valid
    points).  Raises :class:`ConfigError`, in the terms of ``--backfill-range``, on a bad
    range.
    """
    for at in (i for i, c in enumerate(text) if c == ":"):
        start, end = text[:at], text[at + 1 :]
        try:
            problem = range_problem(
                parse_point(start, "--backfill-range"), parse_point(end, "--backfill-range")
            )
        except ConfigError:
            continue
        if problem is not None:
            raise ConfigError(
                f"--backfill-range {text}: the end {end} is {problem[0]} the start {start}; "
                f"give START:END with END {problem[1]} START, e.g. 1000:2000"
            )
        return start, end
    raise ConfigError(
        f"--backfill-range: {text!r} is not START:END; give e.g. 1000:2000 or "
        "2025-08-01T00:00:00Z:2025-08-02T00:00:00Z"
    )


def backfill_args_from_range(text: str, argv_rest: Sequence[str] = ()) -> list[str]:
    """The ``backfill`` argv equivalent to ``--backfill-range N:M`` plus ``argv_rest``.

    Without ``--chain`` in ``argv_rest``, every configured chain is backfilled.  Raises
    :class:`ConfigError` on a bad range (at once: nothing else needs reading first).
    """
    split_range(text)
    return ["backfill", "--backfill-range", text, *argv_rest]


def rewrite_backfill_range(argv: Sequence[str]) -> list[str] | None:
    """``argv`` with ``--backfill-range N:M`` turned into the ``backfill`` subcommand,
    or None when it has no ``--backfill-range`` before a subcommand."""
    argv = list(argv)
    for i, arg in enumerate(argv):
        if arg == "backfill":  # the subcommand itself takes --backfill-range
            return None
        if arg == "--backfill-range":
            if i + 1 >= len(argv):
                raise ConfigError("--backfill-range needs START:END, e.g. 1000:2000")
            return backfill_args_from_range(argv[i + 1], argv[:i] + argv[i + 2 :])
        if arg.startswith("--backfill-range="):
            return backfill_args_from_range(arg.split("=", 1)[1], argv[:i] + argv[i + 1 :])
    return None


@dataclass(frozen=True, slots=True)
class Ends:
    """The blocks asked for, as given, and how messages name each end: in the flags the
    user typed (``--start 5``, or ``the start 5 of --backfill-range 5:9``)."""

    start: str
    end: str | None  # None: ``count`` blocks from the start
    count: int | None
    start_words: str
    end_words: str


def ends_of(args: argparse.Namespace) -> Ends:
    """The ends asked for; :class:`ConfigError` when they are missing, given twice, or
    the end lies before the start (as far as that is known without a node)."""
    text = args.backfill_range
    if text is not None:
        if args.start is not None or args.end is not None or args.count is not None:
            raise ConfigError(
                f"--backfill-range {text} gives both ends: leave out --start, --end and --count"
            )
        start, end = split_range(text)
        return Ends(start, end, None, f"the start {start} of --backfill-range {text}",
                     f"the end {end}")  # fmt: skip
    if args.start is None:
        raise ConfigError(
            "which blocks? give --start N with --end M or --count C, or --backfill-range START:END"
        )
    if (args.end is None) == (args.count is None):
        raise ConfigError(
            f"--start {args.start}: give its end with either --end M or --count C"
            + ("" if args.end is None else ", not both")
        )
    if args.end is not None:
        problem = range_problem(parse_point(args.start, "--start"), parse_point(args.end, "--end"))
        if problem is not None:
            raise ConfigError(
                f"--end {args.end} is {problem[0]} --start {args.start}; give an --end "
                f"{problem[1]} --start"
            )
    else:
        parse_point(args.start, "--start")
    return Ends(args.start, args.end, args.count, f"--start {args.start}",
                 f"--end {args.end}")  # fmt: skip


# -- which chains ---------------------------------------------------------------------------


class Job(NamedTuple):
    chain: ChainConfig
    consensus: ChainConfig | None  # where an auto-evm chain's consensus blocks are numbered


def _jobs(args: argparse.Namespace, config: Config) -> list[Job]:
    if args.rpc is not None:
        if args.chain == "all":
            raise ConfigError("--rpc: name the ad-hoc chain with --chain NAME")
        kind = ChainKind(args.kind or ChainKind.GENERIC.value)
        if args.consensus_rpc is not None and kind is not ChainKind.AUTO_EVM:
            raise ConfigError(
                "--consensus-rpc: only an auto-evm chain has consensus blocks to number; "
                "leave it out, or give --kind auto-evm"
            )
        # The rules and defaults of a [[chains]] table: name, endpoint, depth, domains.
        chain = command_line_chain(args.chain, kind, args.rpc)
        if args.k is not None:
            chain = dataclasses.replace(chain, k=args.k)
        consensus = None
        if args.consensus_rpc is not None:
            consensus = command_line_chain(
                ChainKind.CONSENSUS.value,
                ChainKind.CONSENSUS,
                args.consensus_rpc,
                endpoint_flag="--consensus-rpc",
            )
            if args.k is not None:
                consensus = dataclasses.replace(consensus, k=args.k)
        return [Job(chain, consensus)]
    if args.kind is not None or args.consensus_rpc is not None:
        raise ConfigError("--kind and --consensus-rpc describe an ad-hoc chain: add --rpc URL")
    chains = list(config.chains)
    if args.chain != "all":
        chains = [c for c in chains if c.chain == args.chain]
        if not chains:
            names = ", ".join(c.chain for c in config.chains)
            raise ConfigError(
                f"--chain: {args.chain!r} is not a configured chain (configured: {names}); "
                "use one of them, all, or give --rpc URL and --kind for an ad-hoc chain"
            )
    consensus = next((c for c in config.chains if c.kind is ChainKind.CONSENSUS), None)
    if args.k is not None:  # one depth for the run, the consensus mapping included
        chains = [dataclasses.replace(c, k=args.k) for c in chains]
        consensus = consensus and dataclasses.replace(consensus, k=args.k)
    # Consensus first: its rows are the ones the domain's rows refer to.
    chains.sort(key=lambda c: c.kind is not ChainKind.CONSENSUS)
    return [Job(c, consensus if c.kind is ChainKind.AUTO_EVM else None) for c in chains]


async def run_backfill(args: argparse.Namespace) -> int:
    """Run the ``backfill`` subcommand; returns the exit code (see the module docstring)."""
    # Everything that needs no node is checked before connecting to one.
    try:
        config = load_config(args.config, os.environ, {"data_dir": args.data})
        ends = ends_of(args)
        jobs = _jobs(args, config)
    except ConfigError as exc:
        print(f"blocktimesd backfill: {exc}", file=sys.stderr)
        return EXIT_USAGE
    # Imported here: the clients, the writer and the engine load websockets, which
    # neither the help nor a usage error needs.
    with loading_modules():
        from blocktimesd.commands.backfill_app import run_jobs

    return await run_jobs(args, config, ends, jobs)


def _many(count: int, noun: str) -> str:
    """``1 row``, ``2 rows``: a count and its noun."""
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def summary(result: ChainResult) -> str:
    """One line per chain for the end of a run."""
    if result.span is None:
        return f"{result.chain}: nothing to backfill (see the warning above)"
    text = (
        f"{result.chain}: blocks {result.span}: {_many(result.written, 'row')} written, "
        f"{_many(result.skipped, 'block')} already in the dataset"
    )
    if result.unresolved:
        text += (
            f", {_many(result.unresolved, 'row')} without a consensus block (see reconciliation/)"
        )
    if result.not_later:
        many = result.not_later != 1
        text += (
            f", {_many(result.not_later, 'block')} stamped no later than "
            f"{'their' if many else 'its'} parent (written as the chain says; see the warnings)"
        )
    if result.stopped_at is not None:
        text += f"; stopped at {result.stopped_at} (its consensus block is not K deep yet)"
    if result.failed:
        text += f"; FAILED blocks: {describe(result.failed)} (run again to retry them)"
        if result.errors:
            more = len(result.errors) - 1
            text += f": {result.errors[0]}" + (f" (and {more} more, logged)" if more else "")
    return text
