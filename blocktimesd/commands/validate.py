"""``blocktimesd validate``: the command line of the dataset's checks.

The checks are :mod:`blocktimesd.analysis.validation`, imported when the command runs.

Exit codes: 0 no FAIL, 1 a FAIL, a file that cannot be trusted (or DuckDB could not
read the files), 2 usage errors such as a missing or unreadable DATA_DIR.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from blocktimesd.argtypes import add_dataset_arguments, data_dir_from
from blocktimesd.errors import ConfigError, StorageError

__all__ = ["add_validate_parser", "run_validate"]


_DESCRIPTION = """\
Check the dataset (DATA_DIR/block_times) per chain: duplicate block numbers or hashes,
missing block numbers, parent links of consecutive rows, deltas recomputed from the
timestamps, rows in the right partition; the distribution of deltas and impossible
ones; domain rows against the consensus rows they name (null mappings, number
mismatches, timestamp disagreements). First, every file's footer is checked against
its name. Runs scripts/duckdb/validate_*.sql, which the plain duckdb CLI runs too.
Impossible values, which a node that lies (or a bug) puts in the dataset, fail the
validation: a block stamped at or before its parent (non_positive_delta), a domain
block whose timestamp differs from its consensus block's (timestamp_disagreement); the
verdict names the blocks, the files that hold them and the backfill that fetches them
again. Exit code 0 when no check failed (warnings allowed), 1 when one did or a file
cannot be trusted, 2 on usage errors (a missing or unreadable DATA_DIR)."""


def add_validate_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    # Each help states its true default once: ArgumentDefaultsHelpFormatter appended
    # "(default: None)" to options whose default is decided later, and doubled the rest.
    p = sub.add_parser(
        "validate",
        parents=parents,
        help="check the dataset (duplicates, gaps, parent links, deltas, mapping)",
        description=_DESCRIPTION,
    )
    add_dataset_arguments(p, "check")
    p.add_argument(
        "--format",
        choices=("table", "json"),
        default="table",
        help="table for people, json for scripts (default: %(default)s)",
    )
    p.add_argument(
        "--expected-block-ms",
        type=int,
        default=6000,
        metavar="MS",
        help="expected block time, for the outliers (default: %(default)s)",
    )
    p.add_argument(
        "--outlier-factor",
        type=float,
        default=3.0,
        metavar="X",
        help="outlier: delta > expected block time x this (default: %(default)s)",
    )
    p.add_argument(
        "--top",
        type=int,
        default=10,
        metavar="N",
        help="outliers and timestamp disagreements listed per chain (default: %(default)s)",
    )


def run_validate(args: argparse.Namespace) -> int:
    """Print the checks; 0 all passed, 1 a check failed, 2 on usage errors."""
    import duckdb

    from blocktimesd.analysis.queries import check_chains
    from blocktimesd.analysis.tables import render_json, render_text
    from blocktimesd.analysis.validation import advice, validate, verdict
    from blocktimesd.dataset.scan import dataset_chains

    data_dir = data_dir_from(args.data)
    chains = tuple(dict.fromkeys(args.chain or ()))
    try:
        check_chains(chains, dataset_chains(data_dir), data_dir)
        settings = {
            "expected_block_ms": args.expected_block_ms,
            "outlier_factor": args.outlier_factor,
            "top": args.top,
        }
        result = validate(data_dir, chains, settings=settings)
    except ConfigError as exc:  # DataDirUnusable included: a path to fix
        print(f"blocktimesd: {exc}", file=sys.stderr)
        return 2
    except StorageError as exc:  # a file that cannot be trusted, a disk error
        print(f"blocktimesd: {exc}", file=sys.stderr)
        return 1
    except duckdb.Error as exc:
        print(f"blocktimesd: cannot validate {data_dir}: {exc}", file=sys.stderr)
        return 1
    if args.format == "json":
        header = {
            "data_dir": str(data_dir),
            "ok": result.ok,
            "failures": [{**r, "advice": advice(data_dir, r)} for r in result.failures],
            "warnings": result.warnings,
        }
        sys.stdout.write(render_json(result.tables, header))
    else:
        sys.stdout.write(render_text(result.tables) + "\n" + verdict(data_dir, result) + "\n")
    return 0 if result.ok else 1
