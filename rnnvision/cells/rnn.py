"""The plain (Elman) tanh RNN cell."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from rnnvision.cells.dense import DenseGatedCell


@dataclasses.dataclass(frozen=True)
class SimpleRNNCell(DenseGatedCell):
    r"""Elman RNN: h_t = tanh(x_t W_x + h_{t-1} W_h + b).

    Parameters: {"w_x": (I, H), "w_h": (H, H), "b": (H,)}. Carry: h (*batch, H).
    Output: h_t. `recurrent_scale` sets the spectral radius of the orthogonal
    W_h at init: the knob of the exploding/vanishing-gradient experiments.

    Example:
      >>> import jax, jax.numpy as jnp, rnnvision
      >>> cell = rnnvision.cells.get("rnn", hidden_size=8)
      >>> params = cell.init(jax.random.key(0), (3,))
      >>> h = cell.initial_carry(params, (2, 3))
      >>> h, y = cell.step(params, h, jnp.ones((2, 3)))
      >>> y.shape
      (2, 8)
    """

    num_gates = 1

    def init(self, key, input_shape):
        w_x, w_h = self.init_kernels(key, input_shape)
        return {"w_x": w_x, "w_h": w_h, "b": jnp.zeros((self.hidden_size,), jnp.float32)}

    def initial_carry(self, params, x_shape):
        return self.zeros_state(x_shape)

    def project_inputs(self, params, x):
        return self.matmul(x, params["w_x"]) + params["b"]

    def step_projected(self, params, h, px):
        h = jnp.tanh(px + self.matmul(h, params["w_h"]))
        return h, h
