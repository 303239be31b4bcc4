"""The ConvLSTM fast path (rnnvision/fused/conv_scan.py) against the generic scan of `unroll`.

`unroll(impl="auto")` takes the fast path for the built-in `conv_lstm` cell;
`impl="scan"` pins the generic `lax.scan` for the same call (itself tested
against explicit Python loops in test_recurrence.py). Values and gradients
(params, inputs, initial carry) must agree to float32 rounding, for every
option of the loop and every padding of the input convolution, with the
convolutions computed in space ("direct") and through the FFT ("fourier"). The
PyTorch ConvLSTM of the speed benchmark is checked to compute the same function.
"""

from __future__ import annotations

import itertools
import os
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnvision.fused as fused
from rnnvision import cells
from rnnvision.fused.conv_scan import ConvScanSpec, _kernel_grad_padding
from rnnvision.recurrence import TimeLoop, resolve_impl, unroll

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from loop_options import MASK, OPTIONS, RESETS, equations, fused_and_generic  # noqa: E402

B, T, HW, C, F = 3, 7, 5, 2, 3
TOL = dict(rtol=2e-5, atol=2e-5)


def setup(seed=0, spatial=(HW, HW), **hp):
    """cell, params, a random initial carry, xs (B, T, *spatial, C), output weights.

    The numbers come from numpy, in the cell's parameter layout (`cell.init`'s
    truncated-normal kernels take ~10 s to compile on CPU; every eager jax.random
    call compiles too).
    """
    hp = {"features": F, "kernel_size": 3, **hp}
    cell = cells.get("conv_lstm", **hp)
    rng = np.random.default_rng(seed)
    normal = lambda *shape: jnp.asarray(rng.standard_normal(shape), jnp.float32)
    shapes = jax.eval_shape(lambda k: cell.init(k, (*spatial, C)), jax.random.key(0))
    fan_in = lambda shape: np.prod(shape[:-1])
    params = {name: normal(*a.shape) / np.sqrt(fan_in(a.shape)) for name, a in shapes.items()}
    # a non-zero bias, so its gradient and its place in the gates are both tested
    params["b"] = 0.3 * normal(*shapes["b"].shape)
    state = jax.eval_shape(lambda p: cell.initial_carry(p, (B, *spatial, C)), params).h.shape
    carry = type(cell.initial_carry(params, (1, *spatial, C)))(
        c=0.5 * normal(*state), h=0.5 * normal(*state))
    return cell, params, carry, normal(B, T, *spatial, C), normal(B, T, *state[1:])


def loss_fn(cell, weights, **opts):
    """A scalar of ys and the final carry; opts go to unroll (impl among them)."""
    def loss(params, xs, carry):
        final, ys = unroll(cell, params, carry, xs, **opts)
        return jnp.sum(weights * ys) + jnp.sum(jnp.sin(final.c)) + 2 * jnp.sum(jnp.sin(final.h))
    return loss


def force_convolutions(monkeypatch, mode):
    """Convolutions in space ("direct") or through the FFT ("fourier") at any size."""
    monkeypatch.setattr(fused, "_FFT_MIN_SAVING", float("inf") if mode == "direct" else 0.0)


def assert_close(a, b):
    jax.tree.map(lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), **TOL),
                 a, b)


def uses_fast_path(cell, params, carry, xs, **opts) -> bool:
    """Whether unroll takes a fast path (traced only), independently of `resolve_impl`:
    the fused loop is a custom_vjp (the generic one has none)."""
    abstract = lambda t: jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), t)
    jaxpr = jax.make_jaxpr(lambda p, c, x: unroll(cell, p, c, x, **opts))(
        *abstract((params, carry, xs)))
    return "custom_vjp_call" in str(jaxpr)


@pytest.fixture
def fast_compiles():
    """jax_disable_most_optimizations for the duration of a test: about 2x faster to
    compile, and the semantics under test do not depend on XLA's optimisations."""
    before = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    try:
        yield
    finally:
        jax.config.update("jax_disable_most_optimizations", before)


# "all" runs every option's code path at once (mask, resets, reverse, truncation).
CASES = [(option, "direct") for option in ("plain", "mask", "all", "remat", "unroll")]
CASES += [(option, "fourier") for option in ("plain", "all", "remat")]


