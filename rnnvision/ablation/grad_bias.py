r"""How biased is the truncated-BPTT gradient? Cosine, relative error and contribution by lag.

For fixed parameters and one fixed batch:

    g      = the full-BPTT gradient,   g_k = the gradient with `unroll(truncation=k)`
    cosine(g_k, g),  ||g_k - g|| / ||g||          (rnnvision.metrics.gradients)

and the full gradient split by time lag. Write the recurrence with a separate copy
theta_s of the cell parameters at every step s (all equal to theta). Then

    g = sum_t sum_{s <= t} dl_t / d theta_s  =  sum_tau g_tau,
    g_tau = sum_t dl_t / d theta_{t - tau}            (the part that crosses tau steps)

with l_t the loss on step t's output. The parameters outside the cell (the readout)
act at the loss's own step: lag 0. `lag_contributions` computes g_tau exactly by
differentiating with respect to per-step perturbations of the cell parameters;
sum_tau g_tau equals g (to float rounding), and ||sum_{tau >= k} g_tau|| / ||g|| is
the share of the full gradient that comes from dependencies longer than k. For a
loss only at the last step T - 1 and T % k == 0, the truncated gradient g_k is
exactly sum_{tau < k} g_tau (unroll's windows start at step 0).

Shapes: xs (B, T, *F); params {"cell": cell params, ...} (other keys: readout).
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from rnnvision import recurrence
from rnnvision.metrics.gradients import cosine_similarity, relative_norm_error
from rnnvision.tasks import Capability, RecurrentLoss, Task
from rnnvision.train import build_task, initial_stream

Params = Any


def loss_value(rl: RecurrentLoss, params: Params, truncation: int | None = None) -> jax.Array:
    """The scalar loss, with truncated BPTT of window `truncation` (None = full)."""
    carry = rl.cell.initial_carry(params["cell"], rl.xs[:, 0].shape)
    _, ys = recurrence.unroll(rl.cell, params["cell"], carry, rl.xs, truncation=truncation)
    return jnp.sum(rl.step_losses(params, ys))


def gradient(rl: RecurrentLoss, params: Params, truncation: int | None = None) -> Params:
    """d loss / d params with `unroll(truncation=...)` (None = full BPTT)."""
    return _gradient_fn(rl, truncation)(params)


@functools.lru_cache(maxsize=64)
def _gradient_fn(rl: RecurrentLoss, truncation: int | None):
    """One compiled gradient per (loss, k), reused for every set of parameters."""
    return jax.jit(jax.grad(lambda p: loss_value(rl, p, truncation)))


def compare(approx: Params, exact: Params) -> dict[str, float]:
    """cosine and relative norm error, over all parameters and over the cell's only."""
    return {"cosine": float(cosine_similarity(approx, exact)),
            "relative_error": float(relative_norm_error(approx, exact)),
            "cosine_cell": float(cosine_similarity(approx["cell"], exact["cell"])),
            "relative_error_cell": float(relative_norm_error(approx["cell"], exact["cell"]))}


def _per_step_losses(rl: RecurrentLoss, params: Params, eps: Params) -> jax.Array:
    """(T,) step losses with the cell's parameters at step s = params["cell"] + eps[s]."""
    cell = rl.cell
    xs = jnp.swapaxes(rl.xs, 0, 1)

    def body(carry, inp):
        x, e = inp
        p = jax.tree.map(jnp.add, params["cell"], e)
        return cell.step(p, carry, x)

    carry = cell.initial_carry(params["cell"], rl.xs[:, 0].shape)
    _, ys = jax.lax.scan(body, carry, (xs, eps))
    return rl.step_losses(params, jnp.swapaxes(ys, 0, 1))


@jax.jit
def _scatter_by_lag(jac_t: Params, t: jax.Array, acc: Params) -> Params:
    """acc[tau] += jac_t[t - tau] for tau = 0..t (jac_t: (T, *P) per-step grads of l_t)."""
    def add(a, j):
        num = j.shape[0]
        src = t - jnp.arange(num)                  # step s = t - tau
        valid = (src >= 0).reshape((num,) + (1,) * (j.ndim - 1))
        return a + jnp.where(valid, j[jnp.clip(src, 0, num - 1)], 0.0)
    return jax.tree.map(add, acc, jac_t)


@functools.lru_cache(maxsize=8)
def _step_gradient_fn(rl: RecurrentLoss):
    """jit((params, eps, t) -> d l_t / d (params, eps)): one backward pass per loss step."""
    def step_loss(params, eps, t):
        return _per_step_losses(rl, params, eps)[t]
    return jax.jit(jax.grad(step_loss, argnums=(0, 1)))


