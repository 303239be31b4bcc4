"""rnnvision.interop: our lstm / gru against torch.nn.LSTM / GRU with the same weights."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install 'rnnvision[torch]')")

from rnnvision import cells, interop  # noqa: E402
from rnnvision.recurrence import unroll  # noqa: E402

B, T, I, H = 3, 7, 5, 4
TORCH_CLASS = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}


def _torch_case(kind, batch_first, bias, seed=0):
    """A random torch module, inputs (B, T, I), initial state and loss weights (NumPy)."""
    torch.manual_seed(seed)
    module = TORCH_CLASS[kind](I, H, bias=bias, batch_first=batch_first)
    rng = np.random.default_rng(seed)
    data = {"xs": rng.standard_normal((B, T, I)), "h0": rng.standard_normal((1, B, H)),
            "c0": rng.standard_normal((1, B, H)), "w_ys": rng.standard_normal((B, T, H)),
            "w_h": rng.standard_normal((B, H)), "w_c": rng.standard_normal((B, H))}
    return module, {k: v.astype(np.float32) for k, v in data.items()}


def _torch_state(data, kind):
    """The initial state as torch takes it: (h0, c0) for LSTM, h0 for GRU, each (1, B, H)."""
    h0, c0 = torch.tensor(data["h0"]), torch.tensor(data["c0"])
    return (h0, c0) if kind == "lstm" else h0


def _run_torch(module, data, kind):
    """torch's outputs (B, T, H), final (h, c) and the gradients of the loss below."""
    xs = torch.tensor(data["xs"], requires_grad=True)
    h0 = torch.tensor(data["h0"], requires_grad=True)
    c0 = torch.tensor(data["c0"], requires_grad=True)
    inputs = xs if module.batch_first else xs.transpose(0, 1)
    out, state = module(inputs, (h0, c0) if kind == "lstm" else h0)
    ys = out if module.batch_first else out.transpose(0, 1)
    h_n, c_n = state if kind == "lstm" else (state, None)
    loss = (ys * torch.tensor(data["w_ys"])).sum() + (h_n[0] * torch.tensor(data["w_h"])).sum()
    if kind == "lstm":
        loss = loss + (c_n[0] * torch.tensor(data["w_c"])).sum()
    loss.backward()
    grads = {name: p.grad.numpy() for name, p in module.named_parameters()}
    grads.update(xs=xs.grad.numpy(), h0=h0.grad.numpy()[0],
                 c0=c0.grad.numpy()[0] if kind == "lstm" else None)
    return ys.detach().numpy(), h_n.detach().numpy()[0], grads


@functools.partial(jax.jit, static_argnums=0)
def _run_ours(cell, params, carry, xs, w_ys, w_h, w_c):
    """(ys, final carry), and the gradients of the same loss w.r.t. (params, carry, xs)."""
    def loss(params, carry, xs):
        final, ys = unroll(cell, params, carry, xs)
        h = final.h if isinstance(final, cells.LSTMCarry) else final
        value = jnp.sum(ys * w_ys) + jnp.sum(h * w_h)
        if isinstance(final, cells.LSTMCarry):
            value += jnp.sum(final.c * w_c)
        return value, (ys, final)

    (_, outputs), grads = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(params, carry, xs)
    return outputs, grads


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_outputs_and_gradients_agree_with_torch(kind, batch_first, bias):
    module, data = _torch_case(kind, batch_first, bias)
    cell = cells.get(kind, hidden_size=H)
    params = interop.from_torch(cell, module)
    carry = interop.carry_from_torch(cell, _torch_state(data, kind))
    (ys, final), (g_params, g_carry, g_xs) = _run_ours(
        cell, params, carry, data["xs"], data["w_ys"], data["w_h"], data["w_c"])
    ys_torch, h_torch, g = _run_torch(module, data, kind)

    np.testing.assert_allclose(ys, ys_torch, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(final.h if kind == "lstm" else final, h_torch, atol=1e-5, rtol=1e-5)
    close = functools.partial(np.testing.assert_allclose, atol=1e-4, rtol=1e-4)
    close(g_xs, g["xs"])
    # torch's gradients in our layout: transposed weights; a summed bias gets the
    # same gradient as each of its two torch terms.
    close(g_params["w_x"], g["weight_ih_l0"].T)
    close(g_params["w_h"], g["weight_hh_l0"].T)
    if kind == "lstm":
        close(g_carry.h, g["h0"])
        close(g_carry.c, g["c0"])
        if bias:
            close(g_params["b"], g["bias_ih_l0"])
            close(g_params["b"], g["bias_hh_l0"])
    else:
        close(g_carry, g["h0"])
        if bias:
            close(g_params["b_x"], g["bias_ih_l0"])
            close(g_params["b_h"], g["bias_hh_l0"])
    if not bias:
        assert not any(np.any(params[k]) for k in params if k.startswith("b"))


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_round_trip_reproduces_the_module(kind, batch_first):
    module, data = _torch_case(kind, batch_first, bias=True, seed=1)
    cell = cells.get(kind, hidden_size=H)
    again = interop.to_torch(cell, interop.from_torch(cell, module), batch_first=batch_first)
    assert type(again) is type(module) and again.batch_first == batch_first
    xs = torch.tensor(data["xs"] if batch_first else data["xs"].transpose(1, 0, 2))
    state = _torch_state(data, kind)
    with torch.no_grad():
        for a, b in zip(jax.tree.leaves(module(xs, state)), jax.tree.leaves(again(xs, state))):
            np.testing.assert_allclose(b.numpy(), a.numpy(), atol=1e-6)
    if kind == "lstm":  # the whole bias goes to bias_ih
        assert not torch.any(again.bias_hh_l0)
    round_trip = interop.carry_to_torch(cell, interop.carry_from_torch(cell, state))
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(round_trip)):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.parametrize("module, error, match", [
    (lambda: torch.nn.LSTM(I, H, num_layers=2), ValueError, "num_layers"),
    (lambda: torch.nn.LSTM(I, H, bidirectional=True), ValueError, "bidirectional"),
    (lambda: torch.nn.LSTM(I, H + 1, proj_size=H), ValueError, "proj_size"),
    (lambda: torch.nn.LSTM(I, H + 2), ValueError, "hidden_size"),
    (lambda: torch.nn.GRU(I, H), TypeError, "torch.nn.LSTM"),
])
def test_from_torch_rejects_modules_that_do_not_map(module, error, match):
    with pytest.raises(error, match=match):
        interop.from_torch(cells.get("lstm", hidden_size=H), module())


def test_cells_without_interop_and_bad_params_are_rejected():
    with pytest.raises(TypeError, match="no PyTorch interop for SimpleRNNCell"):
        interop.from_torch(cells.get("rnn", hidden_size=H), torch.nn.RNN(I, H))
    with pytest.raises(TypeError, match="LSTMCell <-> torch.nn.LSTM"):
        interop.to_torch(cells.get("rnn", hidden_size=H), {})
    gru = cells.get("gru", hidden_size=H)
    params = interop.from_torch(gru, torch.nn.GRU(I, H))
    with pytest.raises(ValueError, match="must have shapes"):
        interop.to_torch(cells.get("gru", hidden_size=H + 1), params)
    with pytest.raises(ValueError, match="must have shapes"):
        interop.to_torch(gru, {**params, "b_h": params["b_h"][:-1]})
