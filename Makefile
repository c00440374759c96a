# One entry point for people and CI. Everything installs into .venv at the repo root.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install serve test test-fast lint typecheck bench bench-quick lock clean

# Bytecode is compiled at install: a process that may not write it (PYTHONDONTWRITEBYTECODE,
# a read-only tree) would otherwise compile thousands of modules from source at every start,
# about a third of a server's start-up CPU.
$(STAMP): requirements.lock pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==0.13.9
	$(BIN)/uv pip sync --quiet --compile-bytecode --python $(BIN)/python requirements.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	$(BIN)/python -m compileall -q -j 0 agentdata flight_server control_api mcp_server workers >/dev/null
	touch $(STAMP)

install: $(STAMP)

serve: $(STAMP)
	$(BIN)/agentdata serve

# Two workers, one test file each at a time: every file uses its own Redis database
# and its own servers, and most of a test's time is spent waiting on processes.
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile tests

# The fast tier: everything in process (no server process), serially (xdist start-up costs more).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

lint: $(STAMP)
	$(BIN)/ruff check agentdata flight_server control_api mcp_server workers tests benchmarks
	$(BIN)/ruff format --check agentdata flight_server control_api mcp_server workers tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run

bench-quick: $(STAMP)
	$(BIN)/python -m benchmarks.run --quick

# Re-resolve exact pins after editing pyproject.toml's dependencies (runtime and the dev
# extra; the lock names no package host).
lock: $(STAMP)
	$(BIN)/uv pip compile pyproject.toml --extra dev --python-version 3.11 --no-header --no-annotate -o requirements.lock

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
