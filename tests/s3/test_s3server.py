"""The S3 the tests run against: moto's server reached over real HTTP by boto3 and by
Arrow's own AWS SDK, directly and through the fault proxy, and each fault of the proxy
seen by a client that does not retry."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import boto3  # type: ignore[import-untyped, unused-ignore]
import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
import pyarrow.parquet as pq  # type: ignore[import-untyped, unused-ignore]
import pytest
from botocore.config import Config  # type: ignore[import-untyped, unused-ignore]
from botocore.exceptions import (  # type: ignore[import-untyped, unused-ignore]
    ClientError,
    ConnectionClosedError,
)
from pyarrow import fs  # type: ignore[import-untyped, unused-ignore]

from tests.s3server import CREDENTIALS, FaultProxy

# Large enough for a multipart upload by boto3 (8 MiB parts) and by Arrow (5 MiB parts).
LARGE = 12 * 1024 * 1024


def client(endpoint: str, attempts: int = 10) -> Any:
    """A boto3 S3 client for ``endpoint`` with standard retries, ``attempts`` in all."""
    config = Config(retries={"mode": "standard", "total_max_attempts": attempts})
    return boto3.client("s3", endpoint_url=endpoint, config=config)


def arrow_fs(endpoint: str) -> Any:
    """Arrow's S3 filesystem for ``endpoint``, with Arrow's retries raised to 10."""
    url = urlsplit(endpoint)
    return fs.S3FileSystem(
        endpoint_override=url.netloc,
        scheme=url.scheme,
        access_key=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        secret_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region="us-east-1",
        retry_strategy=fs.AwsStandardS3RetryStrategy(max_attempts=10),
    )


@pytest.fixture(params=["direct", "proxy"])
def endpoint(request: pytest.FixtureRequest, moto_endpoint: str, s3_env: dict[str, str]) -> str:
    """moto's endpoint, or the fault proxy's with its faults off (the AWS environment set)."""
    if request.param == "direct":
        return moto_endpoint
    proxy: FaultProxy = request.getfixturevalue("s3_faulty")
    return proxy.endpoint


@pytest.fixture
def s3(endpoint: str) -> Iterator[Any]:
    c = client(endpoint)
    yield c
    c.close()


def keys(c: Any, bucket: str) -> list[str]:
    return [item["Key"] for item in c.list_objects_v2(Bucket=bucket).get("Contents", [])]


def test_boto3_writes_lists_reads_and_deletes(s3: Any, s3_bucket: str) -> None:
    large = os.urandom(LARGE)
    s3.put_object(Bucket=s3_bucket, Key="dir/small", Body=b"small")
    s3.upload_fileobj(io.BytesIO(large), s3_bucket, "dir/large")  # multipart

    assert keys(s3, s3_bucket) == ["dir/large", "dir/small"]
    assert s3.get_object(Bucket=s3_bucket, Key="dir/small")["Body"].read() == b"small"
    assert s3.head_object(Bucket=s3_bucket, Key="dir/large")["ContentLength"] == LARGE
    assert s3.get_object(Bucket=s3_bucket, Key="dir/large")["Body"].read() == large
    part = s3.get_object(Bucket=s3_bucket, Key="dir/large", Range="bytes=100-199")
    assert part["Body"].read() == large[100:200]

    s3.delete_object(Bucket=s3_bucket, Key="dir/small")
    assert keys(s3, s3_bucket) == ["dir/large"]


def test_a_new_bucket_is_empty(s3: Any, s3_bucket: str) -> None:
    assert keys(s3, s3_bucket) == []
    s3.put_object(Bucket=s3_bucket, Key="k", Body=b"v")
    assert keys(s3, s3_bucket) == ["k"]


def test_arrow_writes_lists_reads_and_deletes(endpoint: str, s3: Any, s3_bucket: str) -> None:
    s3fs = arrow_fs(endpoint)
    large = os.urandom(LARGE)
    table = pa.table({"number": list(range(1000)), "hash": [f"0x{i:064x}" for i in range(1000)]})
    with s3fs.open_output_stream(f"{s3_bucket}/raw/large.bin") as out:  # multipart
        out.write(large)
    pq.write_table(table, f"{s3_bucket}/rows/part-0.parquet", filesystem=s3fs)

    listed = s3fs.get_file_info(fs.FileSelector(s3_bucket, recursive=True))
    files = {info.path: info.size for info in listed if info.type == fs.FileType.File}
    assert files == {
        f"{s3_bucket}/raw/large.bin": LARGE,
        f"{s3_bucket}/rows/part-0.parquet": s3.head_object(
            Bucket=s3_bucket, Key="rows/part-0.parquet"
        )["ContentLength"],
    }
    with s3fs.open_input_file(f"{s3_bucket}/raw/large.bin") as source:
        assert source.read() == large
    assert pq.read_table(f"{s3_bucket}/rows/part-0.parquet", filesystem=s3fs).equals(table)

    s3fs.delete_file(f"{s3_bucket}/raw/large.bin")
    # Arrow keeps the emptied directory as a marker object, "raw/".
    assert keys(s3, s3_bucket) == ["raw/", "rows/part-0.parquet"]


def test_boto3_and_arrow_see_each_others_objects(endpoint: str, s3: Any, s3_bucket: str) -> None:
    s3fs = arrow_fs(endpoint)
    s3.put_object(Bucket=s3_bucket, Key="from-boto3", Body=b"boto3")
    with s3fs.open_output_stream(f"{s3_bucket}/from-arrow") as out:
        out.write(b"arrow")
    with s3fs.open_input_stream(f"{s3_bucket}/from-boto3") as source:
        assert source.read() == b"boto3"
    assert s3.get_object(Bucket=s3_bucket, Key="from-arrow")["Body"].read() == b"arrow"


def test_boto3_with_standard_retries_gets_through_faults(
    s3_faulty: FaultProxy, s3_bucket: str
) -> None:
    s3_faulty.set_faults(slowdown=0.1, internal=0.05, reset=0.05, lost=0.05, seed=1)
    s3 = client(s3_faulty.endpoint)
    try:
        for i in range(40):
            s3.put_object(Bucket=s3_bucket, Key=f"k{i:02}", Body=b"v" * i)
        for i in range(40):
            assert s3.get_object(Bucket=s3_bucket, Key=f"k{i:02}")["Body"].read() == b"v" * i
        assert keys(s3, s3_bucket) == [f"k{i:02}" for i in range(40)]
        for i in range(0, 40, 2):
            s3.delete_object(Bucket=s3_bucket, Key=f"k{i:02}")
        assert keys(s3, s3_bucket) == [f"k{i:02}" for i in range(1, 40, 2)]
    finally:
        s3.close()
    assert all(count > 0 for count in s3_faulty.counts.values()), s3_faulty.counts


def test_arrow_with_retries_gets_through_throttling(s3_faulty: FaultProxy, s3_bucket: str) -> None:
    s3_faulty.set_faults(slowdown=0.15, internal=0.1, seed=2)
    s3fs = arrow_fs(s3_faulty.endpoint)
    tables = [pa.table({"number": list(range(i, i + 100))}) for i in range(0, 500, 100)]
    for i, table in enumerate(tables):
        pq.write_table(table, f"{s3_bucket}/part-{i}.parquet", filesystem=s3fs)
    for i, table in enumerate(tables):
        assert pq.read_table(f"{s3_bucket}/part-{i}.parquet", filesystem=s3fs).equals(table)
    assert s3_faulty.counts["slowdown"] > 0
    assert s3_faulty.counts["internal"] > 0


@pytest.mark.parametrize(
    ("kind", "status", "code"),
    [("slowdown", 503, "SlowDown"), ("internal", 500, "InternalError")],
)
def test_an_error_fault_reaches_a_client_without_retries(
    s3_faulty: FaultProxy, s3_bucket: str, kind: str, status: int, code: str
) -> None:
    s3 = client(s3_faulty.endpoint, attempts=1)
    only: dict[str, Any] = {kind: 1.0}
    s3_faulty.set_faults(**only)
    try:
        with pytest.raises(ClientError) as caught:
            s3.put_object(Bucket=s3_bucket, Key="k", Body=b"v")
    finally:
        s3.close()
    assert caught.value.response["Error"]["Code"] == code
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    assert s3_faulty.counts[kind] == 1
    assert s3_faulty.forwarded == 0


@pytest.mark.parametrize(("kind", "carried_out"), [("reset", False), ("lost", True)])
def test_a_dropped_connection_reaches_a_client_without_retries(
    s3_faulty: FaultProxy, s3_bucket: str, moto_endpoint: str, kind: str, carried_out: bool
) -> None:
    s3 = client(s3_faulty.endpoint, attempts=1)
    only: dict[str, Any] = {kind: 1.0}
    s3_faulty.set_faults(**only)
    try:
        with pytest.raises(ConnectionClosedError):
            s3.put_object(Bucket=s3_bucket, Key="k", Body=b"v")
    finally:
        s3.close()
    assert s3_faulty.counts[kind] == 1
    direct = client(moto_endpoint)
    try:
        assert keys(direct, s3_bucket) == (["k"] if carried_out else [])
    finally:
        direct.close()


def test_fault_shares_are_checked(fault_proxy: FaultProxy) -> None:
    with pytest.raises(ValueError, match="add up to <= 1"):
        fault_proxy.set_faults(slowdown=0.6, reset=0.5)
    with pytest.raises(ValueError, match=">= 0"):
        fault_proxy.set_faults(internal=-0.1)


def test_the_environment_points_the_standard_chain_at_the_server(
    s3_env: dict[str, str], s3_bucket: str
) -> None:
    assert os.environ["AWS_ENDPOINT_URL"] == s3_env["AWS_ENDPOINT_URL"]
    s3 = boto3.client("s3")  # endpoint, credentials and region from the environment
    try:
        s3.put_object(Bucket=s3_bucket, Key="k", Body=b"v")
        assert keys(s3, s3_bucket) == ["k"]
    finally:
        s3.close()


def test_arrow_finds_the_server_from_the_environment_given_a_uri(
    s3_env: dict[str, str], s3_bucket: str
) -> None:
    s3 = boto3.client("s3")
    try:
        s3.put_object(Bucket=s3_bucket, Key="k", Body=b"from the environment")
    finally:
        s3.close()
    # S3FileSystem() itself does not read AWS_ENDPOINT_URL; resolving a URI does.
    s3fs, path = fs.FileSystem.from_uri(f"s3://{s3_bucket}/k")
    with s3fs.open_input_stream(path) as source:
        assert source.read() == b"from the environment"
