"""``blocktimesd validate``: check the dataset; exit 1 on any failed check.

Runs the SQL scripts in ``scripts/duckdb/`` unchanged (the same files an operator
runs with the plain DuckDB CLI, see ``docs/runbook/backfill.md``):

- ``validate_integrity.sql``: per chain, duplicate block numbers or hashes, missing
  block numbers, parent links of consecutive rows (``parent_hash`` = the previous
  row's ``hash``), ``delta_since_parent_ms`` = timestamp - the previous row's, rows
  in the partition of their chain and UTC date;
- ``validate_deltas.sql``: the distribution of positive deltas, outliers, deltas that
  are not positive;
- ``validate_mapping.sql``: domain rows joined to the consensus rows they name: null
  mappings, number mismatches, timestamp disagreements.

Before the scripts, every data file's footer is read and checked against its name
(row count, lowest and highest ``block_number``): a file that is damaged, or whose name
claims other blocks than it holds, misleads the daemon's resume and DuckDB alike, so
validation stops with an error naming each such file and the fix.

The last table of each script lists its checks, one line per chain and check, with a
status of ``ok``, ``warn`` (a finding about the chain, reported only) or ``FAIL``.
Exit codes: 0 no FAIL, 1 a FAIL, a file that cannot be trusted (or DuckDB could not
read the files), 2 usage errors such as a missing or unreadable DATA_DIR.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import duckdb

from blocktimesd.duck import (
    SCRIPTS_DIR,
    Table,
    add_dataset_arguments,
    check_chains,
    check_files,
    connect,
    data_dir_from,
    dataset_chains,
    run_script,
)
from blocktimesd.errors import ConfigError, StorageError
from blocktimesd.tables import render_json, render_text

__all__ = ["SCRIPTS", "Validation", "add_validate_parser", "run_validate", "validate"]

SCRIPTS = ("validate_integrity.sql", "validate_deltas.sql", "validate_mapping.sql")
CHECK_COLUMNS = ("chain", "check_name", "status", "findings", "examples")


@dataclass(frozen=True, slots=True)
class Validation:
    tables: tuple[Table, ...]  # every script's tables, in order
    checks: tuple[Table, ...]  # the last table of each script

    @property
    def failures(self) -> list[dict[str, Any]]:
        return [r for table in self.checks for r in table.records() if r["status"] == "FAIL"]

    @property
    def warnings(self) -> list[dict[str, Any]]:
        return [r for table in self.checks for r in table.records() if r["status"] == "warn"]

    @property
    def ok(self) -> bool:
        return not self.failures


def validate(
    data_dir: Path,
    chains: tuple[str, ...] = (),
    *,
    scripts_dir: Path = SCRIPTS_DIR,
    settings: dict[str, Any] | None = None,
) -> Validation:
    """Run every script over ``data_dir`` (``chains`` only, if given).

    Raises :class:`InvalidDataFile` naming every data file (of any chain: the scripts
    read them all) that cannot be read or disagrees with its name.
    """
    check_files(data_dir)
    variables: dict[str, Any] = {"data_dir": str(data_dir), **(settings or {})}
    if chains:
        variables["chains"] = list(chains)
    tables: list[Table] = []
    checks: list[Table] = []
    for script in SCRIPTS:
        short = script.removeprefix("validate_").removesuffix(".sql")
        results = run_script(connect(), scripts_dir / script, variables)
        if not results or results[-1].columns != CHECK_COLUMNS:
            raise ConfigError(f"{scripts_dir / script} does not end with its checks table")
        for i, table in enumerate(results):
            last = i == len(results) - 1
            table = replace(table, name=f"{short}_checks" if last else f"{short}_{i}")
            tables.append(table)
            if last:
                checks.append(table)
    return Validation(tuple(tables), tuple(checks))


# -- command line ------------------------------------------------------------------------

_DESCRIPTION = """\
Check the dataset (DATA_DIR/block_times) per chain: duplicate block numbers or hashes,
missing block numbers, parent links of consecutive rows, deltas recomputed from the
timestamps, rows in the right partition; the distribution of deltas and impossible
ones; domain rows against the consensus rows they name (null mappings, number
mismatches, timestamp disagreements). First, every file's footer is checked against
its name. Runs scripts/duckdb/validate_*.sql, which the plain duckdb CLI runs too. Exit
code 0 when no check failed, 1 when one did or a file cannot be trusted, 2 on usage
errors (a missing or unreadable DATA_DIR)."""


def add_validate_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "validate",
        parents=parents,
        help="check the dataset (duplicates, gaps, parent links, deltas, mapping)",
        description=_DESCRIPTION,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_dataset_arguments(p, "check")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("--expected-block-ms", type=int, default=6000, help="for the outliers")
    p.add_argument(
        "--outlier-factor", type=float, default=3.0, help="outlier: delta > expected x this"
    )
    p.add_argument("--top", type=int, default=10, metavar="N", help="rows listed per chain")


def run_validate(args: argparse.Namespace) -> int:
    """Print the checks; 0 all passed, 1 a check failed, 2 on usage errors."""
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
            "failures": result.failures,
            "warnings": result.warnings,
        }
        sys.stdout.write(render_json(result.tables, header))
    else:
        sys.stdout.write(render_text(result.tables) + "\n" + _verdict(data_dir, result) + "\n")
    return 0 if result.ok else 1


def _verdict(data_dir: Path, result: Validation) -> str:
    warned = f" ({len(result.warnings)} warning(s))" if result.warnings else ""
    if result.ok:
        return f"validate {data_dir}: all checks passed{warned}"
    lines = [f"validate {data_dir}: {len(result.failures)} check(s) FAILED{warned}:"]
    lines.extend(
        f"  {r['chain']}: {r['check_name']}: {r['findings']} (e.g. {r['examples']})"
        for r in result.failures
    )
    return "\n".join(lines)
