"""Command line: ``blocktimesd <subcommand>``; :func:`main` returns the exit code.

Exit codes: 0 ok, 1 runtime failure, 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, NamedTuple

from blocktimesd import __version__
from blocktimesd.commands import loading_modules
from blocktimesd.errors import BlocktimesError, ConfigError

__all__ = ["COMMANDS", "build_parser", "main"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
LOG_LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR"]


class Command(NamedTuple):
    """A subcommand: the module of its parser, imported only when it is named (so
    ``blocktimesd --version`` loads no command); each imports its engine as it runs."""

    module: str
    add_parser: str  # add_X_parser(subparsers, parents)
    run: str  # run_X(args): an exit code, or a coroutine of one
    help: str  # its line in ``blocktimesd --help`` (the module's own, when it is built)
    numpy: bool = True  # False: never needs numpy (see _keep_numpy_out)


COMMANDS = {
    "run": Command(
        "blocktimesd.commands.run",
        "add_run_parser",
        "run_daemon",
        "follow the consensus chain and the Auto-EVM domain (the default command)",
        numpy=False,
    ),
    "backfill": Command(
        "blocktimesd.commands.backfill",
        "add_backfill_parser",
        "run_backfill",
        "fetch the rows of a past range of blocks",
        numpy=False,
    ),
    "report": Command(
        "blocktimesd.commands.report",
        "add_report_parser",
        "run_report",
        "block-time metrics from the dataset (percentiles, jitter, outliers, gaps)",
    ),
    "validate": Command(
        "blocktimesd.commands.validate",
        "add_validate_parser",
        "run_validate",
        "check the dataset (duplicates, gaps, parent links, deltas, mapping)",
    ),
    "devnet": Command(
        "blocktimesd.commands.devnet",
        "add_devnet_parser",
        "run_devnet",
        "run the simulated Autonomys network (consensus + Auto-EVM)",
    ),
}


def _attr(command: Command, name: str) -> Callable[..., Any]:
    function: Callable[..., Any] = getattr(importlib.import_module(command.module), name)
    return function


def build_parser(commands: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser, with the full parsers of ``commands`` (default: all) and a one-line
    stand-in for each other subcommand."""
    parser = argparse.ArgumentParser(
        prog="blocktimesd",
        description="Measure block times of the Autonomys Network. With no command, "
        "runs the daemon (blocktimesd run).",
    )
    parser.add_argument("--version", action="version", version=f"blocktimesd {__version__}")
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=LOG_LEVELS,
        help="logging threshold (default: INFO)",
    )
    parser.add_argument(
        "--backfill-range",
        metavar="START:END",
        help="one-shot backfill of blocks START to END, then exit: short for "
        "`blocktimesd backfill --backfill-range START:END` (the other flags go to backfill; "
        "see blocktimesd backfill --help) (default: none; the daemon runs)",
    )
    # Subcommands accept --log-level too, after their name.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        default=argparse.SUPPRESS,
        help="logging threshold (default: INFO)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = set(COMMANDS if commands is None else commands)
    for name, command in COMMANDS.items():
        if name in wanted:
            _attr(command, command.add_parser)(sub, [common])
        else:
            sub.add_parser(name, help=command.help, add_help=False)
    return parser


def _command_of(argv: Sequence[str]) -> str | None:
    """The subcommand named in ``argv``: the first word that is a command, or else the
    first that is neither an option nor (as far as can be told) an option's value."""
    previous = ""
    for arg in argv:
        if arg in COMMANDS:
            return arg
        if not arg.startswith("-") and not (previous.startswith("-") and "=" not in previous):
            return arg
        previous = arg
    return None


def _arrow_memory() -> None:
    """Arrow's memory pool, unless the environment names one: jemalloc on Linux.

    Arrow's default there (mimalloc) keeps about 30 MiB more after each Parquet file
    is written, which is most of a backfill's peak beyond its imports; jemalloc is as
    fast and gives it back.  Read when pyarrow is first imported, so set before.
    """
    if sys.platform == "linux":
        os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "jemalloc")


