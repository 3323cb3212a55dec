# stripe-recon: `make run` and `make test` set up everything they need on a fresh machine.
# Both are idempotent: a second call installs nothing.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
COMPAT_VENV := .venv-compat
COMPAT_STAMP := $(COMPAT_VENV)/.installed
TOOLS := $(CURDIR)/.cache/bin
STRIPE_MOCK_VERSION := v0.197.0
STRIPE_MOCK := $(TOOLS)/stripe-mock
RUN_DIR ?= data
PRODUCTS ?= 2000
# Extra flags for every recon command of `make run`, e.g. ARGS=-v (everything) or ARGS=--json.
ARGS ?=
export GX_ANALYTICS_ENABLED := false
export PYSPARK_PYTHON := $(CURDIR)/$(BIN)/python

.PHONY: help venv jars run test test-fast test-chaos test-compat test-cdc test-incremental test-cluster lint bench bench-e2e bench-incremental dist clean services stripe-mock

help:
	@echo "make run          generate a catalog, start the local Stripe emulator, run the whole job"
	@echo "make test         install what the tests need and run them"
	@echo "make test-chaos   faults, SIGKILLed pushes, concurrent writers and a replay against the emulator"
	@echo "make test-compat  the end-to-end tests on pyspark 3.5 + delta-spark 3.3 (AWS Glue 5.0)"
	@echo "make test-cdc     the real CDC stack (PostgreSQL -> Debezium -> Kafka) and the tests marked cdc"
	@echo "make test-incremental  detect --incremental vs a full detect over chained random change sets"
	@echo "make test-cluster  recon run through spark-submit on a real standalone master and worker"
	@echo "make lint | bench | dist | clean"

$(STAMP): setup.py
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH (or: make PYTHON=python3)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

# The Maven jars of local Spark sessions (Delta, the PostgreSQL driver, spark.extra_packages), resolved
# once into spark.ivy_dir; sessions then start from the local jars (no Ivy output). Silent when done.
jars: $(STAMP)
	@$(BIN)/python -m stripe_recon.jars --quiet
	@$(BIN)/python -m stripe_recon.jvm_archive

$(STRIPE_MOCK):
	mkdir -p $(TOOLS)
	GOBIN=$(TOOLS) GOFLAGS=-mod=mod go install github.com/stripe/stripe-mock@$(STRIPE_MOCK_VERSION)

stripe-mock: $(STRIPE_MOCK)

services:
	@bash scripts/test_services.sh

run: $(STAMP) jars
	@bash scripts/make_run.sh "$(RUN_DIR)" "$(PRODUCTS)" $(ARGS)

test: $(STAMP) jars $(STRIPE_MOCK) services
	STRIPE_MOCK_BIN=$(STRIPE_MOCK) $(BIN)/python -m pytest -q -p no:cacheprovider -m "not cdc and not chaos and not incremental and not cluster" --durations=25 $(PYTEST_ARGS)

test-fast: $(STAMP) jars
	$(BIN)/python -m pytest -q -m "not slow and not cdc and not chaos and not incremental and not cluster" $(PYTEST_ARGS)

# The cluster lane: a standalone Spark master and worker (from the pip package) and `recon run` through
# spark-submit --py-files dist/stripe_recon.zip against the emulator, checked against truth.jsonl.
test-cluster: $(STAMP) jars
	$(BIN)/python -m pytest -q -p no:cacheprovider -m cluster $(PYTEST_ARGS)

# Starts the stack (jars cached in .cache/cdc), runs the tests marked cdc, stops every process it started.
test-cdc: $(STAMP) jars
	bash scripts/cdc_services.sh start
	RECON_CDC_REQUIRED=1 $(BIN)/python -m pytest -q -p no:cacheprovider -m cdc --timeout=1200 $(PYTEST_ARGS); \
	    rc=$$?; bash scripts/cdc_services.sh stop; exit $$rc

# The incremental lane: chained rounds of random change sets (CDC events, a changed Stripe export),
# each `detect --incremental` checked row for row against a full detect of the same silver.
test-incremental: $(STAMP) jars
	$(BIN)/python -m pytest -q -p no:cacheprovider -m incremental $(PYTEST_ARGS)

# The chaos lane (tests/chaos and the fault/SIGKILL round trips of tests/e2e/test_convergence.py, marked
# `chaos`, left out of `make test`): real processes, the emulator with faults on, seeded SIGKILLs,
# concurrent writers and a replay; prints its figures (CHAOS_SEED=N to vary).
test-chaos: $(STAMP) jars
	$(BIN)/python -m pytest -q -s -p no:cacheprovider -m chaos --timeout=2400 tests/chaos tests/e2e/test_convergence.py $(PYTEST_ARGS)

$(COMPAT_STAMP): setup.py
	test -x $(COMPAT_VENV)/bin/python || $(PYTHON) -m venv $(COMPAT_VENV)
	$(COMPAT_VENV)/bin/pip install -q --upgrade pip
	$(COMPAT_VENV)/bin/pip install -q "pyspark>=3.5.3,<3.6" "delta-spark>=3.3,<3.4" \
	    "great-expectations[spark]>=1.19,<2" "stripe>=16,<17" boto3 "pydantic>=2.6,<3" PyYAML \
	    pytest pytest-timeout "moto[server]>=5" hypothesis psutil
	$(COMPAT_VENV)/bin/pip install -q --no-deps -e .
	touch $(COMPAT_STAMP)

test-compat: $(COMPAT_STAMP) $(STRIPE_MOCK)
	PYSPARK_PYTHON=$(CURDIR)/$(COMPAT_VENV)/bin/python STRIPE_MOCK_BIN=$(STRIPE_MOCK) \
	    $(COMPAT_VENV)/bin/python -m pytest -q -p no:cacheprovider -m compat $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check lib jobs tests bench setup.py

bench: $(STAMP) jars
	$(BIN)/python bench/run_bench.py

# The whole job (land + validate + detect + plan) against the floor and datacompy end to end (bench/README.md).
bench-e2e: $(STAMP) jars
	$(BIN)/python bench/e2e_bench.py

# 0.1% of the keys changed by CDC events: land --cdc + detect --incremental + plan vs a full run (bench/README.md).
bench-incremental: $(STAMP) jars
	$(BIN)/python bench/incremental_bench.py

# dist/: the wheel (conf/ inside as stripe_recon.conf), the jobs/ entry scripts, and the same wheel
# as stripe_recon.zip for `spark-submit --py-files` (zipimport reads it; conf is read from inside).
DIST ?= dist
dist: $(STAMP)
	rm -rf $(DIST) build
	$(BIN)/pip wheel -q --no-deps -w $(DIST) .
	cp jobs/*.py $(DIST)/
	cp $(DIST)/stripe_recon-*.whl $(DIST)/stripe_recon.zip
	@ls -l $(DIST)

clean:
	rm -rf $(VENV) $(COMPAT_VENV) dist build data .pytest_cache .ruff_cache lib/*.egg-info spark-warehouse metastore_db derby.log