def lag_contributions(rl: RecurrentLoss, params: Params) -> tuple[Params, Params]:
    """(g_tau for the cell: leaves (T, *P) indexed by lag tau, the other params' gradient).

    The other parameters (readout) have lag 0: the full gradient is
    {"cell": sum_tau g_tau["cell"], **others}.
    """
    num = rl.num_steps
    eps = jax.tree.map(lambda p: jnp.zeros((num,) + p.shape, p.dtype), params["cell"])
    step_gradient = _step_gradient_fn(rl)
    steps = range(num) if rl.loss_steps is None else rl.loss_steps
    by_lag = jax.tree.map(jnp.zeros_like, eps)
    other_grads = {k: jax.tree.map(jnp.zeros_like, v) for k, v in params.items() if k != "cell"}
    for t in steps:
        g_params, g_eps = step_gradient(params, eps, jnp.asarray(t))
        by_lag = _scatter_by_lag(g_eps, jnp.asarray(t), by_lag)
        # the cell's direct gradient is already in g_eps (params["cell"] + eps[s] at step s)
        other_grads = jax.tree.map(jnp.add, other_grads,
                                   {k: v for k, v in g_params.items() if k != "cell"})
    return by_lag, other_grads


def lag_table(by_lag: Params, others: Params, full: Params) -> list[dict[str, float]]:
    """Per lag tau: norm_share = ||g_tau|| / ||g||, and for a sliding window of k = tau
    steps (lags 0 .. k-1 kept): beyond = ||sum_{lag >= k} g_lag|| / ||g||, how much of
    the full gradient it leaves out, and cosine_sliding = cos(sum_{lag < k} g_lag, g).
    """
    share, beyond, cosine = (np.asarray(a) for a in _lag_statistics(by_lag, others, full))
    return [{"lag": tau, "norm_share": float(share[tau]),
             "beyond": float(beyond[tau]) if tau else 1.0,
             "cosine_sliding": float(cosine[tau]) if tau else 0.0}
            for tau in range(len(share))]


@jax.jit
def _lag_statistics(by_lag: Params, others: Params, full: Params):
    """(norm_share, beyond, cosine_sliding), each (T,): `lag_table` in one program."""
    def per_lag(fn, tree):  # sum over leaves of fn(leaf) reduced to its leading (lag) axis
        leaves = jax.tree.leaves(jax.tree.map(lambda a: jnp.sum(fn(a).reshape(a.shape[0], -1), 1),
                                              tree))
        return sum(leaves, jnp.zeros(jax.tree.leaves(tree)[0].shape[0], jnp.float32))

    full_cell = full["cell"]
    full_others = {k: v for k, v in full.items() if k != "cell"}
    norm = jnp.sqrt(sum(jnp.sum(a * a) for a in jax.tree.leaves(full)))
    others_sq = sum((jnp.sum(a * a) for a in jax.tree.leaves(others)), jnp.zeros(()))
    others_dot = sum((jnp.sum(a * b) for a, b in zip(jax.tree.leaves(others),
                                                     jax.tree.leaves(full_others))), jnp.zeros(()))
    first = jnp.zeros(jax.tree.leaves(by_lag)[0].shape[0]).at[0].set(1.0)
    share = jnp.sqrt(per_lag(lambda a: a * a, by_lag) + first * others_sq) / norm
    tail = jax.tree.map(lambda a: jnp.cumsum(a[::-1], axis=0)[::-1], by_lag)  # sum_{lag >= tau}
    beyond = jnp.sqrt(per_lag(lambda a: a * a, tail)) / norm
    # window k = tau keeps lags < tau: sum_{lag <= tau-1}, i.e. the full sum minus tail[tau]
    kept = jax.tree.map(lambda t, f: f[None] - t, tail, full_cell)
    kept_sq = per_lag(lambda a: a * a, kept) + others_sq
    kept_dot = per_lag(lambda a: a, jax.tree.map(lambda k, f: k * f[None], kept, full_cell)) + others_dot
    cosine = kept_dot / jnp.maximum(jnp.sqrt(kept_sq) * norm, 1e-30)
    return share, beyond, cosine


