"""PixelRNN: causality from the exact Jacobian, the likelihood against direct
computations, and a loss that drops.

Causality: d output(p) / d input(q) for all pairs of positions of a small image
(jacfwd). Raster order p = r * W + c; with colours, channel ch of p may see
every channel of q < p and the channels ch' < ch of p itself.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rnnvision import cells
from rnnvision.models.pixel_rnn import (PixelRNN, diagonal_bilstm_layer, num_parameters,
                                        row_lstm_layer)
from rnnvision.recurrence import TimeLoop
from rnnvision.testing import prng_key

LAYERS = ("row_lstm", "diagonal_bilstm")


def init(model, seed=0):
    """model.init compiled once (eager, each of its small ops would compile on its own)."""
    return jax.jit(model.init)(prng_key(seed))


def raster_before(height, width):
    """(H, W, H, W) bool: input pixel q comes strictly before output pixel p."""
    order = np.arange(height * width).reshape(height, width)
    return order[None, None, :, :] < order[:, :, None, None]


def causal_channels(height, width, channels, own):
    """(H, W, C, H, W, C) bool: output (p, ch) may see input (q, ch') by the PixelRNN
    rule; at q = p, `own` (C_out, C_in) says which channels."""
    allowed = np.broadcast_to(raster_before(height, width)[:, :, None, :, :, None],
                              (height, width, channels, height, width, channels)).copy()
    for r in range(height):
        for c in range(width):
            allowed[r, c, :, r, c, :] = own
    return allowed


def _dependency(fn, x):
    """(*out_spatial_channels, *in_shape) bool: which outputs of fn(x) (B, H, W, C, ...)
    depend on which inputs x (B, H, W, C), for some image of the batch."""
    jac = jnp.abs(jax.jit(jax.jacfwd(fn))(x))  # (B, H, W, C, [K], B, H, W, C)
    batch = x.shape[0]
    jac = jac.reshape(batch, *x.shape[1:3], -1, *x.shape)
    per_image = jnp.stack([jac[b, ..., b, :, :, :] for b in range(batch)])  # (B, H, W, O, H, W, C)
    return np.asarray(jnp.sum(per_image, axis=0) > 0)


def _grouped(dep, groups):
    """Sums a dependency (H, W, O, H, W, I) over the features of each channel group."""
    h, w, o, _, _, i = dep.shape
    return dep.reshape(h, w, groups, o // groups, h, w, groups, i // groups).any(axis=(3, 7))


# -- one layer ---------------------------------------------------------------------------

@pytest.mark.parametrize("groups, shape", [(1, (1, 5, 6, 2)), (3, (1, 4, 5, 3))])
def test_diagonal_layer_sees_exactly_every_earlier_position(groups, shape):
    """The paper's claim: the Diagonal BiLSTM's receptive field is all of the past
    (mask "B": and the position itself, each group its own and earlier groups)."""
    cell = cells.get("diagonal_bilstm", features=3, mask="B", channel_groups=groups)
    params = jax.jit(cell.init, static_argnums=1)(prng_key(0), (2, shape[1], shape[-1]))
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    got = _grouped(_dependency(
        lambda x: diagonal_bilstm_layer(cell, params, x, TimeLoop()), x), groups)
    own = np.tril(np.ones((groups, groups), bool))  # g_in <= g_out
    want = causal_channels(shape[1], shape[2], groups, own)
    wrong = np.argwhere(got != want)
    assert not len(wrong), f"{len(wrong)} pairs differ, e.g. {wrong[:5].tolist()}"


@pytest.mark.parametrize("groups, shape", [(1, (1, 5, 6, 2)), (3, (1, 4, 5, 3))])
def test_row_lstm_layer_is_causal(groups, shape):
    cell = cells.get("row_lstm", features=3, mask="B", channel_groups=groups)
    params = jax.jit(cell.init, static_argnums=1)(prng_key(0), shape[2:])
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    got = _grouped(_dependency(lambda x: row_lstm_layer(cell, params, x, TimeLoop()), x), groups)
    own = np.tril(np.ones((groups, groups), bool))
    allowed = causal_channels(shape[1], shape[2], groups, own)
    assert not np.any(got & ~allowed), "a position sees a later one"
    # Not trivially causal: every position sees the one to its left and the one above.
    for r, c in np.ndindex(*shape[1:3]):
        assert got[r, c, :, r, c, :][own].all()
        assert c == 0 or got[r, c, :, r, c - 1].all()
        assert r == 0 or got[r, c, :, r - 1, c].all()


# -- the whole model -------------------------------------------------------------------

def _model_dependency(model, seed=0, batch=3):
    """(H, W, C, H, W, C) bool: logits (p, ch) on input (q, ch'), over a batch of images
    (a ReLU of the head can block one image's path, not every image's)."""
    params = init(model, seed)
    x = np.random.default_rng(seed).integers(0, model.levels, (batch, *model.image_shape))
    got = _dependency(lambda x: model.logits(params, x), x.astype(np.float32))
    h, w, c = model.image_shape
    return got.reshape(h, w, c, -1, h, w, c).any(axis=3)


@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("shape, levels", [((6, 6, 1), 2), ((4, 4, 3), 256)])
def test_model_is_causal(layer, shape, levels):
    model = PixelRNN(image_shape=shape, levels=levels, layer=layer, num_layers=2,
                     features=4 * shape[-1], head_features=8 * shape[-1])
    got = _model_dependency(model)
    h, w, c = shape
    own = np.tril(np.ones((c, c), bool), k=-1)  # ch' < ch: R sees none, G sees R, B sees R, G
    allowed = causal_channels(h, w, c, own)
    assert not np.any(got & ~allowed), "an output sees its own channel or a later pixel"
    for r, col in np.ndindex(h, w):  # the channel rule is used, not just allowed
        np.testing.assert_array_equal(got[r, col, :, r, col, :], own)
    if layer == "diagonal_bilstm":
        # Everything before, except where the 7x7 mask-A input layer cannot reach: the
        # last pixel of the row above enters the input map only at columns >= W - 4.
        want = allowed.copy()
        for r in range(1, h):
            want[r, :max(w - 4, 0), :, r - 1, w - 1, :] = False
        wrong = np.argwhere(got != want)
        assert not len(wrong), f"{len(wrong)} pairs differ, e.g. {wrong[:5].tolist()}"
        assert got[h - 1, w - 1, -1][allowed[h - 1, w - 1, -1]].all()  # the paper's claim
    else:
        for r, col in np.ndindex(h, w):
            assert col == 0 or got[r, col, :, r, col - 1].all()
            assert r == 0 or got[r, col, :, r - 1, col].all()


# -- the likelihood ---------------------------------------------------------------------

def _constant_logits_params(model, bias):
    """Every weight zero and the last bias `bias` (C*K'): the logits are `bias` everywhere."""
    params = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype),
                          jax.eval_shape(model.init, prng_key(0)))
    params["head"]["logits"]["b"] = jnp.asarray(bias, jnp.float32)
    return params


def test_nll_binary_by_hand():
    model = PixelRNN(image_shape=(3, 4, 1), levels=2, features=2, head_features=2)
    images = np.zeros((2, 3, 4, 1), np.int32)
    images[0, 0, :3] = 1  # 3 ones, 9 zeros
    images[1] = 1         # 12 ones
    nll = jax.jit(model.nll)(_constant_logits_params(model, [0.7]), images)
    p = 1 / (1 + math.exp(-0.7))
    want = [-3 * math.log(p) - 9 * math.log(1 - p), -12 * math.log(p)]
    np.testing.assert_allclose(nll, want, rtol=1e-6)
    np.testing.assert_allclose(model.bits_per_dim(nll), np.array(want) / (12 * math.log(2)),
                               rtol=1e-6)


def test_nll_rgb_256_by_hand():
    model = PixelRNN(image_shape=(2, 2, 3), levels=256, features=3, head_features=3)
    bias = np.random.default_rng(0).standard_normal(3 * 256)
    images = np.random.default_rng(1).integers(0, 256, (2, 2, 2, 3))
    nll = jax.jit(model.nll)(_constant_logits_params(model, bias), images)
    log_p = bias.reshape(3, 256) - np.log(np.exp(bias.reshape(3, 256)).sum(-1, keepdims=True))
    want = [-sum(log_p[ch, images[b, r, c, ch]] for r in range(2) for c in range(2)
                 for ch in range(3)) for b in range(2)]
    np.testing.assert_allclose(nll, want, rtol=1e-5)


def test_uniform_model_costs_one_bit_per_binary_pixel_and_eight_per_byte():
    for levels, bits in ((2, 1.0), (256, 8.0)):
        model = PixelRNN(image_shape=(3, 3, 1), levels=levels, features=2, head_features=2)
        params = _constant_logits_params(model, np.zeros(model.outputs_per_channel))
        images = np.random.default_rng(0).integers(0, levels, (2, 3, 3, 1))
        np.testing.assert_allclose(model.bits_per_dim(jax.jit(model.nll)(params, images)), bits,
                                   rtol=1e-6)


@pytest.mark.parametrize("layer", LAYERS)
def test_nll_is_the_log_probability_of_the_logits(layer):
    model = PixelRNN(image_shape=(4, 3, 3), levels=5, layer=layer, features=3, head_features=6)
    params = init(model, 1)
    images = np.random.default_rng(2).integers(0, 5, (2, 4, 3, 3))
    logits, nll = jax.jit(lambda p, x: (model.logits(p, x), model.nll(p, x)))(params, images)
    logits = np.asarray(logits, np.float64)  # (B, H, W, C, K)
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    picked = np.take_along_axis(log_p, images[..., None], axis=-1)[..., 0]
    np.testing.assert_allclose(nll, -picked.sum(axis=(1, 2, 3)), rtol=1e-5)


@pytest.mark.parametrize("layer", LAYERS)
def test_training_lowers_the_nll(layer):
    """Images whose rows are constant: after a row's first pixel the rest is
    predictable from the left neighbour, ~1 bit per row instead of 1 per pixel."""
    rng = np.random.default_rng(0)
    images = np.repeat(rng.integers(0, 2, (32, 8, 1, 1)), 8, axis=2)  # (32, 8, 8, 1)
    model = PixelRNN(image_shape=(8, 8, 1), layer=layer, num_layers=1, features=8,
                     head_features=16)
    params = init(model)
    optimizer = optax.adam(1e-2)

    @jax.jit
    def train_step(params, opt_state):
        loss, grads = jax.value_and_grad(lambda p: model.nll(p, images).mean())(params)
        updates, opt_state = optimizer.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state, loss

    opt_state = optimizer.init(params)
    losses = []
    for _ in range(60):
        params, opt_state, loss = train_step(params, opt_state)
        losses.append(float(loss))
    assert losses[0] > 40  # ~64 ln 2 = 44 nats for a model that knows nothing
    assert losses[-1] < 20, losses[::10]


def test_bad_hyper_parameters_name_the_field():
    for kwargs, field in [({"layer": "gru"}, "layer"), ({"levels": 1}, "levels"),
                          ({"features": 4, "image_shape": (4, 4, 3)}, "features"),
                          ({"input_kernel": 4}, "input_kernel"),
                          ({"image_shape": (4, 4)}, "image_shape")]:
        with pytest.raises(ValueError, match=field):
            PixelRNN(**kwargs)
    model = PixelRNN(image_shape=(4, 4, 1), features=2, head_features=2)
    with pytest.raises(ValueError, match="image_shape"):
        model.logits(jax.eval_shape(model.init, prng_key(0)), np.zeros((1, 5, 4, 1)))


def test_parameter_count():
    h, d, k = 4, 6, 7
    model = PixelRNN(image_shape=(5, 5, 1), layer="diagonal_bilstm", num_layers=2, features=h,
                     head_features=d)
    cell = (2 * (2 * h) * 4 * h + 2 * (2 * h) * 4 * h + 2 * 4 * h)  # w_x, w_h, b
    want = (k * k * 2 * h + 2 * h) + 2 * (cell + h * 2 * h + 2 * h) + (2 * h * d + d) + (d + 1)
    assert num_parameters(jax.eval_shape(model.init, prng_key(0))) == want
