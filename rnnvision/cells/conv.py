"""Convolution helper shared by the convolutional cells."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

_DIMENSION_NUMBERS = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC")}


def conv(x: jax.Array, w: jax.Array, padding, dtype) -> jax.Array:
    """N-d convolution, channels last, over inputs with any leading dims.

    Args:
      x: (*leading, *spatial, C_in); all leading dims are folded into the batch.
      w: (*kernel, C_in, C_out).
      padding: "SAME", "VALID" or a sequence of (low, high) pairs.
      dtype: compute dtype; the result is float32.
    Returns:
      (*leading, *spatial_out, C_out) float32.
    """
    nsp = w.ndim - 2
    lead = x.shape[: x.ndim - nsp - 1]
    flat = x.reshape((-1, *x.shape[x.ndim - nsp - 1:]))
    y = lax.conv_general_dilated(
        flat.astype(dtype), w.astype(dtype), window_strides=(1,) * nsp, padding=padding,
        dimension_numbers=_DIMENSION_NUMBERS[nsp], preferred_element_type=jnp.float32)
    return y.reshape((*lead, *y.shape[1:]))
