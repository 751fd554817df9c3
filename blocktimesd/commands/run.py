"""``blocktimesd run`` (also plain ``blocktimesd``): the daemon's command line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from blocktimesd.argtypes import add_break_lease_argument
from blocktimesd.errors import ConfigError

if TYPE_CHECKING:  # imported when the daemon runs: `blocktimesd --help` stays fast
    from blocktimesd.aio.app import App
    from blocktimesd.config.model import Config
    from blocktimesd.dataset.objects import DataPath

__all__ = ["DEVNET_SPEED", "add_run_arguments", "add_run_parser", "run_daemon"]

log = logging.getLogger(__name__)

_PROBE_TIMEOUT_S = 5.0
DEVNET_SPEED = 20.0
# What the flags override in load_config, and how its messages name them (as typed).
_FLAGS = {
    "consensus_rpc_ws": "--consensus-rpc",
    "auto_evm_rpc_ws": "--auto-evm-rpc",
    "metrics_addr": "--metrics-addr",
    "data_dir": "--data",
}


def add_run_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "run",
        parents=parents,
        help=RUN_HELP,
        description="Follow every configured chain, write confirmed rows to Parquet, and "
        "serve Prometheus metrics. Settings: --config FILE, then environment variables "
        "(CONSENSUS_RPC_WS, AUTO_EVM_RPC_WS, K_CONSENSUS, K_AUTO_EVM, DATA_DIR, METRICS_ADDR, "
        "MAX_ROWS_PER_FILE, MAX_FILE_MINUTES, MAX_INFLIGHT_REQUESTS), then these flags; "
        "see docs/runbook/config.md. Rows are written once a block is K deep, and are on "
        "disk within about a minute of that.",
    )
    add_run_arguments(p)


RUN_HELP = "follow the consensus chain and the Auto-EVM domain (the default command)"


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    from blocktimesd.config.model import MAINNET
    from blocktimesd.core.chains import ChainKind

    consensus = MAINNET[ChainKind.CONSENSUS].endpoint
    auto_evm = MAINNET[ChainKind.AUTO_EVM].endpoint
    p.add_argument(
        "--config",
        metavar="FILE",
        help="TOML configuration file (default: none; every setting at its default)",
    )
    p.add_argument(
        "--data",
        metavar="DIR",
        help="dataset directory or s3://bucket/prefix (default: $DATA_DIR, else the file's "
        "data_dir, else data)",
    )
    add_break_lease_argument(p)
    p.add_argument(
        "--consensus-rpc",
        metavar="URL[,URL...]",
        help="WebSocket RPC endpoints of the consensus chain, tried in order (default: "
        f"$CONSENSUS_RPC_WS, else the file's, else {consensus})",
    )
    p.add_argument(
        "--auto-evm-rpc",
        metavar="URL[,URL...]",
        help="WebSocket RPC endpoints of the Auto-EVM domain, tried in order (default: "
        f"$AUTO_EVM_RPC_WS, else the file's, else {auto_evm})",
    )
    p.add_argument(
        "--metrics-addr",
        metavar="HOST:PORT",
        help="where to serve /metrics, /healthz and /readyz; port 0 picks a free port "
        "(default: $METRICS_ADDR, else the file's, else 127.0.0.1:9615)",
    )
    p.add_argument(
        "--devnet-if-unreachable",
        action="store_true",
        help="when no configured endpoint answers within 5 s, follow the built-in simulated "
        "network instead, writing to DIR/devnet/<genesis>-<start time>/ (default: off; "
        "make run turns it on)",
    )
    p.add_argument(
        "--devnet-speed",
        type=float,
        default=DEVNET_SPEED,
        metavar="X",
        help="how many times faster than real time the simulated network of "
        f"--devnet-if-unreachable runs (default: {DEVNET_SPEED:g})",
    )


def shown_location(data_dir: DataPath) -> str:
    """DATA_DIR as the banner shows it: an absolute path, or the s3:// URL."""
    return str(data_dir.resolve() if isinstance(data_dir, Path) else data_dir)


def _overrides(args: argparse.Namespace) -> dict[str, object]:
    return {
        "data_dir": args.data,
        "consensus_rpc_ws": args.consensus_rpc,
        "auto_evm_rpc_ws": args.auto_evm_rpc,
        "metrics_addr": args.metrics_addr,
    }


