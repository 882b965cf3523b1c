# hmsmgmt — the two set-up commands are `make up` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install up test test-sqlite test-postgres lint bench clean

install: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 is required"'
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --require-hashes --no-deps -r requirements.lock
	touch $(STAMP)

# The console on the embedded default: SQLite under var/, process driver, ORM broker.
# `make up DRIVER=docker` (or swarm) runs the demo fleet on a Docker engine instead of processes.
up: install
	HMS_DEBUG=$${HMS_DEBUG:-1} $(PY) manage.py up $(if $(DRIVER),--driver $(DRIVER))

# The suite runs on whatever DATABASE_URL says (SQLite by default; .ci/run runs it on PostgreSQL too).
test: install
	HMS_TESTING=1 $(PY) -m pytest $(PYTEST_ARGS)

test-sqlite: install
	DATABASE_URL= HMS_TESTING=1 $(PY) -m pytest $(PYTEST_ARGS)

test-postgres: install
	DATABASE_URL=$${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test} HMS_TESTING=1 $(PY) -m pytest $(PYTEST_ARGS)

lint: install
	$(PY) -m ruff check .

bench: install
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) var staticfiles
