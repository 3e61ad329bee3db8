# Every entry point of the project. `make demo` and `make test` do all the set-up on a fresh machine.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
UV_VERSION := 0.13.9
BOOTSTRAP := .local/bootstrap
UV := $(BOOTSTRAP)/bin/uv
VENV := .venv
RUN := $(UV) run --frozen --no-sync
export UV_SYSTEM_CERTS := 1
export UV_PYTHON := $(PYTHON)
export UV_PROJECT_ENVIRONMENT := $(CURDIR)/$(VENV)
# Byte-compiled at install: with PYTHONDONTWRITEBYTECODE set (as on CI) every process of the
# network would otherwise compile its imports from source at each start.
export UV_COMPILE_BYTECODE := 1

PROTO_OUT := libs/common/src/backend_common/protos
# Debian packages the tests start (PostgreSQL and Redis are the machine's own).
SYSTEM_PACKAGES := docker-registry bubblewrap
PYTEST_PATHS := libs/common/tests $(wildcard services/*/tests) tests

.PHONY: help install system-deps protos protos-check lint test bench network network-down demo clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(UV):
	$(PYTHON) -m venv $(BOOTSTRAP)
	$(BOOTSTRAP)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

install: $(UV) ## create .venv with every package of the workspace (pinned by uv.lock)
	$(UV) sync --all-packages --frozen --quiet

system-deps: ## install the Debian packages the tests need (as root; skipped when present)
	@missing=""; for package in $(SYSTEM_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$package 2>/dev/null | grep -q "ok installed" || missing="$$missing $$package"; \
	done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" != 0 ]; then echo "missing Debian packages:$$missing (run 'make system-deps' as root)"; exit 1; fi; \
		echo "installing$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends$$missing >/dev/null; \
	fi

protos: install ## generate the Python orchestrator stubs from protos/ into libs/common
	$(RUN) python -m backend_common.protos_build generate protos $(PROTO_OUT)

protos-check: install ## fail when the committed stubs differ from protos/
	$(RUN) python -m backend_common.protos_build check protos $(PROTO_OUT)

lint: install ## ruff and mypy
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy libs/common/src services/*/src scripts demo

test: install system-deps ## run every package's tests against real Postgres, Redis and S3 (started as needed)
	$(RUN) pytest $(PYTEST_PATHS)

bench: install ## run the benchmarks under benchmarks/
	@if ls benchmarks/bench_*.py >/dev/null 2>&1; then \
		for b in benchmarks/bench_*.py; do echo "== $$b"; $(RUN) python $$b || exit 1; done; \
	else echo "no benchmark yet: they come with the orchestrator, server, events and worker issues"; fi

network: install system-deps ## start a local network: orchestrator + ORGS organizations (default 2)
	$(RUN) python scripts/localnet.py up --orgs $${ORGS:-2}

network-down: install ## stop the local network and drop its databases
	$(RUN) python scripts/localnet.py down

demo: network ## a local network running a substrafl FedAvg experiment; plot in .local/demo-performance.png
	$(RUN) python demo/fedavg.py --mode remote --organizations $${ORGS:-2} --rounds $${ROUNDS:-5}

clean: ## remove the virtualenv and local state
	rm -rf $(VENV) .local .mypy_cache .ruff_cache .pytest_cache