def _keep_numpy_out() -> None:
    """Import pyarrow without numpy, unless either is loaded already.

    pyarrow imports numpy whenever it is installed (matplotlib, for the HTML report,
    brings it), for conversions that the daemon and the backfill never make.  numpy is
    optional to pyarrow, and without it a backfill's peak RSS is about 11 MiB lower.  For
    the process's own command only (``main()`` of the console script): a caller of
    :func:`main` in its own process keeps its numpy.
    """
    if "pyarrow" not in sys.modules:
        sys.modules.setdefault("numpy", None)  # type: ignore[arg-type]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command of ``argv`` (default: the process's own arguments); its exit code.

    Run as the process's own command (no ``argv``), a command that returns its code
    ends the process at once (see :func:`_exit_at_once`)."""
    if argv is not None:
        return _main(argv, whole_process=False)
    return _exit_at_once(_main(sys.argv[1:], whole_process=True))


def _exit_at_once(code: int) -> int:
    """End the process with ``code`` now, skipping the interpreter's teardown.

    By the time a command returns its code it has closed its files (every Parquet file
    fsynced and renamed into place), its connections and its thread pool; what is left
    is freeing every module and object one by one, about 40 ms after a backfill (a
    twelfth of a 20,000-block backfill's whole run).  The logs and standard streams are
    flushed first.  With any other thread still alive, or a stream that cannot be
    flushed (a closed pipe), the code is returned for the usual exit instead.
    """
    if threading.active_count() > 1:
        return code
    try:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        return code
    os._exit(code)


def _main(argv: Sequence[str], *, whole_process: bool) -> int:
    argv = list(argv)
    _arrow_memory()
    try:
        with loading_modules():  # the command's module and what it imports
            if any(arg.startswith("--backfill-range") for arg in argv):
                from blocktimesd.commands.backfill import rewrite_backfill_range

                argv = rewrite_backfill_range(argv) or argv  # the one-shot form
            named = _command_of(argv)
            helping = named is None and any(arg in ("-h", "--help", "--version") for arg in argv)
            # Only the named command's parser is built (none for `--help`: one line each).
            parser = build_parser(
                [] if helping or named not in (None, *COMMANDS) else [named or "run"]
            )
        if named is None and not helping:  # plain `blocktimesd [flags]` runs the daemon
            argv = ["run", *argv]
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 on --help
        return int(exc.code or 0)
    except ConfigError as exc:
        print(f"blocktimesd: {exc}", file=sys.stderr)
        return EXIT_USAGE
    logging.basicConfig(
        level=args.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # websockets logs every server start and stop at INFO; operators need only its warnings.
    logging.getLogger("websockets").setLevel(max(logging.WARNING, logging.getLogger().level))
    command = COMMANDS[args.command]
    if whole_process and not command.numpy:
        _keep_numpy_out()
    try:
        result = _attr(command, command.run)(args)
        if isinstance(result, Coroutine):
            return _run_async(result)
        return int(result)
    except ConfigError as exc:
        print(f"blocktimesd: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BlocktimesError as exc:
        print(f"blocktimesd: {exc}", file=sys.stderr)
        return EXIT_FAILURE


def _run_async(coro: Coroutine[Any, Any, int]) -> int:
    """Run a subcommand on uvloop; SIGINT/SIGTERM cancel it, a second one forces exit."""
    import asyncio

    import uvloop

    async def runner() -> int:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        signals = 0

        def on_signal(signum: int) -> None:
            nonlocal signals
            signals += 1
            if signals > 1:
                logging.getLogger("blocktimesd").warning("second signal: exiting now")
                raise SystemExit(128 + signum)
            task.cancel()

        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, on_signal, signum)
        try:
            return await coro
        except asyncio.CancelledError:
            if signals:
                return EXIT_OK
            raise

    result: int = uvloop.run(runner())
    return result
