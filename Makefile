# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run test lint worker dispatcher sweeper bench clean translations messages

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# The interface's catalogues: compiled here, never committed (see `make messages`).
CATALOGUES := $(wildcard campaign/translations/*/LC_MESSAGES/messages.po)
COMPILED := $(CATALOGUES:.po=.mo)

%.mo: %.po $(STAMP)
	$(BIN)/pybabel compile --statistics -i $< -o $@ 2>&1 | grep -v '^$$' || true
	test -s $@

translations: $(COMPILED)

## After changing interface strings: extract them and update every catalogue.
messages: $(STAMP)
	$(BIN)/pybabel extract -F babel.cfg -k _l -k lazy_gettext --sort-by-file --no-wrap \
	  --project appeal-sender -o campaign/translations/messages.pot .
	$(BIN)/pybabel update -i campaign/translations/messages.pot -d campaign/translations \
	  --no-wrap --ignore-obsolete

## Everything: database, broker, mail capture, web and worker. Ctrl-C stops it.
run: $(STAMP) translations
	$(BIN)/python -m campaign.devstack

## The whole suite (SQLite always; PostgreSQL on 127.0.0.1:5432 when reachable).
test: $(STAMP) translations
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

## Workers for another machine (one per core): need REDIS_URL, DATABASE_URL, SECRET_KEY
## and the MAIL_* relay. Run `make dispatcher` once per installation, next to them.
worker: $(STAMP) translations
	$(BIN)/python -m rq.cli worker-pool --num-workers $$(nproc) \
	  --worker-class campaign.worker.AppWorker --serializer json --url "$$REDIS_URL" \
	  supporters appeals receipts

dispatcher: $(STAMP)
	$(BIN)/flask --app app appeals dispatch

## The first landing's name for the dispatcher.
sweeper: dispatcher

## Benchmarks (installs Postfix's smtp-sink/smtp-source and wrk if missing; needs root for that).
bench: $(STAMP) translations
	$(BIN)/python bench/delivery.py
	$(BIN)/python bench/submit.py
	$(BIN)/python bench/letters.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
