"""The minimal gated unit (MGU; Zhou et al., 2016) as an rnnvision cell.

One gate f decides both how much of the state to forget and how much of the
candidate to write (a GRU with its two gates tied):

  f_t  = sigmoid(x_t W_xf + h_{t-1} W_hf + b_f)
  ĥ_t  = tanh(x_t W_xh + (f_t * h_{t-1}) W_hh + b_h)
  h_t  = (1 - f_t) * h_{t-1} + f_t * ĥ_t

Parameters: {"w_x": (I, 2H), "w_h": (H, 2H), "b": (2H,)}, gate blocks in the
order f, ĥ. Carry: h (*batch, H). Output: h_t.

Example:
  >>> import jax, jax.numpy as jnp
  >>> cell = MGUCell(hidden_size=8)
  >>> params = cell.init(jax.random.key(0), (3,))
  >>> h = cell.initial_carry(params, (2, 3))
  >>> h, y = cell.step(params, h, jnp.ones((2, 3)))
  >>> y.shape
  (2, 8)
"""

import dataclasses

import jax
import jax.numpy as jnp

import rnnvision
from rnnvision.cells.dense import DenseGatedCell


@dataclasses.dataclass(frozen=True)  # frozen: jit takes cells as static arguments
class MGUCell(DenseGatedCell):
    """Minimal gated unit; hyper-parameters (hidden_size, inits, ...) from DenseGatedCell."""

    num_gates = 2  # a class constant, not a dataclass field: f and ĥ

    def init(self, key, input_shape):
        # One (I, H) / (H, H) block per gate, each initialised on its own.
        w_x, w_h = self.init_kernels(key, input_shape)
        return {"w_x": w_x, "w_h": w_h, "b": jnp.zeros((2 * self.hidden_size,), jnp.float32)}

    def initial_carry(self, params, x_shape):
        return self.zeros_state(x_shape)  # float32 zeros (*batch, H)

    def project_inputs(self, params, x):
        # Everything that does not depend on h: unroll applies this to all time
        # steps at once, outside the sequential loop.
        return self.matmul(x, params["w_x"]) + params["b"]

    def step_projected(self, params, h, px):
        a_f, a_h = jnp.split(px, 2, axis=-1)
        w_hf, w_hh = jnp.split(params["w_h"], 2, axis=-1)
        f = jax.nn.sigmoid(a_f + self.matmul(h, w_hf))
        # Two hidden matmuls, not one fused: the candidate's depends on f.
        candidate = jnp.tanh(a_h + self.matmul(f * h, w_hh))
        h = (1.0 - f) * h + f * candidate
        return h, h


rnnvision.cells.register("mgu", MGUCell)
