"""The dense cells (rnn, lstm, gru) against PyTorch's own cells, on the cells' own code.

`rnnvision.recurrence.unroll` runs these three cells through a fused fast path
(rnnvision/fused) by default, which does not call the cell's `project_inputs` /
`step_projected`. So the comparisons here pin `impl="scan"` (the cell's own maths
inside `lax.scan`) next to `impl="fused"`, and call `cell.step` directly with other
batch layouts than (B, F): no batch dim and two batch dims (the contract: carry
(*batch, H), x (*batch, I)).

The references are torch.nn.GRU and torch.nn.{RNN,LSTM,GRU}Cell in float64 with
their default (non-zero) biases, our weights taken from them: W_x = weight_ih^T,
W_h = weight_hh^T, in torch's gate orders (lstm i, f, g, o; gru r, z, n).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install 'rnnvision[torch]')")

from rnnvision import cells  # noqa: E402
from rnnvision.cells.lstm import LSTMCarry  # noqa: E402
from rnnvision.recurrence import unroll  # noqa: E402

I, H = 3, 4  # I != H and 3H, 4H != H: a gate split on the wrong axis fails on shapes
B, T = 2, 5
REL_TOL = 1e-5  # float32 (ours) against float64 (torch), relative to the leaf's largest entry


def _assert_close(ours, reference, what):
    for k, (a, b) in enumerate(zip(ours, reference, strict=True)):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        assert a.shape == b.shape, f"{what}[{k}]: shape {a.shape} != torch's {b.shape}"
        err = float(np.max(np.abs(a - b))) / max(float(np.max(np.abs(b))), 1e-3)
        assert err < REL_TOL, f"{what}[{k}]: relative error {err:.2e} against torch"


def _f32(a):
    return jnp.asarray(np.asarray(a), jnp.float32)


@pytest.mark.parametrize("impl", ["scan", "fused"])
def test_gru_matches_torch_gru_with_separate_input_and_hidden_biases(impl):
    """r = σ(x W_ir + b_ir + h W_hr + b_hr), z likewise, n = tanh(x W_in + b_in + r (h W_hn
    + b_hn)), h' = (1 - z) n + z h: torch.nn.GRU with b_x = bias_ih, b_h = bias_hh (both
    non-zero and different, so each bias's sign and place count)."""
    torch.manual_seed(0)
    module = torch.nn.GRU(I, H, batch_first=True).double()
    rng = np.random.default_rng(0)
    xs, h0 = rng.standard_normal((B, T, I)), rng.standard_normal((B, H))
    w_ys, w_h = rng.standard_normal((B, T, H)), rng.standard_normal((B, H))

    xs_t, h0_t = (torch.tensor(a, requires_grad=True) for a in (xs, h0))
    ys_t, h_n = module(xs_t, h0_t[None])
    ((ys_t * torch.tensor(w_ys)).sum() + (h_n[0] * torch.tensor(w_h)).sum()).backward()
    g = {name: p.grad.numpy() for name, p in module.named_parameters()}

    with torch.no_grad():
        params = {"w_x": module.weight_ih_l0.numpy().T, "w_h": module.weight_hh_l0.numpy().T,
                  "b_x": module.bias_ih_l0.numpy(), "b_h": module.bias_hh_l0.numpy()}
    params = jax.tree.map(_f32, params)
    cell = cells.get("gru", hidden_size=H)

    def loss(params, xs, h0):
        h, ys = unroll(cell, params, h0, xs, impl=impl)
        return jnp.sum(ys * _f32(w_ys)) + jnp.sum(h * _f32(w_h)), (ys, h)

    (_, (ys, h)), (g_p, g_xs, g_h0) = jax.jit(jax.value_and_grad(loss, (0, 1, 2), has_aux=True))(
        params, _f32(xs), _f32(h0))
    _assert_close((ys, h), (ys_t.detach().numpy(), h_n[0].detach().numpy()), "(ys, h_T)")
    _assert_close((g_xs, g_h0), (xs_t.grad.numpy(), h0_t.grad.numpy()), "d/d(xs, h0)")
    _assert_close((g_p["w_x"], g_p["w_h"], g_p["b_x"], g_p["b_h"]),
                  (g["weight_ih_l0"].T, g["weight_hh_l0"].T, g["bias_ih_l0"], g["bias_hh_l0"]),
                  "d/d(w_x, w_h, b_x, b_h)")


def _torch_cell_and_params(name):
    """A float64 torch cell with default random weights, and our params taken from it."""
    torch.manual_seed(1)
    module = {"rnn": torch.nn.RNNCell, "lstm": torch.nn.LSTMCell,
              "gru": torch.nn.GRUCell}[name](I, H).double()
    with torch.no_grad():
        w = {"w_x": module.weight_ih.numpy().T, "w_h": module.weight_hh.numpy().T}
        b_ih, b_hh = module.bias_ih.numpy(), module.bias_hh.numpy()
    # rnn and lstm have one bias (the sum); gru keeps b_hn inside the reset product.
    biases = {"b_x": b_ih, "b_h": b_hh} if name == "gru" else {"b": b_ih + b_hh}
    return module, jax.tree.map(_f32, {**w, **biases})


@pytest.mark.parametrize("name", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("lead", [(), (2, 3)], ids=["no-batch-dim", "two-batch-dims"])
def test_step_with_any_batch_dims_matches_torch_cell(name, lead):
    """cell.step on x (*lead, I) and a carry (*lead, H), against torch's cell applied to the
    same rows flattened into one batch dim."""
    module, params = _torch_cell_and_params(name)
    cell = cells.get(name, hidden_size=H)
    rng = np.random.default_rng(2)
    x, h, c = (rng.standard_normal((*lead, n)) for n in (I, H, H))
    carry = LSTMCarry(c=_f32(c), h=_f32(h)) if name == "lstm" else _f32(h)
    new, y = cell.step(params, carry, _f32(x))

    flat = lambda a: torch.tensor(a.reshape(-1, a.shape[-1]))  # noqa: E731
    with torch.no_grad():
        if name == "lstm":
            h_t, c_t = module(flat(x), (flat(h), flat(c)))
            expected, ours = (h_t, c_t, h_t), (new.h, new.c, y)
        else:
            h_t = module(flat(x), flat(h))
            expected, ours = (h_t, h_t), (new, y)
    expected = [a.numpy().reshape((*lead, H)) for a in expected]
    _assert_close(ours, expected, f"{name} step with batch dims {lead}")
