"""Video classifiers: masking, early-recognition outputs, order (in)variance, learning.

References are written independently of the models' time loops: plain Python loops of
`cell.step` over each video's valid frames, and numpy means for the order-blind model.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rnnvision import cells
from rnnvision.models.resnet import ResNetEncoder
from rnnvision.models.video_classifier import (SMALL_FRAME_CNN, FrameEncoder,
                                               OrderBlindClassifier, RecurrentVideoClassifier,
                                               hold_last_valid, valid_mask)
from rnnvision.recurrence import TimeLoop

B, T, S, K = 3, 6, 16, 4
LENGTHS = np.array([6, 2, 4])
CNN = ResNetEncoder(width=8, num_stages=1, blocks_per_stage=1, stem_kernel=4, stem_stride=4,
                    norm="none")


def _models(time_loop=TimeLoop()):
    lstm = cells.get("lstm", hidden_size=8)
    return {
        "lstm": RecurrentVideoClassifier(CNN, lstm, K, feature_size=16, time_loop=time_loop),
        "gru": RecurrentVideoClassifier(CNN, cells.get("gru", hidden_size=8), K, feature_size=16,
                                        time_loop=time_loop),
        "rnn": RecurrentVideoClassifier(CNN, cells.get("rnn", hidden_size=8), K, feature_size=16,
                                        time_loop=time_loop),
        "stacked_lstm": RecurrentVideoClassifier(CNN, cells.stack("lstm", 2, hidden_size=8), K,
                                                 feature_size=16, time_loop=time_loop),
        "bidirectional_gru": RecurrentVideoClassifier(
            CNN, cells.get("gru", hidden_size=8), K, feature_size=16, bidirectional=True,
            time_loop=time_loop),
        "conv_lstm": RecurrentVideoClassifier(CNN, cells.get("conv_lstm", features=6), K,
                                              frame_input="grid", time_loop=time_loop),
        "order_blind": OrderBlindClassifier(CNN, K, feature_size=16, hidden_size=12),
    }


MODELS = _models()


@functools.cache
def _apply(name):
    """The model's jitted forward pass (compiled once per shape, shared by the tests)."""
    return jax.jit(MODELS[name].__call__)


def _loss(model, params, frames, lengths, labels):
    """Cross-entropy of the answer plus that of every early answer."""
    out = model(params, frames, lengths)
    ce = optax.softmax_cross_entropy_with_integer_labels
    return ce(out.logits, labels).mean() + ce(out.per_frame, labels[:, None]).mean()


@functools.cache
def _value_and_grad(name, time_loop=TimeLoop()):
    """Jitted (loss, gradients) of `_loss` for a model (shared by the tests)."""
    model = MODELS[name] if time_loop == TimeLoop() else _models(time_loop)[name]
    return jax.jit(jax.value_and_grad(functools.partial(_loss, model)))


def _frames(seed=0, b=B):
    return jnp.asarray(np.random.default_rng(seed).uniform(size=(b, T, S, S, 1)), jnp.float32)


@pytest.fixture(scope="module")
def params():
    return {name: model.init(jax.random.key(i), (S, S, 1))
            for i, (name, model) in enumerate(MODELS.items())}


def _noisy_padding(frames, lengths, seed=1):
    noise = np.random.default_rng(seed).normal(size=frames.shape) * 100
    pad = ~np.asarray(valid_mask(jnp.asarray(lengths), frames.shape[1]))
    return jnp.where(pad[..., None, None, None], noise, frames)


# ---------------------------------------------------------------- shapes and errors


@pytest.mark.parametrize("name", list(MODELS))
def test_shapes_for_every_kind(params, name):
    out = _apply(name)(params[name], _frames(), jnp.asarray(LENGTHS))
    assert out.logits.shape == (B, K) and out.per_frame.shape == (B, T, K)
    assert out.logits.dtype == jnp.float32 and bool(jnp.isfinite(out.per_frame).all())


def test_small_frame_cnn_on_48x48_frames():
    encoder = FrameEncoder(SMALL_FRAME_CNN, feature_size=None)
    assert encoder.grid_shape((48, 48, 1)) == (3, 3, 32)
    assert FrameEncoder(SMALL_FRAME_CNN, feature_size=64).step_shape((48, 48, 1)) == (64,)


