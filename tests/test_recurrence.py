"""Tests of `rnnvision.recurrence.unroll` and `bidirectional` (the time loop).

Every reference here is an explicit Python loop over `cell.step` (or a closed
form), never `unroll` itself, so a wrong scan, mask, reset, truncation or remat
in the engine shows up as a numeric mismatch. float32 lstm/gru/rnn run through
the fused fast path (rnnvision/fused); `generic(cell)` runs the same maths
through the plain lax.scan, and float64 always does.

Speed: on CPU the cost is XLA compilation, so each test builds ONE jitted
program holding all its variants, the Python-loop references run eagerly
(their small ops are compiled once and cached across tests), and this module
compiles with `jax_disable_most_optimizations` (about 2x faster to build; the
semantics under test do not depend on XLA's optimisations; the memory test
turns them back on).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.test_util import check_grads

from rnnvision import cells
from rnnvision.cells import Cell
from rnnvision.recurrence import bidirectional, unroll


B, T, I, H = 3, 7, 3, 5  # small: every test compiles a few scans on CPU
TOL = dict(rtol=1e-6, atol=1e-6)


# -- helpers -------------------------------------------------------------------

@contextlib.contextmanager
def xla_optimizations(enabled: bool):
    """Sets jax_disable_most_optimizations = not enabled, restoring it afterwards."""
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


def enable_x64():
    """float64 context (jax.experimental.enable_x64 in older JAX, jax.enable_x64 now)."""
    import jax.experimental
    ctx = getattr(jax.experimental, "enable_x64", None)
    return ctx() if ctx is not None else jax.enable_x64(True)


@functools.lru_cache(maxsize=None)
def generic(cell: Cell) -> Cell:
    """The same cell (maths, fields, params) as a subclass the fused fast paths do not claim."""
    cls = type(cell)
    sub = dataclasses.dataclass(frozen=True)(type(f"Generic{cls.__name__}", (cls,), {}))
    return sub(**{f.name: getattr(cell, f.name) for f in dataclasses.fields(cell)})


@functools.lru_cache(maxsize=None)
def _cell_and_params(name, hidden, dtype_name, seed):
    cell = cells.get(name, hidden_size=hidden, compute_dtype=dtype_name)
    params = cell.init(jax.random.key(seed), (I,))
    return cell, jax.tree.map(lambda a: jnp.asarray(a, dtype_name), params)


def setup(name="lstm", batch=B, steps=T, hidden=H, seed=0, dtype=np.float32):
    """(cell, params, non-zero initial carry, xs (batch, steps, I)), all in `dtype`.

    Random numbers come from NumPy: jax.random would compile per shape.
    """
    dtype_name = np.dtype(dtype).name
    cell, params = _cell_and_params(name, hidden, dtype_name, seed)
    rng = np.random.default_rng(seed + 100)
    carry = cell.initial_carry(params, (batch, I))
    carry = jax.tree.map(lambda a: jnp.asarray(0.5 * rng.standard_normal(a.shape), dtype),
                         carry)
    xs = jnp.asarray(rng.standard_normal((batch, steps, I)), dtype)
    return cell, params, carry, xs


def batch_slice(tree, b):
    return jax.tree.map(lambda a: a[b:b + 1], tree)


def index(tree, i):
    return jax.tree.map(lambda a: a[i], tree)


def assert_tree_close(a, b, **tol):
    tol = tol or TOL
    jax.tree.map(lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), **tol),
                 a, b)


def tree_max_abs_diff(a, b):
    return max(float(jnp.max(jnp.abs(x - y))) for x, y in
               zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _select(pred, a, b):
    return jax.tree.map(lambda x, y: jnp.where(pred.reshape(pred.shape + (1,) * (x.ndim - 1)),
                                               x, y), a, b)


def loop_reference(cell, params, carry, xs, mask=None, resets=None, *, reverse=False,
                   truncation=None):
    """A plain Python loop over `cell.step` with the documented semantics of `unroll`.

    mask False: carry frozen, output 0. resets True at t: carry <- initial_carry
    before step t (reverse: before the step preceding an episode start).
    truncation k: stop_gradient on the carry before the s-th processed step,
    s % k == 0, s > 0.
    """
    steps = xs.shape[1]
    init = cell.initial_carry(params, xs[:, 0].shape)
    order = range(steps - 1, -1, -1) if reverse else range(steps)
    ys = [None] * steps
    for s, t in enumerate(order):
        if truncation is not None and s > 0 and s % truncation == 0:
            carry = lax.stop_gradient(carry)
        if resets is not None:
            if not reverse:
                r = resets[:, t]
            else:  # the step after t starts an episode: t ends the previous one
                r = resets[:, t + 1] if t + 1 < steps else jnp.zeros(xs.shape[0], bool)
            carry = _select(r, init, carry)
        new_carry, y = cell.step(params, carry, xs[:, t])
        if mask is not None:
            new_carry = _select(mask[:, t], new_carry, carry)
            y = jnp.where(mask[:, t].reshape((-1,) + (1,) * (y.ndim - 1)), y, 0.0)
        carry, ys[t] = new_carry, y
    return carry, jnp.stack(ys, axis=1)


def scalar_loss(carry, ys):
    """A loss that weighs every output and every final carry leaf differently."""
    w = jnp.cos(jnp.arange(ys.size, dtype=ys.dtype).reshape(ys.shape) * 0.7) + 0.3
    leaves = jax.tree.leaves(carry)
    return jnp.sum(w * ys) + sum(jnp.sum(jnp.sin(c) * (i + 1)) for i, c in enumerate(leaves))


def fwd_grad(run, cell, params, carry, xs, **kw):
    """((final carry, ys), grads of scalar_loss w.r.t. (params, xs, carry)) of `run`."""
    def loss(p, x, c):
        out = run(cell, p, c, x, **kw)
        return scalar_loss(*out), out
    (_, out), grads = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(
        params, xs, carry)
    return out, grads


def engine_variants(cell, params, carry, xs, variants):
    """{name: fwd_grad of unroll with options} for all variants, in ONE jitted program.

    A variant's options may set "cell" (e.g. generic(cell)) besides unroll's kwargs.
    """
    @jax.jit
    def all_variants(p, c, x):
        return {name: fwd_grad(unroll, opts.get("cell", cell), p, c, x,
                               **{k: v for k, v in opts.items() if k != "cell"})
                for name, opts in variants.items()}
    return all_variants(params, carry, xs)


def reference(cell, params, carry, xs, **kw):
    """fwd_grad of the eager Python loop."""
    return fwd_grad(loop_reference, cell, params, carry, xs, **kw)


def example_mask():
    """(B, T) padding at the start, in the middle, at the end: one row each."""
    m = np.ones((B, T), bool)
    m[0, :2] = False          # start-padded
    m[1, 2:5] = False         # hole in the middle
    m[2, 4:] = False          # end-padded (length 4)
    return jnp.asarray(m)


RESETS = jnp.array([[1, 0, 0, 1, 0, 0, 0],
                    [0, 0, 0, 0, 0, 0, 1],
                    [0, 1, 0, 1, 1, 0, 0]], bool)


# -- gradients (numerical check, float64) ----------------------------------------

MASK5 = jnp.array([[1, 1, 0, 1, 1], [0, 1, 1, 1, 0]], bool)
RESETS5 = jnp.array([[0, 0, 1, 0, 0], [1, 0, 0, 1, 0]], bool)
GRAD_VARIANTS = {
    "mask_resets": dict(mask=MASK5, resets=RESETS5),
    "plain": {},
    "reverse_remat_truncation_inf": dict(mask=MASK5, resets=RESETS5, reverse=True, remat=2,
                                         truncation=5),
}


def _check_grads(name, variant):
    with enable_x64():
        cell, params, carry, xs = setup(name, batch=2, steps=5, hidden=4, dtype=np.float64)
        assert cell.compute_dtype == "float64"
        assert all(a.dtype == jnp.float64 for a in jax.tree.leaves((params, carry, xs)))
        opts = GRAD_VARIANTS[variant]

        @jax.jit
        def loss(p, x, c):
            return scalar_loss(*unroll(cell, p, c, x, **opts))

        assert loss(params, xs, carry).dtype == jnp.float64
        check_grads(loss, (params, xs, carry), order=1, modes=("rev",))


@pytest.mark.parametrize("name", ["rnn", "lstm", "gru"])
def test_check_grads_float64_with_mask_and_resets(name):
    _check_grads(name, "mask_resets")


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["plain", "reverse_remat_truncation_inf"])
@pytest.mark.parametrize("name", ["rnn", "lstm", "gru"])
def test_check_grads_float64_more_variants(name, variant):
    _check_grads(name, variant)


# -- truncation --------------------------------------------------------------

def test_truncation_at_least_T_equals_full_bptt():
    cell, params, carry, xs = setup("lstm")
    got = engine_variants(cell, params, carry, xs, {
        "full": {}, "T": dict(truncation=T), "T+3": dict(truncation=T + 3)})
    assert_tree_close(got["T"][1], got["full"][1])
    assert_tree_close(got["T+3"][1], got["full"][1])
    # ... while a window shorter than T changes them (so the comparison can fail).
    _, g_2 = reference(cell, params, carry, xs, truncation=2)
    assert tree_max_abs_diff(g_2, got["full"][1]) > 1e-3


# (options, with example_mask()?). remat=True on T=7 is chunks of 3: padded to 9 steps,
# like remat=3 and 2; remat=7 divides T. Padding must not move the carry, with or
# without a user mask, in either direction.
FORWARD_OPTIONS = {
    "trunc1": (dict(truncation=1), True), "trunc3_rev": (dict(truncation=3, reverse=True), False),
    "remat": (dict(remat=True), False), "remat_rev": (dict(remat=True, reverse=True), True),
    "remat7": (dict(remat=7), True),
    "remat3": (dict(remat=3), True), "remat3_rev": (dict(remat=3, reverse=True), False),
    "remat2_trunc2_rev": (dict(remat=2, truncation=2, reverse=True), True),
}


def test_forward_values_unchanged_by_truncation_and_remat():
    cell, params, carry, xs = setup("gru")
    mask = example_mask()

    @jax.jit
    def forward(p, c, x):
        outs = []
        for fast, name in keys:
            opts, masked = FORWARD_OPTIONS[name]
            outs.append(unroll(cell if fast else generic(cell), p, c, x,
                               mask=mask if masked else None, **opts))
        return outs

    keys = [(True, name) for name in FORWARD_OPTIONS] + [
        (False, name) for name in ("trunc3_rev", "remat3_rev")]
    got = dict(zip(keys, forward(params, carry, xs)))
    refs = {(rev, masked): loop_reference(cell, params, carry, xs, mask if masked else None,
                                          reverse=rev)
            for rev in (False, True) for masked in (False, True)}
    for (fast, name), (new_carry, ys) in got.items():
        opts, masked = FORWARD_OPTIONS[name]
        ref_carry, ref_ys = refs[(opts.get("reverse", False), masked)]
        assert ys.shape == (B, T, H)
        assert_tree_close(ys, ref_ys, err_msg=f"{name} fast={fast}", **TOL)
        assert_tree_close(new_carry, ref_carry, err_msg=f"{name} fast={fast}", **TOL)


def test_truncation_matches_stop_gradient_loop():
    cell, params, carry, xs = setup("lstm")
    variants = {"k1": dict(truncation=1), "k3": dict(truncation=3),
                "k2_rev": dict(truncation=2, reverse=True),
                "k2_generic": dict(truncation=2, cell=generic(cell))}
    got = engine_variants(cell, params, carry, xs, variants)
    g_full = {rev: reference(cell, params, carry, xs, reverse=rev)[1] for rev in (False, True)}
    for name, opts in variants.items():
        k, rev = opts["truncation"], opts.get("reverse", False)
        _, g_ref = reference(cell, params, carry, xs, truncation=k, reverse=rev)
        assert_tree_close(got[name][1], g_ref, rtol=1e-5, atol=1e-6, err_msg=name)
        assert tree_max_abs_diff(got[name][1][0], g_full[rev][0]) > 1e-3, name


@dataclasses.dataclass(frozen=True)
class ScalarLinearCell(Cell):
    """h_t = w * h_{t-1} + x_t, one scalar per example; y_t = h_t."""

    def init(self, key, input_shape):
        return {"w": jnp.asarray(0.8, jnp.float32)}

    def initial_carry(self, params, x_shape):
        return jnp.zeros(x_shape, jnp.float32)

    def step(self, params, carry, x):
        h = params["w"] * carry + x
        return h, h


def truncated_dloss_dw(w, h0, x, k):
    """d h_{T-1} / dw with the carry's gradient cut before steps k, 2k, ... (closed form).

    The last window starts at s0 = k * floor((T-1)/k); within it
    h_{T-1} = w^(T-s0) h_{s0-1} + sum_{t>=s0} w^(T-1-t) x_t with h_{s0-1} a constant
    (h_{-1} = h0), so dL/dw = (T-s0) w^(T-s0-1) h_{s0-1} + sum (T-1-t) w^(T-2-t) x_t.
    E.g. T=5, k=2: s0=4 and dL/dw = h_3; full BPTT (s0=0): 5 w^4 h0 + sum (4-t) w^(3-t) x_t.
    """
    steps = len(x)
    k = min(k, steps)
    s0 = k * ((steps - 1) // k)
    h = h0
    for t in range(s0):
        h = w * h + x[t]
    d = (steps - s0) * w ** (steps - s0 - 1) * h
    return d + sum((steps - 1 - t) * w ** (steps - 2 - t) * x[t] for t in range(s0, steps - 1))


def test_truncation_closed_form_scalar_linear_rnn():
    cell = ScalarLinearCell()
    x_all = np.array([0.3, -1.2, 0.7, 2.0, -0.5, 1.1, 0.4])
    w, h0 = 0.8, 0.6
    cases = [(5, 2), (6, 2), (7, 3), (5, 1), (5, 5), (5, 9), (5, None), (7, None)]

    @jax.jit
    def dloss_dw(w):
        def loss(w, steps, k):   # L = h_T, the final carry
            xs = jnp.asarray(x_all[:steps], jnp.float32)[None, :]   # (B=1, T), scalar features
            return unroll(cell, {"w": w}, jnp.full((1,), h0, jnp.float32), xs, truncation=k)[0][0]
        return [jax.grad(loss)(w, *case) for case in cases]

    got = dict(zip(cases, dloss_dw(jnp.float32(w))))
    for (steps, k), g in got.items():
        want = truncated_dloss_dw(w, h0, x_all[:steps], k or steps)
        np.testing.assert_allclose(float(g), want, rtol=1e-5, err_msg=str((steps, k)))
        if k is not None and k < steps:  # the truncated derivative really differs
            assert abs(want - truncated_dloss_dw(w, h0, x_all[:steps], steps)) > 1e-2
    np.testing.assert_allclose(float(got[(5, 2)]), 0.8 ** 4 * h0 + 0.8 ** 3 * 0.3
                               - 0.8 ** 2 * 1.2 + 0.8 * 0.7 + 2.0, rtol=1e-5)  # = h_3


# -- remat ---------------------------------------------------------------------

def test_remat_grads_equal_plain():
    cell, params, carry, xs = setup("lstm")
    mask = example_mask()
    variants = {"true": dict(remat=True, mask=mask),    # chunks of 3: T=7 padded to 9
                "plain": dict(mask=mask),
                "4_rev_trunc3": dict(remat=4, reverse=True, truncation=3),  # padded, no mask
                "7_generic": dict(remat=7, cell=generic(cell), mask=mask)}  # divides T
    got = engine_variants(cell, params, carry, xs, variants)
    assert_tree_close(got["true"], got["plain"])               # 1e-6
    for name in ("4_rev_trunc3", "7_generic"):
        opts = {k: v for k, v in variants[name].items() if k not in ("remat", "cell")}
        assert_tree_close(got[name], reference(cell, params, carry, xs, **opts),
                          rtol=1e-5, atol=1e-6, err_msg=name)


@pytest.mark.slow  # two compilations of a T=512 program: seconds of XLA time
def test_remat_reduces_compiled_memory():
    cell, params, carry, xs = setup("lstm", batch=8, steps=512, hidden=64)

    def temp_bytes(remat):
        def loss(p, c, x):
            return jnp.sum(unroll(cell, p, c, x, remat=remat)[1] ** 2)
        stats = jax.jit(jax.grad(loss)).lower(params, carry, xs).compile().memory_analysis()
        return None if stats is None else stats.temp_size_in_bytes

    with xla_optimizations(True):
        full = temp_bytes(False)
        if full is None:
            pytest.skip("memory_analysis() returns None on this backend")
        remat = temp_bytes(True)
    assert remat < full / 3, (remat, full)


# -- mask ----------------------------------------------------------------------

def test_mask_matches_loop_reference():
    cells_ = {"lstm": setup("lstm"), "gru": setup("gru")}
    mask = example_mask()
    cases = {"lstm": ("lstm", False, False), "lstm_rev": ("lstm", True, False),
             "gru_rev_generic": ("gru", True, True)}

    @jax.jit
    def run_all(arrays):  # arrays: {cell name: (params, carry, xs)}
        out = {}
        for case, (name, rev, gen) in cases.items():
            cell = cells_[name][0]
            params, carry, xs = arrays[name]
            out[case] = fwd_grad(unroll, generic(cell) if gen else cell, params, carry, xs,
                                 mask=mask, reverse=rev)
        return out

    got = run_all({name: s[1:] for name, s in cells_.items()})
    not_mask = ~np.asarray(mask)
    for case, (name, rev, _) in cases.items():
        cell, params, carry, xs = cells_[name]
        (new_carry, ys), g = got[case]
        (ref_carry, ref_ys), g_ref = reference(cell, params, carry, xs, mask=mask, reverse=rev)
        assert_tree_close(ys, ref_ys, err_msg=case, **TOL)
        assert_tree_close(new_carry, ref_carry, err_msg=case, **TOL)
        assert_tree_close(g, g_ref, rtol=1e-5, atol=1e-6, err_msg=case)
        assert np.all(np.asarray(ys)[not_mask] == 0.0)
        assert np.all(np.asarray(g[1])[not_mask] == 0.0)  # padded inputs get no gradient
    # the end-padded row's final forward carry is the one after its 4 valid steps
    cell, params, carry, xs = cells_["lstm"]
    ref_row2, _ = loop_reference(cell, params, batch_slice(carry, 2), xs[2:3, :4])
    assert_tree_close(batch_slice(got["lstm"][0][0], 2), ref_row2)


def test_reverse_over_end_padding_starts_at_last_valid_step():
    cell, params, carry, xs = setup("lstm")
    lengths = [T, 4, 1]
    mask = jnp.arange(T)[None, :] < jnp.asarray(lengths)[:, None]
    new_carry, ys = jax.jit(lambda p, c, x: unroll(cell, p, c, x, mask=mask, reverse=True))(
        params, carry, xs)
    for b, n in enumerate(lengths):
        valid_reversed = xs[b:b + 1, :n][:, ::-1]
        ref_carry, ref_ys = loop_reference(cell, params, batch_slice(carry, b), valid_reversed)
        # the output at the last valid step (n-1) is the reversed run's first output
        assert_tree_close(ys[b, n - 1], ref_ys[0, 0])
        assert_tree_close(ys[b:b + 1, :n], ref_ys[:, ::-1])
        assert_tree_close(batch_slice(new_carry, b), ref_carry)
        assert np.all(np.asarray(ys[b, n:]) == 0.0)


# -- resets ----------------------------------------------------------------------

def test_resets_match_loop_reference():
    # (cell, reverse, generic path, extra options): the gru cases add mask and truncation
    mask_trunc = dict(mask=example_mask(), truncation=3)
    cases = {"lstm": ("lstm", False, False, {}), "lstm_rev": ("lstm", True, False, {}),
             "gru_mask_trunc": ("gru", False, False, mask_trunc),
             "gru_rev_generic_mask_trunc": ("gru", True, True, mask_trunc)}
    setups = {"lstm": setup("lstm"), "gru": setup("gru")}

    @jax.jit
    def run_all(arrays):
        out = {}
        for case, (name, rev, gen, extra) in cases.items():
            cell = setups[name][0]
            params, carry, xs = arrays[name]
            cell = generic(cell) if gen else cell
            out[case] = fwd_grad(unroll, cell, params, carry, xs, resets=RESETS, reverse=rev,
                                 **extra)
        return out

    got = run_all({name: s[1:] for name, s in setups.items()})
    for case, (name, rev, _, extra) in cases.items():
        cell, params, carry, xs = setups[name]
        (new_carry, ys), g = got[case]
        (ref_carry, ref_ys), g_ref = reference(cell, params, carry, xs, resets=RESETS,
                                               reverse=rev, **extra)
        assert_tree_close(ys, ref_ys, err_msg=case, **TOL)
        assert_tree_close(new_carry, ref_carry, err_msg=case, **TOL)
        assert_tree_close(g, g_ref, rtol=1e-5, atol=1e-6, err_msg=case)
        # and they did something: differ from the run without resets
        no_resets = loop_reference(cell, params, carry, xs, reverse=rev, **extra)[1]
        assert tree_max_abs_diff(ys, no_resets) > 1e-3
    # By hand, independent of loop_reference's reset logic: row 0 resets at t=3, so
    # ys[0, 3:] is a run from the initial carry over xs[0, 3:]; row 1 resets at t=6.
    cell, params, carry, xs = setups["lstm"]
    ys = got["lstm"][0][1]
    init = cell.initial_carry(params, (1, I))
    assert_tree_close(ys[:1, 3:], loop_reference(cell, params, init, xs[:1, 3:])[1])
    assert_tree_close(ys[1:2, :6], loop_reference(cell, params, batch_slice(carry, 1),
                                                  xs[1:2, :6])[1])
    assert_tree_close(ys[1:2, 6:], loop_reference(cell, params, init, xs[1:2, 6:])[1])


def test_resets_all_false_equals_no_resets():
    cell, params, carry, xs = setup("gru")
    no_resets = jnp.zeros((B, T), bool)

    @jax.jit
    def run_all(p, c, x):
        return {f"rev={rev},generic={gen}": (unroll(cl, p, c, x, reverse=rev),
                             unroll(cl, p, c, x, reverse=rev, resets=no_resets))
                for rev in (False, True) for gen, cl in ((0, cell), (1, generic(cell)))}

    for key, (no, off) in run_all(params, carry, xs).items():
        assert_tree_close(off, no, rtol=0, atol=1e-7, err_msg=str(key))


def test_resets_isolate_episodes_in_both_directions():
    # Episodes [0, 4) and [4, T): no output of one may depend on the other's inputs.
    cell, params, carry, xs = setup("lstm", batch=1)
    resets = jnp.zeros((1, T), bool).at[0, 4].set(True)

    @jax.jit
    def jacobians(x):
        return [jax.jacrev(lambda x: unroll(cell, params, carry, x, resets=resets,
                                            reverse=rev)[1])(x)
                for rev in (False, True)]

    for rev, jac in zip((False, True), jacobians(xs)):
        jac = jac[0, :, :, 0, :, :]  # (T_out, H, T_in, I)
        cross = jnp.concatenate([jac[:4, :, 4:].ravel(), jac[4:, :, :4].ravel()])
        assert float(jnp.max(jnp.abs(cross))) == 0.0, f"reverse={rev} leaks across episodes"
        assert float(jnp.max(jnp.abs(jac[:4, :, :4]))) > 1e-3
        assert float(jnp.max(jnp.abs(jac[4:, :, 4:]))) > 1e-3


# -- reverse / bidirectional -----------------------------------------------------

def test_reverse_equals_flipped_sequence():
    setups = {name: setup(name) for name in ("rnn", "lstm", "gru")}
    ends = jnp.concatenate([RESETS[:, 1:], jnp.zeros((B, 1), bool)], axis=1)

    @jax.jit
    def run_all(arrays):
        out = {}
        for name, (params, carry, xs) in arrays.items():
            cell = setups[name][0]
            out[name] = (unroll(cell, params, carry, xs, reverse=True),
                         unroll(cell, params, carry, xs[:, ::-1]),
                         unroll(cell, params, carry, xs))
        # with resets: episode starts become episode ends in the flipped sequence
        params, carry, xs = arrays["gru"]
        cell = setups["gru"][0]
        out["gru_resets"] = (unroll(cell, params, carry, xs, resets=RESETS, reverse=True),
                             unroll(cell, params, carry, xs[:, ::-1], resets=ends[:, ::-1]))
        return out

    got = run_all({name: s[1:] for name, s in setups.items()})
    for name, results in got.items():
        (rev_carry, rev_ys), (flip_carry, flip_ys) = results[:2]
        assert_tree_close(rev_ys, flip_ys[:, ::-1], err_msg=name, **TOL)
        assert_tree_close(rev_carry, flip_carry, err_msg=name, **TOL)
        if len(results) == 3:
            assert tree_max_abs_diff(rev_ys, results[2][1]) > 1e-3


def test_bidirectional_is_concat_of_forward_and_reverse():
    cell_fw, p_fw, c_fw, xs = setup("lstm", seed=0)
    cell_bw, p_bw, c_bw, _ = setup("gru", seed=1)
    mask = example_mask()
    bidi = jax.jit(lambda p, c, x, m: bidirectional(cell_fw, cell_bw, p, c, x, mask=m))
    (cf, cb), ys = bidi((p_fw, p_bw), (c_fw, c_bw), xs, mask)
    ref_cf, ref_f = loop_reference(cell_fw, p_fw, c_fw, xs, mask)
    ref_cb, ref_b = loop_reference(cell_bw, p_bw, c_bw, xs, mask, reverse=True)
    assert ys.shape == (B, T, 2 * H)
    assert_tree_close(ys, jnp.concatenate([ref_f, ref_b], axis=-1))
    assert_tree_close((cf, cb), (ref_cf, ref_cb))


# -- composition: jit, vmap, grad, pmap ------------------------------------------

def test_jit_matches_eager():
    cell, params, carry, xs = setup("lstm", steps=4)
    mask = example_mask()[:B, :4]
    go = lambda p, c, x, m: unroll(cell, p, c, x, mask=m, truncation=2, remat=3)
    assert_tree_close(jax.jit(go)(params, carry, xs, mask), go(params, carry, xs, mask))


def test_vmap_over_extra_leading_axis_with_grad():
    n = 2
    cell, params, _, _ = setup("gru")
    rng = np.random.default_rng(5)
    xs = jnp.asarray(rng.standard_normal((n, B, T, I)), jnp.float32)
    carry = jnp.asarray(rng.standard_normal((n, B, H)), jnp.float32)
    mask = jnp.stack([example_mask(), example_mask()[::-1]])
    per_slice = jax.jit(jax.vmap(
        lambda c, x, m: fwd_grad(unroll, cell, params, c, x, mask=m, truncation=3)))
    got = per_slice(carry, xs, mask)
    for i in range(n):
        want = reference(cell, params, carry[i], xs[i], mask=mask[i], truncation=3)
        assert_tree_close(index(got, i), want, rtol=1e-5, atol=1e-6)


def test_pmap_over_local_devices():
    n = len(jax.local_devices())
    assert n >= 1
    cell, params, _, _ = setup("lstm")
    xs = jnp.asarray(np.random.default_rng(7).standard_normal((n, B, T, I)), jnp.float32)
    carry = cell.initial_carry(params, (n, B, I))

    def step(p, c, x):
        out, grads = fwd_grad(unroll, cell, p, c, x, truncation=2)
        return out, jax.lax.pmean(grads[0], "devices")

    (got_carry, got_ys), got_g = jax.pmap(step, axis_name="devices", in_axes=(None, 0, 0))(
        params, carry, xs)
    refs = [reference(cell, params, index(carry, i), xs[i], truncation=2) for i in range(n)]
    mean_g = jax.tree.map(lambda *gs: sum(gs) / n, *[g[0] for _, g in refs])
    for i, ((ref_carry, ref_ys), _) in enumerate(refs):
        assert_tree_close(got_ys[i], ref_ys)
        assert_tree_close(index(got_carry, i), ref_carry)
        assert_tree_close(index(got_g, i), mean_g, rtol=1e-5, atol=1e-6)


def test_unroll_factor_gives_same_numbers():
    cell, params, carry, xs = setup("lstm")
    base = {"rev_mask_trunc2": dict(reverse=True, mask=example_mask(), truncation=2),
            "generic_resets": dict(resets=RESETS, cell=generic(cell))}
    got = engine_variants(cell, params, carry, xs,   # unroll=2 does not divide T=7
                          {name: dict(opts, unroll=2) for name, opts in base.items()})
    for name, opts in base.items():
        opts = {k: v for k, v in opts.items() if k not in ("remat", "cell")}
        assert_tree_close(got[name], reference(cell, params, carry, xs, **opts),
                          rtol=1e-5, atol=1e-6, err_msg=name)


# -- argument errors -------------------------------------------------------------

@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "3"])
def test_bad_truncation_raises(bad):
    cell, params, carry, xs = setup("rnn")
    with pytest.raises(ValueError, match="truncation"):
        unroll(cell, params, carry, xs, truncation=bad)


@pytest.mark.parametrize("arg", ["mask", "resets"])
@pytest.mark.parametrize("shape", [(B, T + 1), (B + 1, T), (T, B), (B, T, 1)])
def test_mask_or_resets_of_wrong_shape_raises(arg, shape):
    cell, params, carry, xs = setup("rnn")
    with pytest.raises(ValueError, match=arg):
        unroll(cell, params, carry, xs, **{arg: jnp.ones(shape, bool)})


def test_non_batch_major_xs_raises():
    cell, params, carry, xs = setup("lstm")
    with pytest.raises(ValueError, match="xs"):
        unroll(cell, params, carry, jnp.swapaxes(xs, 0, 1))    # time-major (T, B, I)
    with pytest.raises(ValueError, match="xs"):
        unroll(cell, params, carry, xs[:, 0, 0])               # (B,): no time axis


@pytest.mark.parametrize("bad", [0, -2, 2.5])
def test_bad_remat_raises(bad):
    cell, params, carry, xs = setup("rnn")
    with pytest.raises(ValueError, match="remat"):
        unroll(cell, params, carry, xs, remat=bad)


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "4"])
def test_bad_unroll_raises(bad):
    cell, params, carry, xs = setup("rnn")
    with pytest.raises(ValueError, match="unroll"):
        unroll(cell, params, carry, xs, unroll=bad)


# -- scan (any step function) and TimeLoop --------------------------------------------

def _pair_step(cell, params):
    """A step function that is not a cell: the cell's step, and a pytree output."""
    def step(carry, x):
        carry, y = cell.step(params, carry, x["x"] * x["scale"][:, None])
        return carry, {"y": y, "norm": jnp.sum(y ** 2, axis=-1)}
    return step


