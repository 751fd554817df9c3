"""Backfill: rows for a past range of a chain, into the daemon's own dataset.

- :mod:`~blocktimesd.backfill.engine`: the :class:`Backfill` of one chain: what is on
  disk already, the pipeline of windows, the checks that tie them together, the rows;
- :mod:`~blocktimesd.backfill.fetch`: a window's blocks, fetched and checked;
- :mod:`~blocktimesd.backfill.mapping`: domain blocks to their consensus blocks;
- :mod:`~blocktimesd.backfill.reads`: the node's other answers (best block, the block of
  a date-time, batch size) and bounded retries of start-up questions.

The command line is :mod:`blocktimesd.commands.backfill`.
"""

from __future__ import annotations

__all__: list[str] = []
