"""The LSTM cell (Hochreiter & Schmidhuber 1997, with forget gate), gates fused."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from rnnvision.cells.base import Array
from rnnvision.cells.dense import DenseGatedCell


class LSTMCarry(NamedTuple):
    c: Array  # (*batch, H) cell state
    h: Array  # (*batch, H) hidden state (the output)


def lstm_gates(z: Array, c: Array) -> LSTMCarry:
    """LSTM update from fused pre-activations z (..., 4H) in PyTorch order i, f, g, o."""
    i, f, g, o = jnp.split(z, 4, axis=-1)
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    return LSTMCarry(c=c, h=jax.nn.sigmoid(o) * jnp.tanh(c))


@dataclasses.dataclass(frozen=True)
class LSTMCell(DenseGatedCell):
    r"""Long short-term memory cell with fused gates.

    Equations (gate order i, f, g, o as in PyTorch / cuDNN):
      z   = x_t W_x + h_{t-1} W_h + b                    (one matmul per input)
      i, f, g, o = split(z, 4)
      c_t = sigmoid(f) * c_{t-1} + sigmoid(i) * tanh(g)
      h_t = sigmoid(o) * tanh(c_t)

    Parameters: {"w_x": (I, 4H), "w_h": (H, 4H), "b": (4H,)}; the forget block of
    `b` starts at `forget_bias` (1.0) so early gradients pass through c.
    Carry: LSTMCarry(c, h), each (*batch, H). Output: h_t.

    Example:
      >>> import jax, jax.numpy as jnp, rnnvision
      >>> cell = rnnvision.cells.get("lstm", hidden_size=16)
      >>> params = cell.init(jax.random.key(0), (8,))
      >>> carry = cell.initial_carry(params, (4, 8))
      >>> carry, y = cell.step(params, carry, jnp.ones((4, 8)))
      >>> y.shape
      (4, 16)
    """

    forget_bias: float = 1.0

    num_gates = 4

    def init(self, key, input_shape):
        w_x, w_h = self.init_kernels(key, input_shape)
        h = self.hidden_size
        b = jnp.zeros((4 * h,), jnp.float32).at[h:2 * h].set(self.forget_bias)
        return {"w_x": w_x, "w_h": w_h, "b": b}

    def initial_carry(self, params, x_shape):
        zeros = self.zeros_state(x_shape)
        return LSTMCarry(c=zeros, h=zeros)

    def project_inputs(self, params, x):
        return self.matmul(x, params["w_x"]) + params["b"]

    def step_projected(self, params, carry, px):
        new = lstm_gates(px + self.matmul(carry.h, params["w_h"]), carry.c)
        return new, new.h
