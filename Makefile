# Two commands a newcomer needs: `make demo` (the main job) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.keras-vessel-installed
DEMO_DIR ?= runs/demo
ROOT ?=

.PHONY: install demo test test-fast bench clean

$(STAMP): setup.py setup.cfg
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev,beam]"
	touch $(STAMP)

install: $(STAMP)

## The main job: prepare, train, evaluate, export and predict on the built-in
## synthetic fundus set (or on DRIVE with `make demo ROOT=/path/to/DRIVE`).
demo: $(STAMP)
	$(VENV)/bin/keras-vessel demo --output $(DEMO_DIR) $(if $(ROOT),--root $(ROOT))

## The whole test suite, slow tests included (what CI runs; with the beam extra, so --engine beam is tested), in two worker processes
## (pytest-xdist; one module per worker at a time, so module fixtures are built once; modules with slow tests first, see tests/conftest.py).
test: $(STAMP)
	$(PY) -m pytest -q -ra --durations=25 -n 2 --dist loadscope --no-loadscope-reorder

test-fast: $(STAMP)
	$(PY) -m pytest -q -ra -m "not slow"

clean:
	rm -rf $(VENV) runs build *.egg-info
