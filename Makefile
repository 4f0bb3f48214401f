# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run test lint worker clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

## Everything: database, broker, mail capture, web and worker. Ctrl-C stops it.
run: $(STAMP)
	$(BIN)/python -m campaign.devstack

## The whole suite (SQLite always; PostgreSQL on 127.0.0.1:5432 when reachable).
test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

## A worker for another machine: needs REDIS_URL, DATABASE_URL and the MAIL_* relay.
worker: $(STAMP)
	$(BIN)/flask --app app rq worker supporters appeals --with-scheduler

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
