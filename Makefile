# Two entry points that work on a fresh machine with Python 3.11:
#   make demo   creates .venv, installs reprlab, runs the main job (the quick study + report)
#   make test   creates .venv, installs reprlab with test extras, runs the test suite
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
DATA ?= $(abspath $(or $(REPRLAB_DATA),../shared/data))
PYTEST_ARGS ?=

.PHONY: demo test install install-test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

install install-test: $(VENV)/.installed

demo: $(VENV)/.installed
	REPRLAB_DATA=$(DATA) $(BIN)/reprlab study run quick --workers 2
	REPRLAB_DATA=$(DATA) $(BIN)/reprlab report runs/quick
	@echo "results: runs/quick (report: runs/quick/report.html)"

test: $(VENV)/.installed
	REPRLAB_DATA=$(DATA) $(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) *.egg-info
