"""Fixtures shared by every test folder."""

from __future__ import annotations

import os
import shutil

import pytest


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
