"""Convolution helper shared by the convolutional cells."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rnnvision.cells.base import check_positive_int
from rnnvision.cells.conv_grad import conv_nd, explicit_padding



def conv(x: jax.Array, w: jax.Array, padding, dtype) -> jax.Array:
    """N-d convolution, channels last, over inputs with any leading dims.

    Args:
      x: (*leading, *spatial, C_in); all leading dims are folded into the batch.
      w: (*kernel, C_in, C_out).
      padding: "SAME", "VALID" or a sequence of (low, high) pairs.
      dtype: compute dtype; the result is float32 (float64 if dtype is float64).
    Returns:
      (*leading, *spatial_out, C_out) float32 or float64.
    """
    nsp = w.ndim - 2
    lead = x.shape[: x.ndim - nsp - 1]
    flat = x.reshape((-1, *x.shape[x.ndim - nsp - 1:]))
    # conv_nd = lax.conv_general_dilated (stride 1, float32 accumulation, float64
    # for float64 compute) with a gradient that stays fast inside lax.scan on CPU
    # (see conv_grad.py: XLA:CPU's own backward convolutions are ~20x slower there).
    pads = explicit_padding(padding, flat.shape[1:-1], w.shape[:nsp])
    y = conv_nd(flat, w, pads, jnp.dtype(dtype))
    return y.reshape((*lead, *y.shape[1:]))


def kernel_pair(kernel_size) -> tuple[int, int]:
    """(kh, kw) of a 2-D kernel given as k or (kh, kw); raises ValueError naming kernel_size."""
    kernel = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
    if len(kernel) != 2:
        raise ValueError(f"kernel_size={kernel_size!r} must be an int or (kh, kw)")
    for k in kernel:
        check_positive_int(k, "kernel_size")
    return kernel
