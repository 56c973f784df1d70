# make train: install (or reuse) the virtual environment, then train with the default config.
# make test:  install (or reuse) it, then run the test suite (slow tests excluded: make test-slow).
# The environment lives outside the repository (it is ~6 GB with torch) and is reused by every clone.
PYTHON ?= python3
VENV ?= $(HOME)/.cache/digitrec/venv
PY := $(VENV)/bin/python
ARGS ?=

.PHONY: install train test test-slow

install:
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip setuptools
	@# torch first, pinned, so that nothing resolves a different (multi-GB) build
	@$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	@$(PY) -m pip install -q --no-build-isolation -e '.[dev]'

train: install
	$(PY) train.py $(ARGS)

test: install
	$(PY) -m pytest $(ARGS)

test-slow: install
	$(PY) -m pytest -m slow $(ARGS)
