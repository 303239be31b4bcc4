"""PredRNN's spatiotemporal LSTM stack (Wang et al. 2017) as one cell."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from rnnvision.cells.base import Array
from rnnvision.cells.spatiotemporal import SpatiotemporalStack


class STLSTMCarry(NamedTuple):
    c: tuple[Array, ...]  # C^l, one (*B, H, W, F_l) per layer, bottom first
    h: tuple[Array, ...]  # H^l, one (*B, H, W, F_l) per layer, bottom first
    m: Array              # M, (*B, H, W, F_1): the top layer's M of the last step


@dataclasses.dataclass(frozen=True)
class STLSTMCell(SpatiotemporalStack):
    r"""PredRNN: L stacked spatiotemporal LSTM (ST-LSTM) layers with the zigzag memory M.

    Wang, Long, Wang, Gao, Yu (2017), "PredRNN: Recurrent Neural Networks for
    Predictive Learning using Spatiotemporal LSTMs", the ST-LSTM. Layer l = 1..L at
    step t, with input X^l_t (X^1_t = x_t, X^l_t = H^{l-1}_t above), * a "SAME"
    k x k convolution, ⊙ elementwise, σ the sigmoid, [.,.] channel concatenation:

      i   = σ(W_xi * X + W_hi * H^l_{t-1} + b_i)
      f   = σ(W_xf * X + W_hf * H^l_{t-1} + b_f)
      g   = tanh(W_xg * X + W_hg * H^l_{t-1} + b_g)
      C^l_t = f ⊙ C^l_{t-1} + i ⊙ g                    (ΔC = i ⊙ g)
      i'  = σ(W'_xi * X + W_mi * M^{l-1}_t + b'_i)
      f'  = σ(W'_xf * X + W_mf * M^{l-1}_t + b'_f)
      g'  = tanh(W'_xg * X + W_mg * M^{l-1}_t + b'_g)
      M^l_t = f' ⊙ M^{l-1}_t + i' ⊙ g'                 (ΔM = i' ⊙ g')
      o   = σ(W_xo * X + W_ho * H^l_{t-1} + W_co,mo * [C^l_t, M^l_t] + b_o)
      H^l_t = o ⊙ tanh(W_1x1 * [C^l_t, M^l_t])

    The zigzag: M^0_t = M^L_{t-1}, i.e. the bottom layer at t reads the memory
    the top layer wrote at t-1. M is one tensor of F_1 channels (the bottom
    layer's features) everywhere, since each layer updates it elementwise.
    Output: H^L_t, the top layer's hidden state.

    Parameters: {"layers": (one dict per layer, bottom first), ["adapter"]}, with
    C_l = C (l = 1) or F_{l-1} the layer's input channels, F = F_l, F_M = F_1:
      "w_x":    (k, k, C_l, 4F + 3F_M)  blocks i, f, g, o | i', f', g'
      "b":      (4F + 3F_M,)            same blocks; f and f' start at forget_bias
      "w_h":    (k, k, F, 4F)           blocks i, f, g, o
      "w_m":    (k, k, F_M, 3F_M)       blocks i', f', g'
      "w_o":    (k, k, F + F_M, F)      W_co,mo on [C, M]
      "w_last": (F + F_M, F)            the 1x1 convolution W_1x1 on [C, M]
      "adapter": (F, F)                 only with decoupling=True (PredRNN-V2's W_a)
    `project_inputs` is the bottom layer's W_x * x_t + b (hoisted out of the
    time loop); every other convolution depends on the step.
    Carry: STLSTMCarry(c, h, m) (float32). `step_with_decoupling` also returns
    PredRNN-V2's decoupling term over the layers' (ΔC, ΔM) (see
    `rnnvision.cells.spatiotemporal.decoupling_term`).

    Where this differs from OpenSTL's `SpatioTemporalLSTMCell` (same equations):
    learnable gate biases starting at forget_bias (OpenSTL: no biases, a
    constant +1 on f and f'); the gate blocks in the order above (OpenSTL's x
    blocks: i, f, g, i', f', g', o); no layer norm (OpenSTL's option, off in its
    Moving-MNIST configs); M of F_1 channels also when layers differ in width.

    Example:
      >>> import jax, jax.numpy as jnp, rnnvision
      >>> cell = rnnvision.cells.get("st_lstm", features=8, num_layers=3, kernel_size=3)
      >>> params = cell.init(jax.random.key(0), (16, 16, 4))
      >>> carry = cell.initial_carry(params, (2, 16, 16, 4))
      >>> carry, y = cell.step(params, carry, jnp.ones((2, 16, 16, 4)))
      >>> y.shape, carry.m.shape, len(carry.c)
      ((2, 16, 16, 8), (2, 16, 16, 8), 3)
    """

    def init(self, key, input_shape):
        c_in, f_m = self._check_input_shape(input_shape), self.widths[0]
        keys = jax.random.split(key, self.num_layers + 1)
        layers = []
        for l, f in enumerate(self.widths):
            layers.append(self._init_layer(keys[l], c_in, f, f_m))
            c_in = f
        return {"layers": tuple(layers), **self._adapter(keys[-1])}

    def _init_layer(self, key, c_in: int, f: int, f_m: int) -> dict[str, Array]:
        layer = self._kernels(key, {
            "w_x": self._kernel_shape(c_in, 4 * f + 3 * f_m),
            "w_h": self._kernel_shape(f, 4 * f),
            "w_m": self._kernel_shape(f_m, 3 * f_m),
            "w_o": self._kernel_shape(f + f_m, f),
            "w_last": (f + f_m, f),
        })
        b = jnp.zeros((4 * f + 3 * f_m,), jnp.float32)
        b = b.at[f:2 * f].set(self.forget_bias)                          # f
        layer["b"] = b.at[4 * f + f_m:4 * f + 2 * f_m].set(self.forget_bias)  # f'
        return layer

    def initial_carry(self, params, x_shape):
        lead, spatial = self._lead_and_spatial(x_shape)
        states = tuple(self._zeros(lead, spatial, f) for f in self.widths)
        return STLSTMCarry(c=states, h=states, m=self._zeros(lead, spatial, self.widths[0]))

    def _forward(self, params, carry, px):
        m, x_proj = carry.m, px  # m: M^L_{t-1}, the zigzag's entry into the bottom layer
        cs, hs, increments = [], [], []
        for l, p in enumerate(params["layers"]):
            if l > 0:
                x_proj = self._conv(hs[-1], p["w_x"]) + p["b"]
            c, h, m, delta = self._layer(p, x_proj, carry.c[l], carry.h[l], m)
            cs.append(c)
            hs.append(h)
            increments.append(delta)
        return STLSTMCarry(c=tuple(cs), h=tuple(hs), m=m), hs[-1], increments

    def _layer(self, p, x_proj, c, h, m):
        """One ST-LSTM layer; x_proj = W_x * X + b. Returns (C, H, M, (ΔC, ΔM))."""
        f = c.shape[-1]
        z = x_proj[..., :4 * f] + self._conv(h, p["w_h"])
        i, forget, g, o_xh = jnp.split(z, 4, axis=-1)
        delta_c = jax.nn.sigmoid(i) * jnp.tanh(g)
        c = jax.nn.sigmoid(forget) * c + delta_c
        i_m, f_m, g_m = jnp.split(x_proj[..., 4 * f:] + self._conv(m, p["w_m"]), 3, axis=-1)
        delta_m = jax.nn.sigmoid(i_m) * jnp.tanh(g_m)
        m = jax.nn.sigmoid(f_m) * m + delta_m
        memories = jnp.concatenate([c, m], axis=-1)
        o = jax.nn.sigmoid(o_xh + self._conv(memories, p["w_o"]))
        h = o * jnp.tanh(self.matmul(memories, p["w_last"]))
        return c, h, m, (delta_c, delta_m)
