"""Tests of streaming TBPTT(k1, k2): `rnnvision.recurrence.stream_init` / `stream_unroll`.

TBPTT(k1, k2) (Williams & Peng 1990) over a long sequence: every k1 new steps,
one update whose loss is on those k1 outputs and whose gradient flows back
through at most the last k2 steps, starting from a stop-gradient carry.

The references are explicit Python loops over `cell.step` with `stop_gradient`
placed by hand. As in test_recurrence.py, each test compiles one program and the
module compiles with `jax_disable_most_optimizations` (faster XLA builds).
"""

from __future__ import annotations

import contextlib
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from rnnvision import cells
from rnnvision.recurrence import StreamState, stream_init, stream_unroll, unroll

B, I, H = 3, 3, 5  # as in test_recurrence.py: the eager references share compiled ops


@contextlib.contextmanager
def xla_optimizations(enabled: bool):
    before = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", not enabled)
    try:
        yield
    finally:
        jax.config.update("jax_disable_most_optimizations", before)


@pytest.fixture(autouse=True, scope="module")
def _fast_compiles():
    with xla_optimizations(False):
        yield


def setup(name="lstm", steps=12, seed=0):
    """(cell, params, non-zero initial carry, xs (B, steps, I)); NumPy random numbers."""
    cell = cells.get(name, hidden_size=H)
    params = cell.init(jax.random.key(seed), (I,))
    rng = np.random.default_rng(seed + 10)
    carry = jax.tree.map(lambda a: jnp.asarray(0.5 * rng.standard_normal(a.shape), jnp.float32),
                         cell.initial_carry(params, (B, I)))
    xs = jnp.asarray(rng.standard_normal((B, steps, I)), jnp.float32)
    return cell, params, carry, xs


def loop(cell, params, carry, xs):
    """Python loop over cell.step: (final carry, ys (B, T, H))."""
    ys = []
    for t in range(xs.shape[1]):
        carry, y = cell.step(params, carry, xs[:, t])
        ys.append(y)
    return carry, (jnp.stack(ys, axis=1) if ys else None)


def window_loss(ys_new):
    w = jnp.cos(jnp.arange(ys_new.size, dtype=ys_new.dtype).reshape(ys_new.shape)) + 0.5
    return jnp.sum(w * ys_new)


def assert_tree_close(a, b, rtol=1e-6, atol=1e-6, err_msg=""):
    jax.tree.map(lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y),
                                                         rtol=rtol, atol=atol,
                                                         err_msg=err_msg), a, b)


def tree_max_abs_diff(a, b):
    return max(float(jnp.max(jnp.abs(x - y))) for x, y in
               zip(jax.tree.leaves(a), jax.tree.leaves(b)))


# Module-level jitted functions (the cell static): tests with equal shapes share a compile.
_update = jax.jit(stream_unroll, static_argnums=0)


