"""The fused fast paths (rnnvision/fused) against the generic scan of `unroll`.

`unroll(impl="auto")` takes a fast path where one applies; `impl="scan"` pins the
generic `lax.scan` for the same call (itself tested against explicit Python loops
in test_recurrence.py). Values and gradients (params, inputs, initial carry) must
agree to 1e-5.
"""

from __future__ import annotations

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnvision.fused as fused
from rnnvision import cells
from rnnvision.fused.dense_scan import auto_unroll
from rnnvision.recurrence import TimeLoop, resolve_impl, stream_init, stream_unroll, unroll

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from loop_options import MASK, OPTIONS, RESETS, equations, fused_and_generic  # noqa: E402

B, T, I, H = 3, 7, 3, 5
TOL = dict(rtol=1e-5, atol=1e-5)


def setup(name, seed=0, **hp):
    cell = cells.get(name, hidden_size=H, **hp)
    k_p, k_x, k_c, k_w = jax.random.split(jax.random.key(seed), 4)
    params = cell.init(k_p, (I,))
    carry = cell.initial_carry(params, (B, I))
    leaves, treedef = jax.tree.flatten(carry)
    keys = jax.random.split(k_c, len(leaves))
    carry = jax.tree.unflatten(treedef, [0.5 * jax.random.normal(k, a.shape)
                                         for k, a in zip(keys, leaves)])
    xs = jax.random.normal(k_x, (B, T, I))
    weights = jax.random.normal(k_w, (B, T, H))
    return cell, params, carry, xs, weights


def loss_fn(cell, weights, **opts):
    """A scalar of ys and the final carry; opts go to unroll (impl among them)."""
    def loss(params, xs, carry):
        final, ys = unroll(cell, params, carry, xs, **opts)
        return jnp.sum(weights * ys) + sum(jnp.sum(jnp.sin(c) * (i + 1))
                                           for i, c in enumerate(jax.tree.leaves(final)))
    return loss


def assert_close(a, b):
    jax.tree.map(lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), **TOL),
                 a, b)


def uses_fast_path(cell, params, carry, xs, **opts) -> bool:
    """Whether unroll takes a fast path (traced only: shapes and dtypes suffice); an
    independent check of `resolve_impl`: the fused loop is a custom_vjp."""
    abstract = lambda t: jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), t)
    jaxpr = jax.make_jaxpr(lambda p, c, x: unroll(cell, p, c, x, **opts))(
        *abstract((params, carry, xs)))
    return "custom_vjp_call" in str(jaxpr)


def force_layout(monkeypatch, layout):
    """Input matmul inside the loop ("in_loop") or hoisted before it ("hoisted")."""
    monkeypatch.setattr(fused, "_IN_LOOP_WEIGHT_BYTES", 1 << 40 if layout == "in_loop" else 0)


# Each case compiles a few loops (seconds on CPU): "all" exercises every option's
# code path at once, the single options run once per cell across the two layouts.
CASES = [(name, option, layout)
         for name in ("lstm", "gru", "rnn")
         for option, layout in (("plain", "in_loop"), ("all", "in_loop"), ("all", "hoisted"))]
CASES += [("lstm", "remat", "in_loop"), ("gru", "unroll", "hoisted"), ("rnn", "mask", "hoisted")]


@pytest.mark.parametrize("name,option,layout", CASES, ids=["-".join(c) for c in CASES])
def test_values_and_grads_match_generic_scan(name, option, layout, monkeypatch):
    force_layout(monkeypatch, layout)
    cell, params, carry, xs, weights = setup(name)
    opts = OPTIONS[option]
    assert uses_fast_path(cell, params, carry, xs, **opts)
    assert not uses_fast_path(cell, params, carry, xs, impl="scan", **opts)

    got, want = fused_and_generic(loss_fn, cell, weights, opts)(params, xs, carry)
    assert_close(got, want)


def test_truncation_really_cuts_gradients():
    cell, params, carry, xs, weights = setup("lstm")
    full, cut = jax.jit(lambda *a: [jax.grad(loss_fn(cell, weights, truncation=k))(*a)
                                    for k in (None, 2)])(params, xs, carry)
    assert max(float(jnp.max(jnp.abs(a - b)))
               for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(cut))) > 1e-3


