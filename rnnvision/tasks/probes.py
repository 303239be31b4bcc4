r"""Long-memory probes with a known dependency length L: the copy task and the adding task.

Both are tasks of exactly T = L steps whose only loss is at the last step, L - 1,
and whose needed input is at the first step, 0: the dependency spans L steps
(the input step, the output step and the L - 2 steps between them).

Why the needed input sits at step 0. `rnnvision.recurrence.unroll(truncation=k)`
cuts the gradient before every step s with s % k == 0 and s > 0: the windows of
k steps start at the first step. A loss at step t reaches an input at step p < t
only if p and t lie in one window, i.e. floor(p / k) == floor(t / k). With
p = 0 and t = L - 1 that holds exactly when k >= L, for every k (not only for
multiples of L). Had the symbol sat at step p > 0, window [floor(p/k)k, ...)
would hold both ends only for some k >= L, and the cliff would be ragged. So:

    k <  L  the loss has no gradient path to the step-0 input: the task cannot be
            learned through the gradient (copy: chance accuracy 1/num_symbols;
            adding: at best the second marked value, MSE >= 1/12; but see below);
    k >= L  the window [0, k) holds the whole sequence: truncated BPTT *is* full
            BPTT here, and the task is learned.

The loss has no gradient path to step 0 when k < L, yet a truncated run can creep
above chance: the untrained write of step 0 into the state differs from later
steps' (the state before step 0 is zero), the last window learns to keep and the
readout to decode whatever trace of it survives, and these learned dynamics are
shared by the earlier steps. Two choices keep that leak small. The steps between
carry random distractor symbols in the same channels as the step-0 symbol (copy)
or random values (adding), which wash an unprotected trace out. And the copy task
has no marker channel by default (data.marker = False): the symbol to remember is
simply the first one. Measured (LSTM(64), Adam 3e-3, 300-600 steps, 2026-11-22):
with a marker at L = 10, k = 9 reached 86% accuracy; without one at L = 20 every
k < 20 stayed at 18-32% (chance 12.5%) while k = 20 reached 100%. Longer L leaks
less (L = 10 without a marker: k = 5 still reached 88%).

copy   (task "copy") features: num_copy blocks of a num_symbols one-hot, a marker
       channel (1 at step 0 if data.marker, else always 0) and a recall cue (1 at
       step L - 1). Step 0 shows the num_copy symbols to remember; steps 1..L-2 show
       random distractor symbols; step L - 1 shows only the cue. Loss: mean softmax
       cross-entropy of the num_copy symbols read out at step L - 1. Metric:
       per-symbol accuracy.
adding (task "adding") features: a value in U[0, 1) and a marker. The markers are
       at step 0 and at one step in [L // 2, L - 1]; target: the sum of the two
       marked values at step L - 1. Loss: mean squared error. Metrics: mse and
       accuracy = fraction with |error| < 0.1 (about 0.2 by chance). Baselines:
       predicting the mean gives mse 1/6, knowing only the second value 1/12.

Model: any registered dense cell (model.cell) and a linear readout of the last
step's output. Data are a pure function of (seed, step); evaluation uses a fixed
set of data.num_eval sequences shared by every seed.
"""

from __future__ import annotations

import functools
import os
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rnnvision.config_checks import check, int_at_least
from rnnvision.metrics.gradients import recurrent_sigma_max
from rnnvision.models.cell_factory import make_cell
from rnnvision.models.readout import LastStepReadout
from rnnvision.tasks.base import Apply, Capability, RecurrentLoss, Task
from rnnvision.tasks.evaluation import chunk_slices, weighted_means

_EVAL_SEED = 20261122  # the evaluation set's seed: one set shared by every run


@functools.partial(jax.jit, static_argnums=(0, 1))
def _init_params(model: LastStepReadout, num_features: int, rng):
    """Cell + readout parameters; jitted (one compile per model, not one per op)."""
    return model.init(rng, (num_features,))


