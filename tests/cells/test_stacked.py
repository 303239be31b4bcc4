"""StackedCell: layers composed as its docstring says, checked against a NumPy loop.

    y^0_t = x_t;  (carry^l_t, y^l_t) = cell_l.step(params[l], carry^l_{t-1}, y^{l-1}_t)
    with residual=True, y^l_t += y^{l-1}_t wherever their shapes agree.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnvision import cells
from rnnvision.cells import SimpleRNNCell, StackedCell
from rnnvision.recurrence import unroll
from rnnvision.testing import prng_key

B, T, I = 2, 3, 4
# Three layers of different kinds and widths: rnn 4 -> 4 (same shape as its input:
# a residual applies), gru 4 -> 3 (none), rnn 3 -> 3 (again one). Three layers, so
# that a loop over the wrong layers or the wrong number of keys shows.
LAYERS = (cells.get("rnn", hidden_size=4), cells.get("gru", hidden_size=3),
          cells.get("rnn", hidden_size=3))


def _sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def _numpy_rnn(p, h, x):
    return np.tanh(x @ p["w_x"] + p["b"] + h @ p["w_h"])


def _numpy_gru(p, h, x):
    """The PyTorch GRU equations of the GRUCell docstring."""
    a_r, a_z, a_n = np.split(x @ p["w_x"] + p["b_x"], 3, axis=-1)
    u_r, u_z, u_n = np.split(h @ p["w_h"] + p["b_h"], 3, axis=-1)
    r, z = _sigmoid(a_r + u_r), _sigmoid(a_z + u_z)
    n = np.tanh(a_n + r * u_n)
    return (1.0 - z) * n + z * h


def _numpy_stack(params, xs, residual):
    """The docstring's equations as a float64 loop over steps and layers."""
    steps = (_numpy_rnn, _numpy_gru, _numpy_rnn)
    params = [{k: np.asarray(v, np.float64) for k, v in p.items()} for p in params]
    hs = [np.zeros((B, 4)), np.zeros((B, 3)), np.zeros((B, 3))]
    ys = []
    for t in range(xs.shape[1]):
        y = xs[:, t].astype(np.float64)
        for l, (step, p) in enumerate(zip(steps, params)):
            hs[l] = step(p, hs[l], y)
            y = hs[l] + y if residual and hs[l].shape == y.shape else hs[l]
        ys.append(y)
    return hs, np.stack(ys, axis=1)


@functools.partial(jax.jit, static_argnums=0)
def _run(cell, params, xs):
    return unroll(cell, params, cell.initial_carry(params, xs[:, 0].shape), xs)


@pytest.mark.parametrize("residual", [False, True])
def test_three_layer_stack_matches_a_numpy_loop(residual):
    cell = StackedCell(cells=LAYERS, residual=residual)
    params = cell.init(prng_key(0), (I,))
    # One parameter dict per layer, each with the shapes of its own input width.
    assert len(params) == 3
    assert [p["w_x"].shape for p in params] == [(4, 4), (4, 9), (3, 3)]
    assert [p["w_h"].shape for p in params] == [(4, 4), (3, 9), (3, 3)]
    assert cell.output_shape((I,)) == (3,)
    # Random values everywhere (biases too), so every term of every layer shows.
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda a: rng.standard_normal(a.shape).astype(np.float32) * 0.7,
                          params)
    xs = rng.standard_normal((B, T, I)).astype(np.float32)
    carry0 = cell.initial_carry(params, (B, I))
    assert [c.shape for c in carry0] == [(B, 4), (B, 3), (B, 3)]
    carry, ys = _run(cell, params, xs)
    want_hs, want_ys = _numpy_stack(params, xs, residual)
    np.testing.assert_allclose(ys, want_ys, rtol=1e-5, atol=1e-5)
    for got, want in zip(carry, want_hs):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    if residual:  # layer 0 and layer 2 add their input; layer 1's output is its own h
        assert not np.allclose(want_ys, _numpy_stack(params, xs, False)[1], atol=1e-2)


_PROJECTED = []  # shapes of the inputs that FirstLayer.project_inputs was given


@dataclasses.dataclass(frozen=True)
class FirstLayer(SimpleRNNCell):
    """A plain rnn that records every call of its input projection."""

    def project_inputs(self, params, x):
        _PROJECTED.append(tuple(x.shape))
        return super().project_inputs(params, x)


