"""Shared pieces of the fully connected gated cells (rnn, lstm, gru)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from rnnvision.cells.base import Array, Cell, check_positive_int, initializer


@dataclasses.dataclass(frozen=True)
class DenseGatedCell(Cell):
    """A cell whose pre-activations are `x @ w_x + h @ w_h + b`, `num_gates` blocks wide.

    Attributes:
      hidden_size: H, the size of the state vector.
      kernel_init: initializer of the input kernel `w_x` (I, G*H).
      recurrent_init: initializer of each (H, H) gate block of `w_h` (H, G*H).
      recurrent_scale: multiplies `w_h` at init; with "orthogonal" init it is the
        spectral radius of every gate block (>1 makes a tanh RNN prone to explode).
    """

    hidden_size: int = 128
    kernel_init: str = "lecun_normal"
    recurrent_init: str = "orthogonal"
    recurrent_scale: float = 1.0

    num_gates = 1  # class constant, not a field

    def validate(self) -> None:
        check_positive_int(self.hidden_size, "hidden_size")
        initializer(self.kernel_init, field="kernel_init")
        initializer(self.recurrent_init, field="recurrent_init")
        if not self.recurrent_scale > 0:
            raise ValueError(f"recurrent_scale={self.recurrent_scale!r} must be > 0")

    def _input_size(self, input_shape) -> int:
        if len(input_shape) != 1:
            raise ValueError(f"{type(self).__name__} takes vector inputs, input_shape=(I,); "
                             f"got input_shape={tuple(input_shape)}")
        return int(input_shape[0])

    def init_kernels(self, key: Array, input_shape) -> tuple[Array, Array]:
        """Returns w_x (I, G*H) and w_h (H, G*H); each gate block initialised on its own."""
        size_in, h, g = self._input_size(input_shape), self.hidden_size, self.num_gates
        k_x, k_h = jax.random.split(key)
        w_x = jnp.concatenate([
            initializer(self.kernel_init, field="kernel_init")(k, (size_in, h), jnp.float32)
            for k in jax.random.split(k_x, g)], axis=1)
        w_h = jnp.concatenate([
            initializer(self.recurrent_init, field="recurrent_init")(k, (h, h), jnp.float32)
            for k in jax.random.split(k_h, g)], axis=1)
        return w_x, self.recurrent_scale * w_h

    def zeros_state(self, x_shape) -> Array:
        return jnp.zeros((*x_shape[:-1], self.hidden_size), jnp.float32)