def measure(rl: RecurrentLoss, params: Params, truncations: Sequence[int],
            with_lags: bool = True) -> tuple[list[dict], list[dict]]:
    """Per k: the window-aligned truncated gradient `unroll(truncation=k)` against the
    full one (cosine, relative_error, and the same over the cell's parameters only);
    with `with_lags` also the sliding-window gradient sum_{lag < k} g_lag against the
    full one (cosine_sliding, and beyond = its relative error = the share of the full
    gradient from lags >= k). Returns (rows per k, the lag table)."""
    full = gradient(rl, params, None)
    lags = []
    if with_lags:
        by_lag, others = lag_contributions(rl, params)
        lags = lag_table(by_lag, others, full)
    rows = []
    for k in truncations:
        row = {"k": int(k), **compare(gradient(rl, params, int(k)), full)}
        if with_lags:  # k >= T keeps every lag
            row["cosine_sliding"] = lags[k]["cosine_sliding"] if k < len(lags) else 1.0
            row["beyond"] = lags[k]["beyond"] if k < len(lags) else 0.0
        rows.append(row)
    return rows, lags


def as_numpy(rows: list[dict]) -> dict[str, np.ndarray]:
    return {k: np.array([r[k] for r in rows]) for k in rows[0]} if rows else {}


# -- the sweep's analysis: measure at initialisation and at a run's checkpoints ----------

def recurrent_loss_for(task: Task, batch: dict) -> RecurrentLoss:
    """The task's loss on `batch` as a RecurrentLoss (Capability.RECURRENT_LOSS)."""
    if not task.has(Capability.RECURRENT_LOSS):
        raise TypeError(f"task {task.config.task!r} ({type(task).__name__}) does not provide "
                        "Capability.RECURRENT_LOSS, which the gradient-bias analysis needs")
    return task.recurrent_loss(batch)


def checkpoint_params(config, workdir: str) -> list[tuple[int, Params]]:
    """[(step, params)] at initialisation (step 0) and at every checkpoint kept in `workdir`."""
    from rnnvision.train import checkpoint, optim, parallel, state as state_lib

    task = build_task(config)
    params = task.init_params(jax.random.fold_in(jax.random.key(config.seed), 0))  # as the trainer
    out = [(0, params)]
    if not os.path.isdir(os.path.join(workdir, "checkpoints")):
        return out
    tx = optim.make_optimizer(config.optim, config.train.num_steps)
    stream = initial_stream(task, parallel.DataParallel(), config.train.batch_size)
    like = state_lib.create(params, tx, stream)
    ckpt = checkpoint.Checkpointer(workdir, config.train.keep_checkpoints)
    try:
        for step in sorted(ckpt.manager.all_steps()):
            out.append((int(step), ckpt.restore(step, like).params))
    finally:
        ckpt.close()
    return out


def analyze(config, root: str) -> dict[str, list[dict]]:
    """The sweep's gradient-bias analysis (config.grad_bias); writes DIR/grad_bias/*.csv.

    Measures on the checkpoints of one sub-run of the grid (the sweep runs it first).
    """
    from rnnvision.ablation import grid
    from rnnvision.ablation.summary import write_csv

    gb, run = config.grad_bias, grid.grad_bias_run(config)
    if run is None:
        return {}
    cfg = grid.run_config(config, run)
    wanted = None if gb.checkpoints == "all" else {int(s) for s in gb.checkpoints.split(",")}
    points = [(s, p) for s, p in checkpoint_params(cfg, run.workdir(root))
              if wanted is None or s in wanted]
    batch_cfg = ml_collections.ConfigDict(cfg.to_dict())
    batch_cfg.train.batch_size = gb.batch_size
    task = build_task(batch_cfg)
    batch = task.train_batch(10**6, slice(0, gb.batch_size))  # a batch no run trained on
    rl = recurrent_loss_for(task, batch)
    ks = [k for k in grid.parse_truncations(gb.truncations) if k > 0]
    bias_rows, lag_rows = [], []
    for step, params in points:
        rows, lags = measure(rl, params, ks, with_lags=gb.lags)
        bias_rows += [{"step": step, **r} for r in rows]
        lag_rows += [{"step": step, **r} for r in lags]
        logging.info("grad bias at step %d: %s", step,
                     ", ".join(f"k={r['k']}: cos {r['cosine']:.3f}" for r in rows))
    outdir = os.path.join(root, "grad_bias")
    os.makedirs(outdir, exist_ok=True)
    write_csv(os.path.join(outdir, "grad_bias.csv"), bias_rows)
    write_csv(os.path.join(outdir, "lags.csv"), lag_rows)
    with open(os.path.join(outdir, "source.json"), "w") as f:
        json.dump({"run": run.workdir(root), "setting": run.setting.name, "seed": gb.seed,
                   "num_steps": rl.num_steps, "batch_size": gb.batch_size}, f, indent=2)
    return {"bias": bias_rows, "lags": lag_rows}
