"""Fixtures of the reliability tests: a shared XLA cache and one uninterrupted toy run."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cli_runs  # noqa: E402


@pytest.fixture(scope="session")
def jax_cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("xla_cache"))


@pytest.fixture(scope="session")
def reference(tmp_path_factory, jax_cache):
    """An uninterrupted run of the toy CLI: (final parameters, metrics rows, workdir)."""
    workdir = str(tmp_path_factory.mktemp("reference") / "run")
    cli_runs.run(workdir, jax_cache)
    rows = cli_runs.rows(workdir)
    assert cli_runs.train_steps(rows) == list(range(cli_runs.LOG_EVERY, cli_runs.NUM_STEPS + 1,
                                                    cli_runs.LOG_EVERY))
    return cli_runs.final_params(workdir), rows, workdir
