"""Row LSTM, the PixelRNN layer (van den Oord et al., 2016)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from rnnvision.cells.base import Cell, check_positive_int, initializer
from rnnvision.cells.conv import conv
from rnnvision.cells.lstm import LSTMCarry, lstm_gates
from rnnvision.cells.masks import check_mask, contiguous_groups, row_kernel_mask


@dataclasses.dataclass(frozen=True)
class RowLSTMCell(Cell):
    r"""Row LSTM: one image row per time step; the state is a row of feature vectors.

    With x_r (W, C) the r-th row and h_{r-1}, c_{r-1} (W, F) the state of the
    row above (⊛ is a 1-D convolution along the row, `kernel_size` taps, "SAME"):
      z   = K_is ⊛ x_r + K_ss ⊛ h_{r-1} + b        (gate order i, f, g, o)
      c_r = sigmoid(f) * c_{r-1} + sigmoid(i) * tanh(g)
      h_r = sigmoid(o) * tanh(c_r)

    With `mask="A"` the input-to-state kernel K_is only sees pixels strictly to
    the left of the current one, so output (r, c) depends only on pixels before
    (r, c) in raster order (rows above through the state; the row's left part
    through K_is): the layer can model pixels autoregressively. `mask="B"` also
    lets a pixel see itself (for stacked layers above a mask-A layer).

    Colour (`channel_groups=G`, 3 for RGB; PixelRNN section 3.4, see
    rnnvision.cells.masks): the C input channels and the F features of every
    gate are split into G contiguous groups R, G, B, and the centre tap of K_is
    connects input group g_in to output group g_out only if g_in < g_out (mask
    "A") or g_in <= g_out (mask "B"); the left taps connect all groups. The
    state-to-state kernel K_ss is never masked, in space or in channels: the
    whole row above, all its colours, is in the past, and the gates act feature
    by feature, so a group-g feature at pixel p receives p itself only through
    K_is. With `channel_groups=1` (the default) a pixel's channels are masked
    together: "A" hides all of them, "B" shows all of them.

    Parameters: {"w_x": (k, C, 4F), "w_h": (k, F, 4F), "b": (4F,)}, gate blocks
    i, f, g, o of F features each (feature j of a gate in group j * G // F); the
    mask is applied at every use, so masked taps stay zero whatever the
    optimizer does. C and F must be multiples of G.
    Carry: LSTMCarry(c, h), each (*batch, W, F). Output: h_r (*batch, W, F).

    The plain "rows as time steps" reading (an LSTM whose step input is the
    flattened row) is the `lstm` cell fed (B, H, W*C) sequences.

    Example:
      >>> import jax, jax.numpy as jnp, rnnvision
      >>> cell = rnnvision.cells.get("row_lstm", features=8, mask="A")
      >>> params = cell.init(jax.random.key(0), (28, 1))
      >>> carry = cell.initial_carry(params, (2, 28, 1))
      >>> carry, y = cell.step(params, carry, jnp.ones((2, 28, 1)))
      >>> y.shape
      (2, 28, 8)
    """

    features: int = 64
    kernel_size: int = 3
    mask: str | None = None
    channel_groups: int = 1
    forget_bias: float = 1.0
    kernel_init: str = "lecun_normal"
    recurrent_init: str = "lecun_normal"

    def validate(self):
        check_positive_int(self.features, "features")
        check_positive_int(self.kernel_size, "kernel_size")
        if self.kernel_size % 2 != 1:
            raise ValueError(f"kernel_size={self.kernel_size} must be odd (a centred 1-D kernel)")
        check_mask(self.mask)
        check_positive_int(self.channel_groups, "channel_groups")
        if self.features % self.channel_groups:
            raise ValueError(f"features={self.features} must be a multiple of "
                             f"channel_groups={self.channel_groups}")
        initializer(self.kernel_init, field="kernel_init")
        initializer(self.recurrent_init, field="recurrent_init")

    def init(self, key, input_shape):
        if len(input_shape) != 2:
            raise ValueError(f"row_lstm takes rows of shape (W, C); got input_shape={tuple(input_shape)}")
        k, f, c_in = self.kernel_size, self.features, input_shape[-1]
        if c_in % self.channel_groups:
            raise ValueError(f"row_lstm with channel_groups={self.channel_groups} needs input "
                             f"channels in multiples of it; got input_shape={tuple(input_shape)}")
        k_x, k_h = jax.random.split(key)
        # float32 whatever jax_enable_x64 says (the initializers' default is float64 then).
        kernel_init = initializer(self.kernel_init, field="kernel_init")
        recurrent_init = initializer(self.recurrent_init, field="recurrent_init")
        w_x = kernel_init(k_x, (k, c_in, 4 * f), jnp.float32)
        w_h = recurrent_init(k_h, (k, f, 4 * f), jnp.float32)
        w_x = w_x * self.input_mask(c_in)
        b = jnp.zeros((4 * f,), jnp.float32).at[f:2 * f].set(self.forget_bias)
        return {"w_x": w_x, "w_h": w_h, "b": b}

    def initial_carry(self, params, x_shape):
        zeros = jnp.zeros((*x_shape[:-1], self.features), jnp.float32)
        return LSTMCarry(c=zeros, h=zeros)

    def input_mask(self, in_channels: int) -> jax.Array:
        """(k, C, 4F) 0/1 mask of K_is: spatial taps and channel groups."""
        groups = self.channel_groups
        gate_groups = np.tile(contiguous_groups(self.features, groups), 4)
        return row_kernel_mask(self.kernel_size, contiguous_groups(in_channels, groups),
                               gate_groups, self.mask)

    def project_inputs(self, params, x):
        w_x = params["w_x"] * self.input_mask(params["w_x"].shape[1])
        return conv(x, w_x, "SAME", self.dtype) + params["b"]

    def step_projected(self, params, carry, px):
        new = lstm_gates(px + conv(carry.h, params["w_h"], "SAME", self.dtype), carry.c)
        return new, new.h