def test_vmap_over_an_extra_batch_axis():
    cell, params, carry, xs, _ = setup("lstm")
    stacked = jax.tree.map(lambda a: jnp.stack([a, 2.0 * a]), params)

    @jax.jit
    def values_and_grads(p):
        def run(impl, p):
            return jax.vmap(lambda q: unroll(cell, q, carry, xs, mask=MASK, impl=impl)[1])(p)
        return [(run(impl, p), jax.grad(lambda q: jnp.sum(run(impl, q) ** 2))(p))
                for impl in ("fused", "scan")]

    got, want = values_and_grads(stacked)
    assert_close(got, want)


def test_pmap_composes():
    cell, params, carry, xs, weights = setup("gru")
    n = jax.local_device_count()
    rep = lambda t: jax.tree.map(lambda a: jnp.stack([a] * n), t)
    grads = jax.pmap(jax.grad(loss_fn(cell, weights)))(rep(params), rep(xs), rep(carry))
    want = jax.jit(jax.grad(loss_fn(cell, weights, impl="scan")))(params, xs, carry)
    assert_close(jax.tree.map(lambda a: a[0], grads), want)


def test_streaming_tbptt_matches_generic_scan():
    cell, params, carry, xs, _ = setup("lstm")

    def two_windows(p, impl):
        state = stream_init(cell, p, carry, (B, I), k1=3, k2=5)
        ys1, state = stream_unroll(cell, p, state, xs[:, :3], impl=impl)
        ys2, _ = stream_unroll(cell, p, state, xs[:, 3:6], impl=impl)
        return jnp.sum(ys1 ** 2) + jnp.sum(jnp.cos(ys2))

    grads = jax.jit(lambda p: [jax.grad(two_windows)(p, impl) for impl in ("fused", "scan")])
    got, want = grads(params)
    assert_close(got, want)


def test_falls_back_where_it_does_not_apply():
    cell, params, carry, xs, _ = setup("lstm")
    assert uses_fast_path(cell, params, carry, xs)
    bf16 = cells.get("lstm", hidden_size=H, compute_dtype="bfloat16")
    assert uses_fast_path(bf16, params, carry, xs)
    assert not uses_fast_path(cell, params, carry, xs, impl="scan")
    assert resolve_impl(cell, params, carry, xs) == "fused"
    assert resolve_impl(cell, params, carry, xs, impl="scan") == "scan"
    # a subclass may change the maths: it gets the generic scan, and "fused" says why not
    sub = type("MyLSTM", (cells.LSTMCell,), {})(hidden_size=H)
    assert not uses_fast_path(sub, params, carry, xs)
    assert resolve_impl(sub, params, carry, xs) == "scan"
    with pytest.raises(ValueError, match="impl='fused' does not apply to MyLSTM: fast paths exist"):
        unroll(sub, params, carry, xs, impl="fused")
    # a cell without a fast path (conv_lstm has its own: tests/test_conv_fast_path.py)
    row = cells.get("row_lstm", features=2)
    row_params = jax.eval_shape(lambda: row.init(jax.random.key(0), (4, 1)))
    row_carry = jax.eval_shape(lambda p: row.initial_carry(p, (B, 4, 1)), row_params)
    row_xs = jax.ShapeDtypeStruct((B, T, 4, 1), jnp.float32)
    assert not uses_fast_path(row, row_params, row_carry, row_xs)
    with pytest.raises(ValueError, match="RowLSTMCell"):
        jax.eval_shape(lambda p, c, x: unroll(row, p, c, x, impl="fused"),
                       row_params, row_carry, row_xs)
    with pytest.raises(ValueError, match="impl='fused' does not apply to RowLSTMCell"):
        TimeLoop(impl="fused").check_cell(row)
    TimeLoop(impl="fused").check_cell(cell)  # no error
    with pytest.raises(ValueError, match="impl='turbo'"):
        unroll(cell, params, carry, xs, impl="turbo")


BF16_CASES = [("lstm", "all", "in_loop"), ("lstm", "plain", "hoisted"),
              ("gru", "all", "hoisted"), ("rnn", "plain", "in_loop")]


