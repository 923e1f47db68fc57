# Everything needs only python3 >= 3.11 and access to PyPI. The venv is (re)installed from the
# lock file when the lock file or pyproject.toml changes, and left alone otherwise.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV := $(BIN)/uv
UV_VERSION ?= 0.13.8
LOCK := requirements-dev.lock
PROD_LOCK := requirements.lock
STAMP := $(VENV)/.installed
ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install run test lint format typecheck lock

help:
	@echo "make run        install, then start everything (darkroom up)"
	@echo "make test       install, then run the tests (ARGS=... passed to pytest)"
	@echo "make lint       ruff check"
	@echo "make typecheck  mypy --strict service"
	@echo "make lock       regenerate $(LOCK) and $(PROD_LOCK) from pyproject.toml"

$(BIN)/python:
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "python >= 3.11 needed")'
	$(PYTHON) -m venv $(VENV)

$(UV): | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

# The lock pins every dependency of the dev and embedded extras; the project itself goes on top,
# editable and without dependencies, so nothing unpinned sneaks in.
$(STAMP): $(LOCK) pyproject.toml | $(UV)
	$(UV) pip install --python $(BIN)/python -r $(LOCK)
	$(UV) pip install --python $(BIN)/python --no-deps -e .
	touch $@

install: $(STAMP)

run: $(STAMP)
	exec $(BIN)/darkroom up $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

format: $(STAMP)
	$(BIN)/ruff format .

typecheck: $(STAMP)
	$(BIN)/mypy --strict service

# --universal: one lock for every platform and Python >= 3.11 (markers where they differ).
lock: | $(UV)
	$(UV) pip compile pyproject.toml --extra dev --extra embedded --universal \
		--python-version 3.11 -o $(LOCK)
	$(UV) pip compile pyproject.toml --universal --python-version 3.11 -o $(PROD_LOCK)