def test_uint8_frames_are_read_as_value_over_255(params):
    frames = np.random.default_rng(3).integers(0, 256, (B, T, S, S, 1)).astype(np.uint8)
    model = _apply("lstm")
    as_int = model(params["lstm"], jnp.asarray(frames), jnp.asarray(LENGTHS)).logits
    as_float = model(params["lstm"], jnp.asarray(frames / 255.0, jnp.float32),
                     jnp.asarray(LENGTHS)).logits
    np.testing.assert_allclose(as_int, as_float, rtol=1e-5, atol=1e-6)


def test_bad_configs_are_named():
    lstm = cells.get("lstm", hidden_size=8)
    with pytest.raises(ValueError, match="frame_input='pixels'"):
        RecurrentVideoClassifier(CNN, lstm, K, frame_input="pixels")
    with pytest.raises(ValueError, match="num_classes=1"):
        OrderBlindClassifier(CNN, 1)
    with pytest.raises(ValueError, match="frame_input='grid'.*LSTMCell"):
        RecurrentVideoClassifier(CNN, lstm, K, frame_input="grid").init(jax.random.key(0),
                                                                        (S, S, 1))
    with pytest.raises(ValueError, match="frame_input='vector'.*ConvLSTMCell"):
        RecurrentVideoClassifier(CNN, cells.get("conv_lstm", features=4), K).init(
            jax.random.key(0), (S, S, 1))
    # The time loop is checked up front (the ConvLSTM's fast path is float32 only).
    with pytest.raises(ValueError, match="impl='fused'"):
        RecurrentVideoClassifier(CNN, cells.get("conv_lstm", features=4, compute_dtype="bfloat16"),
                                 K, frame_input="grid", time_loop=TimeLoop(impl="fused"))
    with pytest.raises(ValueError, match=r"lengths \(B,\)"):
        MODELS["order_blind"](None, _frames(), jnp.asarray([1, 2]))


# ---------------------------------------------------------------- references


def _python_loop(cell, cell_params, xs, reverse=False):
    """The cell's last output over xs (n, *F), one `cell.step` at a time (batch of 1)."""
    carry = cell.initial_carry(cell_params, (1,) + xs.shape[1:])
    step, y = jax.jit(cell.step), None
    for x in (xs[::-1] if reverse else xs):
        carry, y = step(cell_params, carry, x[None])
    return y[0]


@pytest.mark.parametrize("name", ["lstm", "stacked_lstm", "bidirectional_gru", "conv_lstm"])
def test_logits_match_a_python_loop_over_the_valid_frames(params, name):
    model, p = MODELS[name], params[name]
    frames = _frames()
    features = jax.jit(model.frames)(p["frames"], frames)
    logits = _apply(name)(p, frames, jnp.asarray(LENGTHS)).logits
    for b, length in enumerate(LENGTHS):
        y = _python_loop(model.cell, p["cell"], features[b, :length])
        if y.ndim == 3:  # conv_lstm: (h, w, R), pooled over space
            y = y.mean(axis=(0, 1))
        if model.bidirectional:
            y = jnp.concatenate([y, _python_loop(model.cell, p["cell_bw"], features[b, :length],
                                                 reverse=True)])
        expected = y @ p["head"]["w"] + p["head"]["b"]
        np.testing.assert_allclose(logits[b], expected, rtol=1e-4, atol=1e-5)


def test_order_blind_logits_match_a_numpy_mean(params):
    model, p = MODELS["order_blind"], params["order_blind"]
    frames = _frames()
    features = np.asarray(jax.jit(model.frames)(p["frames"], frames), np.float64)
    logits = _apply("order_blind")(p, frames, jnp.asarray(LENGTHS)).logits
    for b, length in enumerate(LENGTHS):
        hidden = np.maximum(features[b, :length].mean(0) @ p["hidden"]["w"] + p["hidden"]["b"], 0)
        np.testing.assert_allclose(logits[b], hidden @ p["head"]["w"] + p["head"]["b"],
                                   rtol=1e-4, atol=1e-5)


def test_hold_last_valid_by_hand():
    ys = jnp.arange(8.0).reshape(2, 4)
    np.testing.assert_array_equal(hold_last_valid(ys, jnp.asarray([2, 4])),
                                  [[0, 1, 1, 1], [4, 5, 6, 7]])


# ---------------------------------------------------------------- masking and early answers


