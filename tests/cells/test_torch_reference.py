"""Row LSTM, ConvLSTM and the tanh RNN against PyTorch references written from their equations.

Each reference below is built from the cell's docstring alone (`torch.nn.functional`
convolutions, weights moved to torch's layout, gates written out), runs in float64,
and is compared with `rnnvision.recurrence.unroll` of the cell in float32 over several
steps: the outputs, the final carry, and the gradients of one random linear function
of them with respect to the parameters, the inputs and the initial carry.

Shape legend: B batch, T steps, W row width, (H, W) image, C input channels,
F features (state channels), k kernel taps.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install 'rnnvision[torch]')")
F_torch = torch.nn.functional

from rnnvision import cells  # noqa: E402
from rnnvision.cells.lstm import LSTMCarry  # noqa: E402
from rnnvision.recurrence import unroll  # noqa: E402

B, T = 2, 4
# float32 (ours) against float64 (torch): worst error relative to the leaf's largest entry.
REL_TOL = 1e-5


# -- PyTorch references, channels first as torch wants them -------------------------

def _lstm_update(z, c):
    """z (B, 4F, ...) pre-activations in gate order i, f, g, o; c (B, F, ...) -> (c, h)."""
    i, f, g, o = z.chunk(4, dim=1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return c, torch.sigmoid(o) * torch.tanh(c)


def _same_pads(kernel):
    """"SAME" at stride 1: k - 1 zeros per dim, the odd one after (the XLA/TF rule)."""
    return [((k - 1) // 2, k - 1 - (k - 1) // 2) for k in kernel]


def _torch_pad(x, pads):
    """Zero-pads the trailing spatial dims of x (B, C, *spatial) by pads [(lo, hi), ...]."""
    flat = [p for lo_hi in reversed(pads) for p in lo_hi]  # F.pad lists the last dim first
    return F_torch.pad(x, flat)


def _row_taps(kernel_size, mask):
    """(k,) 0/1: which taps of K_is a pixel may use (docstring: "A" strictly left, "B" also itself)."""
    offsets = torch.arange(kernel_size) - kernel_size // 2  # tap j reads pixel w + offsets[j]
    if mask is None:
        return torch.ones(kernel_size, dtype=torch.float64)
    return (offsets < 0 if mask == "A" else offsets <= 0).to(torch.float64)


def _torch_row_lstm(p, xs, c0, h0, kernel_size, mask):
    """The Row LSTM from its docstring. p in our layout: w_x (k, C, 4F), w_h (k, F, 4F), b (4F,).

    xs (B, T, W, C), c0 and h0 (B, W, F) -> ys (B, T, W, F), c_T, h_T (B, W, F).
    """
    w_x = (p["w_x"] * _row_taps(kernel_size, mask)[:, None, None]).permute(2, 1, 0)  # (4F, C, k)
    w_h = p["w_h"].permute(2, 1, 0)
    pads = _same_pads((kernel_size,))
    c, h = c0.transpose(1, 2), h0.transpose(1, 2)  # (B, F, W)
    ys = []
    for t in range(xs.shape[1]):
        x = xs[:, t].transpose(1, 2)  # (B, C, W)
        z = (F_torch.conv1d(_torch_pad(x, pads), w_x) + F_torch.conv1d(_torch_pad(h, pads), w_h)
             + p["b"][None, :, None])
        c, h = _lstm_update(z, c)
        ys.append(h.transpose(1, 2))
    return torch.stack(ys, 1), c.transpose(1, 2), h.transpose(1, 2)


def _torch_conv_lstm(p, xs, c0, h0, kernel, padding):
    """The ConvLSTM from its docstring. p in our layout: w_x (kh, kw, C, 4F), w_h (kh, kw, F, 4F).

    The input convolution uses `padding` ("SAME" or "VALID"), the state one "SAME".
    xs (B, T, H, W, C), c0 and h0 (B, H', W', F) -> ys (B, T, H', W', F), c_T, h_T.
    """
    w_x, w_h = p["w_x"].permute(3, 2, 0, 1), p["w_h"].permute(3, 2, 0, 1)  # (4F, C, kh, kw)
    x_pads = _same_pads(kernel) if padding == "SAME" else [(0, 0), (0, 0)]
    c, h = c0.permute(0, 3, 1, 2), h0.permute(0, 3, 1, 2)  # (B, F, H', W')
    ys = []
    for t in range(xs.shape[1]):
        x = xs[:, t].permute(0, 3, 1, 2)
        z = (F_torch.conv2d(_torch_pad(x, x_pads), w_x)
             + F_torch.conv2d(_torch_pad(h, _same_pads(kernel)), w_h) + p["b"][None, :, None, None])
        c, h = _lstm_update(z, c)
        ys.append(h.permute(0, 2, 3, 1))
    return torch.stack(ys, 1), c.permute(0, 2, 3, 1), h.permute(0, 2, 3, 1)


# -- the comparison -----------------------------------------------------------------

def _random_case(param_shapes, x_shape, state_shape, seed):
    """Random params (every tap non-zero, masked or not), xs, c0, h0 and loss weights (float32)."""
    rng = np.random.default_rng(seed)
    normal = lambda shape, scale=1.0: (scale * rng.standard_normal(shape)).astype(np.float32)  # noqa: E731
    params = {name: normal(shape, 0.5) for name, shape in param_shapes.items()}
    data = {"xs": normal(x_shape), "c0": normal(state_shape), "h0": normal(state_shape)}
    weights = {"ys": normal((B, T, *state_shape[1:])), "c": normal(state_shape), "h": normal(state_shape)}
    return params, data, weights


@functools.partial(jax.jit, static_argnums=0)
def _ours(cell, params, data, weights):
    """(ys, c_T, h_T) of unroll, and the gradients of the weighted sum w.r.t. params, xs, c0, h0."""
    def loss(params, xs, c0, h0):
        final, ys = unroll(cell, params, LSTMCarry(c=c0, h=h0), xs)
        value = jnp.sum(ys * weights["ys"]) + jnp.sum(final.c * weights["c"]) + jnp.sum(final.h * weights["h"])
        return value, (ys, final.c, final.h)

    (_, outputs), grads = jax.value_and_grad(loss, argnums=(0, 1, 2, 3), has_aux=True)(
        params, data["xs"], data["c0"], data["h0"])
    return outputs, grads


def _reference(run, params, data, weights):
    """The same outputs and gradients from the float64 torch function `run(p, xs, c0, h0)`."""
    as_leaf = lambda a: torch.tensor(np.asarray(a, np.float64), requires_grad=True)  # noqa: E731
    p = {name: as_leaf(a) for name, a in params.items()}
    xs, c0, h0 = (as_leaf(data[k]) for k in ("xs", "c0", "h0"))
    ys, c, h = run(p, xs, c0, h0)
    w = {k: torch.tensor(v, dtype=torch.float64) for k, v in weights.items()}
    ((ys * w["ys"]).sum() + (c * w["c"]).sum() + (h * w["h"]).sum()).backward()
    outputs = tuple(a.detach().numpy() for a in (ys, c, h))
    grads = ({name: t.grad.numpy() for name, t in p.items()}, xs.grad.numpy(), c0.grad.numpy(),
             h0.grad.numpy())
    return outputs, grads


def _assert_close(ours, reference, what):
    ours, reference = jax.tree.leaves(ours), jax.tree.leaves(reference)
    assert len(ours) == len(reference)
    for i, (a, b) in enumerate(zip(ours, reference)):
        assert a.shape == b.shape, f"{what}[{i}]: shape {a.shape} != torch's {b.shape}"
        scale = max(float(np.max(np.abs(b))), 1e-3)
        err = float(np.max(np.abs(np.asarray(a, np.float64) - b))) / scale
        assert err < REL_TOL, f"{what}[{i}]: relative error {err:.2e} against torch"


def _compare(cell, run, params, data, weights):
    (outputs, grads) = _ours(cell, params, data, weights)
    ref_outputs, ref_grads = _reference(run, params, data, weights)
    _assert_close(outputs, ref_outputs, "(ys, c_T, h_T)")
    # params is a dict: both trees flatten in sorted key order (b, w_h, w_x).
    _assert_close(grads, ref_grads, "d/d(params, xs, c0, h0)")


ROW_CASES = [(mask, channels, 3) for mask in (None, "A", "B") for channels in (1, 3)] + [("A", 2, 5)]


@pytest.mark.parametrize("mask,channels,kernel_size", ROW_CASES,
                         ids=[f"mask{m}-C{c}-k{k}" for m, c, k in ROW_CASES])
def test_row_lstm_matches_torch(mask, channels, kernel_size):
    width, features = 6, 3
    cell = cells.get("row_lstm", features=features, kernel_size=kernel_size, mask=mask)
    params, data, weights = _random_case(
        {"w_x": (kernel_size, channels, 4 * features), "w_h": (kernel_size, features, 4 * features),
         "b": (4 * features,)},
        (B, T, width, channels), (B, width, features), seed=channels + kernel_size)
    run = functools.partial(_torch_row_lstm, kernel_size=kernel_size, mask=mask)
    _compare(cell, run, params, data, weights)


CONV_CASES = [((3, 3), "SAME"), ((3, 3), "VALID"), ((3, 2), "SAME"), ((2, 3), "VALID")]


@pytest.mark.parametrize("kernel,padding", CONV_CASES,
                         ids=[f"k{kh}x{kw}-{p}" for (kh, kw), p in CONV_CASES])
def test_conv_lstm_matches_torch(kernel, padding):
    (kh, kw), (height, width), channels, features = kernel, (5, 6), 2, 3
    out_hw = (height, width) if padding == "SAME" else (height - kh + 1, width - kw + 1)
    cell = cells.get("conv_lstm", features=features, kernel_size=kernel, padding=padding)
    params, data, weights = _random_case(
        {"w_x": (kh, kw, channels, 4 * features), "w_h": (kh, kw, features, 4 * features),
         "b": (4 * features,)},
        (B, T, height, width, channels), (B, *out_hw, features), seed=kh * 10 + kw)
    assert cell.initial_carry(params, (B, height, width, channels)).c.shape == (B, *out_hw, features)
    run = functools.partial(_torch_conv_lstm, kernel=kernel, padding=padding)
    _compare(cell, run, params, data, weights)


@pytest.mark.parametrize("impl", ["fused", "scan"])
def test_tanh_rnn_matches_torch_rnn(impl):
    """h_t = tanh(x_t W_x + h_{t-1} W_h + b) against torch.nn.RNN(nonlinearity="tanh"):
    W_x = weight_ih^T, W_h = weight_hh^T, b = bias_ih + bias_hh."""
    inputs, hidden = 3, 4
    torch.manual_seed(0)
    module = torch.nn.RNN(inputs, hidden, nonlinearity="tanh", batch_first=True).double()
    rng = np.random.default_rng(0)
    xs, h0 = rng.standard_normal((B, T + 1, inputs)), rng.standard_normal((B, hidden))
    w_ys, w_h = rng.standard_normal((B, T + 1, hidden)), rng.standard_normal((B, hidden))

    xs_t, h0_t = (torch.tensor(a, requires_grad=True) for a in (xs, h0))
    ys_t, h_n = module(xs_t, h0_t[None])
    ((ys_t * torch.tensor(w_ys)).sum() + (h_n[0] * torch.tensor(w_h)).sum()).backward()
    g = {name: p.grad.numpy() for name, p in module.named_parameters()}

    cell = cells.get("rnn", hidden_size=hidden)
    with torch.no_grad():
        params = {"w_x": module.weight_ih_l0.numpy().T, "w_h": module.weight_hh_l0.numpy().T,
                  "b": (module.bias_ih_l0 + module.bias_hh_l0).numpy()}
    params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), params)
    f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731

    def loss(params, xs, h0):
        h, ys = unroll(cell, params, h0, xs, impl=impl)
        return jnp.sum(ys * f32(w_ys)) + jnp.sum(h * f32(w_h)), (ys, h)

    (_, (ys, h)), (g_p, g_xs, g_h0) = jax.jit(jax.value_and_grad(loss, (0, 1, 2), has_aux=True))(
        params, f32(xs), f32(h0))
    _assert_close((ys, h), (ys_t.detach().numpy(), h_n[0].detach().numpy()), "(ys, h_T)")
    _assert_close((g_xs, g_h0), (xs_t.grad.numpy(), h0_t.grad.numpy()), "d/d(xs, h0)")
    _assert_close((g_p["w_x"], g_p["w_h"]), (g["weight_ih_l0"].T, g["weight_hh_l0"].T), "d/dW")
    # b stands for bias_ih + bias_hh: its gradient equals that of each.
    _assert_close((g_p["b"], g_p["b"]), (g["bias_ih_l0"], g["bias_hh_l0"]), "d/db")
