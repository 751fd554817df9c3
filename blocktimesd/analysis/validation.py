"""The checks of the dataset (``blocktimesd validate``), and what a failure means.

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

Two failures are impossible values rather than damage to the files: a block stamped at
or before its parent (``non_positive_delta``; the runtimes refuse such a block) and a
domain block whose timestamp differs from its consensus block's
(``timestamp_disagreement``; a domain block copies it).  The daemon stores what the
node says, so these mean a node served forged values (or a bug).  They FAIL, not
``warn``: a dataset holding impossible values is not valid, and the verdict says what
they mean, which files hold them and the ``blocktimesd backfill`` that re-fetches them.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from blocktimesd.analysis.queries import SCRIPTS_DIR, Table, connect, run_script
from blocktimesd.dataset.layout import FileSpan, parse_file_name
from blocktimesd.dataset.objects import DataPath
from blocktimesd.dataset.scan import check_files, dataset_files
from blocktimesd.errors import ConfigError

__all__ = ["SCRIPTS", "Validation", "advice", "validate", "verdict"]

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
    data_dir: DataPath,
    chains: tuple[str, ...] = (),
    *,
    scripts_dir: Path = SCRIPTS_DIR,
    settings: dict[str, Any] | None = None,
) -> Validation:
    """Run every script over ``data_dir`` (``chains`` only, if given), a local folder or
    an ``s3://`` prefix (the scripts' ``data_dir`` variable is then that URL).

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
        results = run_script(connect(data_dir), scripts_dir / script, variables)
        if not results or results[-1].columns != CHECK_COLUMNS:
            raise ConfigError(f"{scripts_dir / script} does not end with its checks table")
        for i, table in enumerate(results):
            last = i == len(results) - 1
            table = replace(table, name=f"{short}_checks" if last else f"{short}_{i}")
            tables.append(table)
            if last:
                checks.append(table)
    return Validation(tuple(tables), tuple(checks))


def verdict(data_dir: DataPath, result: Validation) -> str:
    warned = f" ({len(result.warnings)} warning(s))" if result.warnings else ""
    if result.ok:
        return f"validate {data_dir}: all checks passed{warned}"
    lines = [f"validate {data_dir}: {len(result.failures)} check(s) FAILED{warned}:"]
    for r in result.failures:
        lines.append(f"  {r['chain']}: {r['check_name']}: {r['findings']} (e.g. {r['examples']})")
        lines.extend(_indented(line) for line in advice(data_dir, r))
    return "\n".join(lines)


def _indented(line: str) -> str:
    # Commands and paths stay on one line, to be copied; prose is wrapped.
    if line.startswith("  "):
        return "    " + line
    return textwrap.fill(
        line,
        92,
        initial_indent="    ",
        subsequent_indent="    ",
        break_long_words=False,
        break_on_hyphens=False,
    )


# -- impossible values: what they mean, and the fix -------------------------------------

# The daemon stores what the node serves; these values no honest node serves.
_IMPOSSIBLE = {
    "non_positive_delta": (
        "block(s) stamped at or before their parent. The runtime refuses such a block, so a "
        "node served a forged timestamp (or blocktimesd has a bug); the report's figures "
        "include them."
    ),
    "timestamp_disagreement": (
        "domain block(s) whose timestamp differs from their consensus block's. A domain "
        "block copies its consensus block's timestamp, so a node served a forged "
        "timestamp or mapping (or blocktimesd has a bug)."
    ),
}


def advice(data_dir: DataPath, failure: dict[str, Any]) -> list[str]:
    """What an impossible-value failure means and the commands that fix it (lines; those
    starting with two spaces are commands or paths); none for the other checks."""
    check, chain = failure["check_name"], failure["chain"]
    meaning = _IMPOSSIBLE.get(check)
    if meaning is None:
        return []
    examples = [int(n) for n in re.findall(r"\d+", failure["examples"])]
    first = "" if failure["findings"] <= len(examples) else f" (the first {len(examples)})"
    lines = [f"{failure['findings']} {meaning} Blocks{first}: {failure['examples']}."]
    # Either timestamp of a non-positive delta may be the forged one: re-fetch the parent too.
    suspects = {n - 1 for n in examples} if check == "non_positive_delta" else set()
    files = _files_holding(data_dir, chain, suspects | set(examples))
    if files:
        spans = [span for _, span in files]
        lines += [
            f"Move the files that hold them out of {data_dir} (keep them until validate passes):",
            *(f"  {path}" for path, _ in files),
            "then fetch their blocks again from a trusted node (the chain's endpoint in the "
            "configuration, or add --rpc URL --kind KIND):",
            f"  blocktimesd backfill --data {data_dir} --chain {chain} "
            f"--start {min(s.first for s in spans)} --end {max(s.last for s in spans)}",
            "and run blocktimesd validate again.",
        ]
    if check == "timestamp_disagreement":
        lines.append(
            "If they still disagree, the consensus rows are the forged ones: fetch those "
            "again the same way (their consensus_block_number is in the table above)."
        )
    return lines


def _files_holding(
    data_dir: DataPath, chain: str, blocks: set[int]
) -> list[tuple[DataPath, FileSpan]]:
    """The data files of ``chain`` whose names say they hold any of ``blocks`` (names
    were checked against the footers before the scripts ran)."""
    named = ((path, parse_file_name(path.name)) for path in dataset_files(data_dir).get(chain, []))
    return [
        (path, span)
        for path, span in named
        if span is not None and any(span.first <= n <= span.last for n in blocks)
    ]
