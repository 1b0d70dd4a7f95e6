# liveyield — the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTEST := $(BIN)/python -m pytest
# `make test` spreads test files over this many processes (each module's fixtures stay on one worker).
TEST_WORKERS ?= 2

.PHONY: venv demo test test-all test-slow test-servers lint format bench doctor serve stop clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP) ## create .venv and install the project with its pinned dependencies

demo: venv ## simulate a platform and run the pipeline on the embedded default
	$(BIN)/liveyield demo

lint: venv ## ruff lint + format check, mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint ## lint, then the default test suite (SQLite and PostgreSQL)
	$(PYTEST) -m "not slow and not live" -n $(TEST_WORKERS) --dist loadfile -q

test-all: lint ## every test, the slow ones too
	$(PYTEST) -q

test-slow: venv ## the heavy cases `make test` leaves out, servers included (CI runs it)
	$(PYTEST) -m slow -q

test-servers: venv ## end to end on real Prefect and MLflow servers, worker and UIs, and the three-day live chain (test-slow runs all but the live chain)
	$(PYTEST) -m "slow or live" -q tests/ops/test_servers.py tests/ops/test_live_chain.py tests/ops/test_triggers.py

bench: venv ## benchmarks; figures go to tests/benchmarks/RESULTS.md
	$(BIN)/python -m tests.benchmarks.run_all

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

doctor: venv
	$(BIN)/liveyield doctor

serve: venv ## start a Prefect server, work pool, worker, deployments and an MLflow server here (LIVEYIELD_SERVE_DASK_WORKERS=N: a Dask cluster too)
	$(BIN)/liveyield serve $(if $(wildcard $(or $(LIVEYIELD_HOME),.liveyield)/simulator/platform.json),--simulate)

stop: venv ## stop what `make serve` started
	$(BIN)/liveyield stop

clean:
	rm -rf .liveyield .pytest_cache .mypy_cache .ruff_cache