@pytest.mark.parametrize("name,option,layout", BF16_CASES, ids=["-".join(c) for c in BF16_CASES])
def test_bfloat16_compute_is_as_accurate_as_the_generic_scan(name, option, layout, monkeypatch):
    """bfloat16 matmuls: the fast path and the generic scan against float32 maths.

    Both round matmul operands to bfloat16, so neither matches float32 to 1e-5;
    the fast path must stay within bfloat16 precision of the float32 result and
    be no less accurate than the generic scan (which also rounds cotangents).
    """
    force_layout(monkeypatch, layout)
    cell32, params, carry, xs, weights = setup(name)
    cell = cells.get(name, hidden_size=H, compute_dtype="bfloat16")
    opts = OPTIONS[option]
    assert uses_fast_path(cell, params, carry, xs, **opts)

    @jax.jit
    def values_and_grads(params, xs, carry):
        return [(unroll(c, params, carry, xs, **opts_impl)[1],
                 jax.grad(loss_fn(c, weights, **opts_impl), argnums=(0, 1, 2))(params, xs, carry))
                for c, impl in ((cell, "fused"), (cell, "scan"), (cell32, "scan"))
                for opts_impl in [dict(opts, impl=impl)]]

    fast, generic, exact = values_and_grads(params, xs, carry)

    def rel_error(a, b):  # worst leaf, relative to the leaf's scale
        return max(float(jnp.max(jnp.abs(x - y)) / (jnp.max(jnp.abs(y)) + 1e-6))
                   for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))

    fast_err, generic_err = rel_error(fast, exact), rel_error(generic, exact)
    assert 1e-4 < fast_err < 3e-2, fast_err  # really bfloat16, and within its precision
    assert fast_err <= 2 * generic_err + 1e-3, (fast_err, generic_err)


def test_float64_falls_back():
    import jax.experimental
    enable_x64 = getattr(jax.experimental, "enable_x64", None)
    cell, params, carry, xs, _ = setup("gru")
    with (enable_x64() if enable_x64 is not None else jax.enable_x64(True)):
        to64 = lambda t: jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, jnp.float64), t)
        assert not uses_fast_path(cell, to64(params), to64(carry), to64(xs))
        assert "float32" in fused.unsupported_reason(
            cell, to64(params), to64(carry), {"x": to64(jnp.swapaxes(xs, 0, 1))})


def test_automatic_unroll_is_the_fast_paths_choice():
    """unroll=None (the default) lets the fast path pick its factor; an explicit one wins."""
    cell, params, carry, xs, weights = setup("lstm")
    forward = lambda **opts: (lambda p, c, x: unroll(cell, p, c, x, **opts))

    assert _scan_unrolls(forward(), params, carry, xs) == {auto_unroll("lstm", training=False)}
    assert _scan_unrolls(forward(unroll=3), params, carry, xs) == {3}
    assert (_scan_unrolls(jax.grad(loss_fn(cell, weights)), params, xs, carry)
            == {auto_unroll("lstm", training=True)})


def _scan_unrolls(fn, *args) -> set[int]:
    """The unroll factors of every lax.scan that tracing fn(*args) produces."""
    return {int(e.params["unroll"]) for e, _ in equations(fn, *args) if e.primitive.name == "scan"}


