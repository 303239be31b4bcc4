"""The loop options both fast-path test files run against the generic scan (B=3, T=7).

Not a test module: imported by tests/test_fast_paths.py and tests/test_conv_fast_path.py.
"""

import jax.numpy as jnp

MASK = jnp.array([[1, 1, 0, 1, 1, 1, 1],
                  [0, 0, 1, 1, 1, 0, 1],
                  [1, 1, 1, 1, 0, 0, 0]], bool)
RESETS = jnp.array([[0, 0, 1, 0, 0, 1, 0],
                    [1, 0, 0, 0, 1, 0, 0],
                    [0, 0, 0, 0, 0, 0, 1]], bool)

OPTIONS = {
    "plain": {},
    "truncation": {"truncation": 2},
    "mask": {"mask": MASK},
    "resets": {"resets": RESETS},
    "reverse": {"reverse": True},
    "all": {"mask": MASK, "resets": RESETS, "reverse": True, "truncation": 3},
    "remat": {"remat": 3, "mask": MASK, "truncation": 2},
    "unroll": {"unroll": 2, "resets": RESETS},
}