class ProbeTask(Task):
    """Shared parts of the copy and adding tasks: cell + linear readout at the last step."""

    capabilities = frozenset({Capability.RECURRENT_LOSS})
    num_features: int
    num_outputs: int

    def __init__(self, config, time_loop):
        super().__init__(config, time_loop)
        check(config, [
            ("data.dependency", int_at_least(2), "an integer L >= 2"),
            ("data.num_eval", int_at_least(1), "an integer >= 1"),
            ("model.hidden_size", int_at_least(1), "an integer >= 1"),
        ])
        self.cell = make_cell(config.model)
        self.check_time_loop([self.cell])
        self.model = LastStepReadout(self.cell, self.num_outputs, time_loop)
        self.length = config.data.dependency
        self._eval = self.make_batch(np.random.default_rng(_EVAL_SEED), config.data.num_eval)

    # -- data ------------------------------------------------------------------------
    def make_batch(self, rng: np.random.Generator, size: int) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def train_batch(self, step: int, rows: slice) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([self.config.seed, step])
        batch = self.make_batch(rng, self.config.train.batch_size)
        return {k: v[rows] for k, v in batch.items()}

    # -- model -----------------------------------------------------------------------
    def init_params(self, rng):
        return _init_params(self.model, self.num_features, rng)

    def last_step_loss(self, params, y_last, batch) -> tuple[jax.Array, dict]:
        """(loss, metrics) from the last step's output (B, H)."""
        raise NotImplementedError

    def loss(self, params, batch, rng):
        ys = self.model.outputs(params, batch["x"])
        loss, metrics = self.last_step_loss(params, ys[:, -1], batch)
        return loss, dict(metrics, recurrent_sigma_max=recurrent_sigma_max(params["cell"]))

    def recurrent_loss(self, batch) -> RecurrentLoss:
        """This task's loss on `batch`: the cell's unroll plus a loss at step L - 1 only."""
        step_losses = LastStepReadout.last_step_losses(
            lambda params, y_last: self.last_step_loss(params, y_last, batch)[0])
        return RecurrentLoss(cell=self.cell, xs=jnp.asarray(batch["x"]), step_losses=step_losses,
                             loss_steps=(self.length - 1,))

    # -- evaluation ------------------------------------------------------------------
    def _eval_metrics(self, params, batch):
        """Per-example loss and metrics (rows: `apply` drops the padding rows). Full BPTT is
        irrelevant here (no gradient); the task's loop options still apply."""
        ys = self.model.outputs(params, batch["x"])
        one = lambda y, row: self.last_step_loss(  # noqa: E731 -- a batch of one example
            params, y[None], jax.tree.map(lambda v: v[None], row))
        loss, metrics = jax.vmap(one)(ys[:, -1], batch)
        return dict(metrics, loss=loss)

    def evaluate(self, params, apply: Apply) -> dict[str, float]:
        n = self.config.data.num_eval
        parts = [(rows.stop - rows.start,
                  apply(self._eval_metrics, params, {k: v[rows] for k, v in self._eval.items()}))
                 for rows in chunk_slices(n, self.config.eval.batch_size)]
        out = weighted_means(parts)
        out["recurrent_sigma_max"] = float(recurrent_sigma_max(params["cell"]))
        return out

    def figures(self, params, apply: Apply, outdir: str, history: list[Mapping]) -> list[str]:
        from rnnvision.viz import curves

        keys = ["loss", "accuracy", "grad_norm", "recurrent_sigma_max"]
        return [curves.plot_history(history, keys, os.path.join(outdir, "learning_curves.png"))]


class CopyTask(ProbeTask):
    """Remember num_copy symbols shown at step 0; output them at step L - 1 (see module doc)."""

    def __init__(self, config, time_loop):
        check(config, [
            ("data.num_symbols", int_at_least(2), "an integer >= 2"),
            ("data.num_copy", int_at_least(1), "an integer >= 1"),
        ])
        self.num_symbols, self.num_copy = config.data.num_symbols, config.data.num_copy
        self.num_features = self.num_copy * self.num_symbols + 2
        self.num_outputs = self.num_copy * self.num_symbols
        super().__init__(config, time_loop)

    def make_batch(self, rng, size):
        """x (size, L, M*A + 2) float32, label (size, M) int32: the step-0 symbols."""
        length, a, m = self.length, self.num_symbols, self.num_copy
        symbols = rng.integers(0, a, size=(size, length, m))
        onehot = np.eye(a, dtype=np.float32)[symbols].reshape(size, length, m * a)
        onehot[:, -1] = 0.0                      # the recall step shows no symbol
        marker = np.zeros((size, length, 1), np.float32)
        marker[:, 0] = float(self.config.data.get("marker", False))
        cue = np.zeros((size, length, 1), np.float32)
        cue[:, -1] = 1.0
        x = np.concatenate([onehot, marker, cue], axis=-1)
        return {"x": x, "label": symbols[:, 0].astype(np.int32)}

    def last_step_loss(self, params, y_last, batch):
        logits = self.model.readout(params, y_last).reshape(-1, self.num_copy, self.num_symbols)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
        accuracy = (logits.argmax(-1) == batch["label"]).mean()
        return loss, {"accuracy": accuracy}


class AddingTask(ProbeTask):
    """Sum of the values marked at step 0 and at one step in [L//2, L-1] (see module doc)."""

    num_features, num_outputs = 2, 1

    def make_batch(self, rng, size):
        """x (size, L, 2) float32 (value, marker), target (size,) float32."""
        length = self.length
        values = rng.uniform(0.0, 1.0, size=(size, length)).astype(np.float32)
        second = rng.integers(length // 2, length, size=size)
        second = np.maximum(second, 1)           # L = 2: the second marker is step 1
        marker = np.zeros((size, length), np.float32)
        marker[:, 0] = 1.0
        marker[np.arange(size), second] = 1.0
        target = values[:, 0] + values[np.arange(size), second]
        return {"x": np.stack([values, marker], axis=-1), "target": target.astype(np.float32)}

    def last_step_loss(self, params, y_last, batch):
        err = self.model.readout(params, y_last)[:, 0] - batch["target"]
        mse = jnp.mean(err ** 2)
        return mse, {"mse": mse, "accuracy": jnp.mean(jnp.abs(err) < 0.1)}
