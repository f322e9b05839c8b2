# Two commands for users: `make demo` (the main job on bundled sample data) and `make test`.
# Each creates .venv on first use with pinned dependencies (torch first: see README).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
TESTSTAMP := $(VENV)/.installed-test
OUT    ?= out/demo
PYTEST_ARGS ?= -m "not slow"

.PHONY: demo test test-all bench clean

$(STAMP): pyproject.toml requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

$(TESTSTAMP): $(STAMP) requirements-test.lock
	$(PY) -m pip install --quiet -r requirements-test.lock
	touch $(TESTSTAMP)

demo: $(STAMP)
	$(VENV)/bin/stainseg demo -o $(OUT)

test: $(TESTSTAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

test-all: $(TESTSTAMP)
	$(PY) -m pytest -m ""

clean:
	rm -rf $(VENV) out .pytest_cache
