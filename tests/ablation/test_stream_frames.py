"""Streaming next-frame prediction: window indexing, resets, and TBPTT(k, k) = truncated BPTT."""

from __future__ import annotations

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from conftest import load_config  # noqa: E402

from rnnvision.train import build_task  # noqa: E402
from rnnvision.ablation import grad_bias  # noqa: E402
from rnnvision.metrics.gradients import relative_norm_error  # noqa: E402


def _stream_config(truncation=2, k1=0, frames=8, **fields):
    c = load_config("smoke").studies.stream.run
    c.train.truncation, c.model.k1, c.data.num_frames = truncation, k1, frames
    c.data.canvas, c.data.downsample = 32, 4   # 8x8 frames: tiny and fast
    for key, value in fields.items():
        section, name = key.split(".")
        c[section][name] = value
    return c


@pytest.fixture(scope="module")
def task():
    return build_task(_stream_config())


def test_step_s_trains_window_s_mod_W_of_sequence_batch_s_div_W(task):
    windows = 8 // 2
    assert task.windows == windows
    for step in range(0, 11):
        n, j = task.window_of(step)
        assert (n, j) == (step // windows, step % windows)
        b = task.train_batch(step, slice(None))
        frames = task.sequence_batch(n)
        np.testing.assert_array_equal(b["x"], frames[:, 2 * j:2 * j + 2])
        np.testing.assert_array_equal(b["y"], frames[:, 2 * j + 1:2 * j + 3])  # the next frames
        assert b["start"].all() == (j == 0)
    assert b["x"].shape == (4, 2, 64)  # (B, k1, (32 / 4)^2)
    assert not np.array_equal(task.sequence_batch(0), task.sequence_batch(1))


@pytest.fixture(scope="module")
def streamed(task):
    """Params, and the W windows of sequence batch 0 streamed: losses, gradients, final stream."""
    params = task.init_params(jax.random.key(1))
    stream = task.init_stream(4)
    grad_fn = jax.jit(jax.value_and_grad(lambda p, b, s: task.stream_loss(p, b, None, s), has_aux=True))
    losses, grads = [], []
    for j in range(task.windows):
        (loss, (_, stream)), g = grad_fn(params, task.train_batch(j, slice(None)), stream)
        losses.append(float(loss))
        grads.append(g)
    return params, losses, grads, stream


def test_streaming_tbptt_equals_truncated_bptt_over_the_whole_sequence(task, streamed):
    """TBPTT(k, k) over W = T / k windows: same loss as the whole sequence, and the sum of
    the window gradients is the gradient of `unroll(truncation=k)` over the whole sequence."""
    params, losses, grads, _ = streamed
    frames = task.sequence_batch(0)
    rl = task.recurrent_loss({"x": frames[:, :-1], "y": frames[:, 1:]})
    truncated = grad_bias.gradient(rl, params, 2)
    whole = float(jax.jit(lambda p: grad_bias.loss_value(rl, p))(params))
    np.testing.assert_allclose(np.mean(losses), whole, rtol=1e-5)
    streamed_grad = jax.tree.map(lambda *g: sum(g) / task.windows, *grads)
    assert float(relative_norm_error(streamed_grad, truncated)) < 1e-4
    full = grad_bias.gradient(rl, params, None)
    assert float(relative_norm_error(streamed_grad, full)) > 1e-3  # truncation did cut something


def test_reset_at_start_forgets_the_previous_sequence(task, streamed):
    params, _, _, stream = streamed  # a stream carried to the end of sequence batch 0
    start = task.train_batch(task.windows, slice(None))  # window 0 of sequence batch 1
    loss_fn = jax.jit(lambda p, b, s: task.stream_loss(p, b, None, s)[0])
    fresh = float(loss_fn(params, start, task.init_stream(4)))
    assert float(loss_fn(params, start, stream)) == pytest.approx(fresh, rel=1e-6)
    carried = dict(start, start=np.zeros_like(start["start"]))  # not a sequence start
    assert float(loss_fn(params, carried, stream)) != pytest.approx(fresh, rel=1e-6)
    no_reset = build_task(_stream_config(**{"data.reset_at_start": False}))
    assert float(no_reset.stream_loss(params, start, None, stream)[0]) == pytest.approx(
        float(loss_fn(params, carried, stream)), rel=1e-6)  # the flag off: never reset


def test_k1_below_k2_and_bad_windows():
    c = _stream_config(truncation=4, k1=2)
    t = build_task(c)
    assert (t.k1, t.k2, t.windows) == (2, 4, 4)
    assert jax.tree.leaves(t.init_stream(4))[0].shape[0] == 4
    from rnnvision.config_checks import ConfigError
    with pytest.raises(ConfigError, match="num_frames"):
        build_task(_stream_config(truncation=3))
    with pytest.raises(ConfigError, match="model.k1"):
        build_task(_stream_config(truncation=2, k1=4))


def test_trainer_runs_and_resumes_the_stream(tmp_path):
    from rnnvision.train import loop

    c = _stream_config(**{"train.num_steps": 3, "train.checkpoint_every": 2})
    state, results = loop.train_and_evaluate(c, str(tmp_path))
    assert int(state.step) == 3 and np.isfinite(results["mse"])
    assert results["copy_last_mse"] > 0
    assert jax.tree.leaves(state.stream)[0].shape[0] == jax.local_device_count()