def _loop_with_offset(cell, params, carry, xs, truncation, first_step, reverse):
    """Python loop: stop_gradient before processed step s (counted from first_step)
    whenever s % k == 0 and s > 0."""
    steps = xs.shape[1]
    order = range(steps - 1, -1, -1) if reverse else range(steps)
    ys = [None] * steps
    for i, t in enumerate(order):
        s = first_step + i
        if s > 0 and s % truncation == 0:
            carry = lax.stop_gradient(carry)
        carry, ys[t] = cell.step(params, carry, xs[:, t])
    return carry, jnp.stack(ys, axis=1)


@pytest.mark.parametrize("opts", [dict(truncation=3, first_step=2),
                                  dict(truncation=2, reverse=True, remat=3),
                                  dict(truncation=4, first_step=5, remat=True, unroll=2)],
                         ids=["offset", "reverse_remat", "offset_remat_unroll"])
def test_scan_of_a_step_function_matches_loop(opts):
    from rnnvision.recurrence import scan

    cell, params, carry, xs = setup("gru")
    scale = jnp.linspace(0.5, 1.5, B * T).reshape(B, T)
    inputs = {"x": xs, "scale": scale}

    def loss_scan(p, c):
        final, out = scan(_pair_step(cell, p), c, inputs, **opts)
        return scalar_loss(final, out["y"]) + jnp.sum(jnp.cos(out["norm"])), out

    def loss_loop(p, c, truncation=opts["truncation"]):
        final, ys = _loop_with_offset(cell, p, c, xs * scale[..., None], truncation,
                                      opts.get("first_step", 0), opts.get("reverse", False))
        return scalar_loss(final, ys) + jnp.sum(jnp.cos(jnp.sum(ys ** 2, -1))), ys

    (_, out), grads = jax.jit(jax.value_and_grad(loss_scan, argnums=(0, 1), has_aux=True))(
        params, carry)
    (_, ys_ref), grads_ref = jax.value_and_grad(loss_loop, argnums=(0, 1), has_aux=True)(
        params, carry)
    assert out["y"].shape == (B, T, H) and out["norm"].shape == (B, T)
    assert_tree_close(out["y"], ys_ref)
    assert_tree_close(grads, grads_ref, rtol=1e-5, atol=1e-6)
    # and the truncation is real: the full-BPTT gradient differs
    _, grads_full = jax.value_and_grad(lambda p, c: loss_loop(p, c, truncation=10**6),
                                       argnums=(0, 1), has_aux=True)(params, carry)
    assert tree_max_abs_diff(grads, grads_full) > 1e-4


