# Two commands do all set-up: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 2323
DB ?= ./data/sessiond.db

.PHONY: run test lint typecheck pytest system-deps bench bench-smoke clean

$(BIN)/sessiond: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.test-extras: $(BIN)/sessiond
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

system-deps:
	sh tests/system-deps.sh

run: $(BIN)/sessiond
	$(BIN)/sessiond serve --host $(HOST) --port $(PORT) --db $(DB)

lint: $(VENV)/.test-extras
	$(BIN)/ruff format --check $(wildcard server tests bench)
	$(BIN)/ruff check $(wildcard server tests bench)

typecheck: $(VENV)/.test-extras
	$(BIN)/mypy

pytest: $(VENV)/.test-extras system-deps
	$(BIN)/python -m pytest -q

test: lint typecheck pytest

bench: $(BIN)/sessiond
	$(BIN)/python -m bench

bench-smoke: $(BIN)/sessiond
	$(BIN)/python -m bench --smoke

clean:
	rm -rf $(VENV) build *.egg-info
