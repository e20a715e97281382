# `make setup` builds the venv; `make test` installs what the tests need (Python + Debian) and runs them all.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup system-deps lint test test-fast bench clean

setup: $(BIN)/qpool
	@echo "qpool is ready: run bin/qpool, or put it on PATH with: export PATH=\"$(CURDIR)/bin:\$$PATH\""

$(BIN)/qpool: requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt -r requirements-dev.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $@

system-deps:
	./scripts/install-system-deps.sh

lint: setup
	$(BIN)/ruff check .

# Four workers even on 2 cores: lab modules wait on their hosts and chain clocks most of the time (a lab module
# uses about half a core), so up to four labs run side by side; tests/xdist_groups.py keeps each module on one
# worker and hands out the longest first. Six were faster once (15.1 against 18.6 min) but a lab host then
# failed to boot within 600 s in a second run (docs/testing.md), so four stay the default.
PYTEST_WORKERS ?= 4

test: setup system-deps lint
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadgroup

# No lab hosts and none of the tests marked slow (production-timing alert waits, drills; `make test` runs
# them): quick feedback while editing. Four workers: most of these tests wait on subprocesses, not the CPU.
test-fast: setup
	$(BIN)/pytest -m "not lab and not slow" -n 4 --dist loadgroup

bench: setup
	$(BIN)/python bench/plan_scaling.py

clean:
	rm -rf $(VENV) .pytest_cache
