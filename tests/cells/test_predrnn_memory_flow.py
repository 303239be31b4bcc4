"""The memory paths of st_lstm and causal_lstm, followed by hand.

Each test sets every kernel to zero except a few centre taps of one channel (so
"SAME" padding never matters and a uniform frame stays uniform) and saturates
some gates with biases of ±30 (σ(30) = 1 and σ(-30) = 0 in float32, to 1e-13).
What is left is a scalar recurrence written out below, step by step.
"""

import doctest
import math

import jax
import numpy as np
import pytest

from rnnvision import cells
from rnnvision.cells import causal_lstm, st_lstm
from rnnvision.testing import prng_key

SAT = 30.0            # a saturating pre-activation
FRAME = (3, 3, 1)     # (H, W, C): one channel, a uniform frame
GATES = dict(i=0, f=1, g=2, o=3, i2=4, f2=5, g2=6)  # the documented bias blocks, F = 1


def _zero_params(cell):
    shapes = jax.eval_shape(lambda k: cell.init(k, FRAME), prng_key(0))
    return jax.tree.map(lambda s: np.zeros(s.shape, np.float32), shapes)


def _centre(w, block):
    """Sets the centre tap of output block `block` (one channel wide) of w (k, k, 1, O) to 1."""
    k = w.shape[0] // 2
    w[k, k, 0, block] = 1.0


def _biases(**values):
    b = np.zeros(7, np.float32)
    for gate, value in values.items():
        b[GATES[gate]] = value
    return b


def _run(cell, params, carry, x, steps):
    step = jax.jit(cell.step)
    out = []
    for _ in range(steps):
        carry, y = step(params, carry, x)
        out.append((carry, y))
    return out


def _uniform(value):
    return np.full((1, *FRAME), value, np.float32)


def test_st_lstm_memory_zigzags_up_the_layers_and_from_the_top_to_the_bottom():
    """3 layers; biases i = -30 (C stays 0), o = +30 (o = 1), i' = +30, f' = 0 (f' = 1/2),
    g' = atanh(v_l); W_1x1 reads M only. So M^l_t = M^{l-1}_t / 2 + v_l with
    M^0_t = M^3_{t-1} (the zigzag), and H^l_t = tanh(M^l_t)."""
    cell = cells.get("st_lstm", features=1, num_layers=3, kernel_size=3)
    params = _zero_params(cell)
    for layer, v in zip(params["layers"], (0.5, 0.25, 0.125)):
        layer["b"][:] = _biases(i=-SAT, o=SAT, i2=SAT, g2=np.arctanh(v))
        layer["w_last"][1, 0] = 1.0  # rows: [C, M]
    # t = 0, from M^3_{-1} = 0:      M^1 = 0/2 + .5 = .5,       M^2 = .5/2 + .25 = .5,
    #                                M^3 = .5/2 + .125 = .375
    # t = 1, from M^3_0 = .375:     M^1 = .1875 + .5 = .6875,  M^2 = .34375 + .25 = .59375,
    #                                M^3 = .296875 + .125 = .421875
    # (a bottom layer reading its own M^1_0 = .5 would give .75; reading 0, .5)
    expected_m = [(0.5, 0.5, 0.375), (0.6875, 0.59375, 0.421875)]
    carry = cell.initial_carry(params, (1, *FRAME))
    x = np.random.default_rng(0).standard_normal((1, *FRAME)).astype(np.float32)
    for (carry, y), m in zip(_run(cell, params, carry, x, 2), expected_m):
        np.testing.assert_allclose(np.stack(carry.h)[:, 0, :, :, 0],
                                   np.tanh(m)[:, None, None] * np.ones((3, 3, 3)), atol=1e-6)
        np.testing.assert_allclose(carry.m, m[-1], atol=1e-6)
        np.testing.assert_allclose(y, math.tanh(m[-1]), atol=1e-6)
        np.testing.assert_allclose(np.stack(carry.c), 0.0, atol=1e-6)


