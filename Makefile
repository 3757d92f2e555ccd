# Two commands take a fresh clone to a finished search and to green tests:
#   make demo   sets up what is missing, builds the built-in dataset, runs the demo search
#   make test   sets up what is missing, runs the test suite
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test test-fast bench
setup:
	@bash scripts/setup.sh

demo: setup
	$(PY) train_entry.py demo

test: setup
	$(PY) -m pytest -q --durations=30

test-fast: setup
	$(PY) -m pytest -q -m "not e2e"

bench: setup
	$(PY) bench/bench_step.py
