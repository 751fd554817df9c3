"""Command line: ``blocktimesd <subcommand>``; :func:`main` returns the exit code.

Exit codes: 0 ok, 1 runtime failure, 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Coroutine, Sequence
from typing import Any

import uvloop

from blocktimesd import __version__
from blocktimesd.backfill_cli import add_backfill_parser, rewrite_backfill_range, run_backfill
from blocktimesd.devnet.cli import add_devnet_parser, run_devnet
from blocktimesd.errors import BlocktimesError, ConfigError
from blocktimesd.report import add_report_parser, run_report
from blocktimesd.run_cli import add_run_parser, run_daemon
from blocktimesd.validate import add_validate_parser, run_validate

__all__ = ["main"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
LOG_LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="blocktimesd",
        description="Measure block times of the Autonomys Network.",
    )
    parser.add_argument("--version", action="version", version=f"blocktimesd {__version__}")
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=LOG_LEVELS,
        help="logging threshold (default: INFO)",
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
    add_run_parser(sub, [common])
    add_backfill_parser(sub, [common])
    add_report_parser(sub, [common])
    add_validate_parser(sub, [common])
    add_devnet_parser(sub, [common])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        argv = rewrite_backfill_range(argv) or argv  # `--backfill-range N:M`, the one-shot form
        args = parser.parse_args(argv)
        if args.command is None:  # plain `blocktimesd [--log-level L]` runs the daemon
            args = parser.parse_args(["run", *argv])
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
    try:
        if args.command == "devnet":
            return _run_async(run_devnet(args))
        if args.command == "run":
            return _run_async(run_daemon(args))
        if args.command == "backfill":
            return _run_async(run_backfill(args))
        if args.command == "report":
            return run_report(args)
        if args.command == "validate":
            return run_validate(args)
    except ConfigError as exc:
        print(f"blocktimesd: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BlocktimesError as exc:
        print(f"blocktimesd: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    parser.print_help(sys.stderr)
    return EXIT_USAGE


def _run_async(coro: Coroutine[Any, Any, int]) -> int:
    """Run a subcommand on uvloop; SIGINT/SIGTERM cancel it, a second one forces exit."""

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