def test_only_the_first_layer_projection_is_hoisted_and_not_computed_again_per_step():
    """The docstring's "Only the first layer's input projection is hoisted out of the
    time loop": unroll projects the first layer's inputs once for all T steps, and the
    loop body uses that projection (px[1]) instead of projecting x_t again."""
    cell = StackedCell(cells=(FirstLayer(hidden_size=4), cells.get("rnn", hidden_size=4)))
    params = cell.init(prng_key(0), (I,))
    xs = np.random.default_rng(1).standard_normal((B, T, I)).astype(np.float32)
    carry = cell.initial_carry(params, (B, I))
    del _PROJECTED[:]
    _, ys = unroll(cell, params, carry, xs)
    assert _PROJECTED == [(T, B, I)]  # time-major, all steps at once, only once
    # ... and the result is the plain composition of the two layers' own steps.
    c0, c1, want = carry[0], carry[1], []
    for t in range(T):
        c0, y0 = cells.get("rnn", hidden_size=4).step(params[0], c0, xs[:, t])
        c1, y1 = cells.get("rnn", hidden_size=4).step(params[1], c1, y0)
        want.append(y1)
    np.testing.assert_allclose(ys, np.stack(want, axis=1), rtol=1e-5, atol=1e-6)


def test_conv_layers_shrinking_the_map_get_carries_of_their_own_input_shapes():
    """conv_lstm with "VALID" padding shrinks the map by 2 per layer: each layer's
    parameters and carry follow the shape of its own input, and the residual is
    skipped where the shapes differ (here everywhere)."""
    cell = cells.stack("conv_lstm", 2, residual=True, features=3, kernel_size=3,
                       padding="VALID")
    x_shape = (5, 6, 2)
    params = cell.init(prng_key(0), x_shape)
    assert [p["w_x"].shape for p in params] == [(3, 3, 2, 12), (3, 3, 3, 12)]
    carry = cell.initial_carry(params, (B, *x_shape))
    assert [(c.c.shape, c.h.shape) for c in carry] == [((B, 3, 4, 3),) * 2, ((B, 1, 2, 3),) * 2]
    assert cell.output_shape(x_shape) == (1, 2, 3)
    x = np.random.default_rng(2).standard_normal((B, *x_shape)).astype(np.float32)
    new, y = cell.step(params, carry, x)
    c0, y0 = cell.cells[0].step(params[0], carry[0], x)
    c1, y1 = cell.cells[1].step(params[1], carry[1], y0)
    np.testing.assert_array_equal(y, y1)
    np.testing.assert_array_equal(new[0].h, c0.h)
    np.testing.assert_array_equal(new[1].c, c1.c)


def test_stacked_cell_needs_a_non_empty_tuple_of_cells():
    with pytest.raises(ValueError, match=r"^cells=\(\) must be a non-empty tuple of Cells$"):
        StackedCell(cells=())
    with pytest.raises(ValueError, match=r"^cells=\(SimpleRNNCell\(.*\), 'gru'\) must be a "
                                         r"non-empty tuple of Cells$"):
        StackedCell(cells=(cells.get("rnn", hidden_size=2), "gru"))


@pytest.mark.parametrize("batch", [(), (B,), (2, 3)], ids=["unbatched", "one", "two"])
def test_initial_carry_and_step_with_any_number_of_batch_dims(batch):
    """The Cell contract allows any leading batch dims: the stack's carry is each
    layer's own initial carry for its input shape (x, then the previous layer's
    output) with the same batch dims, and a step equals the layers' steps in turn."""
    cell = StackedCell(cells=LAYERS)
    params = cell.init(prng_key(0), (I,))
    carry = cell.initial_carry(params, (*batch, I))
    widths = [I, 4, 3]
    for layer, p, c, width in zip(LAYERS, params, carry, widths):
        want = layer.initial_carry(p, (*batch, width))
        assert jax.tree.map(jnp.shape, c) == jax.tree.map(jnp.shape, want)
    x = np.random.default_rng(5).standard_normal((*batch, I)).astype(np.float32)
    _, y = cell.step(params, carry, x)
    want = x
    for layer, p, c in zip(LAYERS, params, carry):
        _, want = layer.step(p, c, want)
    np.testing.assert_allclose(np.asarray(y), np.asarray(want), rtol=1e-6, atol=1e-7)
    assert y.shape == (*batch, 3)


def test_initial_carry_under_jit_with_conv_layers_and_two_batch_dims():
    cell = cells.stack("conv_lstm", 2, features=3, kernel_size=3, padding="VALID")
    params = cell.init(prng_key(0), (5, 6, 2))
    carry = jax.jit(lambda p: cell.initial_carry(p, (2, B, 5, 6, 2)))(params)
    assert [c.h.shape for c in carry] == [(2, B, 3, 4, 3), (2, B, 1, 2, 3)]
