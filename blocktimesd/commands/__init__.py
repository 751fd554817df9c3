"""The subcommands' command lines, one module each: ``run``, ``backfill``, ``report``,
``validate``, ``devnet``.

Each builds its argparse parser and turns the arguments into a call of its engine
(:mod:`blocktimesd.aio.app`, :mod:`blocktimesd.backfill`, :mod:`blocktimesd.analysis`,
:mod:`blocktimesd.devnet`), imported only when the command runs, so that
``blocktimesd --version`` and ``--help`` load none of them.  :mod:`blocktimesd.cli`
dispatches to them.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

__all__ = ["loading_modules"]


@contextlib.contextmanager
def loading_modules() -> Iterator[None]:
    """Pause the cyclic garbage collector while a command's modules are imported.

    An import creates objects (functions, classes, constants) that live as long as the
    process, so the collections that their allocations set off find nothing to free;
    a backfill imports a few hundred modules before its first request, and they cost
    it about a twentieth of that time.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
