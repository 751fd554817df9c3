"""DATA_DIR is a local directory or ``s3://bucket/prefix``: any other URL (or an S3 URL
without a usable bucket) is a usage error, never a folder named after it."""

from __future__ import annotations

from pathlib import Path

import pytest

from blocktimesd.cli import main
from blocktimesd.dataset.objects import ObjectPath, data_location, location_problem


@pytest.mark.parametrize(
    ("location", "words"),
    [
        ("gs://b/prefix", "(gs://)"),
        (" file:///tmp/x", "(file://)"),
        ("https://bucket.s3.amazonaws.com/x", "(https://)"),
        ("S3://bucket/x", "lower case"),
        ("s3://", "no valid S3 bucket name"),
        ("s3://Bucket_1/x", "no valid S3 bucket name"),
        ("s3://bucket/a/../b", "'..'"),
    ],
)
def test_what_cannot_be_data_dir(location: str, words: str) -> None:
    problem = location_problem(location)
    assert problem is not None
    assert words in problem


@pytest.mark.parametrize("location", ["data", "/var/lib/blocktimesd", "./s3:", "a:b", "C:\\data"])
def test_paths_are_local_directories(location: str) -> None:
    assert location_problem(location) is None
    assert data_location(location) == Path(location)


@pytest.mark.parametrize(
    ("location", "bucket", "key"),
    [("s3://my-bucket", "my-bucket", ""), ("s3://b.1-x/a/b/", "b.1-x", "a/b")],
)
def test_s3_urls_are_object_paths(location: str, bucket: str, key: str) -> None:
    assert location_problem(location) is None
    where = data_location(location)
    assert isinstance(where, ObjectPath)
    assert (where.bucket, where.object_key) == (bucket, key)
    assert str(where) == location.rstrip("/")


@pytest.mark.parametrize(
    "argv",
    [
        ["validate"],
        ["report"],
        ["backfill", "--chain", "consensus", "--start", "1", "--end", "3"],
        ["run"],
    ],
    ids=["validate", "report", "backfill", "run"],
)
@pytest.mark.parametrize("how", ["flag", "env"])
def test_every_command_refuses_another_url(
    argv: list[str],
    how: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DATA_DIR", raising=False)
    if how == "flag":
        argv = [*argv, "--data", "gs://bucket/prefix"]
    else:
        monkeypatch.setenv("DATA_DIR", "gs://bucket/prefix")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "gs://bucket/prefix" in err
    assert "s3://bucket/prefix" in err  # what is taken instead
    assert list(tmp_path.iterdir()) == []  # no folder named "gs:" appeared
