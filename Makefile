# Every target creates .venv when it is missing and installs the project into it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run demo test test-long lint format bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,dev]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/exchanged run

# a market maker and a noise taker trading through the real daemon (its own
# namespace and ports, files under var/demo): watch the book move; Ctrl-C stops
demo: $(STAMP)
	$(VENV)/bin/exch demo

test: $(STAMP)
	$(PY) -m pytest -m "not slow" tests

test-long: $(STAMP)
	$(PY) -m pytest -m slow tests

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: $(STAMP)
	$(PY) -m bench.book --json
	$(PY) -m bench.ring --json
	$(PY) -m bench.journal --json
	$(PY) -m bench.shard --json

clean:
	rm -rf $(VENV) var build *.egg-info

.PHONY: chaos soak bench-e2e

# 24 SIGKILLs of shards, the gateway, the supervisor and all at once under steady
# trading (fsync journals, keys reused across shards), then
# every acknowledged order, fill, key and state hash checked; prints the summary
chaos: $(STAMP)
	$(PY) -m pytest -m slow -s tests/chaos

# the end-to-end benchmark: bots over CURVE against the daemon and a bare echo;
# writes the latency-vs-load chart and the table of bench/RESULTS.md's e2e block
bench-e2e: $(STAMP)
	$(PY) -m bench.e2e --json --plot bench/e2e.svg --results bench/RESULTS.md

# 10 minutes at half the measured capacity: RSS, descriptors, shared memory, latency
soak: $(STAMP)
	$(PY) -m bench.soak
