"""rnnvision.recurrence.bidirectional: a forward and a reversed pass, concatenated."""

import functools

import jax
import numpy as np

from rnnvision import cells
from rnnvision.recurrence import bidirectional, unroll
from rnnvision.testing import prng_key

B, T, I, H = 3, 6, 3, 4
LENGTHS = np.array([6, 4, 1])  # end-padded sequences


@functools.partial(jax.jit, static_argnums=(0, 1))
def _bidirectional_and_plain_passes(cell_fw, cell_bw, params, carry, xs, xs_flipped, mask):
    """bidirectional over masked xs, and plain unmasked forward passes over xs and xs_flipped."""
    got = bidirectional(cell_fw, cell_bw, params, carry, xs, mask=mask)
    _, y_fw = unroll(cell_fw, params[0], carry[0], xs)
    _, y_bw_flipped = unroll(cell_bw, params[1], carry[1], xs_flipped)
    return got, y_fw, y_bw_flipped


def _flip_valid_prefix(a):
    """a (B, T, ...): each example's first LENGTHS[b] steps reversed, the padding left in place."""
    out = a.copy()
    for b, n in enumerate(LENGTHS):
        out[b, :n] = a[b, :n][::-1]
    return out


def test_bidirectional_equals_forward_and_flipped_backward_passes():
    # Different cells each way, so swapping them changes the values.
    cell_fw, cell_bw = cells.get("lstm", hidden_size=H), cells.get("gru", hidden_size=H)
    k_fw, k_bw = jax.random.split(prng_key(0))
    params = (cell_fw.init(k_fw, (I,)), cell_bw.init(k_bw, (I,)))
    carry = (cell_fw.initial_carry(params[0], (B, I)), cell_bw.initial_carry(params[1], (B, I)))
    xs = np.random.default_rng(0).standard_normal((B, T, I)).astype(np.float32)
    mask = np.arange(T)[None, :] < LENGTHS[:, None]

    ((c_fw, c_bw), ys), y_fw, y_bw_flipped = _bidirectional_and_plain_passes(
        cell_fw, cell_bw, params, carry, xs, _flip_valid_prefix(xs), mask)
    # Reference: padding sits at the end, so it cannot reach the valid steps of a
    # plain forward pass; the backward pass is a forward pass over each
    # sequence's valid steps reversed, flipped back. Padded steps output zeros.
    expected = np.concatenate([np.asarray(y_fw), _flip_valid_prefix(np.asarray(y_bw_flipped))], -1)
    expected[~mask] = 0.0
    assert ys.shape == (B, T, 2 * H)
    np.testing.assert_allclose(ys, expected, atol=1e-5)
    # The backward pass starts at each sequence's last valid step and ends at step 0
    # (for a GRU the carry is the output).
    np.testing.assert_allclose(c_bw, ys[:, 0, H:], atol=1e-6)
    np.testing.assert_allclose(c_fw.h, y_fw[np.arange(B), LENGTHS - 1], atol=1e-5)
