"""Runtimes built from the real V14 metadata shipped in ``tests/data/metadata``."""

from __future__ import annotations

from functools import cache

import pytest

from blocktimesd.core.metadata import parse_metadata
from blocktimesd.core.runtime import Runtime, RuntimeVersion
from tests.conftest import real_bytes as real_bytes  # re-exported for the tests here

SPEC6 = "subspace-spec6"
DOMAIN0 = "subspace-evm-domain-spec0"
GEMINI = "subspace-gemini-3h-spec7"


def metadata_version(data: bytes) -> RuntimeVersion:
    """The version a metadata file names in its own ``System.Version`` constant (the
    Gemini file comes without a separate runtime-version file)."""
    system = next(p for p in parse_metadata(data).pallets if p.name == "System")
    return RuntimeVersion.decode(next(v for n, _, v in system.constants if n == "Version"))


@cache
def _real_runtime(name: str, chain: str) -> Runtime:
    data = real_bytes(name)
    return Runtime.from_metadata(data, metadata_version(data), chain)


def real_runtime(name: str) -> Runtime:
    return _real_runtime(name, "domain" if "domain" in name else "consensus")


@pytest.fixture
def spec6() -> Runtime:
    return real_runtime(SPEC6)


@pytest.fixture
def domain0() -> Runtime:
    return real_runtime(DOMAIN0)


@pytest.fixture
def gemini() -> Runtime:
    return real_runtime(GEMINI)
