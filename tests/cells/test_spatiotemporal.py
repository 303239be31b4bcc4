"""The shared pieces of st_lstm and causal_lstm (rnnvision/cells/spatiotemporal.py).

The spatial cosine and the decoupling term on their own against float64 PyTorch
references (any batch dims; the 1e-12 norm floor); the hyper-parameter and shape
checks with their full messages; the carry layout of stacks of unequal widths; the
layer wiring of a four-layer stack, followed by hand; the dtype policy (float32 under
jax_enable_x64, bfloat16 convolution operands); and init's key scheme (every kernel
from its own subkey).

(The cells' maths is compared with a PyTorch re-implementation in
test_predrnn_cells.py and followed by hand in test_predrnn_memory_flow.py.)
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as TF

from rnnvision import cells
from rnnvision.cells import base
from rnnvision.cells.spatiotemporal import decoupling_term, spatial_cosine


def _torch_spatial_cosine(a, b):
    """Per channel: <a / max(|a|, 1e-12), b / max(|b|, 1e-12)> over (H, W), the norm over
    (H, W), in float64 with torch's F.normalize (its default eps is the 1e-12 floor)."""
    def unit(v):
        v = torch.tensor(np.asarray(v, np.float64))
        flat = torch.movedim(v, -1, -3).flatten(-2)  # (*B, F, H * W)
        return TF.normalize(flat, dim=-1)
    return (unit(a) * unit(b)).sum(-1).numpy()


@pytest.mark.parametrize("lead", [(), (2,), (2, 3)], ids=["no-batch", "B", "B1-B2"])
def test_spatial_cosine_matches_torch_for_any_batch_dims(lead):
    """a, b (*B, H, W, F) -> (*B, F): the sum runs over exactly H and W, for any *B."""
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((*lead, 4, 5, 3)).astype(np.float32) for _ in "ab")
    b[..., 0] = 2.0 * a[..., 0] + 0.1 * b[..., 0]  # one channel with cosine near 1
    out = np.asarray(spatial_cosine(a, b))
    assert out.shape == (*lead, 3)
    np.testing.assert_allclose(out, _torch_spatial_cosine(a, b), rtol=1e-5, atol=1e-6)


def test_spatial_cosine_floors_the_norm_at_1e_12_like_f_normalize():
    """Channels of norm ~1 (cosine as usual), ~1e-7 (still above the floor: the cosine
    of the directions, whatever the scale), ~1e-13 (below it: v / 1e-12, so the
    result shrinks by |a| |b| / 1e-24) and exactly 0 (cosine 0, not NaN)."""
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((2, 2, 4, 5, 4))
    a[..., 1] *= 1e-7
    b[..., 1] *= 1e-7
    a[..., 2] *= 1e-14   # |a| ~ 4e-14 < 1e-12
    b[..., 2] *= 1e-13
    a[..., 3] = 0.0
    a, b = a.astype(np.float32), b.astype(np.float32)
    out = np.asarray(spatial_cosine(a, b))
    expected = _torch_spatial_cosine(a, b)
    # the floor is what makes channel 2 small: the plain cosine of its directions is O(0.1).
    plain = _torch_spatial_cosine(1e14 * a[..., 2:3], 1e13 * b[..., 2:3])[:, 0]
    assert np.all(np.abs(expected[:, 2]) < 0.05 * np.abs(plain))
    assert np.all(out[:, 3] == 0.0)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-7)


def _torch_decoupling_term(increments, adapter):
    """PredRNN-V2's term from its definition: mean over layers and channels of
    |cos_{H,W}(W_a ΔC, W_a ΔM)|, W_a a 1x1 map on the channels (float64)."""
    a = torch.tensor(np.asarray(adapter, np.float64))
    per_layer = []
    for dc, dm in increments:
        adapted = [torch.tensor(np.asarray(d, np.float64)) @ a for d in (dc, dm)]
        cos = torch.tensor(_torch_spatial_cosine(*(t.numpy() for t in adapted)))
        per_layer.append(cos.abs().mean(dim=-1))
    return torch.stack(per_layer).mean(dim=0).numpy()


@pytest.mark.parametrize("lead", [(), (2,), (2, 3)], ids=["no-batch", "B", "B1-B2"])
def test_decoupling_term_matches_its_definition_for_any_batch_dims(lead):
    """2 layers of (ΔC, ΔM), each (*B, H, W, F) -> the term (*B,): the channel mean over
    exactly the last axis, the layer mean over the layers, for any *B."""
    rng = np.random.default_rng(2)
    increments = [tuple(rng.standard_normal((*lead, 4, 5, 3)).astype(np.float32) for _ in "cm")
                  for _ in range(2)]
    adapter = rng.standard_normal((3, 3)).astype(np.float32)
    matmul = cells.get("st_lstm", features=3, num_layers=2).matmul
    term = np.asarray(decoupling_term(increments, adapter, matmul))
    assert term.shape == lead
    np.testing.assert_allclose(term, _torch_decoupling_term(increments, adapter),
                               rtol=1e-5, atol=1e-6)


