"""The shared pieces of the dense cells (rnn, lstm, gru): hyper-parameter and input checks
with their exact messages, and the zero state."""

from __future__ import annotations

import re

import numpy as np
import pytest

from rnnvision import cells
from rnnvision.testing import prng_key

I, H = 3, 4  # as in test_cells_contract, so the initializers' compilations are shared


@pytest.mark.parametrize("name, cls", [("rnn", "SimpleRNNCell"), ("lstm", "LSTMCell"),
                                       ("gru", "GRUCell")])
def test_dense_cells_refuse_non_vector_inputs_naming_the_cell_and_the_shape(name, cls):
    with pytest.raises(ValueError, match=rf"^{cls} takes vector inputs, input_shape=\(I,\); "
                                         rf"got input_shape=\(5, 3\)$"):
        cells.get(name, hidden_size=H).init(prng_key(0), (5, 3))


def test_the_zero_state_keeps_every_batch_dim():
    """x (*batch, I) -> h (*batch, H), for no, one and two batch dims; a step from it
    is then tanh(x W_x + b) (h = 0), computed here in NumPy."""
    cell = cells.get("rnn", hidden_size=H)
    params = cell.init(prng_key(0), (I,))
    rng = np.random.default_rng(0)
    params = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in params.items()}
    for batch in [(), (2,), (2, 5)]:
        h = cell.initial_carry(params, (*batch, I))
        assert h.shape == (*batch, H) and h.dtype == np.float32
        np.testing.assert_array_equal(h, 0.0)
        x = rng.standard_normal((*batch, I)).astype(np.float32)
        _, y = cell.step(params, h, x)
        want = np.tanh(x.astype(np.float64) @ params["w_x"] + params["b"])
        np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)
    carry = cells.get("lstm", hidden_size=H).initial_carry(None, (2, 5, I))
    assert carry.c.shape == carry.h.shape == (2, 5, H)
    assert cells.get("gru", hidden_size=H).initial_carry(None, (I,)).shape == (H,)


@pytest.mark.parametrize("hparams, message", [
    ({"hidden_size": 0}, "hidden_size=0 must be a positive integer"),
    ({"hidden_size": True}, "hidden_size=True must be a positive integer"),
    ({"kernel_init": "zeros"}, "kernel_init='zeros' is not a known initializer; allowed: "
                               "['glorot_uniform', 'lecun_normal', 'normal', 'orthogonal']"),
    ({"recurrent_init": "eye"}, "recurrent_init='eye' is not a known initializer; allowed: "
                                "['glorot_uniform', 'lecun_normal', 'normal', 'orthogonal']"),
    ({"recurrent_scale": 0.0}, "recurrent_scale=0.0 must be > 0"),
    ({"recurrent_scale": float("nan")}, "recurrent_scale=nan must be > 0"),
])
def test_bad_hparams_are_refused_with_the_exact_field_and_value(hparams, message):
    for name in ("rnn", "lstm", "gru"):
        with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
            cells.get(name, **hparams)
