# Two commands do all the set-up on a fresh machine:
#   make run    the service on the embedded default (SQLite, in-process consumers), with demo data
#   make test   every test, starting PostgreSQL and Kafka itself when none is configured
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-fast bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/complaints run

test: $(STAMP)
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
