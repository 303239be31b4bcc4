"""Tests of the loop plumbing of `rnnvision.recurrence`: `resolve_impl`, `TimeLoop`
(`run`, `scan`, `replace`, `check_cell`), `scan`'s options, the remat chunking and
the streaming state's types.

References are closed forms, explicit Python loops over `cell.step`, the exact
error messages, and the structure of the traced program (`jax.make_jaxpr`: the
lengths of the chunked scans, the unroll factor, the checkpoint) where an option
changes only how the loop runs, not its numbers. Most tests only trace; the few
that run compile small programs.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from rnnvision import cells
from rnnvision.recurrence import (TimeLoop, resolve_impl, scan, stream_init, stream_unroll,
                                  unroll)

B, I, H = 2, 3, 4


def _rnn(name="rnn", hidden=H, compute_dtype="float32"):
    cell = cells.get(name, hidden_size=hidden, compute_dtype=compute_dtype)
    params = cell.init(jax.random.key(0), (I,))
    return cell, params


def _data(cell, params, steps, seed=0):
    rng = np.random.default_rng(seed)
    carry = cell.initial_carry(params, (B, I))
    carry = jax.tree.map(lambda a: jnp.asarray(0.5 * rng.standard_normal(a.shape), a.dtype), carry)
    xs = jnp.asarray(rng.standard_normal((B, steps, I)), jnp.float32)
    return carry, xs


def _eqns(jaxpr, name):
    """All equations named `name` in a closed jaxpr, nested ones included."""
    out = []

    def visit(jp):
        for e in jp.eqns:
            if e.primitive.name == name:
                out.append(e)
            for sub in jax.core.jaxprs_in_params(e.params) if hasattr(jax.core, "jaxprs_in_params") \
                    else _sub_jaxprs(e.params):
                visit(sub)

    visit(jaxpr.jaxpr)
    return out


def _sub_jaxprs(params):
    for v in params.values():
        for x in (v if isinstance(v, (tuple, list)) else (v,)):
            if hasattr(x, "jaxpr") and hasattr(x.jaxpr, "eqns"):
                yield x.jaxpr
            elif hasattr(x, "eqns"):
                yield x


def _scalar_step(carry, x):
    """c <- 0.5 c + x; y = c (a linear scalar RNN, batch (B,))."""
    c = 0.5 * carry + x
    return c, c


# -- truncation ------------------------------------------------------------------

def test_truncation_one_cuts_before_every_step_after_the_first():
    """k = 1: the gradient of sum_t y_t w.r.t. the initial carry is only through y_0:
    d/dc0 = 0.5 (the cut before step 1 stops the rest; a cut only from step 2 on would
    add 0.5**2)."""
    xs = jnp.ones((1, 3))
    g = jax.grad(lambda c: jnp.sum(scan(_scalar_step, c, xs, truncation=1)[1]))(jnp.ones((1,)))
    np.testing.assert_allclose(np.asarray(g), [0.5], rtol=0, atol=0)
    # reversed: the processing index counts from the last step, so again only the first
    # processed step (t = T-1) sees c0
    g = jax.grad(lambda c: jnp.sum(scan(_scalar_step, c, xs, truncation=1, reverse=True)[1]))(
        jnp.ones((1,)))
    np.testing.assert_allclose(np.asarray(g), [0.5], rtol=0, atol=0)


# -- scan's options ----------------------------------------------------------------

def test_scan_of_a_single_array_matches_closed_form():
    """xs may be one (B, T, F) array (one leaf): y_t = sum_{s<=t} 0.5**(t-s) x_s + 0.5**(t+1) c0."""
    xs = jnp.asarray(np.arange(2 * 5 * 2, dtype=np.float32).reshape(2, 5, 2))
    c0 = jnp.ones((2, 2))
    final, ys = scan(_scalar_step, c0, xs)
    x = np.asarray(xs, np.float64)
    want = np.zeros_like(x)
    c = np.ones((2, 2))
    for t in range(5):
        c = 0.5 * c + x[:, t]
        want[:, t] = c
    assert ys.shape == (2, 5, 2)
    np.testing.assert_allclose(np.asarray(ys), want, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(final), want[:, -1], rtol=1e-6)


def test_scan_bad_inputs_message_names_the_shapes():
    xs = {"a": jnp.ones((3, 7, 2)), "b": jnp.ones((3, 8))}
    msg = ("xs must be a pytree of batch-major (B, T, ...) arrays with one (B, T); "
           "got shapes [(3, 7, 2), (3, 8)]")
    with pytest.raises(ValueError, match=f"^{re.escape(msg)}$"):
        scan(_scalar_step, jnp.ones((3,)), xs)


@pytest.mark.parametrize("field,value", [("truncation", 0), ("unroll", 0)])
def test_scan_refuses_bad_options_naming_them(field, value):
    with pytest.raises(ValueError, match=f"^{field}={value}"):
        scan(_scalar_step, jnp.ones((1,)), jnp.ones((1, 3)), **{field: value})


def _loop_structure(fn, *args):
    """(scan lengths, scan unroll factors, number of checkpoints) of the traced fn."""
    jaxpr = jax.make_jaxpr(fn)(*args)
    scans = _eqns(jaxpr, "scan")
    return ([e.params["length"] for e in scans], [e.params["unroll"] for e in scans],
            sum(len(_eqns(jaxpr, n)) for n in ("checkpoint", "remat", "remat2")))


def test_scan_unroll_and_remat_reach_the_program():
    c0, xs = jnp.ones((1,)), jnp.ones((1, 6))
    lengths, unrolls, ckpts = _loop_structure(lambda c: scan(_scalar_step, c, xs), c0)
    assert (lengths, unrolls, ckpts) == ([6], [1], 0)  # defaults: no remat, unroll 1
    lengths, unrolls, ckpts = _loop_structure(lambda c: scan(_scalar_step, c, xs, unroll=2), c0)
    assert (lengths, unrolls, ckpts) == ([6], [2], 0)
    lengths, unrolls, ckpts = _loop_structure(lambda c: scan(_scalar_step, c, xs, remat=2), c0)
    assert lengths == [3, 2] and ckpts == 1  # 3 chunks of 2 steps


# -- remat chunking ----------------------------------------------------------------

@pytest.mark.parametrize("steps,remat,chunk", [
    (3, True, 3), (4, True, 2), (5, True, 3), (9, True, 3), (10, True, 4), (26, True, 6),
    (3, 2, 2), (2, 1, 1), (9, 2, 2), (7, 3, 3)])
def test_remat_chunk_lengths(steps, remat, chunk):
    """remat=True: chunks of ceil(sqrt(T)) steps (one chunk of T when T < 4); remat=k:
    chunks of k steps; ceil(T / chunk) chunks."""
    c0, xs = jnp.ones((1,)), jnp.ones((1, steps))
    lengths, _, ckpts = _loop_structure(lambda c: scan(_scalar_step, c, xs, remat=remat), c0)
    assert lengths == [-(-steps // chunk), chunk] and ckpts == 1  # outer scan, then inner


def test_remat_padding_steps_leave_the_carry_and_outputs_unchanged():
    """T = 7 in chunks of 3: two padding steps, which must not move the carry."""
    xs = jnp.asarray(np.arange(7, dtype=np.float32).reshape(1, 7))
    final, ys = scan(_scalar_step, jnp.ones((1,)), xs, remat=3)
    c, want = 1.0, []
    for t in range(7):
        c = 0.5 * c + t
        want.append(c)
    np.testing.assert_allclose(np.asarray(ys)[0], want, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(final), [want[-1]], rtol=1e-6)
    # reversed, chunked: the chunks too are processed from the end
    final, ys = scan(_scalar_step, jnp.ones((1,)), xs, remat=3, reverse=True)
    c, want = 1.0, [0.0] * 7
    for t in range(6, -1, -1):
        c = 0.5 * c + t
        want[t] = c
    np.testing.assert_allclose(np.asarray(ys)[0], want, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(final), [c], rtol=1e-6)


# -- TimeLoop ------------------------------------------------------------------------

def test_time_loop_scan_passes_every_option():
    loop = TimeLoop(truncation=1, remat=2, unroll=2)
    xs = jnp.ones((1, 5))
    c0 = jnp.ones((1,))
    lengths, unrolls, ckpts = _loop_structure(lambda c: loop.scan(_scalar_step, c, xs), c0)
    assert sorted(lengths) == [2, 3] and 2 in unrolls and ckpts == 1
    # truncation=1 and first_step: with first_step=0 only y_0 depends on c0 (d/dc0 = 0.5);
    # with first_step=1 the cut comes before the first step (d/dc0 = 0)
    g0 = jax.grad(lambda c: jnp.sum(loop.scan(_scalar_step, c, xs)[1]))(c0)
    g1 = jax.grad(lambda c: jnp.sum(loop.scan(_scalar_step, c, xs, first_step=1)[1]))(c0)
    np.testing.assert_array_equal(np.asarray(g0), [0.5])
    np.testing.assert_array_equal(np.asarray(g1), [0.0])
    # reverse: default False (time order), True processes from the end
    x = jnp.asarray([[1.0, 2.0, 4.0]])
    _, ys = TimeLoop().scan(_scalar_step, jnp.zeros((1,)), x)
    _, ys_rev = TimeLoop().scan(_scalar_step, jnp.zeros((1,)), x, reverse=True)
    np.testing.assert_array_equal(np.asarray(ys), [[1.0, 2.5, 5.25]])
    np.testing.assert_array_equal(np.asarray(ys_rev), [[3.0, 4.0, 4.0]])


def test_time_loop_scan_fused_message_says_why():
    with pytest.raises(ValueError, match=re.escape(
            "impl='fused' cannot run here (this loop's step function is not a cell); "
            "use impl='auto' or 'scan'")):
        TimeLoop(impl="fused").scan(_scalar_step, jnp.ones((1,)), jnp.ones((1, 2)))


def test_time_loop_replace():
    loop = TimeLoop(truncation=2, impl="scan")
    assert loop.replace(remat=3) == TimeLoop(truncation=2, remat=3, impl="scan")
    assert loop == TimeLoop(truncation=2, impl="scan")  # unchanged (frozen)


def _step_loop(cell, params, carry, xs, resets=None, reverse=False):
    """Python loop over cell.step: resets True at t restart the carry before step t
    (reversed: before the step preceding an episode start)."""
    steps = xs.shape[1]
    init = cell.initial_carry(params, xs[:, 0].shape)
    order = range(steps - 1, -1, -1) if reverse else range(steps)
    ys = [None] * steps
    for t in order:
        if resets is not None:
            r = resets[:, t + 1] if reverse and t + 1 < steps else (
                resets[:, t] if not reverse else jnp.zeros_like(resets[:, 0]))
            carry = jax.tree.map(lambda i, c: jnp.where(r.reshape((-1,) + (1,) * (c.ndim - 1)),
                                                        i, c), init, carry)
        carry, ys[t] = cell.step(params, carry, xs[:, t])
    return carry, jnp.stack(ys, axis=1)


def test_time_loop_run_passes_resets_and_reverse():
    cell, params = _rnn()
    carry, xs = _data(cell, params, steps=4)
    resets = jnp.asarray([[False, False, True, False], [False, True, False, False]])
    loop = TimeLoop(impl="scan")
    c_rev, y_rev = loop.run(cell, params, carry, xs, resets=resets, reverse=True)
    c_ref, y_ref = _step_loop(cell, params, carry, xs, resets=resets, reverse=True)
    np.testing.assert_allclose(np.asarray(y_rev), np.asarray(y_ref), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(c_rev), np.asarray(c_ref), rtol=1e-6, atol=1e-6)
    _, y_fw = loop.run(cell, params, carry, xs, resets=resets)
    _, y_fw_ref = _step_loop(cell, params, carry, xs, resets=resets)
    np.testing.assert_allclose(np.asarray(y_fw), np.asarray(y_fw_ref), rtol=1e-6, atol=1e-6)


# -- resolve_impl and check_cell -------------------------------------------------------

def test_resolve_impl_says_which_loop_runs():
    cell, params = _rnn("lstm")
    carry, xs = _data(cell, params, steps=3)
    assert resolve_impl(cell, params, carry, xs) == "fused"
    assert resolve_impl(cell, params, carry, xs, impl="auto", truncation=2, reverse=True) == "fused"
    assert resolve_impl(cell, params, carry, xs, impl="fused") == "fused"
    assert resolve_impl(cell, params, carry, xs, impl="scan") == "scan"
    sub = type("MyLSTM", (cells.LSTMCell,), {})(hidden_size=H)
    assert resolve_impl(sub, params, carry, xs) == "scan"
    assert resolve_impl(sub, params, carry, xs, impl="scan") == "scan"
    with pytest.raises(ValueError, match=r"^impl='fused' does not apply to MyLSTM: fast paths "
                                         r".*; use impl='auto' or 'scan'$"):
        resolve_impl(sub, params, carry, xs, impl="fused")
    with pytest.raises(ValueError, match="^truncation=0 must be"):
        resolve_impl(cell, params, carry, xs, truncation=0)
    with pytest.raises(ValueError, match=re.escape("impl='turbo'; allowed: ('auto', 'fused', 'scan')")):
        resolve_impl(cell, params, carry, xs, impl="turbo")


def test_resolve_impl_under_every_dtype_and_shape_rule():
    """The data-dependent rules (float64 carry, two batch dims) reach resolve_impl."""
    cell, params = _rnn("gru")
    carry, xs = _data(cell, params, steps=5)
    assert resolve_impl(cell, params, carry, xs, reverse=True) == "fused"
    bf16 = lambda t: jax.tree.map(lambda a: a.astype(jnp.bfloat16), t)  # noqa: E731
    assert resolve_impl(cell, bf16(params), carry, xs) == "scan"  # params must be float32
    assert resolve_impl(cell, params, bf16(carry), xs) == "scan"  # and the carry
    assert resolve_impl(cell, params, carry, bf16(xs)) == "scan"  # and the inputs
    xs2 = jnp.ones((B, 5, 2, I))  # two batch dims: no fast path
    carry2 = jax.tree.map(lambda a: jnp.broadcast_to(a[:, None], (B, 2) + a.shape[1:]), carry)
    assert resolve_impl(cell, params, carry2, xs2) == "scan"


def test_resolve_impl_of_conv_lstm():
    """The ConvLSTM fast path is built from the carry's and the inputs' spatial shapes."""
    cell = cells.get("conv_lstm", features=2, kernel_size=3)
    zeros = lambda t: jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), t)  # noqa: E731
    params = zeros(jax.eval_shape(lambda: cell.init(jax.random.key(0), (4, 4, 1))))
    carry = zeros(jax.eval_shape(lambda p: cell.initial_carry(p, (B, 4, 4, 1)), params))
    xs = jnp.zeros((B, 3, 4, 4, 1), jnp.float32)
    assert resolve_impl(cell, params, carry, xs) == "fused"
    assert resolve_impl(cell, params, carry, xs, impl="scan") == "scan"


def test_check_cell_names_the_cell_and_the_reason():
    row = cells.get("row_lstm", features=2)
    lstm = cells.get("lstm", hidden_size=H)
    why = ("fast paths exist for exactly the classes")
    msg = re.escape(f"impl='fused' does not apply to RowLSTMCell: {why}") + r".*; use impl='auto' or 'scan'$"
    with pytest.raises(ValueError, match=f"^{msg}"):
        TimeLoop(impl="fused").check_cell(row)
    TimeLoop(impl="fused").check_cell(lstm)  # no error
    TimeLoop(impl="auto").check_cell(row)   # no error: auto falls back
    TimeLoop(impl="scan").check_cell(row)
    TimeLoop(impl="scan").check_cell(lstm)


# -- streaming state types -----------------------------------------------------------

def test_stream_init_shapes_and_dtypes():
    cell, params = _rnn()
    carry = cell.initial_carry(params, (B, I))
    st = stream_init(cell, params, carry, (B, I + 2), k1=1, k2=3, dtype=jnp.bfloat16)
    assert st.history.shape == (B, 2, I + 2) and st.history.dtype == jnp.bfloat16
    assert st.valid.shape == (B, 2) and st.valid.dtype == jnp.bool_
    st = stream_init(cell, params, carry, (B, I), k1=1, k2=1)
    assert st.history.shape == (B, 0, I) and st.history.dtype == jnp.float32
    with pytest.raises(ValueError, match=re.escape("TBPTT needs integers 1 <= k1 <= k2; got k1=0, k2=2")):
        stream_init(cell, params, carry, (B, I), k1=0, k2=2)


def test_stream_history_keeps_the_inputs_dtype():
    cell, params = _rnn()
    carry = cell.initial_carry(params, (B, I))
    st = stream_init(cell, params, carry, (B, I), k1=1, k2=2, dtype=jnp.bfloat16)
    _, st2 = stream_unroll(cell, params, st, jnp.ones((B, 1, I), jnp.bfloat16), impl="scan")
    assert st2.history.dtype == jnp.bfloat16 and st2.valid.dtype == jnp.bool_


def test_stream_unroll_passes_options_to_both_windows():
    """reverse=True reaches both unroll calls: TBPTT(2, 4), two updates, against a loop."""
    cell, params = _rnn()
    carry, xs = _data(cell, params, steps=4)
    x1, x2 = xs[:, :2], xs[:, 2:]
    st = stream_init(cell, params, carry, (B, I), k1=2, k2=4)
    ys1, st = stream_unroll(cell, params, st, x1, reverse=True, impl="scan")
    ys2, _ = stream_unroll(cell, params, st, x2, reverse=True, impl="scan")
    step = lambda c, x: cell.step(params, c, x)  # noqa: E731
    # update 1: history invalid (carry frozen); new steps reversed from carry
    c, y11 = step(carry, x1[:, 1])
    _, y10 = step(c, x1[:, 0])
    # update 2: history [x1_0, x1_1] reversed from the stored carry (= carry), then new reversed
    c, _ = step(carry, x1[:, 1])
    mid, _ = step(c, x1[:, 0])
    c, y21 = step(mid, x2[:, 1])
    _, y20 = step(c, x2[:, 0])
    np.testing.assert_allclose(np.asarray(ys1), np.stack([y10, y11], 1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(ys2), np.stack([y20, y21], 1), rtol=1e-5, atol=1e-6)


# -- unroll: options reach the loop, exact error messages --------------------------------

@pytest.mark.parametrize("impl", ["fused", "scan"])
def test_unroll_factor_reaches_the_loop(impl):
    cell, params = _rnn("lstm")
    carry, xs = _data(cell, params, steps=6)
    _, unrolls, _ = _loop_structure(
        lambda p: unroll(cell, p, carry, xs, impl=impl, unroll=3), params)
    assert 3 in unrolls
    if impl == "scan":
        assert _loop_structure(lambda p: unroll(cell, p, carry, xs, impl=impl), params)[1] == [1]


def test_loop_options_accept_their_smallest_values():
    for loop in (TimeLoop(truncation=1, remat=1, unroll=1), TimeLoop(remat=True),
                 TimeLoop(remat=False, impl="scan"), TimeLoop(impl="fused")):
        assert TimeLoop(**loop.options()) == loop


@pytest.mark.parametrize("field,value,msg", [
    ("truncation", 0, "truncation=0 must be None (full BPTT) or an integer >= 1"),
    ("truncation", True, "truncation=True must be None (full BPTT) or an integer >= 1"),
    ("truncation", "3", "truncation='3' must be None (full BPTT) or an integer >= 1"),
    ("remat", 0, "remat=0 must be a bool or a chunk length >= 1"),
    ("remat", 2.5, "remat=2.5 must be a bool or a chunk length >= 1"),
    ("unroll", 0, "unroll=0 must be None (automatic) or an integer >= 1"),
    ("unroll", True, "unroll=True must be None (automatic) or an integer >= 1"),
    ("unroll", 2.0, "unroll=2.0 must be None (automatic) or an integer >= 1"),
    ("impl", "fast", "impl='fast'; allowed: ('auto', 'fused', 'scan')")])
def test_loop_option_errors_are_exact(field, value, msg):
    with pytest.raises(ValueError, match=f"^{re.escape(msg)}$"):
        TimeLoop(**{field: value})


def test_unroll_argument_errors_are_exact():
    cell, params = _rnn()
    carry, xs = _data(cell, params, steps=5)
    run = lambda carry=carry, **k: unroll(cell, params, carry, **k)  # noqa: E731  (raises before tracing)
    cases = [
        (dict(xs=xs[:, 0, 0]), "xs must be batch-major (B, T, *features); got shape (2,)"),
        (dict(xs=jnp.swapaxes(xs, 0, 1)),
         "xs must be batch-major (B, T, *features) with B = the carry's batch dim 2; "
         "got xs shape (5, 2, 3)"),
        (dict(xs=xs, carry=jnp.zeros((5,))),  # a (B,) carry leaf is checked too
         "xs must be batch-major (B, T, *features) with B = the carry's batch dim 5; "
         "got xs shape (2, 5, 3)"),
        (dict(xs=xs, mask=jnp.ones((2, 4), bool)), "mask must have shape (B, T)=(2, 5); got (2, 4)"),
        (dict(xs=xs, resets=jnp.ones((5, 2), bool)),
         "resets must have shape (B, T)=(2, 5); got (5, 2)"),
    ]
    for kwargs, msg in cases:
        with pytest.raises(ValueError, match=f"^{re.escape(msg)}$"):
            run(**kwargs)
    for kwargs, msg in [(dict(truncation=0), "truncation=0 must be None (full BPTT) or an integer >= 1"),
                        (dict(unroll=0), "unroll=0 must be None (automatic) or an integer >= 1"),
                        (dict(impl="turbo"), "impl='turbo'; allowed: ('auto', 'fused', 'scan')")]:
        with pytest.raises(ValueError, match=f"^{re.escape(msg)}$"):
            run(xs=xs, **kwargs)
    jax.eval_shape(lambda: run(xs=xs, mask=jnp.ones((2, 5), bool),
                               resets=jnp.zeros((2, 5), bool)))  # no error


def test_unroll_truncation_one_keeps_only_the_first_steps_gradient_to_the_carry():
    """truncation=1: only y_0 (the first processed step, index 0) sees the initial carry."""
    cell, params = _rnn()
    carry, xs = _data(cell, params, steps=3)
    g = jax.grad(lambda c: jnp.sum(unroll(cell, params, c, xs, truncation=1, impl="scan")[1]))(carry)
    g_ref = jax.grad(lambda c: jnp.sum(cell.step(params, c, xs[:, 0])[1]))(carry)
    np.testing.assert_allclose(np.asarray(g), np.asarray(g_ref), rtol=1e-6, atol=1e-7)
    assert float(jnp.max(jnp.abs(g_ref))) > 0.1
    # reversed: the first processed step is the last one
    g = jax.grad(lambda c: jnp.sum(unroll(cell, params, c, xs, truncation=1, reverse=True,
                                          impl="scan")[1]))(carry)
    g_ref = jax.grad(lambda c: jnp.sum(cell.step(params, c, xs[:, -1])[1]))(carry)
    np.testing.assert_allclose(np.asarray(g), np.asarray(g_ref), rtol=1e-6, atol=1e-7)


class _LearnedStartRNN(cells.Cell):
    """h_t = tanh(x_t + 0.5 h_{t-1}); the initial state is a parameter, h0 (H,)."""

    hidden_size = H

    def init(self, key, input_shape):
        return {"h0": jnp.linspace(-0.9, 0.7, H, dtype=jnp.float32)}

    def initial_carry(self, params, x_shape):
        return jnp.broadcast_to(params["h0"], (*x_shape[:-1], H))

    def step(self, params, h, x):
        h = jnp.tanh(jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, H - x.shape[-1])]) + 0.5 * h)
        return h, h


@pytest.mark.parametrize("reverse", [False, True])
def test_resets_restore_the_cells_initial_carry_from_its_params(reverse):
    """A reset starts the episode from `cell.initial_carry(params, ...)`, which may be
    learned: here a parameter h0. Explicit loop in processing order as the reference."""
    cell = _LearnedStartRNN()
    params = cell.init(None, (I,))
    rng = np.random.default_rng(3)
    xs = jnp.asarray(rng.standard_normal((B, 5, I)), jnp.float32)
    resets = np.zeros((B, 5), bool)
    resets[0, 2] = resets[1, 3] = True
    carry = jnp.zeros((B, H), jnp.float32)  # differs from h0, so a reset is visible
    _, ys = unroll(cell, params, carry, xs, resets=jnp.asarray(resets), reverse=reverse,
                   impl="scan")
    h0 = np.asarray(params["h0"])
    for b in range(B):
        h = np.zeros(H, np.float32)
        order = range(4, -1, -1) if reverse else range(5)
        for t in order:
            # forward: reset before step t; reversed: the episode starting at t+1 ends there
            if (not reverse and resets[b, t]) or (reverse and t + 1 < 5 and resets[b, t + 1]):
                h = h0
            x = np.pad(np.asarray(xs[b, t]), (0, H - I))
            h = np.tanh(x + 0.5 * h)
            np.testing.assert_allclose(np.asarray(ys[b, t]), h, rtol=1e-6, atol=1e-6)


def test_one_step_sequences_with_resets():
    """T = 1 (a stream fed one frame at a time, e.g. online inference): a reset
    restarts the example from the initial carry; the others continue."""
    cell = _LearnedStartRNN()
    params = cell.init(None, (I,))
    xs = np.random.default_rng(4).standard_normal((B, 1, I)).astype(np.float32)  # NumPy
    carry = jnp.full((B, H), 0.3, jnp.float32)
    resets = jnp.asarray([[True], [False]])
    final, ys = unroll(cell, params, carry, xs, resets=resets, impl="scan")
    x = np.pad(xs[:, 0], [(0, 0), (0, H - I)])
    want = np.tanh(x + 0.5 * np.stack([np.asarray(params["h0"]), np.full(H, 0.3)]))
    np.testing.assert_allclose(np.asarray(ys[:, 0]), want, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(final), want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("impl", ["fused", "scan"])
def test_unroll_remat_reaches_the_loop(impl):
    """remat=2 on T=6: 3 chunks of 2 steps under one checkpoint, on either loop."""
    cell, params = _rnn("lstm")
    carry, xs = _data(cell, params, steps=6)
    lengths, _, ckpts = _loop_structure(
        lambda p: unroll(cell, p, carry, xs, impl=impl, remat=2), params)
    assert lengths[:2] == [3, 2] and ckpts == 1
    assert _loop_structure(lambda p: unroll(cell, p, carry, xs, impl=impl), params)[2] == 0


def test_unroll_runs_the_loop_its_impl_names():
    """impl="scan" pins the generic scan where a fast path exists (the fused loop is a
    custom_vjp); "fused" and "auto" take the fast path; "fused" refuses a cell without one."""
    cell, params = _rnn("lstm")
    carry, xs = _data(cell, params, steps=4)
    fused_in = {impl: "custom_vjp_call" in str(jax.make_jaxpr(
        lambda p: unroll(cell, p, carry, xs, impl=impl))(params)) for impl in ("scan", "fused", "auto")}
    assert fused_in == {"scan": False, "fused": True, "auto": True}
    row = cells.get("row_lstm", features=2, kernel_size=3)
    row_params = row.init(jax.random.key(0), (5, 1))
    row_xs = jnp.ones((B, 3, 5, 1))
    with pytest.raises(ValueError, match="impl='fused'"):
        unroll(row, row_params, row.initial_carry(row_params, row_xs[:, 0].shape), row_xs,
               impl="fused")
