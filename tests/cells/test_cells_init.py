"""Initialisation: the forget-gate bias, and orthogonal recurrent blocks scaled by recurrent_scale."""

import jax
import numpy as np
import pytest

from rnnvision import cells
from rnnvision.cells.lstm import LSTMCarry
from rnnvision.testing import prng_key

F = 4  # hidden size of the dense cells
# name -> (hyper-parameters, one step's input shape, state size); sizes as in
# test_cells_contract, so the initializers' compilations are shared.
LSTM_LIKE = {
    "lstm": ({"hidden_size": 4}, (3,), 4),
    "conv_lstm": ({"features": 3, "kernel_size": 3}, (5, 6, 2), 3),
    "row_lstm": ({"features": 3, "mask": "A"}, (7, 2), 3),
}


@pytest.mark.parametrize("name", LSTM_LIKE)
def test_forget_bias_is_one_and_other_biases_zero(name):
    hparams, input_shape, size = LSTM_LIKE[name]
    b = np.asarray(cells.get(name, **hparams).init(prng_key(0), input_shape)["b"])
    # Gate order i, f, g, o: the forget block is the second.
    np.testing.assert_array_equal(b[size:2 * size], 1.0)
    np.testing.assert_array_equal(np.delete(b, np.s_[size:2 * size]), 0.0)


@pytest.mark.parametrize("name", LSTM_LIKE)
def test_forget_bias_block_is_the_forget_gate(name):
    """The block set to forget_bias really is f: saturating it keeps c, closing i adds nothing."""
    hparams, input_shape, size = LSTM_LIKE[name]
    cell = cells.get(name, **hparams)
    params = jax.eval_shape(lambda key: cell.init(key, input_shape), prng_key(0))
    params = {k: np.zeros(v.shape, np.float32) for k, v in params.items()}
    gates = np.zeros((4, size), np.float32)
    gates[0], gates[1] = -30.0, 30.0  # input gate shut, forget gate open
    params["b"] = gates.ravel()
    x = np.ones((2, *input_shape), np.float32)
    zero = cell.initial_carry(params, x.shape)
    c = np.linspace(-1.0, 1.0, zero.c.size, dtype=np.float32).reshape(zero.c.shape)
    new, _ = jax.jit(cell.step)(params, LSTMCarry(c=c, h=zero.h), x)
    np.testing.assert_allclose(new.c, c, atol=1e-6)


def test_forget_bias_hparam_sets_the_block():
    b = cells.get("lstm", hidden_size=F, forget_bias=2.5).init(prng_key(0), (3,))["b"]
    np.testing.assert_array_equal(b[F:2 * F], 2.5)


@pytest.mark.parametrize("name, num_gates", [("rnn", 1), ("lstm", 4), ("gru", 3)])
@pytest.mark.parametrize("scale", [1.0, 0.5, 1.7])
def test_orthogonal_recurrent_blocks_with_spectral_radius_scale(name, num_gates, scale):
    cell = cells.get(name, hidden_size=F, recurrent_init="orthogonal", recurrent_scale=scale)
    w_h = np.asarray(cell.init(prng_key(0), (3,))["w_h"], np.float64)
    assert w_h.shape == (F, num_gates * F)
    blocks = np.split(w_h, num_gates, axis=1)
    for block in blocks:
        # scale * Q with Q orthogonal: Q^T Q = I, every |eigenvalue| = scale.
        np.testing.assert_allclose(block.T @ block, scale**2 * np.eye(F), atol=1e-5)
        np.testing.assert_allclose(np.abs(np.linalg.eigvals(block)), scale, atol=1e-5)
    # Each gate gets its own draw (one (H, 4H) orthogonal matrix could not be square-orthogonal).
    for a, b in zip(blocks, blocks[1:]):
        assert not np.allclose(a, b)