_ALLOWED_INITS = "['glorot_uniform', 'lecun_normal', 'normal', 'orthogonal']"

# Each message in full: the field, the value as given, and what is allowed.
BAD_HPARAMS = [
    ("st_lstm", dict(num_layers=0), "num_layers=0 must be a positive integer"),
    ("st_lstm", dict(num_layers=True), "num_layers=True must be a positive integer"),
    ("causal_lstm", dict(num_layers=1), "num_layers=1: CausalLSTMCell needs >= 2 layers"),
    ("st_lstm", dict(features=(4, 4), num_layers=3),
     "features=(4, 4) must have one entry per layer (num_layers=3)"),
    ("st_lstm", dict(features=(4, 0), num_layers=2), "features=0 must be a positive integer"),
    ("st_lstm", dict(features=[4, 4], num_layers=2),
     "features=[4, 4] must be an int or a tuple (a cell is hashable: no lists)"),
    ("st_lstm", dict(features=0), "features=0 must be a positive integer"),
    ("st_lstm", dict(kernel_size=(3,)), "kernel_size=(3,) must be an int or (kh, kw)"),
    ("st_lstm", dict(kernel_size=(3, 3, 3)), "kernel_size=(3, 3, 3) must be an int or (kh, kw)"),
    ("st_lstm", dict(kernel_size=(3, 0)), "kernel_size=0 must be a positive integer"),
    ("causal_lstm", dict(kernel_size=-1), "kernel_size=-1 must be a positive integer"),
    ("st_lstm", dict(kernel_init="zeros"),
     f"kernel_init='zeros' is not a known initializer; allowed: {_ALLOWED_INITS}"),
    ("st_lstm", dict(decoupling=1), "decoupling=1 must be True or False"),
    ("st_lstm", dict(features=(4, 8), num_layers=2, decoupling=True),
     "decoupling=True needs equal features in every layer (the adapter is shared); "
     "got features=(4, 8)"),
]


@pytest.mark.parametrize("kind,hparams,message", BAD_HPARAMS,
                         ids=[f"{k}-{'-'.join(h)}-{i}" for i, (k, h, _) in enumerate(BAD_HPARAMS)])
