# Two commands do all set-up: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# `make run PORT=8080` passes --port 8080; what is not set is left to the server's own
# precedence (SESSIOND_* environment, then sessiond.toml, then its defaults).
SERVE_FLAGS = $(if $(HOST),--host $(HOST)) $(if $(PORT),--port $(PORT)) $(if $(DB),--db $(DB))

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
	$(BIN)/sessiond serve $(strip $(SERVE_FLAGS))

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
