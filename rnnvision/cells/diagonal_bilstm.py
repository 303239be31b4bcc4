r"""Diagonal BiLSTM, the second PixelRNN layer (van den Oord et al., 2016, section 3.2).

The layer runs two LSTMs along the diagonals of an image. To make a diagonal a
column, the image is skewed: row i is shifted right by i positions, so an
(H, W) map becomes (H, W + H - 1), here for H = 3, W = 4 (`.` is padding):

    image (H, W)          skew ->     skewed (H, W + H - 1)
    a0 a1 a2 a3                       a0 a1 a2 a3 .  .
    b0 b1 b2 b3                       .  b0 b1 b2 b3 .
    c0 c1 c2 c3                       .  .  c0 c1 c2 c3
                                            ^ skewed column k = 2 holds the
                                              diagonal a2, b1, c0

Skewed (i, k) holds image pixel (i, k - i). Skewed column k - 1 holds, at rows
i - 1 and i, the pixel above (i - 1, j) and the pixel to the left (i, j - 1) of
pixel (i, j) = (i, k - i): a kernel of 2 taps along the column, applied to the
previous column's state, is a state-to-state map from exactly those two
neighbours. Column by column, the state at (i, j) thus sums up every pixel
above and to the left of it (its whole upper-left quadrant).

One step of this cell is one skewed column of both directions:

    direction 0  the image, left to right
    direction 1  the horizontally mirrored image (so it runs right to left)

For direction d, skewed column k and row i (x the layer's input, ⊙ elementwise):
    z_ik  = K_is^d x_ik + b^d + U_up^d h_{i-1,k-1} + U_left^d h_{i,k-1}
    c_ik  = sigmoid(f) ⊙ c_{i,k-1} + sigmoid(i) ⊙ tanh(g)        (z = [i, f, g, o])
    h_ik  = sigmoid(o) ⊙ tanh(c_ik)
K_is is a 1x1 convolution (a matmul over channels) with the PixelRNN mask (mask
"B" in a PixelRNN: the pixel's own colours as in rnnvision.cells.masks); the
state-to-state part is unmasked: the pixels above and to the left are in the
past. Outside the image the state is zero: h_{-1,k} = 0, and row i keeps a zero
state until the step reaches its first pixel (k = i), which is why the carry
counts the columns. The upper-right padding (k > i + W - 1) is never read by an
image position; its values there are whatever the recurrence gives.

What this cell leaves to the whole-image layer (rnnvision.models.pixel_rnn):
skewing the image and its mirror image into the steps, unskewing the outputs,
mirroring direction 1 back and shifting it down one row, and summing:
    out(i, j) = h^0(i, j) + h^1(i - 1, j)       (h^1(-1, j) = 0)
Direction 1 at (i, j) sees the upper-right quadrant of (i, j), which holds
future pixels of row i; shifted down a row it sees only rows above i. So
out(i, j) depends on every pixel before (i, j) in raster order, and on (i, j)
itself only through K_is^0.

Shape legend: B batch, H image rows (the length of a skewed column), C input
channels, F features, D = 2 directions, G channel groups.
Step input x: (B, 2, H, C), skewed column k of the image and of its mirror.
Output y: (B, 2, H, F), h of the column (zero at rows i > k).
Carry: DiagonalCarry(c, h: (B, 2, H, F), column: (B,) int32 k of the next step).
Parameters: {"w_x": (2, C, 4F) K_is per direction, "w_h": (2, 2F, 4F) the rows
[U_up; U_left] per direction, "b": (2, 4F)}; gate blocks i, f, g, o of F each
(the paper writes them o, f, i, g); the forget blocks of b start at
`forget_bias`. C and F must be multiples of G.

Example:
  >>> import jax, jax.numpy as jnp, rnnvision
  >>> cell = rnnvision.cells.get("diagonal_bilstm", features=8, mask="B")
  >>> image = jnp.ones((2, 5, 6, 3))                       # (B, H, W, C)
  >>> xs = jnp.stack([skew(image), skew(image[:, :, ::-1])], axis=1)
  >>> xs = jnp.moveaxis(xs, 3, 1)                          # (B, W + H - 1, 2, H, C)
  >>> params = cell.init(jax.random.key(0), xs.shape[2:])
  >>> carry = cell.initial_carry(params, xs[:, 0].shape)
  >>> carry, y = cell.step(params, carry, xs[:, 0])
  >>> y.shape
  (2, 2, 5, 8)
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rnnvision.cells.base import Array, Cell, check_positive_int, initializer
from rnnvision.cells.lstm import LSTMCarry, lstm_gates
from rnnvision.cells.masks import channel_mask, check_mask, contiguous_groups

DIRECTIONS = 2  # left to right, right to left (on the mirrored image)


def skew(x: Array) -> Array:
    """(..., H, W, C) -> (..., H, W + H - 1, C): row i shifted right by i, zero-padded.

    skewed[..., i, k, :] = x[..., i, k - i, :] where 0 <= k - i < W, else 0.
    """
    *lead, h, w, c = x.shape
    # Rows padded to W + H and read back with a stride of W + H - 1: every row
    # then starts one position later than the one above.
    flat = jnp.pad(x, [(0, 0)] * len(lead) + [(0, 0), (0, h), (0, 0)]).reshape(*lead, -1, c)
    return flat[..., :h * (w + h - 1), :].reshape(*lead, h, w + h - 1, c)


def unskew(s: Array) -> Array:
    """(..., H, W + H - 1, C) -> (..., H, W, C), the inverse of `skew` on its image part:
    x[..., i, j, :] = s[..., i, i + j, :]."""
    *lead, h, sw, c = s.shape
    w = sw - h + 1
    flat = s.reshape(*lead, h * sw, c)
    flat = jnp.pad(flat, [(0, 0)] * len(lead) + [(0, h), (0, 0)])
    return flat.reshape(*lead, h, sw + 1, c)[..., :w, :]


class DiagonalCarry(NamedTuple):
    c: Array       # (B, 2, H, F) cell states of the last skewed column, per direction
    h: Array       # (B, 2, H, F) hidden states of the last skewed column
    column: Array  # (B,) int32: index k of the next skewed column


@dataclasses.dataclass(frozen=True)
class DiagonalBiLSTMCell(Cell):
    """Diagonal BiLSTM over skewed columns; see the module docstring.

    Attributes:
      features: F, the state size of each direction.
      mask: PixelRNN mask of the 1x1 input-to-state kernel ("B" in a PixelRNN,
        "A" only with channel_groups > 1, None: no mask).
      channel_groups: G (3 for RGB), see rnnvision.cells.masks.
    """

    features: int = 64
    mask: str | None = "B"
    channel_groups: int = 1
    forget_bias: float = 1.0
    kernel_init: str = "lecun_normal"
    recurrent_init: str = "lecun_normal"

    def validate(self):
        check_positive_int(self.features, "features")
        check_mask(self.mask)
        check_positive_int(self.channel_groups, "channel_groups")
        if self.features % self.channel_groups:
            raise ValueError(f"features={self.features} must be a multiple of "
                             f"channel_groups={self.channel_groups}")
        if self.mask == "A" and self.channel_groups == 1:
            # A 1x1 kernel has no taps to the left: mask "A" would shut all of it.
            raise ValueError("mask='A' with channel_groups=1 shuts the whole 1x1 input kernel "
                             "of diagonal_bilstm; allowed: mask='B' or None (or mask='A' with "
                             "channel_groups > 1)")
        initializer(self.kernel_init, field="kernel_init")
        initializer(self.recurrent_init, field="recurrent_init")

    def init(self, key, input_shape):
        if len(input_shape) != 3 or input_shape[0] != DIRECTIONS:
            raise ValueError("diagonal_bilstm takes skewed columns of both directions, "
                             f"(2, H, C); got input_shape={tuple(input_shape)}")
        f, c_in = self.features, input_shape[-1]
        if c_in % self.channel_groups:
            raise ValueError(f"diagonal_bilstm with channel_groups={self.channel_groups} needs "
                             f"input channels in multiples of it; got input_shape="
                             f"{tuple(input_shape)}")
        k_x, k_h = jax.random.split(key)
        kernel = initializer(self.kernel_init, field="kernel_init")
        recurrent = initializer(self.recurrent_init, field="recurrent_init")
        w_x = jnp.stack([kernel(k, (c_in, 4 * f)) for k in jax.random.split(k_x, DIRECTIONS)])
        w_h = jnp.stack([recurrent(k, (2 * f, 4 * f))
                         for k in jax.random.split(k_h, DIRECTIONS)])
        b = jnp.zeros((DIRECTIONS, 4 * f), jnp.float32).at[:, f:2 * f].set(self.forget_bias)
        return {"w_x": w_x * self.input_mask(c_in), "w_h": w_h, "b": b}

    def initial_carry(self, params, x_shape):
        *batch, _, rows, _ = x_shape
        zeros = jnp.zeros((*batch, DIRECTIONS, rows, self.features), jnp.float32)
        return DiagonalCarry(c=zeros, h=zeros, column=jnp.zeros(batch, jnp.int32))

    def input_mask(self, in_channels: int) -> Array:
        """(C, 4F) 0/1 mask of the 1x1 kernel K_is (channel groups at the centre tap)."""
        gate_groups = np.tile(contiguous_groups(self.features, self.channel_groups), 4)
        return channel_mask(contiguous_groups(in_channels, self.channel_groups), gate_groups,
                            self.mask)

    def project_direction(self, params, x: Array, direction: int) -> Array:
        """K_is^d x + b^d for one direction d: x (..., C) -> (..., 4F)."""
        w_x = params["w_x"][direction] * self.input_mask(params["w_x"].shape[1])
        return self.matmul(x, w_x) + params["b"][direction]

    def project_inputs(self, params, x):
        """x (..., 2, H, C) -> (..., 2, H, 4F), each direction with its own K_is and b."""
        return jnp.stack([self.project_direction(params, x[..., d, :, :], d)
                          for d in range(DIRECTIONS)], axis=-3)

    def update(self, params, direction: int, px: Array, h_above: Array, h_left: Array,
               c_left: Array) -> LSTMCarry:
        """The LSTM of direction d at one position from its two neighbours (any leading dims):
        px (..., 4F) from `project_direction`; h_above, h_left, c_left (..., F)."""
        neighbours = jnp.concatenate([h_above, h_left], axis=-1)  # [U_up; U_left] in one matmul
        return lstm_gates(px + self.matmul(neighbours, params["w_h"][direction]), c_left)

    def step_projected(self, params, carry, px):
        # The previous column one row down: row i reads h_{i-1,k-1}; row 0 reads zeros.
        h_above = jnp.pad(carry.h, [(0, 0)] * (carry.h.ndim - 2) + [(1, 0), (0, 0)])[..., :-1, :]
        new = [self.update(params, d, px[..., d, :, :], h_above[..., d, :, :],
                           carry.h[..., d, :, :], carry.c[..., d, :, :])
               for d in range(DIRECTIONS)]
        rows = jnp.arange(carry.h.shape[-2])
        # Row i enters the image at column k = i; until then its state stays zero.
        inside = (rows <= carry.column[..., None])[..., None, :, None]
        c = jnp.where(inside, jnp.stack([n.c for n in new], axis=-3), 0.0)
        h = jnp.where(inside, jnp.stack([n.h for n in new], axis=-3), 0.0)
        return DiagonalCarry(c=c, h=h, column=carry.column + 1), h
