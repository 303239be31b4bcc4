"""The loop options both fast-path test files run against the generic scan (B=3, T=7).

Not a test module: imported by tests/test_fast_paths.py and tests/test_conv_fast_path.py.
"""

import jax
import jax.numpy as jnp

from rnnvision.recurrence import unroll

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


def fused_and_generic(loss_fn, cell, weights, opts):
    """jit of [(unroll's values, grads of loss_fn(cell, weights, impl=...)) for impl
    "fused", then "scan"]; loss_fn is the test file's scalar of ys and the final carry."""
    @jax.jit
    def values_and_grads(params, xs, carry):
        return [(unroll(cell, params, carry, xs, impl=impl, **opts),
                 jax.grad(loss_fn(cell, weights, impl=impl, **opts),
                          argnums=(0, 1, 2))(params, xs, carry))
                for impl in ("fused", "scan")]
    return values_and_grads


def equations(fn, *args, loops=("scan", "while")):
    """(equation, inside a loop?) for every equation of fn(*args)'s traced program,
    nested ones included."""
    def walk(jaxpr, in_loop):
        for e in jaxpr.eqns:
            yield e, in_loop
            for sub in jax.core.jaxprs_in_params(e.params):
                yield from walk(sub, in_loop or e.primitive.name in loops)
    return list(walk(jax.make_jaxpr(fn)(*args).jaxpr, False))