def test_scan_rejects_inputs_of_unequal_length():
    from rnnvision.recurrence import scan

    cell, params, carry, xs = setup("rnn")
    with pytest.raises(ValueError, match="batch-major"):
        scan(_pair_step(cell, params), carry, {"x": xs, "scale": jnp.ones((B, T + 1))})


def test_time_loop_runs_unroll_with_its_options():
    from rnnvision.recurrence import TimeLoop

    cell, params, carry, xs = setup("lstm")
    loop = TimeLoop(truncation=2, remat=3, unroll=2, impl="scan")
    assert loop.options() == dict(truncation=2, remat=3, unroll=2, impl="scan")
    mask = example_mask()

    @jax.jit
    def both(p, c, x):
        return (fwd_grad(lambda *a, **k: loop.run(*a, **k), cell, p, c, x, mask=mask),
                fwd_grad(unroll, cell, p, c, x, mask=mask, truncation=2, remat=3, unroll=2,
                         impl="scan"))

    got, want = both(params, carry, xs)
    assert_tree_close(got, want)
    _, g_ref = reference(cell, params, carry, xs, mask=mask, truncation=2)
    assert_tree_close(got[1], g_ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("field,value", [("truncation", 0), ("remat", -1), ("unroll", 0),
                                         ("impl", "fast")])
def test_time_loop_refuses_bad_options_naming_them(field, value):
    from rnnvision.recurrence import TimeLoop

    with pytest.raises(ValueError, match=f"{field}="):
        TimeLoop(**{field: value})


def test_time_loop_scan_refuses_the_fused_impl():
    from rnnvision.recurrence import TimeLoop

    cell, params, carry, xs = setup("rnn")
    with pytest.raises(ValueError, match="impl='fused' cannot run here"):
        TimeLoop(impl="fused").scan(_pair_step(cell, params), carry,
                                    {"x": xs, "scale": jnp.ones((B, T))})
