# The benchmark suite (bench/). Include this file from the top-level Makefile.
#
# The Quix Streams contender and py-spy live in a virtual environment of their
# own, var/bench-venv, so that the test environment never installs them.
# Sizes: BENCH_EVENTS (the throughput backlog) and BENCH_LEADS (recovery state
# sizes, comma-separated), e.g. `make bench BENCH_EVENTS=50000 BENCH_LEADS=10000`.

BENCH_VENV := var/bench-venv
BENCH_STAMP := $(BENCH_VENV)/.installed
BENCH_EVENTS ?= 100000
BENCH_LEADS ?= 10000,100000,1000000

.PHONY: bench-venv

bench-venv: $(BENCH_STAMP) ## Create the benchmark's own environment (Quix Streams, py-spy)

$(BENCH_STAMP): bench/requirements.txt pyproject.toml
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install --quiet --upgrade pip
	$(BENCH_VENV)/bin/pip install --quiet -r bench/requirements.txt
	$(BENCH_VENV)/bin/pip install --quiet --no-deps -e .
	@touch $@
