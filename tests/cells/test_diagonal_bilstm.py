"""Diagonal BiLSTM: the skew, the cell contract, and the whole-image layer against a
per-pixel PyTorch loop written from the paper's equations (values and gradients).

The reference walks the image pixel by pixel, never skewing it: for direction d
(0: the image, 1: its mirror image) and pixel (i, j),
    z = x_ij K_is^d + b^d + h_{i-1,j} U_up^d + h_{i,j-1} U_left^d      (zero outside)
    c_ij = sigmoid(f) c_{i,j-1} + sigmoid(i) tanh(g),  h_ij = sigmoid(o) tanh(c_ij)
and the layer's output is h^0(i, j) + mirror(h^1)(i - 1, j).
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnvision import cells
from rnnvision.cells.diagonal_bilstm import skew, unskew
from rnnvision.models.pixel_rnn import diagonal_bilstm_layer
from rnnvision.recurrence import TimeLoop
from rnnvision.testing import check_cell, prng_key

torch = pytest.importorskip("torch")


def test_skew_moves_row_i_right_by_i_and_unskew_inverts_it():
    image = np.arange(1, 13).reshape(1, 3, 4, 1)
    want = np.array([[1, 2, 3, 4, 0, 0],
                     [0, 5, 6, 7, 8, 0],
                     [0, 0, 9, 10, 11, 12]])
    np.testing.assert_array_equal(np.asarray(skew(image))[0, :, :, 0], want)
    np.testing.assert_array_equal(unskew(skew(image)), image)
    tall = np.random.default_rng(0).integers(1, 9, (2, 2, 5, 2, 3))  # H > W, two leading dims
    assert skew(tall).shape == (2, 2, 5, 6, 3)
    np.testing.assert_array_equal(unskew(skew(tall)), tall)


@pytest.mark.parametrize("hparams, input_shape, gradients", [
    ({"features": 3}, (2, 4, 2), True),
    ({"features": 3, "channel_groups": 3, "mask": "A"}, (2, 4, 3), False),
])
def test_check_cell(hparams, input_shape, gradients):
    # The float64 finite-difference check runs once; the per-pixel reference below
    # checks the gradients of the whole layer, channel masks included.
    check_cell(cells.get("diagonal_bilstm", **hparams), input_shape, steps=4,
               check_gradients=gradients)


@pytest.mark.parametrize("hparams, field", [
    ({"features": 0}, "features"),
    ({"mask": "C"}, "mask"),
    ({"mask": "A"}, "mask='A' with channel_groups=1"),
    ({"features": 4, "channel_groups": 3}, "channel_groups"),
])
def test_bad_hparams_name_the_field(hparams, field):
    with pytest.raises(ValueError, match=field):
        cells.get("diagonal_bilstm", **hparams)


def test_init_checks_the_step_shape():
    cell = cells.get("diagonal_bilstm", features=3, channel_groups=3)
    with pytest.raises(ValueError, match=r"\(2, H, C\)"):
        cell.init(prng_key(0), (5, 3))
    with pytest.raises(ValueError, match="multiples"):
        cell.init(prng_key(0), (2, 5, 4))


@pytest.mark.parametrize("shape", [(3, 5, 2), (2, 5), (1, 2, 5, 2)])
def test_init_refuses_steps_that_are_not_both_directions_naming_the_shape(shape):
    cell = cells.get("diagonal_bilstm", features=3)
    message = ("diagonal_bilstm takes skewed columns of both directions, (2, H, C); "
               f"got input_shape={shape}")
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        cell.init(prng_key(0), shape)


def test_forget_bias_block_and_float32_params_and_carry_under_x64():
    """b (2, 4F): the forget block (second of i, f, g, o) of both directions starts at
    forget_bias, the others at 0; every parameter, the carry and the output stay float32
    with jax_enable_x64 on (where JAX's own defaults are float64)."""
    cell = cells.get("diagonal_bilstm", features=3, forget_bias=1.5)
    params = cell.init(prng_key(0), (2, 4, 2))
    assert {k: v.shape for k, v in params.items()} == {
        "w_x": (2, 2, 12), "w_h": (2, 6, 12), "b": (2, 12)}
    np.testing.assert_array_equal(params["b"], [[0.0] * 3 + [1.5] * 3 + [0.0] * 6] * 2)
    with jax.enable_x64(True):
        shapes = jax.eval_shape(lambda key: cell.init(key, (2, 4, 2)), jax.random.key(0))
        x = jax.ShapeDtypeStruct((3, 2, 4, 2), jnp.float32)
        carry = jax.eval_shape(lambda p: cell.initial_carry(p, x.shape), shapes)
        new_carry, y = jax.eval_shape(cell.step, shapes, carry, x)
    for path, leaf in jax.tree_util.tree_leaves_with_path((shapes, carry.c, carry.h,
                                                           new_carry.c, new_carry.h, y)):
        assert leaf.dtype == jnp.float32, f"{jax.tree_util.keystr(path)} is {leaf.dtype}"


_ALLOWED_INITS = "['glorot_uniform', 'lecun_normal', 'normal', 'orthogonal']"


@pytest.mark.parametrize("hparams, message", [
    ({"features": 0}, "features=0 must be a positive integer"),
    ({"channel_groups": 0}, "channel_groups=0 must be a positive integer"),
    ({"mask": "A"}, "mask='A' with channel_groups=1 shuts the whole 1x1 input kernel of "
                    "diagonal_bilstm; allowed: mask='B' or None (or mask='A' with "
                    "channel_groups > 1)"),
    ({"kernel_init": "zeros"},
     f"kernel_init='zeros' is not a known initializer; allowed: {_ALLOWED_INITS}"),
    ({"recurrent_init": "eye"},
     f"recurrent_init='eye' is not a known initializer; allowed: {_ALLOWED_INITS}"),
])
def test_bad_hparams_are_refused_with_the_exact_message(hparams, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        cells.get("diagonal_bilstm", **hparams)


def test_steps_with_no_or_two_batch_dims_equal_those_with_one():
    """x (*batch, 2, H, C): the carry and the outputs of 3 steps with batch () and
    (2, 3) are those of the same columns with one batch dim."""
    cell = cells.get("diagonal_bilstm", features=3)
    height, channels = 4, 2
    params = cell.init(prng_key(0), (2, height, channels))
    xs = np.random.default_rng(3).standard_normal((6, 3, 2, height, channels)).astype(np.float32)

    def run(xs):  # xs (*batch, steps, 2, H, C)
        carry = cell.initial_carry(params, xs[..., 0, :, :, :].shape)
        ys = []
        for t in range(xs.shape[-4]):
            carry, y = cell.step(params, carry, xs[..., t, :, :, :])
            ys.append(y)
        return carry, np.stack(ys, axis=-4)

    carry, ys = run(xs)
    carry0, ys0 = run(xs[0])
    np.testing.assert_allclose(ys0, ys[0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(carry0.c, carry.c[0], rtol=1e-6, atol=1e-6)
    assert carry0.column.shape == () and int(carry0.column) == 3
    carry23, ys23 = run(xs.reshape(2, 3, *xs.shape[1:]))
    assert ys23.shape == (2, 3, 3, 2, height, 3) and carry23.column.shape == (2, 3)
    np.testing.assert_allclose(ys23.reshape(ys.shape), ys, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(carry23.h.reshape(carry.h.shape), carry.h, rtol=1e-6, atol=1e-6)


def _reference_layer(x, w_x, w_h, b, groups):
    """The layer as a per-pixel loop in torch; x (B, H, W, C), parameters as the cell's."""
    batch, height, width, channels = x.shape
    f = w_h.shape[-1] // 4
    gate_group = (torch.arange(4 * f) % f) * groups // f
    in_group = torch.arange(channels) * groups // channels
    mask = (in_group[:, None] <= gate_group[None, :]).to(x.dtype)  # mask "B"
    out = torch.zeros(batch, height, width, f, dtype=x.dtype)
    for d in range(2):
        image = x if d == 0 else torch.flip(x, [2])
        h = [[torch.zeros(batch, f, dtype=x.dtype)] * (width + 1) for _ in range(height + 1)]
        c = [[torch.zeros(batch, f, dtype=x.dtype)] * (width + 1) for _ in range(height + 1)]
        for i in range(height):  # h[i + 1][j + 1] is pixel (i, j); row 0 / column 0 are outside
            for j in range(width):
                z = (image[:, i, j] @ (w_x[d] * mask) + b[d] + h[i][j + 1] @ w_h[d][:f]
                     + h[i + 1][j] @ w_h[d][f:])
                gi, gf, gg, go = torch.split(z, f, dim=-1)
                c[i + 1][j + 1] = (torch.sigmoid(gf) * c[i + 1][j]
                                   + torch.sigmoid(gi) * torch.tanh(gg))
                h[i + 1][j + 1] = torch.sigmoid(go) * torch.tanh(c[i + 1][j + 1])
        hd = torch.stack([torch.stack(row[1:], 1) for row in h[1:]], 1)  # (B, H, W, F)
        if d == 1:  # mirror back, then one row down
            hd = torch.flip(hd, [2])
            hd = torch.cat([torch.zeros_like(hd[:, :1]), hd[:, :-1]], 1)
        out = out + hd
    return out


@pytest.mark.parametrize("groups, shape", [(1, (2, 4, 5, 2)), (3, (1, 5, 3, 3))])
def test_layer_matches_a_per_pixel_loop_values_and_gradients(groups, shape):
    rng = np.random.default_rng(groups)
    cell = cells.get("diagonal_bilstm", features=3, channel_groups=groups,
                     compute_dtype="float64")
    c_in = shape[-1]
    params = {"w_x": rng.standard_normal((2, c_in, 12)), "w_h": rng.standard_normal((2, 6, 12)),
              "b": rng.standard_normal((2, 12))}
    x = rng.standard_normal(shape)
    cotangent = rng.standard_normal((*shape[:-1], 3))

    with jax.enable_x64(True):
        def loss(params, x):
            out = diagonal_bilstm_layer(cell, params, x, TimeLoop())
            return jnp.sum(out * cotangent), out

        params64 = jax.tree.map(jnp.asarray, params)
        (_, out), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(
            params64, jnp.asarray(x))

    tp = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    tx = torch.tensor(x, requires_grad=True)
    ref = _reference_layer(tx, tp["w_x"], tp["w_h"], tp["b"], groups)
    (ref * torch.tensor(cotangent)).sum().backward()

    np.testing.assert_allclose(out, ref.detach().numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(grads[1], tx.grad.numpy(), rtol=1e-9, atol=1e-10)
    for name in params:
        np.testing.assert_allclose(grads[0][name], tp[name].grad.numpy(), rtol=1e-9, atol=1e-10,
                                   err_msg=name)
