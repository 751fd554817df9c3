"""DATA_DIR is a local directory: a URL is a usage error, never a folder named after it."""

from __future__ import annotations

from pathlib import Path

import pytest

from blocktimesd.cli import main
from blocktimesd.dataset.layout import not_a_local_directory


@pytest.mark.parametrize(
    ("location", "scheme"),
    [("s3://bucket/prefix", "s3"), ("gs://b", "gs"), (" file:///tmp/x", "file"), ("S3://B", "S3")],
)
def test_a_url_is_not_a_local_directory(location: str, scheme: str) -> None:
    problem = not_a_local_directory(location)
    assert problem is not None
    assert f"({scheme}://)" in problem


@pytest.mark.parametrize("location", ["data", "/var/lib/blocktimesd", "./s3:", "a:b", "C:\\data"])
def test_paths_are_local_directories(location: str) -> None:
    assert not_a_local_directory(location) is None


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
def test_every_command_refuses_an_object_store_url(
    argv: list[str],
    how: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DATA_DIR", raising=False)
    if how == "flag":
        argv = [*argv, "--data", "s3://bucket/prefix"]
    else:
        monkeypatch.setenv("DATA_DIR", "s3://bucket/prefix")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "s3://bucket/prefix" in err
    assert "local directory" in err
    assert list(tmp_path.iterdir()) == []  # no folder named "s3:" appeared
