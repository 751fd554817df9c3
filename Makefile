# One target per check; every target sets up the virtual environment first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run devnet test lint format typecheck check bench newcomer clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

# The main job: follow both chains (mainnet by default; the built-in simulated network
# when no configured endpoint is reachable).  Rows are on disk within about a minute of
# being K blocks deep.  Settings: docs/runbook/config.md.
run: $(STAMP)
	$(BIN)/blocktimesd run --devnet-if-unreachable

devnet: $(STAMP)
	$(BIN)/blocktimesd devnet --seed 1 --speed 20

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck

bench: $(STAMP)
	$(BIN)/python bench/devnet_storage_rps.py
	$(BIN)/python bench/rpc_transport.py
	$(BIN)/python bench/decode_cost.py
	$(BIN)/python bench/writer_throughput.py
	$(BIN)/python bench/follow.py
	$(BIN)/python bench/report_speed.py
	$(BIN)/python bench/backfill_vs_reference.py

# A newcomer's quick start, scripted (scripts/newcomer.sh): from a fresh clone, `make run`
# twice, each stopped with Ctrl-C.  NEWCOMER_MINUTES sets how long each run lasts.
newcomer:
	bash scripts/newcomer.sh

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache tests/js/node_modules \
		tests/chopsticks/node_modules
