"""The subcommands' command lines, one module each: ``run``, ``backfill``, ``report``,
``validate``, ``devnet``.

Each builds its argparse parser and turns the arguments into a call of its engine
(:mod:`blocktimesd.aio.app`, :mod:`blocktimesd.backfill`, :mod:`blocktimesd.analysis`,
:mod:`blocktimesd.devnet`), imported only when the command runs, so that
``blocktimesd --version`` and ``--help`` load none of them.  :mod:`blocktimesd.cli`
dispatches to them.
"""
