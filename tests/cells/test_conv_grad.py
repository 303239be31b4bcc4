"""conv_grad.conv_nd: lax.conv's values and derivatives, with a scan-friendly gradient."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from rnnvision.cells.conv_grad import conv_nd, explicit_padding

_DN = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC")}


def _reference(x, w, padding):
    nsp = w.ndim - 2
    return lax.conv_general_dilated(x, w, (1,) * nsp, padding, dimension_numbers=_DN[nsp],
                                    precision=lax.Precision.HIGHEST)


@pytest.mark.parametrize("kernel,padding", [((3, 3), "SAME"), ((3, 2), "VALID"), ((4, 4), "SAME_LOWER"),
                                            ((3, 3), ((0, 2), (1, 0))), ((3,), "SAME"), ((1,), "SAME")])
def test_values_and_gradients_match_lax(kernel, padding):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(2, *(7,) * len(kernel), 3)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(*kernel, 3, 4)), jnp.float32)
    pads = explicit_padding(padding, x.shape[1:-1], kernel)
    ours = lambda x, w: conv_nd(x, w, pads, jnp.dtype("float32"))  # noqa: E731
    y = _reference(x, w, padding)
    np.testing.assert_allclose(ours(x, w), y, rtol=1e-5, atol=1e-5)
    ct = jnp.asarray(rng.normal(size=y.shape), jnp.float32)
    g_ref = jax.grad(lambda x, w: jnp.vdot(_reference(x, w, padding), ct), (0, 1))(x, w)
    g_ours = jax.grad(lambda x, w: jnp.vdot(ours(x, w), ct), (0, 1))(x, w)
    for a, b in zip(g_ours, g_ref):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    # Forward mode and second order work too (a custom_jvp, not a custom_vjp).
    np.testing.assert_allclose(jax.jacfwd(lambda w: ours(x, w).sum())(w),
                               jax.jacfwd(lambda w: _reference(x, w, padding).sum())(w),
                               rtol=1e-4, atol=1e-4)
    # Second order in (x, w) together, so the cross terms of the bilinear map count,
    # against lax's own second derivatives (on a smaller input: the Hessian is dense).
    x_small = x[(slice(0, 1), *(slice(0, 4),) * len(kernel))]
    small_pads = explicit_padding(padding, x_small.shape[1:-1], kernel)

    @jax.jit
    def hessians(x, w):  # one compilation for both
        return [jax.hessian(lambda x, w: jnp.sin(conv(x, w)).sum(), (0, 1))(x, w) for conv in (
            lambda x, w: conv_nd(x, w, small_pads, jnp.dtype("float32")),
            lambda x, w: _reference(x, w, padding))]

    h_ours, h_ref = hessians(x_small, w)
    for a, b in zip(jax.tree.leaves(h_ours), jax.tree.leaves(h_ref)):
        assert float(jnp.abs(b).max()) > 0
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_backward_convolutions_inside_scan_are_canonical():
    """The reason for conv_nd: XLA:CPU runs only b01f_01io->b01f convolutions fast, and
    does not rewrite autodiff's backward convolutions into that form inside loops."""
    w = jnp.ones((3, 3, 4, 4)) * 0.1
    xs = jnp.ones((3, 2, 6, 6, 4))
    pads = explicit_padding("SAME", (6, 6), (3, 3))

    def loss(w):
        def body(h, x):
            h = jnp.tanh(conv_nd(h, w, pads, jnp.dtype("float32")) + x)
            return h, h
        return lax.scan(body, xs[0], xs)[1].sum()

    hlo = jax.jit(jax.grad(loss)).lower(w).compile().as_text()
    labels = re.findall(r"convolution\(.*?dim_labels=(\S+?),", hlo)
    assert labels and all(label == "b01f_01io->b01f" for label in labels), labels
