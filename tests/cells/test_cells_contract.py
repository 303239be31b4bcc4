"""Every built-in cell, in every variant that changes its code path, passes check_cell."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnvision import cells
from rnnvision.recurrence import unroll
from rnnvision.testing import check_cell, prng_key

# Sizes are shared across the test files so JAX's compilation cache is reused.
# I != H on purpose: a kernel used the wrong way round fails on shapes.
I, H = 3, 4
IMAGE = (5, 6, 2)  # (H, W, C) of conv_lstm steps
ROW = (7, 2)       # (W, C) of row_lstm steps

CASES = {
    "rnn": (lambda: cells.get("rnn", hidden_size=H), (I,)),
    "lstm": (lambda: cells.get("lstm", hidden_size=H), (I,)),
    "gru": (lambda: cells.get("gru", hidden_size=H), (I,)),
    "conv_lstm-k3-SAME": (lambda: cells.get("conv_lstm", features=3, kernel_size=3), IMAGE),
    "conv_lstm-k3-VALID":
        (lambda: cells.get("conv_lstm", features=3, kernel_size=3, padding="VALID"), IMAGE),
    "conv_lstm-k5-SAME": (lambda: cells.get("conv_lstm", features=3, kernel_size=5), IMAGE),
    "conv_lstm-k5-VALID":
        (lambda: cells.get("conv_lstm", features=3, kernel_size=5, padding="VALID"), IMAGE),
    "row_lstm-mask-None": (lambda: cells.get("row_lstm", features=3, mask=None), ROW),
    "row_lstm-mask-A": (lambda: cells.get("row_lstm", features=3, mask="A"), ROW),
    "row_lstm-mask-B": (lambda: cells.get("row_lstm", features=3, mask="B"), ROW),
    # The residual connection applies where input and output shapes agree: layer 2.
    "stacked-lstm-2-residual": (lambda: cells.stack("lstm", 2, residual=True, hidden_size=H), (I,)),
    "lstm-bfloat16": (lambda: cells.get("lstm", hidden_size=H, compute_dtype="bfloat16"), (I,)),
}
# The float64 finite-difference check costs most of the time (three compilations
# per cell), so by default it runs on one case per kind of cell (conv_lstm and
# row_lstm share the custom-gradient convolution of rnnvision.cells.conv);
# `-m slow` runs it on all but "lstm-bfloat16": check_cell checks gradients on a
# float64 copy of the cell, which for that case is the "lstm" case again. bfloat16
# gradients are compared with float32 ones below (and, for the fast paths of the
# dense cells, in tests/test_fast_paths.py).
GRADIENTS_BY_DEFAULT = ("lstm", "gru", "conv_lstm-k3-VALID", "row_lstm-mask-A")
NO_GRADIENT_CHECK = ("lstm-bfloat16",)
STEPS = 3  # enough for the carry to pass through steps; compile time grows with it
BUILTIN = ("rnn", "lstm", "gru", "conv_lstm", "row_lstm")


@pytest.mark.parametrize("case", CASES)
def test_check_cell(case):
    make_cell, input_shape = CASES[case]
    check_cell(make_cell(), input_shape, steps=STEPS, check_gradients=case in GRADIENTS_BY_DEFAULT)


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(set(CASES) - set(GRADIENTS_BY_DEFAULT)
                                         - set(NO_GRADIENT_CHECK)))
def test_check_cell_gradients(case):
    make_cell, input_shape = CASES[case]
    check_cell(make_cell(), input_shape, steps=STEPS)


def test_every_builtin_cell_is_registered_and_covered():
    covered = {case.split("-")[0] for case in CASES}
    assert set(BUILTIN) <= set(cells.names())
    assert set(BUILTIN) <= covered


# conv_lstm and row_lstm share the convolution (and its custom gradient) of
# rnnvision.cells.conv; the fast paths of lstm are checked in tests/test_fast_paths.py.
@pytest.mark.parametrize("case", ["conv_lstm-k3-VALID",
                                  pytest.param("row_lstm-mask-B", marks=pytest.mark.slow),
                                  pytest.param("lstm", marks=pytest.mark.slow)])
def test_bfloat16_gradients_are_float32_gradients_to_bfloat16_precision(case):
    """compute_dtype="bfloat16" rounds the operands of every matmul / convolution, in
    the forward and the backward pass: the gradients of unroll must differ from the
    float32 ones (it really computes in bfloat16) by no more than a few bfloat16 ulps
    (8-bit mantissa, 2^-8 relative) of each leaf's scale."""
    make_cell, input_shape = CASES[case]
    cell32 = make_cell()
    cell16 = dataclasses.replace(cell32, compute_dtype="bfloat16")
    params = cell32.init(prng_key(0), input_shape)
    rng = np.random.default_rng(0)
    xs = rng.standard_normal((2, STEPS, *input_shape), np.float32)

    @jax.jit
    def grads(params, xs):
        def loss(cell, params, xs):
            carry, ys = unroll(cell, params, cell.initial_carry(params, xs[:, 0].shape), xs)
            return sum(jnp.sum(jnp.sin(leaf)) for leaf in jax.tree.leaves((carry, ys)))
        return [jax.grad(loss, (1, 2))(cell, params, xs) for cell in (cell32, cell16)]

    exact, rounded = grads(params, xs)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(rounded))
    errors = [float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))
              for a, b in zip(jax.tree.leaves(rounded), jax.tree.leaves(exact))]
    assert max(errors) < 3e-2, f"{case}: bfloat16 gradients off by {errors} of their scale"
    assert max(errors) > 1e-4, f"{case}: bfloat16 gradients equal float32 ones: is compute_dtype ignored?"