def _load(args: argparse.Namespace) -> Config:
    from blocktimesd.config.load import load_config

    try:
        return load_config(args.config, os.environ, _overrides(args))
    except ConfigError as exc:
        # The flags as the user typed them, not the override keys behind them.
        text = str(exc)
        for key, flag in _FLAGS.items():
            text = text.replace(f"{key} (command line)", flag)
        raise ConfigError(text) from None


async def _reachable(url: str) -> bool:
    from websockets.asyncio.client import connect

    try:
        async with connect(url, open_timeout=_PROBE_TIMEOUT_S, proxy=None):
            return True
    except Exception:
        return False


async def any_reachable(config: Config) -> bool:
    urls = [url for chain in config.chains for url in chain.endpoints]
    return any(await asyncio.gather(*(_reachable(url) for url in urls)))


def on_devnet(config: Config, consensus: str, domain: str, genesis: str) -> Config:
    """The same configuration, pointed at the simulated network, writing to a dataset of
    its own: ``DATA_DIR/devnet/<genesis>/``, so that simulated rows never mix with (or
    block) a real chain's, and every simulated chain has its own."""
    from blocktimesd.core.chains import ChainKind

    urls = {ChainKind.CONSENSUS: consensus, ChainKind.AUTO_EVM: domain}
    chains = tuple(
        dataclasses.replace(
            chain,
            endpoints=(urls.get(chain.kind, consensus),),
            expected_chain_name=None,
            expected_genesis_hash=None,
        )
        for chain in config.chains
    )
    # The simulated chain is made anew at every start (same genesis, other blocks), so
    # each run gets its own dataset, named by genesis and start time.
    started = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    data_dir = config.data_dir / "devnet" / f"{genesis.removeprefix('0x')[:16]}-{started}"
    return dataclasses.replace(config, chains=chains, data_dir=data_dir)


async def run_daemon(args: argparse.Namespace) -> int:
    from blocktimesd.aio.app import App
    from blocktimesd.devnet.app import Devnet
    from blocktimesd.devnet.params import ChainParams

    config = _load(args)
    devnet: Devnet | None = None
    if args.devnet_if_unreachable and not await any_reachable(config):
        devnet = Devnet(ChainParams(seed=1, history=300), speed=args.devnet_speed)
        urls = await devnet.start()
        sys.stdout.write(
            "No configured endpoint is reachable; following the built-in simulated Autonomys "
            f"network instead (blocktimesd devnet, {args.devnet_speed:g}x speed):\n"
            f"  consensus {urls.consensus}\n  auto-evm  {urls.domain}\n"
        )
        genesis = devnet.network.consensus.canonical[0].hash_hex
        config = on_devnet(config, urls.consensus, urls.domain, genesis)
    app = App(config, break_lease=args.break_lease)
    announcer: asyncio.Task[None] | None = None
    try:
        try:
            await app.start()
        except BaseException:
            await app.stop()
            raise
        # Connecting is not following: that is said once each chain really follows.
        sys.stdout.write(
            f"blocktimesd is connecting to {', '.join(c.chain for c in config.chains)}\n"
            f"  metrics  {app.metrics_url}\n  dataset  {shown_location(config.data_dir)}\n"
        )
        sys.stdout.flush()
        announcer = asyncio.create_task(announce(app), name="announce")
        await app.run()
    finally:
        if announcer is not None:
            announcer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await announcer
        if devnet is not None:
            await devnet.stop()
    return 0


async def announce(app: App, poll_s: float = 0.2) -> None:
    """Say on stdout when each chain first follows, and when every chain does."""
    waiting = [chain.chain for chain in app.config.chains]
    ks = {chain.chain: chain.k for chain in app.config.chains}
    while waiting:
        await asyncio.sleep(poll_s)
        for name in list(waiting):
            follower = app.followers.get(name)
            if follower is None or not follower.following:
                continue
            waiting.remove(name)
            sys.stdout.write(
                f"  {name} following: rows from {ks[name]} blocks deep, on disk within "
                "about a minute\n"
            )
        if not waiting:
            names = ", ".join(chain.chain for chain in app.config.chains)
            sys.stdout.write(f"blocktimesd is following {names}\n")
        sys.stdout.flush()
