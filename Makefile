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
.PHONY: help install run test browser lint format typecheck lock

help:
	@echo "make run        install, then start everything (darkroom up)"
	@echo "make test       install, then run the tests (ARGS=... passed to pytest)"
	@echo "make browser    install Debian's chromium for the /ui browser tests (make test does)"
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

test: $(STAMP) browser
	$(BIN)/python -m pytest $(ARGS)

# The /ui tests drive Debian's Chromium with Playwright (the python package is in the lock).
# Installed from apt when missing, as root or with sudo; where neither can, the browser tests
# say so and skip (in CI they fail instead).
CHROMIUM ?= /usr/bin/chromium
browser:
	@if [ ! -x "$(CHROMIUM)" ] && command -v apt-get >/dev/null; then \
		if [ "$$(id -u)" -eq 0 ]; then sudo=""; \
		elif sudo -n true 2>/dev/null; then sudo="sudo"; \
		else echo "make browser: $(CHROMIUM) is missing and apt needs root: the /ui browser tests will skip"; exit 0; fi; \
		$$sudo apt-get update -q && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; \
	fi

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
