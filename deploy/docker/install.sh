#!/bin/sh
# Install blocktimesd and its pinned dependencies (pyproject.toml pins every one with ==)
# into a fresh virtual environment.  The Dockerfile's builder stage runs exactly this, and
# so does tests/deploy/test_docker.py, in a temporary directory.
#
# Usage: install.sh VENV SOURCE
#   VENV    where the virtual environment goes (e.g. /opt/blocktimesd)
#   SOURCE  a directory holding pyproject.toml, README.md and blocktimesd/
# pip's own settings apply (PIP_NO_CACHE_DIR=1 in the image; the test reuses the cache).
set -eu

if [ "$#" -ne 2 ]; then
    echo "usage: $0 VENV SOURCE" >&2
    exit 2
fi
venv=$1
source=$2
python=${PYTHON:-python3}

"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --no-compile --disable-pip-version-check --quiet "$source"
# Byte-compile once here, so a read-only image does not try to at every start.
"$venv/bin/python" -m compileall -q "$venv/lib"
"$venv/bin/blocktimesd" --version
