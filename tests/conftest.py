"""Fixtures shared by every test folder."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

# The real runtime data the decoder and devnet-agreement tests read: copies shipped
# with the tests (provenance and checksums in its README.md), so a fresh clone runs
# them all.  The one definition of that path.
METADATA_DIR = Path(__file__).resolve().parent / "data" / "metadata"


def real_bytes(name: str, kind: str = "metadata-v14") -> bytes:
    """The bytes of ``METADATA_DIR/<name>.<kind>.scale``."""
    path = METADATA_DIR / f"{name}.{kind}.scale"
    try:
        return path.read_bytes()
    except FileNotFoundError:
        # Shipped with the tests: a missing file is a broken checkout, not a reason to skip.
        pytest.fail(f"real runtime data missing: {path} (see {METADATA_DIR / 'README.md'})")


def debian_tool(name: str, package: str) -> str:
    """The path of a tool from a Debian package; skip without it, except in CI (fail)."""
    binary = shutil.which(name)
    if binary is None:
        reason = f"{name} is not installed (Debian: apt-get install {package})"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must run this test")
        pytest.skip(reason)
    return binary


@pytest.fixture
def prometheus_binary() -> str:
    return debian_tool("prometheus", "prometheus")
