# Signalpost: `make run` serves a demo on 127.0.0.1:8000; `make test` runs the whole suite.
SHELL := /bin/bash
.DEFAULT_GOAL := run
unexport PYTHONDONTWRITEBYTECODE

PORT ?= 8000
VENV := .venv
PY := $(VENV)/bin/python
# Django 6.1 needs Python 3.12 or newer; the first one found on PATH wins.
PYTHON ?= $(shell for p in python3.13 python3.12 python3 python; do \
	if command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; \
	then echo $$p; break; fi; done)

.PHONY: run install test lint typecheck pytest test-sqlite test-shifted worker beat timers screenshots clean

$(VENV)/.installed: requirements.txt requirements-dev.txt package-lock.json
	@test -n "$(PYTHON)" || { echo "Python 3.12 or newer is required (found none on PATH)"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --disable-pip-version-check uv \
		&& UV_PYTHON_DOWNLOADS=never $(VENV)/bin/uv pip install --quiet -p $(PY) -r requirements-dev.txt \
		|| $(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@# axe-core for the accessibility test (the app itself needs no Node.js); skipped without npm.
	@if command -v npm >/dev/null 2>&1; then npm ci --no-audit --no-fund --loglevel=error; \
		else echo "npm not found: the accessibility test will be skipped"; fi
	@touch $@

install: $(VENV)/.installed

# Links in pages, feeds and emails follow PORT unless SITE_URL is set (in the environment or in .env).
SITE_URL_DEFAULT = site="$${SITE_URL:-$$(sed -n 's/^SITE_URL=//p' .env 2>/dev/null | tail -n 1)}"; \
	export SITE_URL="$${site:-http://127.0.0.1:$(PORT)}"

run: install
	$(PY) manage.py migrate --noinput
	@$(SITE_URL_DEFAULT); $(PY) manage.py seed_demo
	@echo "Serving on http://127.0.0.1:$(PORT)/ (timers and notifications every $${TIMER_SWEEP_SECONDS:-15} s in the background)"
	@$(SITE_URL_DEFAULT); \
		$(PY) manage.py run_timers --loop & timers=$$!; \
		trap 'kill $$timers 2>/dev/null' EXIT INT TERM; \
		$(PY) manage.py runserver 127.0.0.1:$(PORT)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-logo

typecheck: install
	$(VENV)/bin/mypy .

pytest: install
	$(PY) -m pytest $(PYTEST_ARGS)

# The whole suite: lint, types, then every test with the services the environment names.
test: lint typecheck pytest

# The suite on SQLite alone, leaving out what needs PostgreSQL, Redis or a browser, and the latency
# measurements (.ci/run runs this beside the shifted-clock run, two suites on two cores).
test-sqlite: install
	env -u DATABASE_URL -u REDIS_URL $(PY) -m pytest -m "not worker and not browser and not postgres and not redis and not timing" $(PYTEST_ARGS)

# The SQLite suite with the clock 400 days ahead (Debian's faketime): no test may depend on today's date.
# PostgreSQL's now() would not move with it, so this runs on SQLite only.
test-shifted: install
	@command -v faketime >/dev/null 2>&1 || { echo "faketime is needed: apt-get install faketime"; exit 1; }
	faketime -f +400d $(MAKE) --no-print-directory test-sqlite

# Production mode: a Celery worker, and beat as its own process (both need REDIS_URL). Beat fires every
# clock and page; embedded in a worker (worker --beat) it is not restarted when it dies, while the worker
# looks healthy. Run each under a supervisor that restarts it (README, Production).
worker: install
	@test -n "$$REDIS_URL" || { echo "REDIS_URL must be set for the worker"; exit 1; }
	$(VENV)/bin/celery -A statuspage worker --loglevel=INFO

beat: install
	@test -n "$$REDIS_URL" || { echo "REDIS_URL must be set for beat"; exit 1; }
	@mkdir -p var
	$(VENV)/bin/celery -A statuspage beat --loglevel=INFO

timers: install
	$(PY) manage.py run_timers --loop

# The README's screenshots, from a throwaway demo database (needs Chromium).
screenshots: install
	$(PY) docs/screenshots.py

clean:
	rm -rf $(VENV) var db.sqlite3 .pytest_cache .mypy_cache .ruff_cache
