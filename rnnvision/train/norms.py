"""A global norm that does not overflow: ||x|| = sqrt(sum((s x)^2)) / s, s ~ 1 / max |x|.

optax.global_norm squares first, so in float32 it overflows to inf as soon as one
element exceeds ~1.8e19, although the norm itself may be far below the float32 maximum
(~3.4e38). Scaling every element by s = 2^-floor(log2 max|x|) first keeps each squared
term below 4: the result is inf only when the norm itself is not representable, and
NaN/inf elements still give NaN/inf. s is clipped to [2^-100, 2^100] so that it, its
inverse and the scaled maximum stay normal numbers (XLA on CPU flushes subnormals to
zero, so dividing by a maximum near 3e38 would give 0).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

_MAX_EXPONENT = 100.0


def global_norm(tree: Any) -> jax.Array:
    """sqrt(sum of x^2 over every element of every leaf), computed in float32 without
    overflow (module docstring); 0 for an empty tree or all zeros. Returns a scalar."""
    leaves = [jnp.asarray(x, jnp.float32) for x in jax.tree.leaves(tree)]
    if not leaves:
        return jnp.zeros((), jnp.float32)
    largest = jnp.max(jnp.stack([jnp.max(jnp.abs(x), initial=0.0) for x in leaves]))
    finite = jnp.isfinite(largest)
    exponent = jnp.floor(jnp.log2(jnp.where(finite & (largest > 0), largest, 1.0)))
    scale = jnp.exp2(-jnp.clip(exponent, -_MAX_EXPONENT, _MAX_EXPONENT))
    norm = jnp.sqrt(sum(jnp.sum(jnp.square(x * scale)) for x in leaves)) / scale
    return jnp.where(finite, norm, largest)  # NaN/inf elements: NaN/inf
