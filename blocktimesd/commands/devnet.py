"""``blocktimesd devnet``: run the simulated Autonomys network until a signal.

The simulator (:mod:`blocktimesd.devnet`) is imported when the command runs: its
servers need websockets, which ``blocktimesd --help`` does not.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from blocktimesd.argtypes import non_negative, positive
from blocktimesd.devnet.params import ChainParams, FaultParams, RpcLimits
from blocktimesd.errors import ConfigError

__all__ = ["add_devnet_parser", "params_from_args", "run_devnet"]

_DESCRIPTION = """\
Run a simulated Autonomys network: the consensus chain and its Auto-EVM domain, each
behind a Substrate-compatible JSON-RPC WebSocket endpoint. Blocks, digests,
extrinsics, events, storage and metadata are encoded as the real runtimes encode them.
Everything is reproducible from --seed. When both endpoints accept connections, one
line per chain is printed to stdout: 'consensus ws://HOST:PORT' and
'auto-evm ws://HOST:PORT'. Faults can also be changed at run time with the
devnet_setFaults JSON-RPC method (see docs/devnet.md)."""


def _probability(text: str) -> float:
    value = non_negative(float)(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"a probability is between 0 and 1, got {text}")
    return value


def _port(text: str) -> int:
    value = non_negative(int)(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"not a TCP port: {text}")
    return value


def add_devnet_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "devnet",
        parents=parents,
        help="run the simulated Autonomys network (consensus + Auto-EVM)",
        description=_DESCRIPTION,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    d = ChainParams()
    f = FaultParams()
    net = p.add_argument_group("endpoints")
    net.add_argument("--host", default="127.0.0.1", help="address to listen on")
    net.add_argument(
        "--consensus-port", type=_port, default=9944, help="consensus port; 0 picks a free one"
    )
    net.add_argument(
        "--domain-port", type=_port, default=9945, help="Auto-EVM port; 0 picks a free one"
    )

    chain = p.add_argument_group("chain dynamics")
    chain.add_argument("--seed", type=int, default=d.seed, help="seed of every random choice")
    chain.add_argument(
        "--speed",
        type=float,
        default=1.0,
        help="simulated time runs this many times faster than wall time",
    )
    chain.add_argument(
        "--history",
        type=non_negative(int),
        default=d.history,
        help="consensus blocks built before serving",
    )
    chain.add_argument(
        "--fork-rate",
        type=_probability,
        default=d.fork_rate,
        help="share of new blocks that meet a competing block (half of them reorg the chain)",
    )
    chain.add_argument(
        "--chain-stall-every",
        type=non_negative(float),
        default=d.stall_every_s,
        help="mean simulated seconds between ~1 minute block production stalls; 0 disables",
    )
    chain.add_argument(
        "--segment-rate",
        type=_probability,
        default=d.segment_rate,
        help="share of blocks that store a burst of 1-3 segment headers",
    )
    chain.add_argument(
        "--upgrade-at",
        type=non_negative(int),
        default=0,
        help="consensus height of a runtime upgrade of both runtimes (spec_version + 1, "
        "with changed call indices); 0 disables",
    )

    lim = p.add_argument_group("RPC server limits (a Substrate node's defaults)")
    r = RpcLimits()
    lim.add_argument(
        "--rpc-max-connections",
        type=positive(int),
        default=r.max_connections,
        help="connections per endpoint; more are refused with HTTP 429",
    )
    lim.add_argument(
        "--rpc-message-buffer-capacity-per-connection",
        type=positive(int),
        default=r.messages_per_connection,
        help="messages in progress per connection; beyond it the connection is not read",
    )
    lim.add_argument(
        "--rpc-max-subscriptions-per-connection",
        type=non_negative(int),
        default=r.max_subscriptions_per_connection,
        help="subscriptions per connection; more get error -32006",
    )

    faults = p.add_argument_group("faults (also settable at run time with devnet_setFaults)")
    faults.add_argument(
        "--latency-ms",
        type=non_negative(float),
        default=f.latency_ms,
        help="added to every call; calls in one batch run one after another",
    )
    faults.add_argument(
        "--latency-jitter-ms",
        type=non_negative(float),
        default=f.latency_jitter_ms,
        help="uniform random extra latency per call",
    )
    faults.add_argument(
        "--drop-connections-every",
        type=non_negative(float),
        metavar="S",
        default=f.drop_connections_every_s,
        help="cut every connection (no close frame) every S seconds; 0 disables",
    )
    faults.add_argument(
        "--stall-every",
        type=non_negative(float),
        metavar="S",
        default=f.stall_every_s,
        help="every S seconds stop answering and notifying for --stall-duration; 0 disables",
    )
    faults.add_argument(
        "--stall-duration",
        type=non_negative(float),
        metavar="S",
        default=f.stall_duration_s,
        help="length of each stall",
    )
    faults.add_argument(
        "--error-rate",
        type=_probability,
        default=f.error_rate,
        help="share of calls answered with a JSON-RPC error",
    )
    faults.add_argument(
        "--prune-state",
        type=non_negative(int),
        metavar="N",
        default=f.prune_state,
        help="keep state of only the last N blocks, like a non-archive node; 0 keeps all",
    )
    faults.add_argument(
        "--prune-bodies",
        type=non_negative(int),
        metavar="N",
        default=f.prune_bodies,
        help="keep bodies of only the last N blocks; 0 keeps all",
    )
    faults.add_argument(
        "--unsafe-rpc", action="store_true", help="allow unsafe methods such as state_queryStorage"
    )
    faults.add_argument(
        "--subscription-buffer",
        type=non_negative(int),
        default=f.subscription_buffer,
        help="notifications a lagging subscriber may owe before it is dropped silently",
    )
    faults.add_argument(
        "--drop-subscriptions-every",
        type=non_negative(float),
        metavar="S",
        default=f.drop_subscriptions_every_s,
        help="every S seconds forget every subscription silently (the connection stays "
        "open, no error is sent); 0 disables",
    )
    faults.add_argument(
        "--notification-delay-ms",
        type=non_negative(float),
        metavar="MS",
        default=f.notification_delay_ms,
        help="hold subscription notifications for MS ms, then send what piled up at once "
        "(a lagging node)",
    )


def params_from_args(args: argparse.Namespace) -> tuple[ChainParams, FaultParams]:
    if args.speed <= 0:
        raise ConfigError(f"--speed must be positive, got {args.speed}")
    chain = ChainParams(
        seed=args.seed,
        history=args.history,
        fork_rate=args.fork_rate,
        stall_every_s=args.chain_stall_every,
        segment_rate=args.segment_rate,
        upgrade_at=args.upgrade_at,
    )
    faults = FaultParams(
        latency_ms=args.latency_ms,
        latency_jitter_ms=args.latency_jitter_ms,
        drop_connections_every_s=args.drop_connections_every,
        stall_every_s=args.stall_every,
        stall_duration_s=args.stall_duration,
        error_rate=args.error_rate,
        prune_state=args.prune_state,
        prune_bodies=args.prune_bodies,
        unsafe_rpc=args.unsafe_rpc,
        subscription_buffer=args.subscription_buffer,
        drop_subscriptions_every_s=args.drop_subscriptions_every,
        notification_delay_ms=args.notification_delay_ms,
    )
    return chain, faults


async def run_devnet(args: argparse.Namespace) -> int:
    """Serve the simulated network until cancelled; its endpoints are printed first."""
    from blocktimesd.devnet.app import Devnet

    chain, faults = params_from_args(args)
    devnet = Devnet(
        chain,
        faults,
        host=args.host,
        consensus_port=args.consensus_port,
        domain_port=args.domain_port,
        speed=args.speed,
        limits=RpcLimits(
            args.rpc_max_connections,
            args.rpc_message_buffer_capacity_per_connection,
            args.rpc_max_subscriptions_per_connection,
        ),
    )
    try:
        urls = await devnet.start()
    except OSError as exc:
        await devnet.stop()
        raise ConfigError(
            f"cannot listen on {args.host} ports {args.consensus_port}/{args.domain_port}: "
            f"{exc.strerror}; choose other ports with --consensus-port/--domain-port "
            "(0 picks free ones)"
        ) from None
    try:
        sys.stdout.write(f"consensus {urls.consensus}\nauto-evm {urls.domain}\n")
        sys.stdout.flush()
        await asyncio.Event().wait()  # until a signal cancels us
    finally:
        await devnet.stop()
    return 0
