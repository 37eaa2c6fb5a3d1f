# One command to build and test, one to run the demo; CI calls `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: all venv test demo bench clean

all: test

# (Re)install when the build inputs change: the extension is rebuilt in place.
$(STAMP): pyproject.toml setup.py include/shmring.h src/shmring/_core.c
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

demo: $(STAMP)
	$(VENV)/bin/shmring demo

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info src/shmring/*.so
