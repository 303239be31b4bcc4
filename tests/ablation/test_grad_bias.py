"""Gradient bias of truncation: cosine/relative error vs k, and the split by time lag."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnvision import cells
from rnnvision.ablation import grad_bias
from rnnvision.metrics.gradients import global_norm, relative_norm_error
from rnnvision.tasks import RecurrentLoss

B, I, H, T = 3, 2, 4, 6


def _problem(loss_at_every_step: bool, seed: int = 0):
    """A tanh RNN (spectral radius 1) with a linear readout: (RecurrentLoss, params)."""
    cell = cells.get("rnn", hidden_size=H)
    k_cell, k_head, k_x, k_y = jax.random.split(jax.random.key(seed), 4)
    params = {"cell": cell.init(k_cell, (I,)),
              "head": jax.random.normal(k_head, (H,))}
    xs = jax.random.normal(k_x, (B, T, I))
    targets = jax.random.normal(k_y, (B, T))

    def step_losses(p, ys):
        per_step = jnp.mean((ys @ p["head"] - targets) ** 2, axis=0)
        return per_step if loss_at_every_step else per_step * (jnp.arange(T) == T - 1)

    steps = None if loss_at_every_step else (T - 1,)
    return RecurrentLoss(cell, xs, step_losses, loss_steps=steps), params


def sum_check(by_lag, others, full) -> float:
    """||sum_tau g_tau - g|| / ||g||: 0 up to float rounding if the split by lag is exact."""
    total = {"cell": jax.tree.map(lambda a: a.sum(0), by_lag), **others}
    return float(relative_norm_error(total, full))


_PROBLEMS = {}


def _cached(every_step: bool):
    """One problem per kind for the whole module: its compiled gradients are reused."""
    if every_step not in _PROBLEMS:
        _PROBLEMS[every_step] = _problem(every_step)
    return _PROBLEMS[every_step]


@pytest.mark.parametrize("every_step", [False, True])
def test_cosine_is_one_at_k_ge_T_and_below_one_at_small_k(every_step):
    rl, params = _cached(every_step)
    rows, _ = grad_bias.measure(rl, params, [1, T, 2 * T], with_lags=False)
    by_k = {r["k"]: r for r in rows}
    for k in (T, 2 * T):
        assert by_k[k]["cosine"] == pytest.approx(1.0, abs=1e-6)
        assert by_k[k]["relative_error"] == pytest.approx(0.0, abs=1e-6)
    # k = 1 drops every path through the recurrence; with W_h orthogonal these are not small.
    assert by_k[1]["cosine_cell"] < 0.99 and by_k[1]["relative_error_cell"] > 0.05


@pytest.mark.parametrize("every_step", [False, True])
def test_lag_contributions_sum_to_the_full_gradient(every_step):
    rl, params = _cached(every_step)
    by_lag, others = grad_bias.lag_contributions(rl, params)
    full = grad_bias.gradient(rl, params)
    assert sum_check(by_lag, others, full) < 1e-5
    lags = grad_bias.lag_table(by_lag, others, full)
    assert len(lags) == T and lags[0]["beyond"] == 1.0
    assert all(row["norm_share"] > 0 for row in lags)  # every lag contributes here


def test_truncated_gradient_is_the_sum_of_lags_below_k_when_windows_end_at_the_loss():
    """Loss at the last step and T % k == 0: unroll's last window is exactly the last k steps."""
    rl, params = _cached(False)
    by_lag, others = grad_bias.lag_contributions(rl, params)
    for k in (1, 2, 3):
        truncated = grad_bias.gradient(rl, params, k)
        part = {"cell": jax.tree.map(lambda a: a[:k].sum(0), by_lag), **others}
        diff = jax.tree.map(jnp.subtract, truncated, part)
        assert float(global_norm(diff)) <= 1e-5 * float(global_norm(truncated))


def test_measure_reports_window_aligned_and_sliding_bias():
    rl, params = _cached(False)
    rows, lags = grad_bias.measure(rl, params, [2, 4], with_lags=True)
    by_k = {r["k"]: r for r in rows}
    # T = 6: k = 2 divides T (aligned = sliding); k = 4 leaves a last window of 2 steps.
    assert by_k[2]["cosine"] == pytest.approx(by_k[2]["cosine_sliding"], abs=1e-5)
    assert by_k[4]["cosine"] == pytest.approx(by_k[2]["cosine"], abs=1e-5)
    assert by_k[4]["cosine_sliding"] > by_k[2]["cosine_sliding"]
    assert by_k[4]["beyond"] == pytest.approx(lags[4]["beyond"])
    np.testing.assert_allclose(by_k[2]["beyond"], by_k[2]["relative_error"], rtol=1e-4)
