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

.PHONY: setup run test ui dag clean-venv

setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@rm -f $(VENV)/.installed-*
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	@$(BIN)/python -c "import torch, sys; v = torch.__version__; sys.exit(0 if v.startswith('2.13.0') and not torch.version.cuda else f'expected CPU torch 2.13.0, got {v} (cuda={torch.version.cuda})')"
	@touch $@

run: setup
	$(BIN)/dvc repro

test: setup
	$(BIN)/python -m pytest

# The MLflow UI on the project's store, on loopback only.
ui: setup
	$(BIN)/mlflow ui --host 127.0.0.1 --port 5000 --backend-store-uri sqlite:///$(abspath mlflow.db)

dag: setup
	$(BIN)/dvc dag

clean-venv:
	rm -rf $(VENV)