def test_causal_lstm_memory_zigzags_and_the_highway_feeds_layer_two():
    """3 layers; as above but M^l_t = f' tanh(W_mm * M^{l-1}_t) + i' g' with W_mm = 1:
    M^l_t = tanh(M^{l-1}_t) / 2 + v_l, M^0_t = M^3_{t-1}; o = tanh(30) = 1, H^l = tanh(M^l).
    GHU: W_px = 1, the rest 0, so S = 1/2 and Z_t = tanh(H^1_t) / 2 + Z_{t-1} / 2.
    Layer 2: i = 1, f = 0, W_xg = 1, so C^2_t = tanh(X) = tanh(Z_t) (its input is Z)."""
    cell = cells.get("causal_lstm", features=1, num_layers=3, kernel_size=3)
    params = _zero_params(cell)
    v1, v2, v3 = 0.5, -0.25, 0.125
    for layer, v in zip(params["layers"], (v1, v2, v3)):
        layer["b"][:] = _biases(i=-SAT, o=SAT, i2=SAT, g2=np.arctanh(v))
        _centre(layer["w_m"], 2)      # blocks i', f', W_mm
        layer["w_last"][1, 0] = 1.0   # rows: [C, M]
    params["layers"][1]["b"][:2] = (SAT, -SAT)
    _centre(params["layers"][1]["w_x"], GATES["g"])
    _centre(params["ghu"]["w_x"], 0)  # blocks P, S
    th = math.tanh
    # t = 0, from M^3_{-1} = 0, Z_{-1} = 0:
    m1 = th(0.0) / 2 + v1
    m2 = th(m1) / 2 + v2
    m3 = th(m2) / 2 + v3
    z0 = th(th(m1)) / 2 + 0.0 / 2           # P = tanh(H^1) = tanh(tanh(M^1))
    # t = 1, the bottom layer reads M^3_0:
    n1 = th(m3) / 2 + v1
    n2 = th(n1) / 2 + v2
    n3 = th(n2) / 2 + v3
    z1 = th(th(n1)) / 2 + z0 / 2
    expected = [((m1, m2, m3), z0), ((n1, n2, n3), z1)]
    carry = cell.initial_carry(params, (1, *FRAME))
    x = np.random.default_rng(0).standard_normal((1, *FRAME)).astype(np.float32)
    for (carry, y), (m, z) in zip(_run(cell, params, carry, x, 2), expected):
        for l in range(3):
            np.testing.assert_allclose(carry.h[l], th(m[l]), atol=1e-6, err_msg=f"H^{l + 1}")
        np.testing.assert_allclose(carry.m, m[2], atol=1e-6)
        np.testing.assert_allclose(carry.z, z, atol=1e-6)
        np.testing.assert_allclose(carry.c[1], th(z), atol=1e-6)
        np.testing.assert_allclose(carry.c[0], 0.0, atol=1e-6)
        np.testing.assert_allclose(y, th(m[2]), atol=1e-6)


def test_causal_lstm_cascade_m_reads_the_new_c_and_o_the_new_m():
    """Layer 1, one step from a nonzero carry (C_{t-1} = 0.9, M^3_{t-1} = -0.4):
    i = i' = 1, f = f' = 0, W_xg = 1, W'_cg = 1 (C_t into g'), W_om = 1 (M_t into o),
    W_1x1 reads M only. So C_t = tanh(x), M_t = tanh(C_t) (from the new C, not 0.9),
    o = tanh(M_t) (the new M, not -0.4), H_t = tanh(M_t)^2."""
    cell = cells.get("causal_lstm", features=1, num_layers=2, kernel_size=3)
    params = _zero_params(cell)
    bottom = params["layers"][0]
    bottom["b"][:] = _biases(i=SAT, f=-SAT, i2=SAT, f2=-SAT)
    _centre(bottom["w_x"], GATES["g"])
    _centre(bottom["w_cm"], 2)        # blocks i', f', g', o
    _centre(bottom["w_om"], 0)
    bottom["w_last"][1, 0] = 1.0
    zeros = cell.initial_carry(params, (1, *FRAME))
    carry = zeros._replace(c=(zeros.c[0] + 0.9, zeros.c[1] + 0.9), m=zeros.m - 0.4,
                           h=(zeros.h[0] + 0.3, zeros.h[1] + 0.3))
    [(carry, _)] = _run(cell, params, carry, _uniform(0.7), 1)
    c = math.tanh(0.7)
    m = math.tanh(c)
    np.testing.assert_allclose(carry.c[0], c, atol=1e-6)
    np.testing.assert_allclose(carry.h[0], math.tanh(m) ** 2, atol=1e-6)


@pytest.mark.slow  # eager init compiles every initializer on its own: ~20 s on 2 cores
def test_docstring_examples_run():
    for module in (st_lstm, causal_lstm):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__
