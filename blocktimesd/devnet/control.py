"""The ``devnet_*`` JSON-RPC methods: how a test steers the running simulated network.

Each method reads its arguments (a list, or an object with the names below), acts on
the :class:`~blocktimesd.devnet.app.Devnet` and answers; bad arguments get Substrate's
``-32602 Invalid params`` with the reason in ``data``.  Both endpoints answer them and
they act on both nodes, except ``devnet_outage``, which names the chain it takes down.

| method | arguments | effect |
|---|---|---|
| ``devnet_setFaults`` | ``{fault: value, ...}`` | change fault settings; answers all of them |
| ``devnet_getFaults`` | | the fault settings |
| ``devnet_stall`` | ``seconds`` | stop answering and notifying for a while |
| ``devnet_dropConnections`` | | cut every connection without a close frame |
| ``devnet_dropSubscriptions`` | | forget every subscription silently |
| ``devnet_reorg`` | ``depth``, ``length`` | a branch replaces the last ``depth`` blocks |
| ``devnet_upgrade`` | ``at`` | upgrade both runtimes at consensus height ``at`` |
| ``devnet_outage`` | ``chain``, ``seconds`` | that endpoint refuses connections for a while |
| ``devnet_heal`` | | end stalls and outages in progress |
| ``devnet_info`` | | seed, speed, simulated time, best blocks, faults injected |
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from blocktimesd.core import jsonrpc
from blocktimesd.devnet.network import CONSENSUS, DOMAIN, BestChanged
from blocktimesd.devnet.params import FaultParams
from blocktimesd.errors import RpcError

if TYPE_CHECKING:
    from blocktimesd.devnet.app import Devnet

__all__ = ["Control"]

_Params = list[Any] | dict[str, Any]


def _invalid(detail: str) -> RpcError:
    return RpcError(jsonrpc.INVALID_PARAMS, "Invalid params", detail)


def _arguments(params: _Params, *names: str) -> list[Any]:
    """The arguments called ``names``, by position or by name (an object, or a list
    holding one object); ``None`` where absent."""
    if isinstance(params, list) and len(params) == 1 and isinstance(params[0], dict):
        params = params[0]
    if isinstance(params, dict):
        unknown = sorted(set(params) - set(names))
        if unknown:
            raise _invalid(f"unknown arguments {unknown}; known: {list(names)}")
        return [params.get(name) for name in names]
    if len(params) > len(names):
        raise _invalid(f"at most {len(names)} arguments ({', '.join(names)})")
    return [*params, *[None] * (len(names) - len(params))]


def _whole(value: Any, name: str, default: int | None = None) -> int | None:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid(f"{name} must be a whole number, got {value!r}")
    return value


def _seconds(value: Any, name: str, default: float) -> float:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise _invalid(f"{name} must be a number of seconds, got {value!r}")
    return float(value)


class Control:
    """Answers the control methods of one :class:`Devnet`."""

    def __init__(self, devnet: Devnet) -> None:
        self.devnet = devnet
        self._methods: dict[str, Callable[[_Params], Any]] = {
            "devnet_setFaults": self._set_faults,
            "devnet_getFaults": lambda p: dataclasses.asdict(devnet.faults),
            "devnet_stall": self._stall,
            "devnet_dropConnections": self._drop_connections,
            "devnet_dropSubscriptions": lambda p: devnet.drop_subscriptions(),
            "devnet_reorg": self._reorg,
            "devnet_upgrade": self._upgrade,
            "devnet_outage": self._outage,
            "devnet_heal": self._heal,
            "devnet_info": self._info,
        }

    def __call__(self, method: str, params: _Params) -> Any:
        handler = self._methods.get(method)
        if handler is None:
            raise RpcError(jsonrpc.METHOD_NOT_FOUND, "Method not found")
        return handler(params)

    def _set_faults(self, params: _Params) -> dict[str, Any]:
        arg = params[0] if isinstance(params, list) and params else params
        if not isinstance(arg, dict):
            raise _invalid("expected an object of fault settings")
        known = {f.name for f in dataclasses.fields(FaultParams)}
        unknown = sorted(set(arg) - known)
        if unknown:
            raise _invalid(f"unknown faults {unknown}; known: {sorted(known)}")
        try:
            return dataclasses.asdict(self.devnet.set_faults(**arg))
        except TypeError as exc:
            raise _invalid(str(exc)) from None

    def _stall(self, params: _Params) -> bool:
        (seconds,) = _arguments(params, "seconds")
        duration = _seconds(seconds, "seconds", self.devnet.faults.stall_duration_s)
        # Answer first: the stall starts on the next loop iteration.
        asyncio.get_running_loop().call_soon(self.devnet.stall, duration)
        return True

    def _drop_connections(self, params: _Params) -> bool:
        # Answer first: the cut happens on the next loop iteration.
        asyncio.get_running_loop().call_soon(self.devnet.drop_connections)
        return True

    def _reorg(self, params: _Params) -> dict[str, Any]:
        depth_arg, length_arg = _arguments(params, "depth", "length")
        depth = _whole(depth_arg, "depth")
        if depth is None:
            raise _invalid("depth is required: the number of best blocks to replace")
        try:
            events = self.devnet.reorg(depth, _whole(length_arg, "length"))
        except ValueError as exc:
            raise _invalid(str(exc)) from None
        retracted = {CONSENSUS: 0, DOMAIN: 0}
        for event in events:
            if isinstance(event, BestChanged):
                retracted[event.chain] += len(event.change.retracted)
        best = self.devnet.network.consensus.best
        return {
            "consensusRetracted": retracted[CONSENSUS],
            "domainRetracted": retracted[DOMAIN],
            "consensusBest": best.number,
            "consensusBestHash": best.hash_hex,
            "domainBest": self.devnet.network.domain.best.number,
        }

    def _upgrade(self, params: _Params) -> int:
        (at,) = _arguments(params, "at")
        try:
            return self.devnet.upgrade(_whole(at, "at"))
        except ValueError as exc:
            raise _invalid(str(exc)) from None

    def _outage(self, params: _Params) -> bool:
        chain, seconds = _arguments(params, "chain", "seconds")
        if chain not in (CONSENSUS, DOMAIN):
            raise _invalid(f"chain must be {CONSENSUS!r} or {DOMAIN!r}, got {chain!r}")
        duration = _seconds(seconds, "seconds", self.devnet.faults.stall_duration_s)
        # Answer first: the endpoint that carries this call may be the one going down.
        asyncio.get_running_loop().call_soon(self.devnet.outage, chain, duration)
        return True

    def _heal(self, params: _Params) -> bool:
        self.devnet.heal()
        return True

    def _info(self, params: _Params) -> dict[str, Any]:
        devnet, network = self.devnet, self.devnet.network
        return {
            "seed": devnet.params.seed,
            "speed": devnet.speed,
            "simulatedTimeMs": devnet.sim_now_ms(),
            "consensusBest": network.consensus.best.number,
            "domainBest": network.domain.best.number,
            "consensusSpec": network.consensus.best.spec_version,
            "domainSpec": network.domain.best.spec_version,
            "injected": dict(sorted(devnet.injected().items())),
        }
