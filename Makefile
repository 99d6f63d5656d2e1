# Two commands for a newcomer: `make run` and `make test`. Both set up first and are
# idempotent: the venv is rebuilt only when the lock changes, and dvc repro reruns only
# what changed.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml | sha256sum | cut -c1-12)

# Stage commands call `python`; make sure it is the venv's.
export PATH := $(BIN):$(PATH)
export MLFLOW_DISABLE_TELEMETRY := true
export DVC_NO_ANALYTICS := 1
export FIFTYONE_DO_NOT_TRACK := true

.PHONY: setup system browser run real test test-fast bench review sync ui dag services services-stop clean-venv

setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@rm -f $(VENV)/.installed-*
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@$(BIN)/python -c "import torch, sys; v = torch.__version__; sys.exit(0 if v.startswith('2.13.0') and not torch.version.cuda else f'expected CPU torch 2.13.0, got {v} (cuda={torch.version.cuda})')"
	@touch $@

run: setup
	$(BIN)/dvc repro

# The real-photo recipe (presets/real-photos.yaml, docs/quality.md) as a DVC experiment
# on ../shared/data; add SET="-S data.folder.path=DIR" for your own photos.
real: setup
	$(BIN)/colorize-preset real-photos $(SET)

test: setup system browser
	$(BIN)/python -m pytest

# The fast loop: every test but the slow (dvc repro, training), bench and browser ones.
test-fast: setup
	$(BIN)/python -m pytest -m "not slow and not bench and not browser"

# The benchmark suite: reports/bench.json and the README's performance table (~17 min).
bench: setup
	$(BIN)/python -m bench.suite

# What the tests need from the system: Debian's chromium and node (the browser tests),
# PostgreSQL (the team tests' MLflow store). Installed only when missing: apt needs root,
# otherwise this says what to install and those tests skip (they fail under CI=true).
# playwright-core is pinned to 1.61.x, the newest that runs on Debian 12's own nodejs (18),
# and drives that chromium (never `npx playwright install`).
BROWSER := tests/browser
BROWSER_STAMP := $(BROWSER)/node_modules/.installed
APT_INSTALL := DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends

browser: $(BROWSER_STAMP)

# Checked on every run (cheap); the npm install below only when the lock changed.
system:
	@missing=""; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v npm >/dev/null || missing="$$missing nodejs npm"; \
	{ command -v pg_ctl >/dev/null || ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; } || missing="$$missing postgresql"; \
	if [ -n "$$missing" ] && [ "$$(id -u)" = 0 ]; then \
		echo "system: installing$$missing (apt)"; \
		apt-get update -qq && $(APT_INSTALL)$$missing; \
	elif [ -n "$$missing" ]; then \
		echo "system: install$$missing (sudo apt-get install$$missing), then rerun; the tests that need them skip until then"; \
	fi

$(BROWSER_STAMP): $(BROWSER)/package.json $(BROWSER)/package-lock.json | system
	@if command -v npm >/dev/null; then \
		cd $(BROWSER) && npm ci --silent --no-audit --no-fund && touch $(abspath $@); \
	fi

# The FiftyOne App on the curated data, on loopback only; decisions are saved on exit.
review: setup
	$(BIN)/colorize-review app

# Export the App's decisions to data/curation/decisions.csv now.
sync: setup
	$(BIN)/colorize-review sync

# The MLflow UI on the project's store, on loopback only.
ui: setup
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(BIN)/mlflow ui --host 127.0.0.1 --port 5000 --workers 1 --backend-store-uri sqlite:///$(abspath mlflow.db)

# The team stack on this machine, for trying the shared set-up (docs/team.md): SeaweedFS
# (S3), PostgreSQL, an MLflow server on both with basic auth, MongoDB with auth; all on
# 127.0.0.1, data and credentials in .services/ (git-ignored). `source .services/env`.
services: setup system
	$(BIN)/python -m colorize.team.services start --dir .services

services-stop: setup
	$(BIN)/python -m colorize.team.services stop --dir .services

dag: setup
	$(BIN)/dvc dag

clean-venv:
	rm -rf $(VENV)
