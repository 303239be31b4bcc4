"""PixelRNN sampling: the inverse-CDF draw, forced models, the incremental sampler
against the generic one, completion, and the time for 16 digits."""

import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnvision.models.pixel_rnn import PixelRNN
from rnnvision.models.pixel_rnn_sampling import complete, draw, sample
from rnnvision.testing import prng_key

LAYERS = ("row_lstm", "diagonal_bilstm")


def init(model, seed=0, scale=1.0):
    """Parameters, scaled so that the model's distributions are far from uniform."""
    return jax.tree.map(lambda a: a * scale, jax.jit(model.init)(prng_key(seed)))


def constant_model(model, bias):
    """Every weight zero and the logits' bias `bias` (C*K'): the same distribution everywhere."""
    params = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype),
                          jax.eval_shape(model.init, prng_key(0)))
    params["head"]["logits"]["b"] = jnp.asarray(bias, jnp.float32)
    return params


def test_draw_is_the_inverse_cdf():
    u = jnp.array([0.1, 0.3, 0.69, 0.71, 0.999])
    logits = jnp.log(jnp.array([0.2, 0.5, 0.3]))
    got = draw(jnp.broadcast_to(logits, (5, 3)), u, 3)
    np.testing.assert_array_equal(got, [0, 1, 1, 2, 2])
    binary = draw(jnp.zeros(5), u, 2)  # p(1) = 0.5
    np.testing.assert_array_equal(binary, [1, 1, 0, 0, 0])


def test_unknown_method_is_named():
    model = PixelRNN(image_shape=(2, 2, 1), features=1, head_features=1)
    with pytest.raises(ValueError, match="method='fast'; allowed"):
        sample(model, constant_model(model, [0.0]), prng_key(0), 1, method="fast")


@pytest.mark.parametrize("method", ["rows", "generic"])
def test_forced_models_sample_what_they_are_forced_to(method):
    binary = PixelRNN(image_shape=(4, 5, 1), features=2, head_features=2)
    for bias, value in ((50.0, 1), (-50.0, 0)):
        images = sample(binary, constant_model(binary, [bias]), prng_key(0), 3, method=method)
        assert images.shape == (3, 4, 5, 1) and images.dtype == jnp.int32
        np.testing.assert_array_equal(images, value)
    rgb = PixelRNN(image_shape=(3, 2, 3), levels=256, layer="diagonal_bilstm", features=3,
                   head_features=3)
    bias = np.full((3, 256), -50.0)
    bias[[0, 1, 2], [17, 200, 3]] = 50.0  # R = 17, G = 200, B = 3
    images = sample(rgb, constant_model(rgb, bias.ravel()), prng_key(1), 2, method=method)
    np.testing.assert_array_equal(images, np.broadcast_to([17, 200, 3], (2, 3, 2, 3)))


def test_samples_follow_the_distribution():
    model = PixelRNN(image_shape=(6, 6, 1), features=2, head_features=2)
    images = sample(model, constant_model(model, [np.log(0.3 / 0.7)]), prng_key(2), 16)
    assert abs(float(images.mean()) - 0.3) < 0.06  # 576 draws, std 0.019


BINARY, RGB = ((5, 6, 1), 2), ((3, 4, 3), 256)


# Each layer type and each kind of image by default; all four pairs with -m slow.
@pytest.mark.parametrize("layer, shape, levels", [
    ("row_lstm", *BINARY), ("diagonal_bilstm", *RGB),
    pytest.param("diagonal_bilstm", *BINARY, marks=pytest.mark.slow),
    pytest.param("row_lstm", *RGB, marks=pytest.mark.slow)])
def test_incremental_sampler_draws_what_the_generic_one_draws(layer, shape, levels):
    """Same noise, same images: the row-state sampler evaluates the same causal model
    as re-running `logits` on the whole image for every draw."""
    model = PixelRNN(image_shape=shape, levels=levels, layer=layer, num_layers=2,
                     features=2 * shape[-1], head_features=4 * shape[-1])
    params = init(model, scale=2.0)
    rows = sample(model, params, prng_key(3), 4, method="rows")
    generic = sample(model, params, prng_key(3), 4, method="generic")
    np.testing.assert_array_equal(rows, generic)
    assert len(np.unique(rows)) > 1


@pytest.mark.parametrize("layer", LAYERS)
def test_completion_keeps_the_given_rows(layer):
    model = PixelRNN(image_shape=(6, 5, 1), layer=layer, features=2, head_features=4)
    params = init(model, scale=2.0)
    images = np.random.default_rng(0).integers(0, 2, (2, 6, 5, 1))
    out = complete(model, params, prng_key(4), images, num_samples=3)
    assert out.shape == (2, 3, 6, 5, 1)
    np.testing.assert_array_equal(out[:, :, :3], np.broadcast_to(images[:, None, :3],
                                                                 (2, 3, 3, 5, 1)))
    bottoms = np.asarray(out[:, :, 3:]).reshape(6, -1)
    assert len({b.tobytes() for b in bottoms}) > 1  # sampled, not copied
    with pytest.raises(ValueError, match="given_rows"):
        complete(model, params, prng_key(4), images, 1, given_rows=7)


def test_completion_is_the_model_conditioned_on_the_top():
    """A model that copies the pixel above (logit +-50 by the pixel above, built by
    hand) completes every column of the bottom with the top half's last row."""
    model = PixelRNN(image_shape=(4, 3, 1), features=1, head_features=1, input_kernel=3)
    params = constant_model(model, [-25.0])
    # Input conv: feature 0 = 2 * pixel above (masked kernel tap (0, 1) is the row above).
    w = np.zeros((3, 3, 1, 2), np.float32)
    w[0, 1, 0, 0] = 2.0
    params["input"]["w"] = jnp.asarray(w)
    params["head"]["hidden"]["w"] = jnp.zeros((2, 1)).at[0, 0].set(1.0)
    params["head"]["logits"]["w"] = jnp.full((1, 1), 25.0)
    images = np.zeros((2, 4, 3, 1), np.int32)
    images[0, 1] = [[1], [0], [1]]
    images[1, 1] = [[0], [1], [1]]
    out = complete(model, params, prng_key(5), images, num_samples=2)
    for n in range(2):
        np.testing.assert_array_equal(out[n, :, 2:], np.broadcast_to(images[n, 1], (2, 2, 3, 1)))


@pytest.mark.slow
@pytest.mark.parametrize("layer", LAYERS)
def test_sixteen_digits_in_well_under_a_minute(layer):
    model = PixelRNN(image_shape=(28, 28, 1), layer=layer, num_layers=7, features=16,
                     head_features=32)
    params = init(model)
    start = time.perf_counter()
    images = sample(model, params, prng_key(6), 16).block_until_ready()  # compile included
    assert images.shape == (16, 28, 28, 1)
    assert time.perf_counter() - start < 60.0