@pytest.mark.parametrize("option,mode", CASES, ids=["-".join(c) for c in CASES])
def test_values_and_grads_match_generic_scan(option, mode, fast_compiles, monkeypatch):
    force_convolutions(monkeypatch, mode)
    cell, params, carry, xs, weights = setup()
    opts = OPTIONS[option]
    assert uses_fast_path(cell, params, carry, xs, **opts)
    assert not uses_fast_path(cell, params, carry, xs, impl="scan", **opts)
    got, want = fused_and_generic(loss_fn, cell, weights, opts)(params, xs, carry)
    assert_close(got, want)


# Paddings of the input convolution (the state convolution is always "SAME"),
# with square and non-square kernels. Direct: the kernel gradients of both
# convolutions are one convolution that pads its inputs itself where the input
# convolution pads at least as much as the state's (the last case; "SAME" in the
# tests above), else on inputs padded before it (the first three). Fourier: all
# inputs are padded into one frame.
PADDINGS = [("VALID", 3, (HW + 2, HW + 2)), ("SAME_LOWER", (2, 2), (HW, HW)),
            (((0, 2), (1, 0)), (3, 2), (HW, HW)), (((2, 2), (1, 2)), 3, (HW - 2, HW - 1)),
            ("SAME", 3, (HW - 1, HW + 2))]  # a state that is not square
PADDING_CASES = [(*p, mode) for p in PADDINGS for mode in ("direct", "fourier")]


@pytest.mark.parametrize("padding,kernel,spatial,mode", PADDING_CASES,
                         ids=[f"{p}-{k}-{m}" for p, k, _, m in PADDING_CASES])
def test_paddings_and_kernels_match_generic_scan(padding, kernel, spatial, mode, fast_compiles,
                                                 monkeypatch):
    force_convolutions(monkeypatch, mode)
    cell, params, carry, xs, weights = setup(seed=1, spatial=spatial, padding=padding,
                                             kernel_size=kernel)
    assert uses_fast_path(cell, params, carry, xs)
    got, want = fused_and_generic(loss_fn, cell, weights, OPTIONS["all"])(params, xs, carry)
    assert_close(got, want)


def test_fft_where_it_saves_enough_multiplications():
    """The FFT path for the benchmark's 16x16 states with 5x5 kernels (7.3x fewer
    multiplications), the direct one for 8x8 with 3x3 (2.4x; benchmarks/NOTES.md)."""
    assert fused._convolve_through_fft((16, 16), (5, 5)) == (jax.default_backend() == "cpu")
    assert not fused._convolve_through_fft((8, 8), (3, 3))


@pytest.mark.parametrize("mode", ["direct", "fourier"])
def test_vmap_over_an_extra_batch_axis(mode, fast_compiles, monkeypatch):
    force_convolutions(monkeypatch, mode)
    cell, params, carry, xs, _ = setup()
    stacked = jax.tree.map(lambda a: jnp.stack([a, 0.5 * a]), params)

    @jax.jit
    def values_and_grads(p):
        def run(impl, p):
            return jax.vmap(lambda q: unroll(cell, q, carry, xs, mask=MASK, impl=impl)[1])(p)
        return [(run(impl, p), jax.grad(lambda q: jnp.sum(run(impl, q) ** 2))(p))
                for impl in ("fused", "scan")]

    got, want = values_and_grads(stacked)
    assert_close(got, want)


def test_backward_convolutions_are_canonical(monkeypatch):
    """The reason for the direct path's shape: XLA:CPU runs only b01f_01io->b01f
    convolutions fast inside loops (rnnvision/cells/conv_grad.py); the kernel
    gradient written with its transposes folded into the dimension numbers ran
    at ~1 GFLOP/s there (benchmarks/NOTES.md)."""
    force_convolutions(monkeypatch, "direct")
    cell, params, carry, xs, weights = setup()
    hlo = jax.jit(jax.grad(loss_fn(cell, weights))).lower(params, xs, carry).compile().as_text()
    labels = re.findall(r"convolution\(.*?dim_labels=(\S+?),", hlo)
    assert len(labels) >= 4, labels  # input, state, state transposed, kernel gradient
    assert all(label == "b01f_01io->b01f" for label in labels), labels


