# One place for the set-up and the checks. `make repro` and `make check` are the README's two commands.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: install repro studies check lint types test test-fast test-unit clean-venv

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/.installed

## The main job: the whole DVC pipeline on the default data.
repro: install
	$(BIN)/dvc repro

## The studies (studies/dvc.yaml: backtest, fine-tuning strategies, learning curve), after the main job.
studies: install
	$(BIN)/dvc repro studies/dvc.yaml

## Every check, in a fixed order: lint, format, types, tests.
check: install lint types test

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

types:
	$(BIN)/mypy

## Two workers (the machine's two cores), pytest-xdist `--dist loadgroup`: every test of a file runs
## in one worker (module fixtures are built once). The lanes are folders (tests/README.md):
## tests/unit, tests/component (`make test-fast`, the edit-test loop) and tests/pipeline (whole
## pipelines through DVC, served Bentos; its smoke pipeline builds in the background from the
## start). TEST_JOBS=0 runs in this process (e.g. for pdb).
TEST_JOBS ?= 2
PYTEST := $(BIN)/python -m pytest -n $(TEST_JOBS) --dist loadgroup

test:
	$(PYTEST)

test-fast: install
	$(PYTEST) tests/unit tests/component

test-unit: install
	$(PYTEST) tests/unit

clean-venv:
	rm -rf $(VENV)
