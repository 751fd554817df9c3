"""``blocktimesd run`` (also plain ``blocktimesd``): the daemon's command line."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import sys
import time
from typing import Any

from websockets.asyncio.client import connect

from blocktimesd.aio.app import App
from blocktimesd.aio.chain import ChainKind
from blocktimesd.config import Config, load_config
from blocktimesd.devnet.app import Devnet
from blocktimesd.devnet.params import ChainParams

__all__ = ["add_run_parser", "run_daemon"]

log = logging.getLogger(__name__)

_PROBE_TIMEOUT_S = 5.0


def add_run_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "run",
        parents=parents,
        help="follow the consensus chain and the Auto-EVM domain (the default command)",
        description="Follow every configured chain, write confirmed rows to Parquet, and "
        "serve Prometheus metrics. Settings: --config FILE, then environment variables "
        "(CONSENSUS_RPC_WS, AUTO_EVM_RPC_WS, K_CONSENSUS, K_AUTO_EVM, DATA_DIR, METRICS_ADDR, "
        "MAX_ROWS_PER_FILE, MAX_FILE_MINUTES, MAX_INFLIGHT_HEADERS), then these flags; "
        "see docs/runbook/config.md.",
    )
    add_run_arguments(p)


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="TOML configuration file")
    p.add_argument("--data", metavar="DIR", help="dataset directory (overrides DATA_DIR)")
    p.add_argument(
        "--devnet-if-unreachable",
        action="store_true",
        help="when no configured endpoint answers, follow the built-in simulated network "
        "instead (for trying blocktimesd without a node)",
    )
    p.add_argument(
        "--devnet-speed",
        type=float,
        default=20.0,
        help="simulated network speed for --devnet-if-unreachable",
    )


async def _reachable(url: str) -> bool:
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
    config = load_config(args.config, os.environ, {"data_dir": args.data})
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
    app = App(config)
    try:
        try:
            await app.start()
        except BaseException:
            await app.stop()
            raise
        sys.stdout.write(
            f"blocktimesd is following {', '.join(c.name for c in config.chains)}\n"
            f"  metrics  {app.metrics_url}\n  dataset  {config.data_dir.resolve()}\n"
        )
        sys.stdout.flush()
        await app.run()
    finally:
        if devnet is not None:
            await devnet.stop()
    return 0
