# Herald: the two commands are `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint format bench asyncapi clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Herald needs Python 3.11 or newer (set PYTHON=...)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --progress-bar off -e '.[test]'
	@touch $(STAMP)

## Start the service on its embedded default (SQLite file, in-process bus) at http://127.0.0.1:8080/fhir
run: $(STAMP)
	$(BIN)/herald serve

## Lint, type-check, check the layering, then the whole suite (starts a real Kafka broker and a
## real PostgreSQL itself)
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## Benchmarks: print comparison tables (see bench/README.md)
bench: $(STAMP)
	$(BIN)/python -m bench.throughput
	$(BIN)/python -m bench.relay_lag
	$(BIN)/python -m bench.r4b_examples

asyncapi: $(STAMP)
	$(BIN)/herald asyncapi --output asyncapi.json

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache .mypy_cache .import_linter_cache
