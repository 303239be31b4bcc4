"""st_lstm (PredRNN) and causal_lstm (PredRNN++): a PyTorch re-implementation, the
contract, truncation/remat/mask, and PredRNN-V2's decoupling term.

The PyTorch reference below is written from the equations of the papers (PredRNN's
ST-LSTM; PredRNN++'s Causal LSTM and GHU as the cell's docstring states them;
PredRNN-V2's decoupling loss), one gate at a time with per-gate weights cut from the
documented parameter layout, with torch's conv2d on the same weights turned to
OIHW. It runs in float64; the cells run in float32.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from jax import test_util

from rnnvision import cells
from rnnvision.recurrence import unroll
from rnnvision.testing import check_cell, prng_key, with_compute_dtype

FRAME = (4, 5, 2)  # (H, W, C) of one step: tiny, H != W so a transposed map fails
B = 2


def _random_tree(tree, rng, scale=0.3):
    """float32 random normals shaped like `tree`'s leaves (scaled so gates do not saturate)."""
    return jax.tree.map(lambda a: (scale * rng.standard_normal(a.shape)).astype(np.float32), tree)


def _setup(cell, seed=0):
    """(params, carry, x) all random (the carry nonzero so every term counts)."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(lambda k: cell.init(k, FRAME), prng_key(0))
    params = _random_tree(shapes, rng)
    carry = _random_tree(jax.eval_shape(lambda p: cell.initial_carry(p, (B, *FRAME)), shapes),
                         rng, scale=0.5)
    x = rng.standard_normal((B, *FRAME)).astype(np.float32)
    return params, carry, x


# -- the PyTorch reference, from the equations -----------------------------------------

def _conv(x, w):
    """x (B, C, H, W); w (kh, kw, C, O), the cells' HWIO layout -> OIHW, "SAME" padding."""
    return TF.conv2d(x, w.permute(3, 2, 0, 1), padding=(w.shape[0] // 2, w.shape[1] // 2))


def _conv1x1(x, w):
    """x (B, C, H, W); w (C, O) a 1x1 convolution stored as a matrix."""
    return TF.conv2d(x, w.t()[:, :, None, None])


def _cut(w, sizes):
    """The per-gate blocks of a fused kernel or bias (its last axis)."""
    return torch.split(w, sizes, dim=-1)


def _bias(b):
    return b[None, :, None, None]


def _torch_st_lstm_layer(p, x, c, h, m):
    """PredRNN's ST-LSTM; x the layer's input, all (B, C, H, W). Returns (C, H, M, (ΔC, ΔM))."""
    f, fm = c.shape[1], m.shape[1]
    wx_i, wx_f, wx_g, wx_o, wx_i2, wx_f2, wx_g2 = _cut(p["w_x"], [f] * 4 + [fm] * 3)
    b_i, b_f, b_g, b_o, b_i2, b_f2, b_g2 = map(_bias, _cut(p["b"], [f] * 4 + [fm] * 3))
    wh_i, wh_f, wh_g, wh_o = _cut(p["w_h"], [f] * 4)
    wm_i, wm_f, wm_g = _cut(p["w_m"], [fm] * 3)
    i = torch.sigmoid(_conv(x, wx_i) + _conv(h, wh_i) + b_i)
    forget = torch.sigmoid(_conv(x, wx_f) + _conv(h, wh_f) + b_f)
    g = torch.tanh(_conv(x, wx_g) + _conv(h, wh_g) + b_g)
    c = forget * c + i * g
    i2 = torch.sigmoid(_conv(x, wx_i2) + _conv(m, wm_i) + b_i2)
    f2 = torch.sigmoid(_conv(x, wx_f2) + _conv(m, wm_f) + b_f2)
    g2 = torch.tanh(_conv(x, wx_g2) + _conv(m, wm_g) + b_g2)
    m = f2 * m + i2 * g2
    cm = torch.cat([c, m], dim=1)
    o = torch.sigmoid(_conv(x, wx_o) + _conv(h, wh_o) + _conv(cm, p["w_o"]) + b_o)
    return c, o * torch.tanh(_conv1x1(cm, p["w_last"])), m, (i * g, i2 * g2)


def _torch_causal_lstm_layer(p, x, c, h, m):
    """PredRNN++ Eq. 3 as the cell's docstring states it. Returns (C, H, M, (ΔC, ΔM))."""
    f = c.shape[1]
    wx_i, wx_f, wx_g, wx_o, wx_i2, wx_f2, wx_g2 = _cut(p["w_x"], [f] * 7)
    b_i, b_f, b_g, b_o, b_i2, b_f2, b_g2 = map(_bias, _cut(p["b"], [f] * 7))
    wh_i, wh_f, wh_g, wh_o = _cut(p["w_h"], [f] * 4)
    wc_i, wc_f, wc_g = _cut(p["w_c"], [f] * 3)
    wm_i, wm_f, wm_m = _cut(p["w_m"], [f] * 3)
    wcm_i, wcm_f, wcm_g, wcm_o = _cut(p["w_cm"], [f] * 4)
    i = torch.sigmoid(_conv(x, wx_i) + _conv(h, wh_i) + _conv(c, wc_i) + b_i)
    forget = torch.sigmoid(_conv(x, wx_f) + _conv(h, wh_f) + _conv(c, wc_f) + b_f)
    g = torch.tanh(_conv(x, wx_g) + _conv(h, wh_g) + _conv(c, wc_g) + b_g)
    c = forget * c + i * g
    i2 = torch.sigmoid(_conv(x, wx_i2) + _conv(c, wcm_i) + _conv(m, wm_i) + b_i2)
    f2 = torch.sigmoid(_conv(x, wx_f2) + _conv(c, wcm_f) + _conv(m, wm_f) + b_f2)
    g2 = torch.tanh(_conv(x, wx_g2) + _conv(c, wcm_g) + b_g2)
    m = f2 * torch.tanh(_conv(m, wm_m)) + i2 * g2
    o = torch.tanh(_conv(x, wx_o) + _conv(h, wh_o) + _conv(c, wcm_o) + _conv(m, p["w_om"]) + b_o)
    h = o * torch.tanh(_conv1x1(torch.cat([c, m], dim=1), p["w_last"]))
    return c, h, m, (i * g, i2 * g2)


def _torch_ghu(p, x, z):
    """PredRNN++ Eq. 4."""
    f = z.shape[1]
    wx_p, wx_s = _cut(p["w_x"], [f, f])
    wz_p, wz_s = _cut(p["w_z"], [f, f])
    s = torch.sigmoid(_conv(x, wx_s) + _conv(z, wz_s))
    return s * torch.tanh(_conv(x, wx_p) + _conv(z, wz_p)) + (1 - s) * z


def _torch_decoupling(increments, adapter):
    """PredRNN-V2: mean over layers and channels of |cos| of the adapted (ΔC, ΔM), the
    cosine over the flattened spatial positions (F.normalize, then cosine_similarity)."""
    per_layer = []
    for dc, dm in increments:
        a_c, a_m = (TF.normalize(_conv1x1(d, adapter).flatten(2), dim=2) for d in (dc, dm))
        per_layer.append(TF.cosine_similarity(a_c, a_m, dim=2).abs().mean(dim=1))
    return torch.stack(per_layer).mean(dim=0)


def _torch_stack(kind, params, carry, x):
    """One step of the whole stack (zigzag M; for causal_lstm the GHU after layer 1).
    All tensors channels-last as the cells hold them. Returns the outputs in the
    order of jax.tree.leaves((new carry, y, term)): c..., h..., m, [z], y, [term]."""
    nchw, nhwc = (lambda a: a.permute(0, 3, 1, 2)), (lambda a: a.permute(0, 2, 3, 1))
    layer = _torch_st_lstm_layer if kind == "st_lstm" else _torch_causal_lstm_layer
    inp, m = nchw(x), nchw(carry["m"])
    z = nchw(carry["z"]) if kind == "causal_lstm" else None
    cs, hs, increments = [], [], []
    for l, p in enumerate(params["layers"]):
        c, h, m, delta = layer(p, inp, nchw(carry["c"][l]), nchw(carry["h"][l]), m)
        cs, hs, inp = cs + [c], hs + [h], h
        increments.append(delta)
        if z is not None and l == 0:
            z = inp = _torch_ghu(params["ghu"], h, z)
    outs = [*cs, *hs, m] + ([z] if z is not None else []) + [hs[-1]]
    outs = [nhwc(a) for a in outs]
    if "adapter" in params:
        outs.append(_torch_decoupling(increments, params["adapter"]))
    return outs


# -- one step against the reference ----------------------------------------------------

@functools.partial(jax.jit, static_argnums=0)
def _jax_step(cell, params, carry, x, cotangents):
    """(outputs as leaves, grads w.r.t. (params, carry, x) of sum <output, cotangent>,
    plain step's (carry, y))."""
    def outputs(params, carry, x):
        px = cell.project_inputs(params, x)
        if cell.decoupling:
            return jax.tree.leaves(cell.step_with_decoupling(params, carry, px))
        return jax.tree.leaves(cell.step_projected(params, carry, px))

    def loss(params, carry, x):
        return sum(jnp.vdot(o, ct) for o, ct in zip(outputs(params, carry, x), cotangents))

    grads = jax.grad(loss, argnums=(0, 1, 2))(params, carry, x)
    return outputs(params, carry, x), grads, cell.step(params, carry, x)


def _torch_step(kind, params, carry, x, cotangents):
    """The reference's outputs and grads w.r.t. (params, carry, x), as NumPy float64."""
    as_torch = lambda a: torch.tensor(np.asarray(a, np.float64), requires_grad=True)  # noqa: E731
    t_params, t_carry = jax.tree.map(as_torch, params), jax.tree.map(as_torch, carry._asdict())
    t_x = as_torch(x)
    outs = _torch_stack(kind, t_params, t_carry, t_x)
    loss = sum(torch.sum(o * torch.tensor(np.asarray(ct, np.float64)))
               for o, ct in zip(outs, cotangents))
    loss.backward()
    grad = lambda tree: jax.tree.map(lambda t: t.grad.numpy(), tree)  # noqa: E731
    return ([o.detach().numpy() for o in outs],
            (grad(t_params), type(carry)(**grad(t_carry)), t_x.grad.numpy()))


STEP_CASES = {
    "st_lstm-3-layers-decoupling": ("st_lstm", dict(features=3, num_layers=3, decoupling=True)),
    # Unequal widths: M keeps the bottom layer's 3 channels through the 2-wide layer.
    "st_lstm-widths-3-2": ("st_lstm", dict(features=(3, 2), num_layers=2)),
    "causal_lstm-3-layers-decoupling":
        ("causal_lstm", dict(features=3, num_layers=3, decoupling=True)),
    # Unequal widths: each M^l has F_l channels; the bottom layer reads the top's 2.
    "causal_lstm-widths-3-2": ("causal_lstm", dict(features=(3, 2), num_layers=2)),
}


@pytest.mark.parametrize("case", STEP_CASES)
def test_one_step_values_and_gradients_equal_pytorch_reference(case):
    kind, hparams = STEP_CASES[case]
    cell = cells.get(kind, kernel_size=3, **hparams)
    params, carry, x = _setup(cell)
    leaves = jax.eval_shape(
        lambda p, c, x: jax.tree.leaves(cell.step_with_decoupling(p, c, cell.project_inputs(p, x))
                                        if cell.decoupling else cell.step(p, c, x)),
        params, carry, x)
    rng = np.random.default_rng(1)
    cotangents = [rng.standard_normal(s.shape).astype(np.float32) for s in leaves]

    outs, grads, (plain_carry, plain_y) = _jax_step(cell, params, carry, x, cotangents)
    ref_outs, ref_grads = _torch_step(kind, params, carry, x, cotangents)

    assert len(outs) == len(ref_outs)
    for k, (a, b) in enumerate(zip(outs, ref_outs)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5, err_msg=f"output leaf {k}")
    for name, a, b in zip(("params", "carry", "x"), grads, ref_grads):
        for (path, g), r in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
            np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-5,
                                       err_msg=f"d/d {name}{jax.tree_util.keystr(path)}")
    # step_projected (through step) and step_with_decoupling share one forward pass.
    for a, b in zip(jax.tree.leaves((plain_carry, plain_y)), outs):
        np.testing.assert_array_equal(a, b)


# -- the cell contract, bfloat16, float64 gradients -----------------------------------------

CONTRACT_CASES = {
    "st_lstm": lambda dtype: cells.get("st_lstm", features=3, num_layers=2, kernel_size=3,
                                       compute_dtype=dtype),
    "causal_lstm": lambda dtype: cells.get("causal_lstm", features=3, num_layers=2, kernel_size=3,
                                           compute_dtype=dtype),
}


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("kind", CONTRACT_CASES)
def test_check_cell(kind, dtype):
    # The float64 finite-difference check of a 3-step unroll runs once per cell, from
    # the float32 case (check_cell makes a float64 copy of the cell for it).
    check_cell(CONTRACT_CASES[kind](dtype), FRAME, steps=3, check_gradients=dtype == "float32")


@pytest.mark.parametrize("kind", [
    "st_lstm", pytest.param("causal_lstm", marks=pytest.mark.slow)])  # the term's code is shared
def test_decoupling_term_gradients_float64(kind):
    """check_grads of step_with_decoupling (new carry, y and the term) in float64."""
    cell = dataclasses.replace(CONTRACT_CASES[kind]("float64"), decoupling=True)
    params, carry, x = _setup(cell)
    with jax.enable_x64(True):
        args = jax.tree.map(lambda a: np.asarray(a, np.float64), (params, carry, x))

        @jax.jit
        def step(params, carry, x):
            out = cell.step_with_decoupling(params, carry, cell.project_inputs(params, x))
            return jnp.concatenate([leaf.ravel() for leaf in jax.tree.leaves(out)])

        test_util.check_grads(step, args, order=1, modes=("rev",), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", CONTRACT_CASES)
def test_bfloat16_unroll_is_close_to_float32_and_keeps_a_float32_carry(kind):
    cell32 = CONTRACT_CASES[kind]("float32")
    cell16 = with_compute_dtype(cell32, "bfloat16")
    params, carry, _ = _setup(cell32)
    xs = np.random.default_rng(2).standard_normal((B, 4, *FRAME)).astype(np.float32)
    run = jax.jit(lambda cell, *a: unroll(cell, *a), static_argnums=0)
    out32, out16 = run(cell32, params, carry, xs), run(cell16, params, carry, xs)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(out16))
    err = max(float(np.max(np.abs(a - b)))
              for a, b in zip(jax.tree.leaves(out16), jax.tree.leaves(out32)))
    # bfloat16 operands round at 2^-9 relative; 4 steps of a 2-layer stack stay well
    # inside 2e-2, and a bfloat16 run that equals float32 would not be bfloat16 at all.
    assert 1e-5 < err < 2e-2, err


# -- the time-loop options ------------------------------------------------------------------

T = 4


def _loop(cell, params, carry, xs, *, truncation=None, mask=None):
    """The reference time loop: Python, stop_gradient on the carry entering every step
    s > 0 with s % truncation == 0; a False mask freezes the carry and zeroes y."""
    ys = []
    for t in range(xs.shape[1]):
        if truncation and t % truncation == 0 and t > 0:
            carry = jax.lax.stop_gradient(carry)
        new, y = cell.step(params, carry, xs[:, t])
        if mask is not None:
            def keep(a, b, valid=mask[:, t]):
                return jnp.where(valid.reshape((-1,) + (1,) * (a.ndim - 1)), a, b)
            new, y = jax.tree.map(keep, new, carry), keep(y, jnp.zeros_like(y))
        carry = new
        ys.append(y)
    return carry, jnp.stack(ys, axis=1)


def _grads(run, params, carry, xs, ct):
    """(ys, d <ys, ct> / d (params, carry, xs)) of run(params, carry, xs) -> (carry, ys)."""
    loss = lambda *a: jnp.vdot(run(*a)[1], ct)  # noqa: E731
    return run(params, carry, xs)[1], jax.grad(loss, argnums=(0, 1, 2))(params, carry, xs)


def _loop_inputs(cell, seed=0):
    params, carry, _ = _setup(cell, seed)
    rng = np.random.default_rng(seed + 1)
    xs = rng.standard_normal((B, T, *FRAME)).astype(np.float32)
    ct = rng.standard_normal((B, T, *cell.output_shape(FRAME))).astype(np.float32)
    return params, carry, xs, ct


def _assert_trees_close(a, b, tol=1e-5):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(x, y, rtol=tol, atol=tol)


@pytest.mark.parametrize("kind", [  # the loop options are generic: one cell by default
    "st_lstm", pytest.param("causal_lstm", marks=pytest.mark.slow)])
def test_truncation_equals_a_stop_gradient_loop(kind):
    cell = CONTRACT_CASES[kind]("float32")

    @jax.jit
    def all_three(params, carry, xs, ct):
        return (_grads(functools.partial(unroll, cell, truncation=2), params, carry, xs, ct),
                _grads(functools.partial(_loop, cell, truncation=2), params, carry, xs, ct),
                _grads(functools.partial(unroll, cell), params, carry, xs, ct))

    truncated, loop, full = all_three(*_loop_inputs(cell))
    _assert_trees_close(truncated, loop)
    # ...and the cut is real: full BPTT's gradient differs (not only far below 1e-5).
    d_params = [np.max(np.abs(a - b)) for a, b in zip(jax.tree.leaves(truncated[1][0]),
                                                       jax.tree.leaves(full[1][0]))]
    assert max(d_params) > 1e-3, "truncation=2 did not change the gradient"


@pytest.mark.parametrize("kind", [  # the loop options are generic: one cell by default
    "st_lstm", pytest.param("causal_lstm", marks=pytest.mark.slow)])
def test_remat_and_mask_equal_a_masked_loop(kind):
    cell = CONTRACT_CASES[kind]("float32")
    mask = np.array([[True, True, False, True], [True, False, False, True]])

    @jax.jit
    def both(params, carry, xs, ct):
        return (_grads(functools.partial(unroll, cell, mask=mask, remat=True),
                       params, carry, xs, ct),
                _grads(functools.partial(_loop, cell, mask=mask), params, carry, xs, ct))

    ours, loop = both(*_loop_inputs(cell))
    _assert_trees_close(ours, loop)


# -- hyper-parameter checks -------------------------------------------------------------------

@pytest.mark.parametrize("kind,hparams,field", [
    ("st_lstm", dict(features=(4, 4), num_layers=3), "features"),
    ("st_lstm", dict(features=[4, 4], num_layers=2), "features"),
    ("st_lstm", dict(features=0), "features"),
    ("st_lstm", dict(num_layers=0), "num_layers"),
    ("st_lstm", dict(kernel_size=(3, 0)), "kernel_size"),
    ("st_lstm", dict(kernel_size=(3,)), "kernel_size"),
    ("st_lstm", dict(kernel_init="zeros"), "kernel_init"),
    ("st_lstm", dict(features=(4, 8), num_layers=2, decoupling=True), "decoupling"),
    ("causal_lstm", dict(num_layers=1), "num_layers"),
])
def test_bad_hyper_parameters_name_the_field(kind, hparams, field):
    with pytest.raises(ValueError, match=field):
        cells.get(kind, **hparams)


def test_step_with_decoupling_needs_the_adapter():
    cell = cells.get("st_lstm", features=3, num_layers=2, kernel_size=3)
    params, carry, x = _setup(cell)
    assert "adapter" not in params
    with pytest.raises(ValueError, match="decoupling=True"):
        cell.step_with_decoupling(params, carry, x)


def test_registered_by_name_with_the_moving_mnist_defaults():
    for kind, cls in (("st_lstm", cells.STLSTMCell), ("causal_lstm", cells.CausalLSTMCell)):
        cell = cells.get(kind)
        assert type(cell) is cls
        assert (cell.widths, cell.kernel_size) == ((64,) * 4, 5)
        with pytest.raises(ValueError, match="input_shape"):
            cell.init(prng_key(0), (16, 16))


# -- the documented parameter layout --------------------------------------------------------

def _shapes(tree):
    return jax.tree.map(lambda a: tuple(a.shape), tree)


def _init(cell):
    """cell.init in one compilation (eagerly, every initializer would compile on its own)."""
    return jax.jit(cell.init, static_argnums=1)(prng_key(0), FRAME)


def test_st_lstm_parameter_layout_is_the_documented_one():
    # C = 2, k = 3, F = (3, 2), F_M = F_1 = 3.
    cell = cells.get("st_lstm", features=(3, 2), num_layers=2, kernel_size=3, forget_bias=0.7)
    params = _init(cell)
    assert _shapes(params) == {"layers": (
        {"w_x": (3, 3, 2, 21), "b": (21,), "w_h": (3, 3, 3, 12), "w_m": (3, 3, 3, 9),
         "w_o": (3, 3, 6, 3), "w_last": (6, 3)},
        {"w_x": (3, 3, 3, 17), "b": (17,), "w_h": (3, 3, 2, 8), "w_m": (3, 3, 3, 9),
         "w_o": (3, 3, 5, 2), "w_last": (5, 2)})}
    # Bias blocks i, f, g, o | i', f', g': forget_bias on f and f' only.
    expected = np.zeros(17, np.float32)
    expected[2:4] = expected[8 + 3:8 + 6] = 0.7
    np.testing.assert_array_equal(params["layers"][1]["b"], expected)


def test_causal_lstm_parameter_layout_is_the_documented_one():
    # C = 2, k = 3, F = (3, 2): the bottom layer's M input has F_L = 2 channels.
    cell = cells.get("causal_lstm", features=(3, 2), num_layers=2, kernel_size=3,
                     forget_bias=0.7, decoupling=False)
    params = _init(cell)
    assert _shapes(params) == {"layers": (
        {"w_x": (3, 3, 2, 21), "b": (21,), "w_h": (3, 3, 3, 12), "w_c": (3, 3, 3, 9),
         "w_m": (3, 3, 2, 9), "w_cm": (3, 3, 3, 12), "w_om": (3, 3, 3, 3), "w_last": (6, 3)},
        {"w_x": (3, 3, 3, 14), "b": (14,), "w_h": (3, 3, 2, 8), "w_c": (3, 3, 2, 6),
         "w_m": (3, 3, 3, 6), "w_cm": (3, 3, 2, 8), "w_om": (3, 3, 2, 2), "w_last": (4, 2)}),
        "ghu": {"w_x": (3, 3, 3, 6), "w_z": (3, 3, 3, 6)}}
    expected = np.zeros(21, np.float32)
    expected[3:6] = expected[15:18] = 0.7
    np.testing.assert_array_equal(params["layers"][0]["b"], expected)
    with_adapter = dataclasses.replace(cell, features=3, decoupling=True)
    adapter = jax.eval_shape(lambda: with_adapter.init(prng_key(0), FRAME))["adapter"]
    assert adapter.shape == (3, 3)
