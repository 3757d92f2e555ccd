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

# The unit tests (one torch thread each) run in TEST_WORKERS pytest processes, one test module
# per process (pytest-xdist --dist loadscope: a module's fixtures are built once); the
# end-to-end tests (Ray searches, torchrun, kills timed on a trial's progress) one at a time.
TEST_WORKERS ?= 2

test: setup
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadscope -m "not e2e" --durations=15; \
	unit=$$?; $(PY) -m pytest -q -m e2e --durations=20; e2e=$$?; \
	echo "unit tests: exit $$unit, end-to-end tests: exit $$e2e"; \
	[ $$unit -eq 0 ] && [ $$e2e -eq 0 ]

test-fast: setup
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadscope -m "not e2e"

bench: setup
	$(PY) bench/bench_step.py
