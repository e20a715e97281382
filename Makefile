# `make setup` builds the venv; `make test` installs what the tests need (Python + Debian) and runs them all.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup system-deps lint test test-fast bench clean

setup: $(BIN)/qpool

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

test: setup system-deps lint
	$(BIN)/pytest

# Unit and rendered-config tests only (no lab hosts): quick feedback while editing.
test-fast: setup
	$(BIN)/pytest -m "not lab"

bench: setup
	$(BIN)/python bench/plan_scaling.py

clean:
	rm -rf $(VENV) .pytest_cache
