# CDAP — one-command run and test. See README.md.
SHELL := /bin/bash
UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
UV_VERSION := 0.13.8
PY := .venv/bin/python
STACK := deploy/local/stack.sh
export UV_LINK_MODE := copy

.PHONY: setup up down status migrate run browser tools test test-fast bench lint format reset

setup: ## install uv (from PyPI) and the locked workspace into .venv
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || \
		python3 -m pip install --quiet "uv==$(UV_VERSION)"
	@$(UV) sync --all-packages --locked --quiet

up: setup ## start Kafka, PostgreSQL and the SMTP sink (idempotent)
	@bash $(STACK) up

down: ## stop what `make up` started
	@bash $(STACK) down

status:
	@bash $(STACK) status

migrate: up ## apply every service's database migrations
	@$(PY) -m cdap_shared.devrun migrate

run: migrate ## the whole system in the foreground, logs prefixed by service; Ctrl-C stops it
	@$(PY) -m cdap_shared.devrun run

# One pytest process per workspace member: each member's tests/ is its own package, and each
# service's SQLModel metadata stays its own. The stack lifecycle tests (tests/) run last.
TEST_DIRS := $(sort $(dir $(wildcard shared/tests/test_*.py cli/tests/test_*.py services/*/tests/test_*.py))) tests

browser: ## Debian's Chromium for the portal's browser tests (never a downloaded browser build)
	@command -v chromium >/dev/null 2>&1 || { echo "installing chromium from Debian's packages"; \
		(apt-get install -y -qq chromium >/dev/null 2>&1 || \
		 (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)) \
		|| { echo "could not install chromium: run 'apt-get install chromium'"; exit 1; }; }

tools: ## Debian's libfaketime (tests/system/test_clock.py) and kcat (records produced by librdkafka, every codec)
	@missing=""; ls /usr/lib/*/faketime/libfaketime.so.1 >/dev/null 2>&1 || missing="$$missing faketime"; \
	command -v kcat >/dev/null 2>&1 || missing="$$missing kcat"; \
	if [ -n "$$missing" ]; then echo "installing$$missing from Debian's packages"; \
		(apt-get install -y -qq $$missing >/dev/null 2>&1 || \
		 (apt-get update -qq && apt-get install -y -qq $$missing >/dev/null)) \
		|| { echo "could not install$$missing: run 'apt-get install$$missing'"; exit 1; }; fi

test: up browser tools ## every test, against the real Kafka and PostgreSQL
	@failed=""; for d in $(TEST_DIRS); do \
		echo "=== $$d"; $(PY) -m pytest $$d || failed="$$failed $$d"; \
	done; \
	if [ -n "$$failed" ]; then echo "FAILED in:$$failed"; exit 1; fi

test-fast: setup ## tests that need no running stack
	@for d in $(TEST_DIRS); do $(PY) -m pytest -q -m "not stack" $$d || exit 1; done

bench: up ## benchmarks; results in bench/results/, summary in docs/benchmarks.md
	@$(PY) -m bench

lint: setup
	@$(PY) -m ruff check .
	@$(PY) -m ruff format --check .
	@$(PY) -m mypy shared/src services/*/src cli/src

format: setup
	@$(PY) -m ruff format .
	@$(PY) -m ruff check --fix .

reset: down ## forget all local data (Kafka log, service databases, mail)
	@rm -rf .stack/kafka/data .stack/mail
	@runuser -u postgres -- bash -c 'for d in identity access dossiers audit; do dropdb --if-exists --force cdap_$$d; done' 2>/dev/null || true
	@echo "local data removed; 'make up' recreates it"