def test_bad_hyper_parameters_raise_the_full_message(kind, hparams, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        cells.get(kind, **hparams)


@pytest.mark.parametrize("kind", ["st_lstm", "causal_lstm"])
def test_good_hyper_parameters_at_the_limits_are_accepted(kind):
    """The smallest legal stack, tuple widths of the right length, (kh, kw) kernels."""
    min_layers = 1 if kind == "st_lstm" else 2
    cell = cells.get(kind, features=(1,) * min_layers, num_layers=min_layers, kernel_size=(1, 2))
    assert cell.widths == (1,) * min_layers
    assert cells.get(kind, features=2, num_layers=min_layers, decoupling=True).widths == (
        (2,) * min_layers)


@pytest.mark.parametrize("kind,name", [("st_lstm", "STLSTMCell"),
                                       ("causal_lstm", "CausalLSTMCell")])
def test_input_errors_name_the_cell_and_the_problem(kind, name):
    cell = cells.get(kind, features=3, num_layers=2, kernel_size=3)
    with pytest.raises(ValueError, match=f"^{re.escape(name)} takes \\(H, W, C\\) frames; got "
                                         r"input_shape=\(4, 5\)$"):
        cell.init(None, (4, 5))
    with pytest.raises(ValueError, match=f"^{re.escape(name)} takes x_shape \\(\\*B, H, W, C\\); "
                                         r"got \(4, 5, 2\)$"):
        cell.initial_carry(None, (4, 5, 2))
    with pytest.raises(ValueError, match=f"^{re.escape(name)}.step_with_decoupling needs "
                                         r"decoupling=True \(the adapter is created only then\); "
                                         r"got decoupling=False$"):
        cell.step_with_decoupling(None, None, None)


@pytest.mark.parametrize("kind", ["st_lstm", "causal_lstm"])
def test_carry_layout_follows_the_documented_widths(kind):
    """Three layers of different widths F = (2, 3, 4) and two batch dims: C^l, H^l have
    F_l channels; M has F_1 (st_lstm) or F_L (causal_lstm) channels; Z has F_1; one step
    keeps that layout and returns the top layer's H (F_L channels)."""
    cell = cells.get(kind, features=(2, 3, 4), num_layers=3, kernel_size=3)
    lead, frame = (2, 3), (4, 5, 2)
    carry = cell.initial_carry(None, (*lead, *frame))
    expected = {"c": [(*lead, 4, 5, f) for f in (2, 3, 4)],
                "h": [(*lead, 4, 5, f) for f in (2, 3, 4)],
                "m": (*lead, 4, 5, 2 if kind == "st_lstm" else 4)}
    if kind == "causal_lstm":
        expected["z"] = (*lead, 4, 5, 2)
    got = {name: ([a.shape for a in v] if isinstance(v, tuple) else v.shape)
           for name, v in carry._asdict().items()}
    assert got == expected
    for leaf in jax.tree.leaves(carry):
        assert leaf.dtype == np.float32 and not np.any(np.asarray(leaf))
    params = jax.eval_shape(lambda k: cell.init(k, frame), jax.random.key(0))
    new, y = jax.eval_shape(cell.step, params, carry,
                            jax.ShapeDtypeStruct((*lead, *frame), np.float32))
    assert jax.tree.map(lambda a: a.shape, new) == jax.tree.map(lambda a: a.shape, carry)
    assert y.shape == (*lead, 4, 5, 4)


@pytest.mark.parametrize("kind", ["st_lstm", "causal_lstm"])
def test_each_layer_reads_the_layer_below_in_a_four_layer_stack(kind):
    """Followed by hand, as in test_predrnn_memory_flow.py: F = 1, every kernel zero but the
    centre tap of W_xg (so a uniform frame stays uniform), biases i = +30, f = -30 (C = g =
    tanh(X)), i' = f' = -30 (M stays 0), o = +30 (o = 1), W_1x1 reading C only: so
    H^l = tanh(tanh(X^l)). Inputs: X^1 = x, X^l = H^{l-1}, except causal_lstm's layer 2,
    which reads the highway Z = S P + (1 - S) Z_{-1} with P = tanh(H^1) (W_px = 1, the
    rest 0: S = 1/2) from Z_{-1} = 0. Four layers, so layer 4 reading H^2 would show."""
    cell = cells.get(kind, features=1, num_layers=4, kernel_size=3)
    frame = (3, 3, 1)
    shapes = jax.eval_shape(lambda k: cell.init(k, frame), jax.random.key(0))
    params = jax.tree.map(lambda s: np.zeros(s.shape, np.float32), shapes)
    for layer in params["layers"]:
        layer["b"][:] = (30.0, -30.0, 0.0, 30.0, -30.0, -30.0, 0.0)  # i f g o | i' f' g'
        layer["w_x"][1, 1, 0, 2] = 1.0
        layer["w_last"][0, 0] = 1.0  # rows [C, M]
    if kind == "causal_lstm":
        params["ghu"]["w_x"][1, 1, 0, 0] = 1.0  # blocks P, S
    carry = cell.initial_carry(params, (1, *frame))
    new, y = jax.jit(cell.step)(params, carry, np.full((1, *frame), 0.7, np.float32))

    th = np.tanh
    expected, x = [], 0.7
    for l in range(4):
        if kind == "causal_lstm" and l == 1:
            x = th(expected[0]) / 2  # Z_t
        expected.append(th(th(x)))
        x = expected[-1]
    for l in range(4):
        np.testing.assert_allclose(new.h[l], expected[l], atol=1e-6, err_msg=f"H^{l + 1}")
    np.testing.assert_allclose(y, expected[3], atol=1e-6)
    np.testing.assert_allclose(new.m, 0.0, atol=1e-6)


@pytest.mark.parametrize("kind", ["st_lstm", "causal_lstm"])
def test_params_carry_output_and_term_stay_float32_under_x64(kind):
    """The dtype policy with jax_enable_x64 on (where JAX's defaults turn float64): every
    parameter (adapter included), the carry before and after a step, y and the
    decoupling term are float32. Shapes only (jax.eval_shape), nothing is compiled."""
    cell = cells.get(kind, features=2, num_layers=2, kernel_size=3, decoupling=True)
    frame = (4, 5, 2)
    with jax.enable_x64(True):
        params = jax.eval_shape(lambda k: cell.init(k, frame), jax.random.key(0))
        x = jax.ShapeDtypeStruct((2, *frame), np.float32)
        carry = jax.eval_shape(lambda p: cell.initial_carry(p, x.shape), params)
        out = jax.eval_shape(lambda p, c, x: cell.step_with_decoupling(
            p, c, cell.project_inputs(p, x)), params, carry, x)
    for what, tree in (("params", params), ("carry", carry), ("(new carry, y, term)", out)):
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
            assert leaf.dtype == np.float32, f"{what}{jax.tree_util.keystr(path)} is {leaf.dtype}"


# The kernels of each parameter dict in the documented order (b is not random).
_KERNELS = {"st_lstm": ("w_x", "w_h", "w_m", "w_o", "w_last"),
            "causal_lstm": ("w_x", "w_h", "w_c", "w_m", "w_cm", "w_om", "w_last")}


def _scheme_keys(kind, num_layers, key):
    """{kernel path: its key's data} by the key scheme: split(key, L + #extras) gives one
    subkey per layer, then (causal_lstm) the GHU's, then the adapter's; each parameter
    dict splits its subkey into one key per kernel, in the documented order."""
    extras = 1 if kind == "causal_lstm" else 0
    keys = jax.random.split(key, num_layers + extras + 1)

    def per_kernel(k, prefix, names):
        return {f"{prefix}['{n}']": np.asarray(jax.random.key_data(sub)).tobytes()
                for sub, n in zip(jax.random.split(k, len(names)), names)}

    out = {}
    for l in range(num_layers):
        out.update(per_kernel(keys[l], f"['layers'][{l}]", _KERNELS[kind]))
    if extras:
        out.update(per_kernel(keys[num_layers], "['ghu']", ("w_x", "w_z")))
    out.update(per_kernel(keys[-1], "", ("adapter",)))
    return out


@pytest.mark.parametrize("kind", ["st_lstm", "causal_lstm"])
def test_init_draws_every_kernel_from_its_own_subkey(kind, monkeypatch):
    """Three layers, decoupling on (GHU and adapter present). A recording initializer
    stands in for kernel_init: each kernel comes back filled with the number of the key
    it was drawn from. Every kernel must get its own key (two kernels from one key
    would be equal, or, for other shapes, share their leading values), namely the
    key of the scheme in `_scheme_keys` (so a seed reproduces its run)."""
    seen = []

    def recording():
        def init(key, shape, dtype):
            seen.append(np.asarray(jax.random.key_data(key)).tobytes())
            return np.full(shape, len(seen) - 1, np.float32)
        return init

    monkeypatch.setitem(base._INITIALIZERS, "recording", recording)
    cell = cells.get(kind, features=2, num_layers=3, kernel_size=3, decoupling=True,
                     kernel_init="recording")
    key = jax.random.key(0)
    params = cell.init(key, (4, 5, 2))
    used = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        name = jax.tree_util.keystr(path)
        if not name.endswith("['b']"):
            index = np.unique(np.asarray(leaf))
            assert index.size == 1, name
            used[name] = seen[int(index[0])]
    assert len(seen) == len(used), "an initializer call that no kernel kept"
    assert len(set(used.values())) == len(used), "two kernels drawn from one key"
    assert used == _scheme_keys(kind, 3, key)


def test_bfloat16_convolutions_take_bfloat16_operands():
    """compute_dtype="bfloat16": the input convolution W_x * x + b rounds x and W_x to
    bfloat16 and accumulates in float32, i.e. equals the exact ("SAME", float64)
    convolution of the rounded operands to float32 rounding, and is not the float32
    convolution (which differs by ~2^-9 relative)."""
    cell = cells.get("st_lstm", features=3, num_layers=1, kernel_size=3, compute_dtype="bfloat16")
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 4, 5, 2)).astype(np.float32)
    w = rng.standard_normal((3, 3, 2, 21)).astype(np.float32)
    b = rng.standard_normal(21).astype(np.float32)
    params = {"layers": ({"w_x": w, "b": b},)}
    out = np.asarray(cell.project_inputs(params, x))
    assert out.dtype == np.float32

    def exact(x, w):
        t = lambda a: torch.tensor(np.asarray(a, np.float64))  # noqa: E731
        y = TF.conv2d(t(x).permute(0, 3, 1, 2), t(w).permute(3, 2, 0, 1), padding=1)
        return y.permute(0, 2, 3, 1).numpy() + b

    bf16 = lambda a: np.asarray(a, jnp.bfloat16).astype(np.float64)  # noqa: E731
    rounded, unrounded = exact(bf16(x), bf16(w)), exact(x, w)
    np.testing.assert_allclose(out, rounded, rtol=1e-5, atol=1e-5)
    assert np.max(np.abs(rounded - unrounded)) > 1e-3  # the test can tell the two apart


def test_a_single_layer_st_lstm_can_have_the_adapter():
    """num_layers=1 (st_lstm's minimum) with decoupling=True: the adapter is (F, F) and
    step_with_decoupling returns one term per example."""
    cell = cells.get("st_lstm", features=3, num_layers=1, kernel_size=3, decoupling=True)
    params = jax.eval_shape(lambda k: cell.init(k, (4, 5, 2)), jax.random.key(0))
    assert params["adapter"].shape == (3, 3)
    x = jax.ShapeDtypeStruct((2, 4, 5, 2), np.float32)
    carry = cell.initial_carry(params, x.shape)
    _, y, term = jax.eval_shape(
        lambda p, c, x: cell.step_with_decoupling(p, c, cell.project_inputs(p, x)),
        params, carry, x)
    assert (y.shape, term.shape) == ((2, 4, 5, 3), (2,))