def test_unsupported_reasons_are_exact():
    """`fused.unsupported_reason`, word for word, for each condition of the module
    docstring (shapes and dtypes only: nothing is computed)."""
    f32, f64 = jnp.float32, jnp.float64
    spec = lambda shape, dtype=f32: jax.ShapeDtypeStruct(shape, dtype)
    zeros = lambda shape, dtype=f32: jnp.zeros(shape, dtype)  # a carry: a jax.Array
    lstm = cells.get("lstm", hidden_size=H)
    params = jax.eval_shape(lambda: lstm.init(jax.random.key(0), (I,)))
    carry = cells.LSTMCarry(c=zeros((B, H)), h=zeros((B, H)))
    x = {"x": spec((T, B, I))}
    assert fused.unsupported_reason(lstm, params, carry, x) is None
    kinds = "['ConvLSTMCell', 'GRUCell', 'LSTMCell', 'SimpleRNNCell']"
    sub = type("MyLSTM", (cells.LSTMCell,), {})(hidden_size=H)
    assert fused.unsupported_reason(sub, params, carry, x) == (
        f"fast paths exist for exactly the classes {kinds} (a subclass may change the maths)")
    assert fused.cell_unsupported_reason(cells.get("lstm", hidden_size=H, compute_dtype="float16")) \
        == "compute_dtype='float16' (float32 or bfloat16 only)"
    assert fused.cell_unsupported_reason(cells.get("conv_lstm", features=2,
                                                   compute_dtype="bfloat16")) \
        == "compute_dtype='bfloat16' (float32 only)"
    assert fused.cell_unsupported_reason(lstm) is None
    dense_inputs = "inputs must be float32 (T, B, I) with one batch dim; got "
    assert fused.unsupported_reason(lstm, params, carry, {"x": spec((T, B, 2, I))}) == (
        dense_inputs + "float32 (7, 3, 2, 3)")
    state = ("params and carry must be float32, the carry a (B, H) state of the cell's own type")
    gru = cells.get("gru", hidden_size=H)
    gru_params = jax.eval_shape(lambda: gru.init(jax.random.key(0), (I,)))
    assert fused.unsupported_reason(gru, gru_params, zeros((B, H)), x) is None
    assert fused.unsupported_reason(gru, gru_params, carry, x) == state      # not its own type
    assert fused.unsupported_reason(lstm, params, zeros((B, H)), x) == state  # an array, not LSTMCarry
    assert fused.unsupported_reason(gru, gru_params, zeros((2, B, H)), x) == state  # two batch dims
    with jax.enable_x64(True):
        assert fused.unsupported_reason(lstm, params, carry, {"x": spec((T, B, I), f64)}) == (
            dense_inputs + "float64 (7, 3, 3)")
        assert fused.unsupported_reason(gru, gru_params, zeros((B, H), f64), x) == state
        p64 = dict(gru_params, b_h=spec(gru_params["b_h"].shape, f64))
        assert fused.unsupported_reason(gru, p64, zeros((B, H)), x) == state
    conv = cells.get("conv_lstm", features=2, kernel_size=3)
    conv_params = jax.eval_shape(lambda: conv.init(jax.random.key(0), (5, 5, 1)))
    conv_carry = cells.LSTMCarry(c=zeros((B, 5, 5, 2)), h=zeros((B, 5, 5, 2)))
    conv_x = {"x": spec((T, B, 5, 5, 1))}
    assert fused.unsupported_reason(conv, conv_params, conv_carry, conv_x) is None
    assert fused.unsupported_reason(conv, conv_params, conv_carry, {"x": spec((T, B, 5, 1))}) == (
        "inputs must be float32 (T, B, H, W, C) with one batch dim; got float32 (7, 3, 5, 1)")
    assert fused.unsupported_reason(conv, conv_params, cells.LSTMCarry(
        c=zeros((B, 5, 5, 2)), h=zeros((B, 5, 2))), conv_x) == (
        "params and carry must be float32, the carry a (B, H, W, F) state of the cell's own type")


@pytest.mark.parametrize("name", ["lstm", "gru", "rnn"])
def test_float32_inputs_under_x64_take_the_fast_path(name, monkeypatch):
    """With jax_enable_x64 on, float32 inputs, params and carry still take the fast
    path; values and gradients match the generic scan's, each gradient with its
    primal's dtype (a float64 one would turn the params float64 at the update)."""
    force_layout(monkeypatch, "in_loop")
    with jax.enable_x64(True):
        to32 = lambda t: jax.tree.map(lambda a: a.astype(jnp.float32), t)
        cell, *arrays = setup(name)
        params, carry, xs, weights = to32(arrays)  # jax.random gives float64 here
        opts = OPTIONS["all"]
        assert uses_fast_path(cell, params, carry, xs, **opts)
        got, want = fused_and_generic(loss_fn, cell, weights, opts)(params, xs, carry)
        dtypes = lambda t: jax.tree.map(lambda a: a.dtype, t)
        assert dtypes(got[1]) == dtypes((params, xs, carry))
        assert dtypes(got[0]) == dtypes(want[0])
        assert_close(got, want)


