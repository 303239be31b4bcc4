"""A recurrent sequence classifier: a cell over the sequence, a linear readout at the end."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from rnnvision import recurrence
from rnnvision.cells import Cell


@dataclasses.dataclass(frozen=True)
class SequenceClassifier:
    """logits = W · flatten(y_T) + b, with y_T the cell's output at the last step.

    params: {"cell": cell params, "head": {"w": (D, num_classes), "b": (num_classes,)}}
    where D is the size of one step's output (e.g. H, or W*F for a Row LSTM).
    """

    cell: Cell
    num_classes: int
    truncation: int | None = None
    remat: bool = False

    def init(self, key: jax.Array, step_shape: tuple[int, ...]) -> dict:
        k_cell, k_head = jax.random.split(key)
        out = math.prod(self.cell.output_shape(step_shape))
        w = jax.nn.initializers.lecun_normal()(k_head, (out, self.num_classes))
        return {"cell": self.cell.init(k_cell, step_shape),
                "head": {"w": w, "b": jnp.zeros((self.num_classes,), jnp.float32)}}

    def logits(self, params: dict, xs: jax.Array) -> jax.Array:
        """xs (B, T, *F) float -> (B, num_classes)."""
        carry = self.cell.initial_carry(params["cell"], xs[:, 0].shape)
        _, ys = recurrence.unroll(self.cell, params["cell"], carry, xs,
                                  truncation=self.truncation, remat=self.remat)
        last = ys[:, -1].reshape((xs.shape[0], -1))
        return last @ params["head"]["w"] + params["head"]["b"]
