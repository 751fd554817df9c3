"""The Arrow memory pool that ``blocktimesd`` picks before pyarrow is imported, and
that an operator's own choice wins."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from blocktimesd import cli

PROBE = (
    "import sys\n"
    "from blocktimesd import cli\n"
    "cli._arrow_memory()\n"
    "import pyarrow\n"
    "print(pyarrow.default_memory_pool().backend_name)\n"
)


@pytest.mark.skipif(sys.platform != "linux", reason="jemalloc is chosen on Linux only")
def test_jemalloc_unless_the_environment_names_a_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ARROW_DEFAULT_MEMORY_POOL", raising=False)
    chosen = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True)
    assert chosen.stdout.strip() == "jemalloc", chosen.stderr
    monkeypatch.setenv("ARROW_DEFAULT_MEMORY_POOL", "system")
    kept = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True)
    assert kept.stdout.strip() == "system", kept.stderr


def test_main_chooses_before_any_command_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARROW_DEFAULT_MEMORY_POOL", "")  # restored (unset) afterwards
    monkeypatch.delenv("ARROW_DEFAULT_MEMORY_POOL")
    monkeypatch.setattr(sys, "platform", "linux")
    assert cli.main(["--version"]) == 0
    assert os.environ["ARROW_DEFAULT_MEMORY_POOL"] == "jemalloc"
