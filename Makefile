# Nurture: build, test and demo targets. `make help` lists them.

PYTHON ?= python3
VENV ?= .venv
VENV_PYTHON := $(VENV)/bin/python
VENV_STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.DEFAULT_GOAL := help

include make/kafka.mk
include make/chromium.mk
include make/bench.mk

.PHONY: help venv test unit demo bench clean

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 16

venv: $(VENV_STAMP) ## Create the virtual environment with the package and test tools

$(VENV_STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed; run make with PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(VENV_PYTHON) -m pip install --quiet --upgrade pip
	$(VENV_PYTHON) -m pip install --quiet -e '.[test]'
	@touch $@

test: venv kafka-fetch ## Run unit and integration tests against a throwaway broker
	bash scripts/with-kafka.sh $(VENV_PYTHON) -m pytest $(PYTEST_ARGS)

unit: venv ## Run only the unit tests (no broker)
	$(VENV_PYTHON) -m pytest tests/unit $(PYTEST_ARGS)

demo: venv kafka-fetch ## Train, run a worker, replay the clickstream and print a report
	bash scripts/demo.sh

bench: venv kafka-fetch bench-venv ## Run the benchmarks (docs/benchmarks.md) and print a summary table
	rm -rf var/bench/results
	$(VENV_PYTHON) bench/scoring.py
	bash scripts/with-kafka.sh $(VENV_PYTHON) bench/timers.py --firing 500
	bash scripts/with-kafka.sh $(VENV_PYTHON) bench/throughput.py --events $(BENCH_EVENTS)
	bash scripts/with-kafka.sh $(VENV_PYTHON) bench/recovery.py --leads $(BENCH_LEADS)
	$(VENV_PYTHON) bench/summary.py

clean: ## Remove the virtual environment and local state (not the Kafka jars)
	rm -rf $(VENV) var nurture.egg-info
