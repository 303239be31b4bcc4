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

.PHONY: install install-test run test test-slow bench mutate clean

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
	$(BIN)/python -m pytest -q -n 2

test-slow: $(TEST_STAMP)
	$(BIN)/python -m pytest -q -m slow

bench: $(TEST_STAMP)
	$(BIN)/python -m benchmarks.rnn_speed

# make mutate: mutation testing of the numerical core with mutmut (a periodic check,
# not part of `make test`; on 2 cores about 1.5 h for metrics + cells, 1 h for recurrence,
# 2 h for fused; docs/testing.md). One session per
# group, each in a fresh copy under build/mutation/<group>/ running that group's fast
# tests; `make mutate MUTATE_GROUPS=metrics` runs one group. Do not combine with -j:
# every session already runs MUTATE_JOBS workers. Non-killed mutants are listed in
# build/mutation/<group>/survivors.txt (`mutmut show NAME` there prints the diff).
# An interrupted run goes on where it stopped with MUTATE_RESUME=1: the same copy of
# the code and tests, the mutants already checked keep their results.
MUTATE_GROUPS ?= cells recurrence fused metrics
MUTATE_JOBS   ?= 2
MUTATE_DIR    := build/mutation
MUTATE_STAMP  := $(VENV)/.mutation-installed
mutate_code_cells       := rnnvision/cells/*
mutate_tests_cells      := tests/cells
mutate_code_recurrence  := rnnvision/recurrence.py
mutate_tests_recurrence := tests/test_recurrence.py tests/test_tbptt_stream.py tests/test_time_loop.py
mutate_code_fused       := rnnvision/fused/*
mutate_tests_fused      := tests/test_fast_paths.py tests/test_conv_fast_path.py tests/test_interop.py
mutate_code_metrics     := rnnvision/metrics/*
mutate_tests_metrics    := tests/metrics
# Imported once by mutmut's fork server (none of them starts a thread or an XLA
# backend on import), so each mutant's worker does not pay for them again.
MUTATE_PRELOAD := numpy jax jax.numpy flax optax ml_collections torch pytest hypothesis skimage
# Compilations of unmutated code are shared between the mutants' workers (on disk,
# at most 2 GB, least recently used entries dropped first).
MUTATE_ENV := JAX_COMPILATION_CACHE_DIR=$(abspath $(MUTATE_DIR))/jax-cache \
	JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0 JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES=0 \
	JAX_COMPILATION_CACHE_MAX_SIZE=2000000000

$(MUTATE_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[test,mutation]"
	touch $@

mutate: $(addprefix mutate-,$(MUTATE_GROUPS))

mutate-%: $(MUTATE_STAMP)
	@test -n "$(mutate_code_$*)" || { echo "unknown mutation group '$*'; groups: cells recurrence fused metrics"; exit 2; }
ifeq ($(MUTATE_RESUME),)
	rm -rf $(MUTATE_DIR)/$* && mkdir -p $(MUTATE_DIR)/$*
	cp -r rnnvision tests benchmarks pyproject.toml $(MUTATE_DIR)/$*/
else
	@test -f $(MUTATE_DIR)/$*/setup.cfg || { echo "MUTATE_RESUME: no run of group '$*' in $(MUTATE_DIR)/$* to resume"; exit 2; }
endif
	printf '%s\n' $(MUTATE_PRELOAD) > $(MUTATE_DIR)/$*/preload.txt
	printf '%s\n' '[mutmut]' 'source_paths = rnnvision' 'only_mutate = $(mutate_code_$*)' \
	  'pytest_add_cli_args_test_selection =' $(addprefix '    ',$(mutate_tests_$*)) \
	  'also_copy =' '    benchmarks' 'process_isolation = forkserver' 'forkserver_warmup = import' 'preload_modules_file = preload.txt' \
	  'timeout_multiplier = 5' 'timeout_constant = 30' 'use_git_change_detection = false' \
	  > $(MUTATE_DIR)/$*/setup.cfg
	cd $(MUTATE_DIR)/$* && $(MUTATE_ENV) $(abspath $(BIN))/mutmut run --max-children $(MUTATE_JOBS)
	cd $(MUTATE_DIR)/$* && $(abspath $(BIN))/mutmut results | tee survivors.txt

clean:
	rm -rf $(VENV) runs .pytest_cache
