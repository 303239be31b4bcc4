# The two commands of the README:
#   make run    installs the package into .venv (first time) and runs the quick-start
#               experiment (offline); only what running needs: no test extra
#   make test   adds the test extra (pytest, TensorFlow, torch, ...) and runs the test suite
#               (slow tests excluded)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
RUN_STAMP  := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test
WORKDIR ?= runs/row_mnist

.PHONY: install install-test run test test-slow bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(RUN_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $(RUN_STAMP)

$(TEST_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $(TEST_STAMP) $(RUN_STAMP)

install: $(RUN_STAMP)

install-test: $(TEST_STAMP)

run: $(RUN_STAMP)
	$(BIN)/python -m experiments.row_mnist --config=configs/row_mnist.py --workdir=$(WORKDIR)

test: $(TEST_STAMP)
	$(BIN)/python -m pytest -q

test-slow: $(TEST_STAMP)
	$(BIN)/python -m pytest -q -m slow

bench: $(TEST_STAMP)
	$(BIN)/python -m benchmarks.rnn_speed

clean:
	rm -rf $(VENV) runs .pytest_cache