def test_automatic_unroll_values(monkeypatch):
    """The factors of auto_unroll's docstring: 4 for the loops of an lstm training step
    on CPU, 1 for everything else (other kinds, inference, other backends)."""
    assert auto_unroll("lstm", training=True) == (4 if jax.default_backend() == "cpu" else 1)
    for kind, training in [("lstm", False), ("gru", True), ("gru", False), ("rnn", True),
                           ("rnn", False)]:
        assert auto_unroll(kind, training=training) == 1, (kind, training)
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert auto_unroll("lstm", training=True) == 1


def test_input_matmul_in_loop_rule(monkeypatch):
    """`_input_matmul_in_loop` as documented: in the loop when W_x and W_h together
    take at most `_IN_LOOP_WEIGHT_BYTES` (float32), equality included; never off the CPU."""
    def params(kind, i, h):
        cell = cells.get(kind, hidden_size=h)
        return jax.eval_shape(lambda: cell.init(jax.random.key(0), (i,)))

    for kind, i, h in [("lstm", 256, 256), ("lstm", 257, 256), ("lstm", 255, 256),
                       ("gru", 100, 300), ("rnn", 700, 724), ("rnn", 325, 724), ("lstm", 3, 5)]:
        p = params(kind, i, h)
        nbytes = sum(a.size * a.dtype.itemsize for a in (p["w_x"], p["w_h"]))
        want = nbytes <= fused._IN_LOOP_WEIGHT_BYTES
        assert fused._input_matmul_in_loop(p) == want, (kind, i, h, nbytes)
    assert fused._input_matmul_in_loop(params("lstm", 256, 256))  # exactly 2 MiB
    assert not fused._input_matmul_in_loop(params("lstm", 257, 256))
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert not fused._input_matmul_in_loop(params("lstm", 3, 5))


def _dots_outside_loops(fn, *args) -> int:
    """dot_general equations of fn's program that are not inside a loop."""
    return sum(e.primitive.name == "dot_general" and not in_loop
               for e, in_loop in equations(fn, *args))


@pytest.mark.parametrize("name", ["lstm", "gru", "rnn"])
def test_the_chosen_layout_is_the_one_that_runs(name, monkeypatch):
    """Hoisted: x W_x for all steps is one matmul before the forward loop; in the
    loop: no matmul outside it."""
    cell, params, carry, xs, weights = setup(name)
    for layout in ("hoisted", "in_loop"):
        force_layout(monkeypatch, layout)
        forward = _dots_outside_loops(lambda p: unroll(cell, p, carry, xs)[1], params)
        assert (forward >= 1) == (layout == "hoisted"), (layout, forward)


@pytest.mark.parametrize("name", ["lstm", "gru", "rnn"])
def test_truncation_one_matches_generic_scan(name):
    """k = 1: the carry's cotangent is cut before every step after the first (the
    cut at processing step 1 included), in both directions."""
    cell, params, carry, xs, weights = setup(name, seed=4)
    for reverse in (False, True):
        opts = dict(truncation=1, reverse=reverse)
        grads = [jax.grad(loss_fn(cell, weights, impl=impl, **opts), argnums=(0, 1, 2))(
            params, xs, carry) for impl in ("fused", "scan")]
        assert_close(*grads)


@pytest.mark.parametrize("name", ["lstm", "gru", "rnn"])
def test_bfloat16_matmuls_take_bfloat16_operands(name, monkeypatch):
    """compute_dtype="bfloat16", input matmul in the loop (the whole step and its
    gradient inside the fast path): every matmul of the forward and backward passes,
    the weight gradients' included, takes bfloat16 operands (module docstring)."""
    force_layout(monkeypatch, "in_loop")
    _, params, carry, xs, weights = setup(name)
    cell = cells.get(name, hidden_size=H, compute_dtype="bfloat16")
    operands = [tuple(str(v.aval.dtype) for v in e.invars)
                for e, _ in equations(jax.grad(loss_fn(cell, weights), argnums=(0, 1, 2)),
                                      params, xs, carry)
                if e.primitive.name == "dot_general"]
    assert len(operands) >= 5  # forward step, dh in the backward loop, dW_h, dW_x, dx
    assert set(operands) == {("bfloat16", "bfloat16")}, operands
