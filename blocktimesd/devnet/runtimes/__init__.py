"""The devnet's two runtimes, described in code: consensus (``subspace``) and Auto-EVM.

``consensus_runtime(6)`` / ``domain_runtime(0)`` mirror the real runtimes the devnet
imitates; ``consensus_runtime(7)`` / ``domain_runtime(1)`` are simulated upgrades that
move indices and change a type (see :mod:`.consensus` and :mod:`.domain`).  The value
builders in those modules return Python values for the runtimes' codecs.
"""

from __future__ import annotations

from .consensus import consensus_runtime
from .domain import domain_runtime
from .frame import FINALIZATION, INITIALIZATION, apply_extrinsic, event_record

__all__ = [
    "FINALIZATION",
    "INITIALIZATION",
    "apply_extrinsic",
    "consensus_runtime",
    "domain_runtime",
    "event_record",
]
