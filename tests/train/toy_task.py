"""A tiny task for trainer tests: predict the running sum of a random sequence's first feature.

Registered as "toy_sum", and as "toy_stream": the same with the LSTM's carry kept across
optimizer steps (Capability.STREAMING). Data are a pure function of (seed, step), like
every rnnvision task, so resumed and multi-device runs can be compared exactly.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from rnnvision import cells, tasks
from rnnvision.tasks.base import Capability, Task
from rnnvision.config_checks import set_field
from rnnvision.train.config import base_config

STEPS, FEATURES = 6, 3


def get_config(**overrides) -> ml_collections.ConfigDict:
    c = base_config()
    c.task = "toy_sum"
    c.model = ml_collections.ConfigDict({"cell": "lstm", "hidden_size": 8, "nan_at_step": -1,
                                         "inf_grad_at_step": -1, "noise": 0.0})
    c.train.num_steps, c.train.batch_size = 8, 8
    c.train.log_every, c.train.checkpoint_every = 2, 4
    c.train.progress = False
    c.optim.learning_rate = 1e-2
    c.eval.batch_size = 16
    for key, value in overrides.items():
        set_field(c, key, value)
    return c


def batch_for(seed: int, step: int, size: int) -> dict:
    rng = np.random.default_rng([seed, step])
    x = rng.normal(size=(size, STEPS, FEATURES)).astype(np.float32)
    return {"x": x, "y": np.cumsum(x[..., 0], axis=1).astype(np.float32), "step": np.full((size,), step)}


@jax.custom_vjp
def _inf_grad_if(x, poison):
    """Identity on `x`; its gradient becomes inf (NaN where it was 0) when `poison`."""
    return x


def _inf_grad_fwd(x, poison):
    return x, poison


def _inf_grad_bwd(poison, g):
    return g * jnp.where(poison, jnp.inf, 1.0), jnp.zeros_like(poison)


_inf_grad_if.defvjp(_inf_grad_fwd, _inf_grad_bwd)


class ToySumTask(Task):
    def __init__(self, config, time_loop):
        super().__init__(config, time_loop)
        self.cell = cells.get(config.model.cell, hidden_size=config.model.hidden_size)

    def init_params(self, rng):
        return {"cell": self.cell.init(rng, (FEATURES,)), "w": jnp.zeros((self.cell.hidden_size,))}

    def predict(self, params, batch):
        carry = self.cell.initial_carry(params["cell"], batch["x"][:, 0].shape)
        _, ys = self.time_loop.run(self.cell, params["cell"], carry, batch["x"])
        return ys @ params["w"]

    def loss(self, params, batch, rng):
        return self.loss_of(self.predict(params, batch), batch, rng)

    def loss_of(self, pred, batch, rng):
        """The loss of predictions (B, T); model.noise > 0 adds noise drawn from `rng`."""
        if self.config.model.noise:
            pred = pred + self.config.model.noise * jax.random.normal(rng, pred.shape)
        # Fault injection for tests: an inf gradient with a finite loss at one chosen step
        # (batch index, as for nan_at_step), ...
        pred = _inf_grad_if(pred, (batch["step"][0] == self.config.model.inf_grad_at_step)
                            .astype(jnp.float32))
        err = pred - batch["y"]
        loss = jnp.mean(err ** 2)
        # ... and a NaN loss at one chosen step.
        loss = jnp.where(batch["step"][0] == self.config.model.nan_at_step, jnp.nan, loss)
        return loss, {"mae": jnp.mean(jnp.abs(err))}

    def train_batch(self, step, rows):
        b = batch_for(self.config.seed, step, self.config.train.batch_size)
        return {k: v[rows] for k, v in b.items()}

    def evaluate(self, params, apply):
        b = batch_for(10_000 + self.config.seed, 0, 32)
        pred = apply(self.predict, params, b)
        return {"mse": float(np.mean((pred - b["y"]) ** 2))}


class ToyStreamTask(ToySumTask):
    """ToySumTask whose LSTM starts each step from the carry the previous step ended with
    (one carry per example row, no gradient through it)."""

    capabilities = frozenset({Capability.STREAMING})

    def init_stream(self, batch_size):
        params = self.cell.init(jax.random.key(0), (FEATURES,))
        return jax.device_get(self.cell.initial_carry(params, (batch_size, FEATURES)))

    def stream_loss(self, params, batch, rng, stream):
        carry, ys = self.time_loop.run(self.cell, params["cell"], stream, batch["x"])
        loss, metrics = self.loss_of(ys @ params["w"], batch, rng)
        return loss, (metrics, jax.lax.stop_gradient(carry))


tasks.register("toy_sum", f"{__name__}:ToySumTask")
tasks.register("toy_stream", f"{__name__}:ToyStreamTask")
