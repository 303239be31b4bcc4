"""Row LSTM causality, from the exact dependency pattern of outputs on input pixels.

The image (B, H, W, C) is unrolled over its rows (time = rows). d y[r_o, c_o] /
d x[r_i, c_i] is computed for ALL pairs of pixels of a 6x7 image with jacfwd.
Which pairs are nonzero is fixed by the architecture: x[r_i, c_i] enters row
r_i's state at the columns c_i - s for the unmasked taps s of K_is (if inside
the image), and each row further down widens that by k // 2 columns per side
(K_ss has k taps; c is carried straight down). For mask "A" and k = 3:
  (r_o, c_o) depends on (r_i, c_i)  <=>  r_o >= r_i, c_i + 1 < W and |c_o - (c_i + 1)| <= r_o - r_i,
which is zero at (r_i, c_i) itself and everywhere before it in raster order.

Note what this implies: with mask "A", the last pixel of every row (c_i = W - 1)
reaches no output at all, as no column lies to its right. A stack of row_lstm
layers (A, then B, ...) inherits that blind column; PixelRNN avoids it with a
mask-A 2-D convolution (which sees the row above) before its Row LSTM layers.
"""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnvision import cells
from rnnvision.recurrence import unroll
from rnnvision.testing import prng_key

HEIGHT, WIDTH, CHANNELS, FEATURES = 6, 7, 2, 3


def expected_dependency(mask, kernel_size=3):
    """(H, W, H, W) bool: output pixel (r_o, c_o) depends on input pixel (r_i, c_i)."""
    half = kernel_size // 2
    taps = {None: range(-half, half + 1), "B": range(-half, 1), "A": range(-half, 0)}[mask]
    r_o, c_o, r_i, c_i = np.meshgrid(*(np.arange(n) for n in (HEIGHT, WIDTH) * 2), indexing="ij")
    down = r_o - r_i
    # x[r_i, c_i] enters row r_i at column c_i - s, then spreads `half` columns per row down.
    return (down >= 0) & np.any(
        [(0 <= c_i - s) & (c_i - s < WIDTH) & (np.abs(c_o - (c_i - s)) <= half * down)
         for s in taps], axis=0)


@functools.partial(jax.jit, static_argnums=0)
def dependency(cell, params, image):
    """(H, W, H, W) bool: |d y[r_o, c_o, :] / d x[r_i, c_i, :]| summed over channels > 0."""
    def outputs(image):
        carry = cell.initial_carry(params, image[:, 0].shape)
        return unroll(cell, params, carry, image)[1]  # (1, H, W, F)

    jac = jax.jacfwd(outputs)(image)  # (1, H, W, F, 1, H, W, C)
    return jnp.sum(jnp.abs(jac), axis=(0, 3, 4, 7)) > 0


def _random_params(cell):
    """Parameters with every tap of K_is nonzero, as after training without the mask:
    the mask must be applied at use, not only at init."""
    params = cell.init(prng_key(0), (WIDTH, CHANNELS))
    rng = np.random.default_rng(0)
    return {k: rng.standard_normal(v.shape).astype(np.float32) * 0.5 for k, v in params.items()}


@pytest.mark.parametrize("mask, kernel_size", [("A", 3), ("B", 3), (None, 3), ("A", 5)])
def test_dependency_pattern_is_exactly_the_causal_one(mask, kernel_size):
    cell = cells.get("row_lstm", features=FEATURES, kernel_size=kernel_size, mask=mask)
    image = np.random.default_rng(1).standard_normal((1, HEIGHT, WIDTH, CHANNELS), np.float32)
    got = np.asarray(dependency(cell, _random_params(cell), image))
    want = expected_dependency(mask, kernel_size)
    wrong = np.argwhere(got != want)
    assert not len(wrong), (f"mask={mask!r}: {len(wrong)} (r_o, c_o, r_i, c_i) pairs differ "
                            f"from the expected dependency, e.g. {wrong[:5].tolist()}")

    raster = np.arange(HEIGHT * WIDTH).reshape(HEIGHT, WIDTH)
    out_before_or_at_in = raster[:, :, None, None] <= raster[None, None, :, :]
    if mask == "A":  # the property that makes the layer autoregressive
        assert not np.any(got & out_before_or_at_in), "an output sees its own or a later pixel"
    else:  # without the mask a pixel does see itself (so the test above can fail)
        assert np.all(got[np.arange(HEIGHT)[:, None], np.arange(WIDTH), np.arange(HEIGHT)[:, None],
                          np.arange(WIDTH)]), f"mask={mask!r}: y[r, c] does not depend on x[r, c]"
    # Every pixel but those of the last column (see the module docstring) and the
    # very last one influences some later output.
    influences_later = np.any(got & ~out_before_or_at_in, axis=(0, 1))
    reaches = influences_later[:, :-1] if mask == "A" else influences_later.ravel()[:-1]
    assert np.all(reaches), f"mask={mask!r}: some pixels influence no later output"


def test_init_refuses_steps_that_are_not_rows_naming_the_shape():
    with pytest.raises(ValueError, match=r"^row_lstm takes rows of shape \(W, C\); "
                                         r"got input_shape=\(5, 6, 2\)$"):
        cells.get("row_lstm", features=3).init(prng_key(0), (5, 6, 2))


_ALLOWED_INITS = "['glorot_uniform', 'lecun_normal', 'normal', 'orthogonal']"


@pytest.mark.parametrize("hparams, message", [
    ({"features": 0}, "features=0 must be a positive integer"),
    ({"kernel_size": 0}, "kernel_size=0 must be a positive integer"),
    ({"kernel_size": 4}, "kernel_size=4 must be odd (a centred 1-D kernel)"),
    ({"mask": "C"}, "mask='C'; allowed: (None, 'A', 'B')"),
    ({"channel_groups": 0}, "channel_groups=0 must be a positive integer"),
    ({"features": 4, "channel_groups": 3}, "features=4 must be a multiple of channel_groups=3"),
    ({"kernel_init": "zeros"},
     f"kernel_init='zeros' is not a known initializer; allowed: {_ALLOWED_INITS}"),
    ({"recurrent_init": "eye"},
     f"recurrent_init='eye' is not a known initializer; allowed: {_ALLOWED_INITS}"),
])
def test_bad_hparams_are_refused_with_the_exact_message(hparams, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        cells.get("row_lstm", **hparams)
