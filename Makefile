# One place for the set-up and the checks. `make repro` and `make check` are the README's two commands.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: install repro studies check lint types test test-fast clean-venv

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

## Two workers (the machine's two cores): every test of a file runs in one worker (module fixtures are
## built once), and the tests of the shared smoke pipeline (fixture smoke_repo) all in one
## (tests/conftest.py). TEST_JOBS=0 runs in this process (e.g. for pdb).
TEST_JOBS ?= 2

test:
	$(BIN)/python -m pytest -n $(TEST_JOBS) --dist loadgroup

## The edit-test loop: unit and component tests, without the tests marked slow (whole pipelines
## through dvc, served Bentos); `make check` runs everything.
test-fast: install
	$(BIN)/python -m pytest -n $(TEST_JOBS) --dist loadgroup -m "not slow"

clean-venv:
	rm -rf $(VENV)
