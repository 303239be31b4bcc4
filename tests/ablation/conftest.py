"""Shared fixtures of the ablation tests: fast XLA builds, the sweep config."""

from __future__ import annotations

import importlib.util
import os

import jax
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(autouse=True, scope="module")
def _fast_compiles():
    """These tests compile many tiny programs: skip XLA's optimisation passes."""
    before = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", before)


def load_config(arg: str | None = None):
    """configs/tbptt_ablation.py:get_config(arg), unlocked for the test to edit."""
    spec = importlib.util.spec_from_file_location(
        "_tbptt_ablation_config", os.path.join(REPO, "configs", "tbptt_ablation.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config(arg)
    config.unlock()
    return config


@pytest.fixture
def smoke_config():
    return load_config("smoke")