def test_falls_back_where_it_does_not_apply():
    cell, params, carry, xs, _ = setup()
    assert resolve_impl(cell, params, carry, xs) == "fused"
    assert resolve_impl(cell, params, carry, xs, impl="scan") == "scan"
    TimeLoop(impl="fused").check_cell(cell)  # no error
    # bfloat16 compute: the generic scan, and "fused" says why not
    bf16 = cells.get("conv_lstm", features=F, kernel_size=3, compute_dtype="bfloat16")
    assert not uses_fast_path(bf16, params, carry, xs)
    with pytest.raises(ValueError, match="compute_dtype='bfloat16' \\(float32 only\\)"):
        TimeLoop(impl="fused").check_cell(bf16)
    # a subclass may change the maths
    sub = type("MyConvLSTM", (cells.ConvLSTMCell,), {})(features=F, kernel_size=3)
    assert resolve_impl(sub, params, carry, xs) == "scan"
    # two batch dims
    xs2 = jnp.stack([xs, xs], axis=2)  # (B, T, 2, H, W, C): batch dims (B, 2)
    carry2 = jax.tree.map(lambda a: jnp.stack([a, a], axis=1), carry)
    assert not uses_fast_path(cell, params, carry2, xs2)
    with pytest.raises(ValueError, match=r"inputs must be float32 \(T, B, H, W, C\)"):
        unroll(cell, params, carry2, xs2, impl="fused")
    # the fast path's own reason for float64 inputs (the cell casts them itself)
    why = fused.unsupported_reason(cell, params, carry,
                                   {"x": jax.ShapeDtypeStruct((T, B, HW, HW, C), jnp.float64)})
    assert "float32" in why


def test_torch_peer_of_the_benchmark_computes_the_same_convlstm():
    """benchmarks/steps.py's PyTorch ConvLSTM (one convolution over [x, h]) with our
    weights gives our outputs: the speed table compares the same maths."""
    torch = pytest.importorskip("torch")
    from benchmarks.steps import torch_conv_lstm_module

    cell, params, _, xs, _ = setup(seed=2, kernel_size=5)
    carry = cell.initial_carry(params, (B, HW, HW, C))  # the peer starts from zeros
    ys = unroll(cell, params, carry, xs)[1]
    module = torch_conv_lstm_module(C, F, 5)
    w = np.concatenate([params["w_x"], params["w_h"]], axis=2)  # (k, k, C + F, 4F)
    with torch.no_grad():
        module.conv.weight.copy_(torch.from_numpy(w.transpose(3, 2, 0, 1).copy()))
        module.conv.bias.copy_(torch.from_numpy(np.array(params["b"])))
        got = module(torch.from_numpy(np.asarray(xs).transpose(0, 1, 4, 2, 3).copy()))
    np.testing.assert_allclose(got.numpy().transpose(0, 1, 3, 4, 2), ys, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["direct", "fourier"])
def test_float32_inputs_under_x64_take_the_fast_path(mode, fast_compiles, monkeypatch):
    """With jax_enable_x64 on (a user who needs float64 elsewhere), float32 inputs,
    params and carry still take the fast path, and it stays float32: values, dtypes
    and gradients as the generic scan's."""
    force_convolutions(monkeypatch, mode)
    with jax.enable_x64(True):
        cell, params, carry, xs, weights = setup(seed=3)
        params = jax.tree.map(lambda a: a.astype(jnp.float32), params)  # numpy scaling: f64
        opts = OPTIONS["all"]
        assert uses_fast_path(cell, params, carry, xs, **opts)
        got, want = fused_and_generic(loss_fn, cell, weights, opts)(params, xs, carry)
        assert got[0][1].dtype == want[0][1].dtype == jnp.float32
        # each gradient has its primal's dtype (a float64 one would turn the params
        # float64 at the optimizer's update)
        assert jax.tree.map(lambda a: a.dtype, got[1]) == jax.tree.map(
            lambda a: a.dtype, (params, xs, carry))
        assert_close(got, want)


