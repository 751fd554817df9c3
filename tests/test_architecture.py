"""The package's shape, checked from its source: what the pure modules import, and
how long a module may grow.

The pure modules (``core/``, ``dataset/`` but for its asyncio writer task, and
``errors.py``) take data in and return decisions out: they import the standard library,
pyarrow, orjson, xxhash and each other, and nothing that does I/O on the event loop or
belongs to a command.  Every import statement counts, wherever it is (a lazy import in
a function, one under ``TYPE_CHECKING``), so the rule holds for the source as written.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "blocktimesd"
MAX_LINES = 600

# Modules with side effects of their own: the asyncio writer task (and the items with
# asyncio futures that it takes), and the S3 lease (boto3) with its renewal thread, are
# the dataset's I/O layer, so they are outside the pure part of dataset/.
_IMPURE_IN_PURE_PACKAGES = {
    "dataset/writer.py",
    "dataset/intake.py",
    "dataset/lease.py",
    "dataset/object_files.py",
}
_THIRD_PARTY = {"pyarrow", "orjson", "xxhash"}
_OWN = ("blocktimesd.core", "blocktimesd.dataset", "blocktimesd.errors")
_NEVER = ("asyncio", "websockets", "aiohttp", "duckdb", "blocktimesd.aio", "blocktimesd.commands")


def _relative(path: Path) -> str:
    return path.relative_to(PACKAGE).as_posix()


def pure_modules() -> list[Path]:
    found = [PACKAGE / "errors.py"]
    for package in ("core", "dataset"):
        found += sorted((PACKAGE / package).rglob("*.py"))
    return [path for path in found if _relative(path) not in _IMPURE_IN_PURE_PACKAGES]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> Iterator[tuple[int, str]]:
    """Every module (or name of one) ``path`` imports, absolute, with its line."""
    return imports_of(path.read_text(), _module_name(path), is_package=path.name == "__init__.py")


def imports_of(text: str, module: str, *, is_package: bool = False) -> Iterator[tuple[int, str]]:
    """What the source ``text`` of ``module`` imports: ``import a.b`` gives ``a.b``,
    ``from a import b`` gives ``a.b`` (``b`` may be a module), relative imports are
    resolved against ``module``'s package."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, package)
            for alias in node.names:
                yield node.lineno, base if alias.name == "*" else f"{base}.{alias.name}"


def _absolute(node: ast.ImportFrom, package: str) -> str:
    if not node.level:
        return node.module or ""
    parts = package.split(".")
    anchor = parts[: len(parts) - (node.level - 1)]
    return ".".join([*anchor, node.module] if node.module else anchor)


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def why_not_pure(module: str) -> str | None:
    """Why a pure module may not import ``module``, or None if it may."""
    if any(_within(module, never) for never in _NEVER):
        return "I/O or command code"
    if _within(module, "blocktimesd.dataset.writer"):
        return "the asyncio writer task"
    if any(_within(module, own) for own in _OWN):
        return None
    top = module.partition(".")[0]
    if top in sys.stdlib_module_names or top in _THIRD_PARTY:
        return None
    return "neither the standard library, pyarrow, orjson, xxhash nor a pure module"


@pytest.mark.parametrize("path", pure_modules(), ids=_relative)
def test_pure_modules_import_only_pure_code(path: Path) -> None:
    bad = [
        f"blocktimesd/{_relative(path)}:{line} imports {module} ({why})"
        for line, module in imported(path)
        if (why := why_not_pure(module)) is not None
    ]
    assert not bad, "a pure module imports what it must not:\n" + "\n".join(bad)


def all_modules() -> list[Path]:
    return [
        path
        for path in sorted(PACKAGE.rglob("*.py"))
        if not _relative(path).startswith("devnet/runtimes/")
    ]


def test_no_module_is_over_the_line_limit() -> None:
    long = [
        f"blocktimesd/{_relative(path)}: {lines} lines"
        for path in all_modules()
        if (lines := len(path.read_text().splitlines())) > MAX_LINES
    ]
    assert not long, f"modules over {MAX_LINES} lines (split them by job):\n" + "\n".join(long)


@pytest.mark.parametrize(
    ("module", "allowed"),
    [
        ("__future__", True),
        ("collections.abc", True),
        ("pyarrow.parquet", True),
        ("orjson", True),
        ("xxhash", True),
        ("blocktimesd.core.scale", True),
        ("blocktimesd.dataset.layout", True),
        ("blocktimesd.errors", True),
        ("asyncio", False),
        ("websockets.asyncio.client", False),
        ("aiohttp", False),
        ("duckdb", False),
        ("blocktimesd.aio.rpc", False),
        ("blocktimesd.aio", False),
        ("blocktimesd.commands.run", False),
        ("blocktimesd.dataset.writer", False),
        ("blocktimesd.config", False),
        ("blocktimesd.errorsx", False),
        ("numpy", False),
    ],
)
def test_the_purity_rule(module: str, allowed: bool) -> None:
    assert (why_not_pure(module) is None) == allowed


def test_imports_are_found_wherever_they_are() -> None:
    text = (
        "import os, json as j\n"
        "from . import layout\n"
        "from .records import Row\n"
        "from ..core import scale\n"
        "def f():\n"
        "    import asyncio\n"
        "if False:\n"
        "    from blocktimesd import aio\n"
    )
    found = sorted(imports_of(text, "blocktimesd.dataset.probe"))
    assert found == [
        (1, "json"),
        (1, "os"),
        (2, "blocktimesd.dataset.layout"),
        (3, "blocktimesd.dataset.records.Row"),
        (4, "blocktimesd.core.scale"),
        (6, "asyncio"),
        (8, "blocktimesd.aio"),
    ]
    assert [why_not_pure(module) is None for _, module in found] == [
        True, True, True, True, True, False, False,
    ]  # fmt: skip
    assert sorted(imports_of("from . import x", "blocktimesd.core", is_package=True)) == [
        (1, "blocktimesd.core.x")
    ]
