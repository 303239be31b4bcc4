"""A cell over a sequence and a linear read-out of its last step: the classifier of
sequential MNIST and the model of the copy / adding probes.

Shape legend: B batch, T time, F... one step's features, D the size of one step's
output (H, or W*F for a Row LSTM), K outputs.

    model = LastStepReadout(cells.get("lstm", hidden_size=128), num_outputs=10, time_loop)
    params = model.init(key, step_shape=(28,))
    out = model.apply(params, xs)                 # xs (B, T, *F) -> (B, K)

    out = W · flatten(y_{T-1}) + b,   y_t the cell's output at step t
    params: {"cell": cell params, "head": {"w": (D, K), "b": (K,)}}

The cell runs through `time_loop` (truncation, remat, unroll, impl).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax
import jax.numpy as jnp

from rnnvision.cells import Cell
from rnnvision.recurrence import TimeLoop

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class LastStepReadout:
    cell: Cell
    num_outputs: int
    time_loop: TimeLoop = TimeLoop()

    def init(self, key: Array, step_shape: tuple[int, ...]) -> dict:
        k_cell, k_head = jax.random.split(key)
        out = math.prod(self.cell.output_shape(step_shape))
        w = jax.nn.initializers.lecun_normal()(k_head, (out, self.num_outputs))
        return {"cell": self.cell.init(k_cell, step_shape),
                "head": {"w": w, "b": jnp.zeros((self.num_outputs,), jnp.float32)}}

    def outputs(self, params: dict, xs: Array, time_loop: TimeLoop | None = None) -> Array:
        """The cell's outputs ys (B, T, *F_out) over xs (B, T, *F), from its initial carry."""
        carry = self.cell.initial_carry(params["cell"], xs[:, 0].shape)
        _, ys = (time_loop or self.time_loop).run(self.cell, params["cell"], carry, xs)
        return ys

    def readout(self, params: dict, y_last: Array) -> Array:
        """One step's output (B, *F_out) -> (B, K)."""
        flat = y_last.reshape((y_last.shape[0], -1))
        return flat @ params["head"]["w"] + params["head"]["b"]

    def apply(self, params: dict, xs: Array) -> Array:
        """xs (B, T, *F) -> (B, K) read out from the last step."""
        return self.readout(params, self.outputs(params, xs)[:, -1])

    @staticmethod
    def last_step_losses(loss_of_last: Callable[[Array], Array]) -> Callable:
        """step_losses(params, ys) -> (T,) for a loss on the last step's output alone:
        zeros except the last entry, loss_of_last(params, y_last) (a RecurrentLoss term)."""
        def step_losses(params, ys):
            loss = loss_of_last(params, ys[:, -1])
            return jnp.zeros((ys.shape[1],), loss.dtype).at[-1].set(loss)
        return step_losses
