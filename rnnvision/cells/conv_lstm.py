"""ConvLSTM (Shi et al. 2015): an LSTM whose matmuls are 2-D convolutions."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from rnnvision.cells.base import Cell, check_positive_int, initializer
from rnnvision.cells.conv import conv, kernel_pair
from rnnvision.cells.lstm import LSTMCarry, lstm_gates


_PADDINGS = ("SAME", "VALID", "SAME_LOWER")


@dataclasses.dataclass(frozen=True)
class ConvLSTMCell(Cell):
    r"""Convolutional LSTM without peepholes, gates fused into one convolution per input.

    Equations (* is 2-D convolution, gate order i, f, g, o):
      z   = W_x * x_t + W_h * h_{t-1} + b
      i, f, g, o = split(z, 4, axis=channels)
      c_t = sigmoid(f) * c_{t-1} + sigmoid(i) * tanh(g)
      h_t = sigmoid(o) * tanh(c_t)

    Parameters: {"w_x": (kh, kw, C, 4F), "w_h": (kh, kw, F, 4F), "b": (4F,)};
    forget bias starts at `forget_bias`. The input convolution uses `padding`
    ("SAME", "VALID" or ((lo, hi), (lo, hi))); the state convolution is always
    "SAME" so the state keeps the spatial size of W_x * x.
    Carry: LSTMCarry(c, h), each (*batch, H', W', F). Output: h_t.

    Example:
      >>> import jax, jax.numpy as jnp, rnnvision
      >>> cell = rnnvision.cells.get("conv_lstm", features=8, kernel_size=3)
      >>> params = cell.init(jax.random.key(0), (16, 16, 4))
      >>> carry = cell.initial_carry(params, (2, 16, 16, 4))
      >>> carry, y = cell.step(params, carry, jnp.ones((2, 16, 16, 4)))
      >>> y.shape
      (2, 16, 16, 8)
    """

    features: int = 64
    kernel_size: int | tuple[int, int] = 3
    padding: str | tuple = "SAME"
    forget_bias: float = 1.0
    kernel_init: str = "lecun_normal"
    recurrent_init: str = "lecun_normal"

    def validate(self):
        check_positive_int(self.features, "features")
        kernel_pair(self.kernel_size)
        # Checked here so a bad config fails when the cell is built, naming the
        # field, not deep inside lax.conv at the first step.
        if isinstance(self.padding, str):
            if self.padding not in _PADDINGS:
                raise ValueError(
                    f"padding={self.padding!r}; allowed: {_PADDINGS} or ((lo, hi), (lo, hi))")
        elif len(self.padding) != 2 or any(len(p) != 2 for p in self.padding):
            raise ValueError(f"padding={self.padding!r} must be a string or two (lo, hi) pairs")
        initializer(self.kernel_init, field="kernel_init")
        initializer(self.recurrent_init, field="recurrent_init")

    def init(self, key, input_shape):
        if len(input_shape) != 3:
            raise ValueError(f"conv_lstm takes (H, W, C) inputs; got input_shape={tuple(input_shape)}")
        kh, kw = kernel_pair(self.kernel_size)
        f, c_in = self.features, input_shape[-1]
        k_x, k_h = jax.random.split(key)
        # float32 whatever jax_enable_x64 says (the initializers' default is float64 then).
        kernel_init = initializer(self.kernel_init, field="kernel_init")
        recurrent_init = initializer(self.recurrent_init, field="recurrent_init")
        w_x = kernel_init(k_x, (kh, kw, c_in, 4 * f), jnp.float32)
        w_h = recurrent_init(k_h, (kh, kw, f, 4 * f), jnp.float32)
        b = jnp.zeros((4 * f,), jnp.float32).at[f:2 * f].set(self.forget_bias)
        return {"w_x": w_x, "w_h": w_h, "b": b}

    def initial_carry(self, params, x_shape):
        x = jax.ShapeDtypeStruct(tuple(x_shape), jnp.float32)
        state = jax.eval_shape(lambda x: self.project_inputs(params, x), x).shape[:-1]
        zeros = jnp.zeros((*state, self.features), jnp.float32)
        return LSTMCarry(c=zeros, h=zeros)

    def project_inputs(self, params, x):
        return conv(x, params["w_x"], self.padding, self.dtype) + params["b"]

    def step_projected(self, params, carry, px):
        z = px + conv(carry.h, params["w_h"], "SAME", self.dtype)
        new = lstm_gates(z, carry.c)
        return new, new.h
