"""PredRNN++'s Causal LSTM stack with the Gradient Highway Unit (Wang et al. 2018) as one cell."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from rnnvision.cells.base import Array
from rnnvision.cells.spatiotemporal import SpatiotemporalStack


class CausalLSTMCarry(NamedTuple):
    c: tuple[Array, ...]  # C^l, one (*B, H, W, F_l) per layer, bottom first
    h: tuple[Array, ...]  # H^l, one (*B, H, W, F_l) per layer, bottom first
    m: Array              # M, (*B, H, W, F_L): the top layer's M of the last step
    z: Array              # Z, (*B, H, W, F_1): the gradient highway's state


@dataclasses.dataclass(frozen=True)
class CausalLSTMCell(SpatiotemporalStack):
    r"""PredRNN++: L stacked Causal LSTM layers, the zigzag memory M, and a GHU after layer 1.

    Wang, Gao, Long, Wang, Yu (2018), "PredRNN++: Towards A Resolution of the
    Deep-in-Time Dilemma in Spatiotemporal Predictive Learning", Eq. 3 and 4.
    Layer l = 1..L at step t with input X (x_t for l = 1, the highway state Z_t
    for l = 2, H^{l-1}_t above), * a "SAME" k x k convolution, ⊙ elementwise.
    The two memories are cascaded: C first, then M reads the new C:

      i   = σ(W_xi * X + W_hi * H^l_{t-1} + W_ci * C^l_{t-1} + b_i)
      f   = σ(W_xf * X + W_hf * H^l_{t-1} + W_cf * C^l_{t-1} + b_f)
      g   = tanh(W_xg * X + W_hg * H^l_{t-1} + W_cg * C^l_{t-1} + b_g)
      C^l_t = f ⊙ C^l_{t-1} + i ⊙ g                          (ΔC = i ⊙ g)
      i'  = σ(W'_xi * X + W'_ci * C^l_t + W_mi * M^{l-1}_t + b'_i)
      f'  = σ(W'_xf * X + W'_cf * C^l_t + W_mf * M^{l-1}_t + b'_f)
      g'  = tanh(W'_xg * X + W'_cg * C^l_t + b'_g)
      M^l_t = f' ⊙ tanh(W_mm * M^{l-1}_t) + i' ⊙ g'          (ΔM = i' ⊙ g')
      o   = tanh(W_xo * X + W_ho * H^l_{t-1} + W'_co * C^l_t + W_om * M^l_t + b_o)
      H^l_t = o ⊙ tanh(W_1x1 * [C^l_t, M^l_t])

    The zigzag: M^0_t = M^L_{t-1}. The Gradient Highway Unit between layers 1
    and 2 (Eq. 4; no biases, as in the paper):

      P   = tanh(W_px * H^1_t + W_pz * Z_{t-1})
      S   = σ(W_sx * H^1_t + W_sz * Z_{t-1})
      Z_t = S ⊙ P + (1 - S) ⊙ Z_{t-1}                        (layer 2's input)

    Output: H^L_t. The paper's Eq. 3 writes g' with an M^{l-1}_t term and o
    without H^l_{t-1}; the equations above are those of the authors' released
    code and of OpenSTL's `CausalLSTMCell`, which we follow.

    Parameters: {"layers": (one dict per layer, bottom first), "ghu": {...},
    ["adapter"]}, with F = F_l, C_l = C (l = 1) or F_{l-1} the input channels,
    F_in = F_L (l = 1) or F_{l-1} the channels of the M the layer reads:
      "w_x":    (k, k, C_l, 7F)     blocks i, f, g, o | i', f', g'
      "b":      (7F,)               same blocks; f and f' start at forget_bias
      "w_h":    (k, k, F, 4F)       blocks i, f, g, o
      "w_c":    (k, k, F, 3F)       blocks i, f, g         (on C^l_{t-1})
      "w_m":    (k, k, F_in, 3F)    blocks i', f', W_mm    (on M^{l-1}_t)
      "w_cm":   (k, k, F, 4F)       blocks i', f', g', o   (on C^l_t)
      "w_om":   (k, k, F, F)        W_om                   (on M^l_t)
      "w_last": (2F, F)             the 1x1 convolution W_1x1 on [C, M]
      "ghu":    {"w_x": (k, k, F_1, 2F_1), "w_z": (k, k, F_1, 2F_1)}, blocks P, S
      "adapter": (F, F)             only with decoupling=True (PredRNN-V2's W_a)
    `project_inputs` is the bottom layer's W_x * x_t + b. Carry:
    CausalLSTMCarry(c, h, m, z) (float32). `step_with_decoupling` also returns
    PredRNN-V2's decoupling term over the layers' (ΔC, ΔM).

    Where this differs from OpenSTL: learnable gate biases starting at
    forget_bias (OpenSTL: none, a constant +1 on f and f'); the GHU kernels
    from `kernel_init` (OpenSTL: uniform in ±0.001); gate blocks in the order
    above; no layer norm (off in OpenSTL's Moving-MNIST configs); layers of
    different widths allowed (each M^l has F_l channels).

    Example:
      >>> import jax, jax.numpy as jnp, rnnvision
      >>> cell = rnnvision.cells.get("causal_lstm", features=8, num_layers=3, kernel_size=3)
      >>> params = cell.init(jax.random.key(0), (16, 16, 4))
      >>> carry = cell.initial_carry(params, (2, 16, 16, 4))
      >>> carry, y = cell.step(params, carry, jnp.ones((2, 16, 16, 4)))
      >>> y.shape, carry.z.shape, len(carry.c)
      ((2, 16, 16, 8), (2, 16, 16, 8), 3)
    """

    min_layers = 2  # the highway sits between layers 1 and 2

    def init(self, key, input_shape):
        c_in, widths = self._check_input_shape(input_shape), self.widths
        keys = jax.random.split(key, self.num_layers + 2)
        layers = []
        for l, f in enumerate(widths):
            m_in = widths[l - 1]  # l = 0: widths[-1], the top layer's M (the zigzag)
            layers.append(self._init_layer(keys[l], c_in, f, m_in))
            c_in = f
        f1 = widths[0]
        ghu = self._kernels(keys[-2], {"w_x": self._kernel_shape(f1, 2 * f1),
                                       "w_z": self._kernel_shape(f1, 2 * f1)})
        return {"layers": tuple(layers), "ghu": ghu, **self._adapter(keys[-1])}

    def _init_layer(self, key, c_in: int, f: int, m_in: int) -> dict[str, Array]:
        layer = self._kernels(key, {
            "w_x": self._kernel_shape(c_in, 7 * f),
            "w_h": self._kernel_shape(f, 4 * f),
            "w_c": self._kernel_shape(f, 3 * f),
            "w_m": self._kernel_shape(m_in, 3 * f),
            "w_cm": self._kernel_shape(f, 4 * f),
            "w_om": self._kernel_shape(f, f),
            "w_last": (2 * f, f),
        })
        b = jnp.zeros((7 * f,), jnp.float32)
        layer["b"] = b.at[f:2 * f].set(self.forget_bias).at[5 * f:6 * f].set(self.forget_bias)
        return layer

    def initial_carry(self, params, x_shape):
        lead, spatial = self._lead_and_spatial(x_shape)
        states = tuple(self._zeros(lead, spatial, f) for f in self.widths)
        return CausalLSTMCarry(c=states, h=states, m=self._zeros(lead, spatial, self.widths[-1]),
                               z=self._zeros(lead, spatial, self.widths[0]))

    def _forward(self, params, carry, px):
        m, x_proj, z = carry.m, px, carry.z  # m: M^L_{t-1}, the zigzag's entry
        cs, hs, increments = [], [], []
        for l, p in enumerate(params["layers"]):
            if l > 0:
                below = z if l == 1 else hs[-1]  # layer 2 reads the highway, not H^1
                x_proj = self._conv(below, p["w_x"]) + p["b"]
            c, h, m, delta = self._layer(p, x_proj, carry.c[l], carry.h[l], m)
            cs.append(c)
            hs.append(h)
            increments.append(delta)
            if l == 0:
                z = self._highway(params["ghu"], h, z)
        new = CausalLSTMCarry(c=tuple(cs), h=tuple(hs), m=m, z=z)
        return new, hs[-1], increments

    def _layer(self, p, x_proj, c, h, m):
        """One Causal LSTM layer; x_proj = W_x * X + b. Returns (C, H, M, (ΔC, ΔM))."""
        f = c.shape[-1]
        x_c, x_m = x_proj[..., :4 * f], x_proj[..., 4 * f:]
        i, forget, g, o_xh = jnp.split(x_c + self._conv(h, p["w_h"]), 4, axis=-1)
        c_i, c_f, c_g = jnp.split(self._conv(c, p["w_c"]), 3, axis=-1)
        delta_c = jax.nn.sigmoid(i + c_i) * jnp.tanh(g + c_g)
        c = jax.nn.sigmoid(forget + c_f) * c + delta_c
        # The cascade: M's gates and the output gate read the C just computed.
        cm_i, cm_f, cm_g, cm_o = jnp.split(self._conv(c, p["w_cm"]), 4, axis=-1)
        m_i, m_f, m_m = jnp.split(self._conv(m, p["w_m"]), 3, axis=-1)
        x_i, x_f, x_g = jnp.split(x_m, 3, axis=-1)
        delta_m = jax.nn.sigmoid(x_i + cm_i + m_i) * jnp.tanh(x_g + cm_g)
        m = jax.nn.sigmoid(x_f + cm_f + m_f) * jnp.tanh(m_m) + delta_m
        o = jnp.tanh(o_xh + cm_o + self._conv(m, p["w_om"]))
        h = o * jnp.tanh(self.matmul(jnp.concatenate([c, m], axis=-1), p["w_last"]))
        return c, h, m, (delta_c, delta_m)

    def _highway(self, p, x, z):
        """The Gradient Highway Unit: x = H^1_t, z = Z_{t-1} -> Z_t."""
        pre_p, pre_s = jnp.split(self._conv(x, p["w_x"]) + self._conv(z, p["w_z"]), 2, axis=-1)
        s = jax.nn.sigmoid(pre_s)
        return s * jnp.tanh(pre_p) + (1.0 - s) * z