def test_kernel_gradient_padding_goes_inside_where_the_input_pads_at_least_as_much():
    """The kernel-gradient convolution pads its inputs itself (measured faster) when
    every side of the input convolution pads at least as much as the state's, equal
    pads included; otherwise x_t and h_{t-1} are padded before it. The two parts
    always add up to each convolution's own padding."""
    same = ((1, 1), (2, 2))

    def split(pads_x):
        spec = ConvScanSpec(truncation=None, reverse=False, unroll=None, pads_x=pads_x,
                            pads_h=same)
        inside, before_x, before_h = _kernel_grad_padding(spec)
        return tuple(map(tuple, inside)), [tuple(p) for p in before_x], [tuple(p) for p in before_h]

    assert split(same) == (same, [(0, 0), (0, 0)], [(0, 0), (0, 0)])
    assert split(((1, 2), (2, 3))) == (same, [(0, 1), (0, 1)], [(0, 0), (0, 0)])
    assert split(((0, 0), (0, 0))) == (((0, 0), (0, 0)), [(0, 0), (0, 0)], list(same))
    assert split(((1, 1), (2, 1))) == (((0, 0), (0, 0)), [(1, 1), (2, 1)], list(same))


@pytest.mark.parametrize("mode", ["direct", "fourier"])
def test_truncation_one_matches_generic_scan(mode, fast_compiles, monkeypatch):
    """k = 1: the carry's cotangent is cut before every step after the first (the
    cut at processing step 1 included), in both directions."""
    force_convolutions(monkeypatch, mode)
    cell, params, carry, xs, weights = setup(seed=4)
    for reverse in (False, True):
        opts = dict(truncation=1, reverse=reverse)
        got, want = fused_and_generic(loss_fn, cell, weights, opts)(params, xs, carry)
        assert_close(got, want)


def test_unroll_factor_of_both_loops(fast_compiles):
    """Both loops of the fused ConvLSTM (forward and backward) run unroll 1 by default
    and the factor asked for otherwise."""
    cell, params, carry, xs, weights = setup()

    def unrolls(**opts):  # of every scan, forward then backward
        return [int(e.params["unroll"]) for e, _ in equations(
            jax.grad(loss_fn(cell, weights, **opts)), params, xs, carry)
            if e.primitive.name == "scan"]

    assert unrolls() == [1, 1]  # forward, backward
    assert unrolls(unroll=3) == [3, 3]


def test_fft_rule_on_a_grid(monkeypatch):
    """`_convolve_through_fft` as its docstring states it, on every state of 4..40 x
    4..40 with 3/5/7 kernels: the FFT where the direct convolution's H W k_h k_w
    multiplications are at least `_FFT_MIN_SAVING` times the FFT's 4 per frequency of
    the real 2-D FFT over the (H + k_h - 1, W + k_w - 1) frame (counted here by NumPy,
    equalities included); never off the CPU."""
    frequencies = {}
    for h, w, kh, kw in itertools.product(range(4, 41), range(4, 41), (3, 5, 7), (3, 5, 7)):
        frame = (h + kh - 1, w + kw - 1)
        if frame not in frequencies:
            frequencies[frame] = np.fft.rfft2(np.zeros(frame)).size
        want = h * w * kh * kw >= fused._FFT_MIN_SAVING * 4 * frequencies[frame]
        assert fused._convolve_through_fft((h, w), (kh, kw)) == want, (h, w, kh, kw)
    assert fused._convolve_through_fft((4, 8), (7, 5))  # saving exactly 4.0
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert not fused._convolve_through_fft((32, 32), (7, 7))


@pytest.mark.parametrize("mode", ["direct", "fourier"])
def test_the_chosen_convolution_mode_is_the_one_that_runs(mode, monkeypatch):
    """The fourier mode's loops transform (fft in the program); the direct mode's do not."""
    force_convolutions(monkeypatch, mode)
    cell, params, carry, xs, weights = setup()
    jaxpr = str(jax.make_jaxpr(jax.grad(loss_fn(cell, weights)))(params, xs, carry))
    assert ("fft" in jaxpr) == (mode == "fourier")