def run_stream(cell, params, carry, xs, k1, k2):
    """All N/k1 updates through one jitted update fn; returns (ys_new per call, states)."""
    state = stream_init(cell, params, carry, xs[:, 0].shape, k1, k2)
    outs, states = [], [state]
    for j in range(xs.shape[1] // k1):
        ys_new, state = _update(cell, params, state, xs[:, j * k1:(j + 1) * k1])
        outs.append(ys_new)
        states.append(state)
    return outs, states


# -- k1 == k2 == T is plain BPTT -----------------------------------------------

def test_single_window_equals_unroll_values_and_grads():
    steps = 5
    cell, params, carry, xs = setup(steps=steps)

    @jax.jit
    def both(p, x, c):
        def stream_loss(p, x):
            state = stream_init(cell, p, c, x[:, 0].shape, steps, steps)
            ys, next_state = stream_unroll(cell, p, state, x)
            return window_loss(ys), (ys, next_state)

        def unroll_loss(p, x):
            final, ys = unroll(cell, p, c, x)
            return window_loss(ys), (ys, final)

        grad = lambda f: jax.value_and_grad(f, argnums=(0, 1), has_aux=True)(p, x)
        return grad(stream_loss), grad(unroll_loss)

    ((l_s, (ys_s, state)), g_s), ((l_u, (ys_u, final)), g_u) = both(params, xs, carry)
    assert ys_s.shape == (B, steps, H)
    assert_tree_close(ys_s, ys_u)
    assert_tree_close(l_s, l_u)
    assert_tree_close(g_s, g_u)                 # w.r.t. params and inputs
    assert_tree_close(state.carry, final)       # the next window starts from the end
    assert state.history.shape == (B, 0, I) and state.valid.shape == (B, 0)
    # and the values are the plain loop's
    assert_tree_close(ys_u, loop(cell, params, carry, xs)[1], rtol=1e-5)


# -- the forward pass over a long sequence is that of one unroll -------------------

@pytest.mark.parametrize("k1,k2", [(3, 3), (3, 5), (2, 7)])
def test_concatenated_outputs_equal_full_unroll(k1, k2):
    n = 12 // k1
    cell, params, carry, xs = setup(steps=n * k1)
    outs, states = run_stream(cell, params, carry, xs, k1, k2)
    assert all(o.shape == (B, k1, H) for o in outs)
    full_carry, full_ys = jax.jit(lambda p, c, x: unroll(cell, p, c, x))(params, carry, xs)
    # Same per-step arithmetic on the same values: the outputs match to the last bit
    # up to XLA's choice of fusion for differently sized projections.
    np.testing.assert_allclose(np.asarray(jnp.concatenate(outs, axis=1)),
                               np.asarray(full_ys), rtol=1e-6, atol=1e-7)
    # The final state: the carry k2 - k1 steps before the end, the last k2 - k1 inputs.
    back = k2 - k1
    final = states[-1]
    carry_before, _ = loop(cell, params, carry, xs[:, :n * k1 - back])
    assert_tree_close(final.carry, carry_before, rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(final.history), np.asarray(xs[:, n * k1 - back:]))
    assert bool(jnp.all(final.valid))
    if back == 0:
        assert_tree_close(final.carry, full_carry)


def test_stream_start_history_is_not_valid_yet():
    k1, k2 = 2, 7                        # the first updates see fewer than k2 - k1 old steps
    cell, params, carry, xs = setup(steps=6)
    _, states = run_stream(cell, params, carry, xs, k1, k2)
    valid = [np.asarray(s.valid[0]) for s in states]
    np.testing.assert_array_equal(valid[0], [False] * 5)
    np.testing.assert_array_equal(valid[1], [False] * 3 + [True] * 2)
    np.testing.assert_array_equal(valid[2], [False] + [True] * 4)
    np.testing.assert_array_equal(valid[3], [True] * 5)
    # an unfilled history does not move the carry: it is still the initial carry
    assert_tree_close(states[2].carry, carry, rtol=0, atol=0)


# -- the gradient of one window ---------------------------------------------------

@functools.partial(jax.jit, static_argnums=0)
def _window_grad(cell, params, carry_and_history, valid, x_new):
    """value_and_grad of window_loss of one update w.r.t. params, (carry, history), x_new."""
    def loss(p, carry_and_history, x_new):     # (the state's bool `valid` has no gradient)
        state = StreamState(carry_and_history[0], carry_and_history[1], valid)
        return window_loss(stream_unroll(cell, p, state, x_new)[0])
    return jax.value_and_grad(loss, (0, 1, 2))(params, carry_and_history, x_new)


@pytest.mark.parametrize("call", [1, 3])
def test_window_gradient_equals_stop_gradient_reference(call):
    """Update `call` (0-based) of TBPTT(2, 5) over 8 steps: its new steps are
    [2*call, 2*call + 2); the gradient flows through steps [end - 5, end) only."""
    k1, k2 = 2, 5
    cell, params, carry, xs = setup(steps=8)
    _, states = run_stream(cell, params, carry, xs, k1, k2)
    end = (call + 1) * k1
    start = max(end - k2, 0)


    def reference_loss(p, x, truncate=True):
        """Explicit TBPTT on x = xs[:, :end]: the carry at the window start is a
        constant, then k2 steps (fewer at the stream start) with gradient."""
        c, _ = loop(cell, p, carry, x[:, :start])
        if truncate:
            c = lax.stop_gradient(c)
        _, ys = loop(cell, p, c, x[:, start:end])
        return window_loss(ys[:, -k1:])

    value, (g_p, (g_carry, g_history), g_new) = _window_grad(
        cell, params, (states[call].carry, states[call].history), states[call].valid,
        xs[:, end - k1:end])
    want, (w_p, w_x) = jax.value_and_grad(reference_loss, (0, 1))(params, xs[:, :end])
    np.testing.assert_allclose(float(value), float(want), rtol=1e-5)
    assert_tree_close(g_p, w_p, rtol=1e-5, atol=1e-6)
    assert_tree_close(g_new, w_x[:, end - k1:], rtol=1e-5, atol=1e-6)
    # the replayed history gets the gradient of its steps; unfilled slots get none
    hist_steps = np.arange(end - k2, end - k1)
    filled = hist_steps >= 0
    assert_tree_close(g_history[:, filled], w_x[:, hist_steps[filled]], rtol=1e-5,
                      atol=1e-6)
    assert float(jnp.max(jnp.abs(g_history[:, ~filled]), initial=0.0)) == 0.0
    # nothing reaches the stored carry, nor (reference) the steps before the window
    assert all(float(jnp.max(jnp.abs(g))) == 0.0 for g in jax.tree.leaves(g_carry))
    assert float(jnp.max(jnp.abs(w_x[:, :start]), initial=0.0)) == 0.0
    if end > k2:  # the truncation really cut something off
        full_p, full_x = jax.grad(reference_loss, (0, 1))(params, xs[:, :end], truncate=False)
        assert tree_max_abs_diff(g_p, full_p) > 1e-4
        assert float(jnp.max(jnp.abs(full_x[:, :start]))) > 1e-4


# -- errors ---------------------------------------------------------------------

@pytest.mark.parametrize("k1,k2", [(4, 3), (0, 3), (-1, 3), (2.5, 3), (2, 3.0), (2, "3"),
                                   (None, 3)])
def test_bad_k1_k2_raise(k1, k2):
    cell, params, carry, xs = setup(steps=4)
    with pytest.raises(ValueError, match=r"k1.*k2|k2.*k1"):
        stream_init(cell, params, carry, xs[:, 0].shape, k1, k2)


# -- jit with the state as a pytree -------------------------------------------------

def test_update_under_jit_with_state_in_and_out():
    k1, k2 = 2, 3
    cell, params, carry, xs = setup(steps=8)
    traces = []

    @jax.jit
    def train_step(p, state, x_new):
        traces.append(1)          # runs once per trace, not per call
        def loss(p):
            ys, next_state = stream_unroll(cell, p, state, x_new)
            return window_loss(ys), next_state
        (value, next_state), grads = jax.value_and_grad(loss, has_aux=True)(p)
        return value, grads, next_state

    outs, states = run_stream(cell, params, carry, xs, k1, k2)   # forward-only program
    state = stream_init(cell, params, carry, xs[:, 0].shape, k1, k2)
    assert isinstance(state, StreamState)
    for j in range(4):
        value, grads, state = train_step(params, state, xs[:, j * k1:(j + 1) * k1])
        assert isinstance(state, StreamState)
        np.testing.assert_allclose(float(value), float(window_loss(outs[j])), rtol=1e-5)
        assert_tree_close(state, states[j + 1], rtol=1e-5)
        assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
        assert max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(grads)) > 1e-3
    assert len(traces) == 1, "the state's structure or dtypes changed between calls"
    assert jax.tree.structure(state) == jax.tree.structure(
        stream_init(cell, params, carry, xs[:, 0].shape, k1, k2))
