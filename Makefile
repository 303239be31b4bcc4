# The two commands of the README:
#   make run    installs into .venv (first time) and runs the quick-start experiment (offline)
#   make test   installs into .venv (first time) and runs the test suite (slow tests excluded)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
WORKDIR ?= runs/row_mnist

.PHONY: install run test test-slow bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/python -m experiments.row_mnist --config=configs/row_mnist.py --workdir=$(WORKDIR)

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

bench: $(STAMP)
	$(BIN)/python -m benchmarks.rnn_speed

clean:
	rm -rf $(VENV) runs .pytest_cache
