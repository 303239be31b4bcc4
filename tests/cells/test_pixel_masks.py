"""PixelRNN masks: hand-written small cases, and the Row LSTM's dependency pattern with
colour channel groups (RGB), computed exactly with jacfwd over every pair of
(output pixel, group) and (input pixel, group).
"""

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnvision import cells
from rnnvision.cells import masks
from rnnvision.recurrence import unroll
from rnnvision.testing import prng_key


def test_channel_mask_by_groups():
    rgb = masks.contiguous_groups(3, 3)
    np.testing.assert_array_equal(rgb, [0, 1, 2])
    np.testing.assert_array_equal(masks.contiguous_groups(6, 3), [0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(masks.channel_mask(rgb, rgb, "A"),
                                  [[0, 1, 1], [0, 0, 1], [0, 0, 0]])  # R -> G, B; G -> B
    np.testing.assert_array_equal(masks.channel_mask(rgb, rgb, "B"),
                                  [[1, 1, 1], [0, 1, 1], [0, 0, 1]])
    np.testing.assert_array_equal(masks.channel_mask(rgb, rgb, None), np.ones((3, 3)))


def test_channel_and_row_masks_are_float32_of_their_full_shape_and_refuse_unknown_masks():
    """(C_in, C_out) and (k, C_in, C_out) 0/1 float32 arrays (also with jax_enable_x64 on),
    for mask None too, here with 2 input channels in 2 groups and 3 output channels in 3
    groups."""
    g_in, g_out = masks.contiguous_groups(2, 2), masks.contiguous_groups(3, 3)
    wants = {None: np.ones((2, 3)), "A": [[0, 1, 1], [0, 0, 1]], "B": [[1, 1, 1], [0, 1, 1]]}
    for mask, want in wants.items():
        with warnings.catch_warnings():  # no NumPy warning (e.g. a division by group 0)
            warnings.simplefilter("error", RuntimeWarning)
            centre = masks.channel_mask(g_in, g_out, mask)
        assert centre.shape == (2, 3) and centre.dtype == jnp.float32, mask
        np.testing.assert_array_equal(centre, want)
        row = masks.row_kernel_mask(3, g_in, g_out, mask)
        assert row.shape == (3, 2, 3) and row.dtype == jnp.float32, mask
        np.testing.assert_array_equal(row, [np.ones((2, 3)), want,
                                            np.ones((2, 3)) if mask is None else np.zeros((2, 3))])
        with jax.enable_x64(True):  # float32 still, where NumPy's and JAX's defaults are float64
            assert masks.row_kernel_mask(3, g_in, g_out, mask).dtype == jnp.float32, mask
            assert masks.image_kernel_mask(3, g_in, g_out, mask).dtype == jnp.float32, mask
    with pytest.raises(ValueError, match=r"^mask='C'; allowed: \(None, 'A', 'B'\)$"):
        masks.channel_mask(g_in, g_out, "C")


def test_image_kernel_mask_one_group():
    one = masks.contiguous_groups(1, 1)
    want_a = [[1, 1, 1], [1, 0, 0], [0, 0, 0]]
    np.testing.assert_array_equal(masks.image_kernel_mask(3, one, one, "A")[..., 0, 0], want_a)
    want_b = [[1, 1, 1], [1, 1, 0], [0, 0, 0]]
    np.testing.assert_array_equal(masks.image_kernel_mask(3, one, one, "B")[..., 0, 0], want_b)
    np.testing.assert_array_equal(masks.row_kernel_mask(5, one, one, "A")[:, 0, 0], [1, 1, 0, 0, 0])


def test_image_kernel_mask_five_taps_and_no_mask():
    """A 5x5 kernel centred on tap (2, 2): two rows above open, two below shut; and
    mask None opens every tap of every channel pair (here 2 input, 3 output groups)."""
    one = masks.contiguous_groups(1, 1)
    want_b = [[1, 1, 1, 1, 1],
              [1, 1, 1, 1, 1],
              [1, 1, 1, 0, 0],
              [0, 0, 0, 0, 0],
              [0, 0, 0, 0, 0]]
    np.testing.assert_array_equal(masks.image_kernel_mask(5, one, one, "B")[..., 0, 0], want_b)
    want_a = np.array(want_b)
    want_a[2, 2] = 0
    np.testing.assert_array_equal(masks.image_kernel_mask(5, one, one, "A")[..., 0, 0], want_a)
    none = masks.image_kernel_mask(3, masks.contiguous_groups(2, 2), masks.contiguous_groups(3, 3),
                                   None)
    assert none.shape == (3, 3, 2, 3) and none.dtype == jnp.float32
    np.testing.assert_array_equal(none, np.ones((3, 3, 2, 3)))


HEIGHT, WIDTH, GROUPS = 5, 6, 3


def expected_dependency(mask, kernel_size=3):
    """(H, W, G, H, W, G) bool: output (r_o, c_o, g_o) depends on input (r_i, c_i, g_i).

    x[r_i, c_i, g_i] enters row r_i's gates at column c_i - s through tap s of K_is,
    into every group for s < 0 and, at s = 0, into the groups the channel rule allows;
    a row further down, K_ss has mixed all groups and widened it by k // 2 columns.
    """
    half = kernel_size // 2
    g = np.arange(GROUPS)
    rule = {"A": g[:, None] < g[None, :], "B": g[:, None] <= g[None, :]}[mask]  # (g_i, g_o)
    r_o, c_o, g_o, r_i, c_i, g_i = np.meshgrid(
        *(np.arange(n) for n in (HEIGHT, WIDTH, GROUPS) * 2), indexing="ij")
    down = r_o - r_i
    out = np.zeros(r_o.shape, bool)
    for s in range(-half, 1):
        entry = c_i - s
        inside = (0 <= entry) & (entry < WIDTH)
        groups_in = np.ones_like(out) if s < 0 else rule[g_i, g_o]
        any_group = np.ones_like(out) if s < 0 else rule.any(axis=1)[g_i]
        same_row = (down == 0) & (c_o == entry) & groups_in
        below = (down > 0) & (np.abs(c_o - entry) <= half * down) & any_group
        out |= inside & (same_row | below)
    return out


@functools.partial(jax.jit, static_argnums=0)
def group_dependency(cell, params, image):
    """(H, W, G, H, W, G) bool from the Jacobian, each group's features summed."""
    def outputs(image):
        carry = cell.initial_carry(params, image[:, 0].shape)
        return unroll(cell, params, carry, image)[1]  # (1, H, W, F)

    jac = jnp.abs(jax.jacfwd(outputs)(image))[0, ..., 0, :, :, :]  # (H, W, F, H, W, C)
    f, c = jac.shape[2], jac.shape[-1]
    jac = jac.reshape(HEIGHT, WIDTH, GROUPS, f // GROUPS, HEIGHT, WIDTH, GROUPS, c // GROUPS)
    return jnp.sum(jac, axis=(3, 7)) > 0


@pytest.mark.parametrize("mask", ["A", "B"])
def test_row_lstm_rgb_dependency_is_exactly_the_channel_causal_one(mask):
    cell = cells.get("row_lstm", features=GROUPS * 2, mask=mask, channel_groups=GROUPS)
    params = cell.init(prng_key(0), (WIDTH, GROUPS))
    rng = np.random.default_rng(0)  # every weight nonzero: the mask must act at use
    params = {k: rng.standard_normal(v.shape).astype(np.float32) * 0.5 for k, v in params.items()}
    image = rng.standard_normal((1, HEIGHT, WIDTH, GROUPS), np.float32)
    got = np.asarray(group_dependency(cell, params, image))
    want = expected_dependency(mask)
    wrong = np.argwhere(got != want)
    assert not len(wrong), (f"mask={mask!r}: {len(wrong)} (r_o, c_o, g_o, r_i, c_i, g_i) "
                            f"differ, e.g. {wrong[:5].tolist()}")
    # The channel rule at one pixel, spelt out: with "A", G sees R and B sees R, G;
    # with "B" each group also sees its own.
    own = got[2, 3, :, 2, 3, :]  # (g_o, g_i)
    want_own = [[0, 0, 0], [1, 0, 0], [1, 1, 0]] if mask == "A" else [[1, 0, 0], [1, 1, 0],
                                                                      [1, 1, 1]]
    np.testing.assert_array_equal(own, np.array(want_own, bool))


def test_row_lstm_channel_groups_must_divide():
    with pytest.raises(ValueError, match="channel_groups"):
        cells.get("row_lstm", features=4, channel_groups=3)
    with pytest.raises(ValueError, match="multiples"):
        cells.get("row_lstm", features=3, channel_groups=3).init(prng_key(0), (5, 2))
