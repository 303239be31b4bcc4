"""Shared helpers of the sweep tests: the toy task of tests/train as the experiment."""

from __future__ import annotations

import os
import sys

import jax
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

from toy_sweep_config import toy_config  # noqa: E402,F401  (registers the "toy_sum" task)


@pytest.fixture(autouse=True, scope="module")
def _fast_compiles():
    """These tests compile many tiny programs: skip XLA's optimisation passes (the
    sweep subprocesses of the tests do the same, through JAX_DISABLE_MOST_OPTIMIZATIONS)."""
    before = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", before)


@pytest.fixture
def config():
    return toy_config()
