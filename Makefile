# Two commands do all the set-up on a fresh machine:
#   make run    the service on the embedded default (SQLite, in-process consumers), with demo data
#   make test   every test, starting PostgreSQL and Kafka itself when none is configured
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# What is installed, each remade when pyproject.toml changes: running needs the package and
# its dependencies only; the tests and benchmarks the dev extra too (pytest, Playwright, ...).
RUN_STAMP := $(VENV)/.installed-run
STAMP := $(VENV)/.installed

.PHONY: run test test-fast bench clean

$(BIN)/pip:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(RUN_STAMP): pyproject.toml | $(BIN)/pip
	$(BIN)/pip install -q -e .
	touch $(RUN_STAMP)

# Everything running needs is in it too: `make run` after `make test` installs nothing.
$(STAMP): pyproject.toml | $(BIN)/pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP) $(RUN_STAMP)

run: $(RUN_STAMP)
	$(BIN)/complaints run

# scripts/test installs $(STAMP) itself, after starting Keycloak (the slowest server to come up).
test:
	scripts/test

# Leave out the slow soak, fault-injection and load runs while iterating.
test-fast: $(STAMP)
	scripts/test -m "not slow"

bench: $(STAMP)
	$(BIN)/python -m bench.commands

clean:
	-scripts/kafka stop
	-scripts/postgres stop
	-scripts/keycloak stop
	rm -rf $(VENV) .run var .pytest_cache .hypothesis
