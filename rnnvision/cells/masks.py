"""Causal masks of PixelRNN (van den Oord et al., 2016, section 3.4).

Pixels are generated in raster order (row by row, left to right) and, within a
pixel, channel by channel (R, then G, then B). A layer may let position p see
every earlier pixel, and of p itself only what is already generated. For that
the features of every layer are split into G contiguous channel groups, one per
colour (G = 3 for RGB, 1 for grey or binary images); a feature of group g at p
stands for "what is needed to predict colour g of p". At the centre tap (the
connection from p to p):

  mask "A"  input group g_in reaches output group g_out only if g_in <  g_out
            (the first layer: R sees nothing of p, G sees R, B sees R and G)
  mask "B"  ... only if g_in <= g_out (every later layer: a group also sees
            its own group, which holds nothing of its own colour)
  None      no mask (every tap, every group)

Taps of earlier pixels are always open and taps of later pixels always shut
(except with None). With G = 1, "A" shuts the centre tap and "B" opens it.

Shape legend: k kernel taps, C_in / C_out input / output channels, G groups.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

MASKS = (None, "A", "B")


def check_mask(mask, field: str = "mask") -> None:
    if mask not in MASKS:
        raise ValueError(f"{field}={mask!r}; allowed: {MASKS}")


def contiguous_groups(size: int, groups: int) -> np.ndarray:
    """int (size,): the group of each of `size` channels split into `groups` blocks."""
    return np.arange(size) * groups // size


def channel_mask(in_groups: np.ndarray, out_groups: np.ndarray, mask: str | None) -> jnp.ndarray:
    """(C_in, C_out) 0/1 float32: which input channel may reach which output channel
    at the centre tap, from the group of each (`contiguous_groups`)."""
    check_mask(mask)
    g_in, g_out = np.asarray(in_groups)[:, None], np.asarray(out_groups)[None, :]
    allowed = {None: np.ones_like(g_in * g_out, bool), "A": g_in < g_out, "B": g_in <= g_out}[mask]
    return jnp.asarray(allowed, jnp.float32)


def row_kernel_mask(kernel_size: int, in_groups: np.ndarray, out_groups: np.ndarray,
                    mask: str | None) -> jnp.ndarray:
    """(k, C_in, C_out) mask of a 1-D kernel along a row, centred on the current pixel:
    taps to the left open, the centre tap by `channel_mask`, taps to the right shut."""
    taps = np.arange(kernel_size) - kernel_size // 2
    ones = np.ones((len(in_groups), len(out_groups)), np.float32)
    if mask is None:
        return jnp.asarray(np.broadcast_to(ones, (kernel_size, *ones.shape)))
    centre = channel_mask(in_groups, out_groups, mask)
    return jnp.stack([ones if s < 0 else centre if s == 0 else 0 * ones for s in taps])


def image_kernel_mask(kernel_size: int, in_groups: np.ndarray, out_groups: np.ndarray,
                      mask: str | None) -> jnp.ndarray:
    """(k, k, C_in, C_out) mask of a 2-D kernel centred on the current pixel: the rows
    above open, the centre row as `row_kernel_mask`, the rows below shut."""
    row = row_kernel_mask(kernel_size, in_groups, out_groups, mask)
    if mask is None:
        return jnp.broadcast_to(row, (kernel_size, *row.shape))
    rows = np.arange(kernel_size) - kernel_size // 2
    return jnp.stack([jnp.ones_like(row) if r < 0 else row if r == 0 else jnp.zeros_like(row)
                      for r in rows])
