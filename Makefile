# make train:  install (or reuse) the virtual environment, then train with the default config.
# make test:   install (or reuse) it, then run the test suite (slow tests excluded: make test-slow).
# make serve:  install (or reuse) it, then start the draw-a-digit page (the bundled model unless outputs/ has one).
# make bundle: train, evaluate and package the bundled model from scratch.
# The environment lives outside the repository (it is ~6 GB with torch) and is reused by every clone;
# a clone installs itself into it once (a stamp per clone), again when pyproject.toml changes or
# when another clone has installed itself since.
PYTHON ?= python3
VENV ?= $(HOME)/.cache/digitrec/venv
PY := $(VENV)/bin/python
ARGS ?=
STAMP := $(VENV)/.installed-$(shell printf '%s' "$(CURDIR)" | cksum | cut -d' ' -f1)

.PHONY: install ours train test test-slow serve bundle lint

install: ours $(STAMP)

# The editable install points at one clone at a time: forget this clone's stamp when it is not this one.
ours:
	@cd / && $(PY) -c "import digitrec, sys; sys.exit(not digitrec.__file__.startswith('$(CURDIR)/'))" \
		2>/dev/null || rm -f $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip setuptools
	@# torch first, pinned, so that nothing resolves a different (multi-GB) build
	@$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	@$(PY) -m pip install -q --no-build-isolation -e '.[dev]'
	@touch $@

train: install
	$(PY) train.py $(ARGS)

test: install
	$(PY) -m pytest $(ARGS)

test-slow: install
	$(PY) -m pytest -m slow $(ARGS)

serve: install
	$(PY) -m digitrec.serve $(ARGS)

bundle: install
	$(PY) -m digitrec.training.bundle $(ARGS)

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