@pytest.mark.parametrize("name", list(MODELS))
def test_padding_frames_change_neither_outputs_nor_gradients(params, name):
    lengths, labels = jnp.asarray(LENGTHS), jnp.asarray([0, 3, 1])
    frames = _frames()
    noisy = _noisy_padding(frames, LENGTHS)
    assert not np.allclose(noisy, frames)
    out, noisy_out = (_apply(name)(params[name], x, lengths) for x in (frames, noisy))
    np.testing.assert_allclose(noisy_out.per_frame, out.per_frame, rtol=1e-5, atol=1e-6)
    (value, grads), (noisy_value, noisy_grads) = (
        _value_and_grad(name)(params[name], x, lengths, labels) for x in (frames, noisy))
    np.testing.assert_allclose(noisy_value, value, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                 noisy_grads, grads)


@pytest.mark.parametrize("name", list(MODELS))
def test_per_frame_is_the_answer_for_each_prefix(params, name):
    """per_frame[:, t] = the logits of the video cut after frame t (min(L, t+1) frames);
    at the last valid frame and beyond it is the answer itself."""
    model, p = _apply(name), params[name]
    frames, lengths = _frames(), jnp.asarray(LENGTHS)
    out = model(p, frames, lengths)
    for t in range(T):
        cut = model(p, frames, jnp.minimum(lengths, t + 1)).logits
        np.testing.assert_allclose(out.per_frame[:, t], cut, rtol=1e-4, atol=1e-5)
    last = out.per_frame[jnp.arange(B), lengths - 1]
    np.testing.assert_allclose(out.logits, last, rtol=1e-5, atol=1e-6)
    assert not np.allclose(out.per_frame[0, 0], out.per_frame[0, -1], atol=1e-4)


def _permute_valid(frames, seed=5):
    rng, frames = np.random.default_rng(seed), np.array(frames)
    for b, length in enumerate(LENGTHS):
        order = rng.permutation(length)
        while length > 1 and (order == np.arange(length)).all():
            order = rng.permutation(length)
        frames[b, :length] = frames[b, order]
    return jnp.asarray(frames)


@pytest.mark.parametrize("name", list(MODELS))
def test_only_the_order_blind_model_ignores_the_order_of_frames(params, name):
    model, p, lengths = _apply(name), params[name], jnp.asarray(LENGTHS)
    frames = _frames()
    logits = model(p, frames, lengths).logits
    shuffled = model(p, _permute_valid(frames), lengths).logits
    if name == "order_blind":
        np.testing.assert_allclose(shuffled, logits, rtol=1e-4, atol=1e-5)
    else:  # Every video with more than one frame changes its answer.
        changed = np.abs(np.asarray(shuffled - logits)).max(axis=-1)
        assert (changed[LENGTHS > 1] > 1e-4).all(), changed


# ---------------------------------------------------------------- the time loop


def test_truncation_and_remat_of_the_time_loop_are_honoured(params):
    args = (params["lstm"], _frames(), jnp.asarray(LENGTHS), jnp.asarray([0, 3, 1]))
    full_value, full = _value_and_grad("lstm")(*args)
    cut_value, cut = _value_and_grad("lstm", TimeLoop(truncation=2))(*args)
    remat_value, remat = _value_and_grad("lstm", TimeLoop(remat=True))(*args)
    np.testing.assert_allclose(cut_value, full_value, rtol=1e-6)  # Same forward values ...
    assert not np.allclose(cut["cell"]["w_h"], full["cell"]["w_h"], atol=1e-6)  # ... cut gradients.
    np.testing.assert_allclose(remat_value, full_value, rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), remat, full)


# ---------------------------------------------------------------- learning


@pytest.mark.parametrize("name", ["lstm", "conv_lstm", "order_blind"])
def test_loss_drops_on_a_tiny_batch(params, name):
    """A few Adam steps on three videos fit them (the jitted gradient is the shared one)."""
    args = (_frames(seed=7), jnp.asarray(LENGTHS), jnp.asarray([2, 0, 1]))
    p = params[name]
    optimizer = optax.adam(1e-2)
    state = optimizer.init(p)

    @jax.jit
    def update(grads, state, p):
        updates, state = optimizer.update(grads, state, p)
        return optax.apply_updates(p, updates), state

    losses = []
    for _ in range(25):
        loss, grads = _value_and_grad(name)(p, *args)
        p, state = update(grads, state, p)
        losses.append(float(loss))
    assert losses[0] > 1.5 and losses[-1] < 0.25 * losses[0], losses
