"""The GRU cell in the PyTorch / cuDNN formulation."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from rnnvision.cells.dense import DenseGatedCell


@dataclasses.dataclass(frozen=True)
class GRUCell(DenseGatedCell):
    r"""Gated recurrent unit, PyTorch / cuDNN formulation (gate order r, z, n).

    Equations:
      a = x_t W_x + b_x                      (all three gates, one matmul)
      u = h_{t-1} W_h + b_h                  (all three gates, one matmul)
      r = sigmoid(a_r + u_r)
      z = sigmoid(a_z + u_z)
      n = tanh(a_n + r * u_n)                # reset applied AFTER the matmul
      h_t = (1 - z) * n + z * h_{t-1}

    The reset gate multiplies the hidden projection `u_n = h W_hn + b_hn` after
    the matmul, as in `torch.nn.GRU`, cuDNN and `flax.linen.GRUCell` (Cho et
    al. 2014 apply it before: `(r * h) W_hn`). That keeps the hidden matmul
    independent of r, so all three gates share one matmul.

    Parameters: {"w_x": (I, 3H), "w_h": (H, 3H), "b_x": (3H,), "b_h": (3H,)}
    (two biases because b_hn sits inside the reset product).
    Carry: h (*batch, H). Output: h_t.

    Example:
      >>> import jax, jax.numpy as jnp, rnnvision
      >>> cell = rnnvision.cells.get("gru", hidden_size=16)
      >>> params = cell.init(jax.random.key(0), (8,))
      >>> h = cell.initial_carry(params, (4, 8))
      >>> h, y = cell.step(params, h, jnp.ones((4, 8)))
      >>> y.shape
      (4, 16)
    """

    num_gates = 3

    def init(self, key, input_shape):
        w_x, w_h = self.init_kernels(key, input_shape)
        zeros = jnp.zeros((3 * self.hidden_size,), jnp.float32)
        return {"w_x": w_x, "w_h": w_h, "b_x": zeros, "b_h": zeros}

    def initial_carry(self, params, x_shape):
        return self.zeros_state(x_shape)

    def project_inputs(self, params, x):
        return self.matmul(x, params["w_x"]) + params["b_x"]

    def step_projected(self, params, h, px):
        u = self.matmul(h, params["w_h"]) + params["b_h"]
        a_r, a_z, a_n = jnp.split(px, 3, axis=-1)
        u_r, u_z, u_n = jnp.split(u, 3, axis=-1)
        r = jax.nn.sigmoid(a_r + u_r)
        z = jax.nn.sigmoid(a_z + u_z)
        n = jnp.tanh(a_n + r * u_n)
        h = (1.0 - z) * n + z * h
        return h, h
