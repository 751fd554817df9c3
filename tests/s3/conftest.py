"""Fixtures for tests against a real S3 on loopback: moto's server (one per session, in
its own process), a fresh bucket per test, and the fault proxy in front of the server.

The function-scoped fixtures also point the standard AWS environment (endpoint,
credentials, region) at the server they give, so code that finds S3 the way the
daemon does reaches it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import boto3  # type: ignore[import-untyped, unused-ignore]
import pytest

from tests.s3server import FaultProxy, aws_env, moto_server


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """The endpoint URL of moto's S3, running for the whole session."""
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def fault_proxy(moto_endpoint: str) -> Iterator[FaultProxy]:
    """The fault proxy in front of moto, for the whole session (faults off)."""
    with FaultProxy(moto_endpoint) as proxy:
        yield proxy


@pytest.fixture
def s3_env(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The AWS environment pointing at moto, set in this process for the test."""
    env = aws_env(moto_endpoint)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return env


@pytest.fixture
def s3_bucket(s3_env: dict[str, str]) -> Iterator[str]:
    """The name of a new, empty bucket on moto."""
    name = f"test-{uuid.uuid4().hex}"
    client: Any = boto3.client("s3", endpoint_url=s3_env["AWS_ENDPOINT_URL"])
    try:
        client.create_bucket(Bucket=name)
        yield name
    finally:
        client.close()


@pytest.fixture
def s3_faulty(
    fault_proxy: FaultProxy, s3_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[FaultProxy]:
    """The fault proxy, its faults off and counts zero, with the AWS environment pointing
    at it (:attr:`FaultProxy.endpoint`) instead of at moto; faults are off again after."""
    fault_proxy.set_faults()
    fault_proxy.reset_counts()
    monkeypatch.setenv("AWS_ENDPOINT_URL", fault_proxy.endpoint)
    yield fault_proxy
    fault_proxy.set_faults()
