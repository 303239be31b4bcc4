"""Moving MNIST video prediction: the model's rollout modes, the task, an end-to-end run.

Shapes are kept tiny (32x32 canvas, patch 4 -> an 8x8x16 grid, a few frames) so the
whole file runs in about a minute on a busy 2-core CPU.
"""

from __future__ import annotations

import functools
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

from configs import moving_mnist as mm_config  # noqa: E402
from rnnvision import cells  # noqa: E402
from rnnvision.data import MovingMnist  # noqa: E402
from rnnvision.models.video import FrameCodec, VideoPredictor, patchify, unpatchify  # noqa: E402
from rnnvision.tasks.moving_mnist import true_frame_probability  # noqa: E402
from rnnvision.train import build_task, loop  # noqa: E402
from rnnvision.config_checks import ConfigError, override  # noqa: E402
from rnnvision.recurrence import TimeLoop  # noqa: E402

B, T, N, CANVAS = 2, 5, 2, 32
CELLS = {  # frame_input -> (cell name, hyper-parameters)
    "patches": ("conv_lstm", {"features": 6, "kernel_size": 3}),
    "flat": ("lstm", {"hidden_size": 12}),
    "rows": ("row_lstm", {"features": 6}),
    "flat_rows": ("gru", {"hidden_size": 12}),
}


def _model(frame_input="patches", **kwargs) -> VideoPredictor:
    name, hparams = CELLS[frame_input]
    return VideoPredictor(cells.get(name, **hparams), FrameCodec((CANVAS, CANVAS, 1), 4, frame_input),
                          **kwargs)


@pytest.fixture(scope="module")
def videos() -> np.ndarray:
    digits = np.zeros((5, 28, 28), np.uint8)  # blocks of random ink
    for i, d in enumerate(digits):
        d[6 + i:20, 8:22 - i] = (np.random.default_rng(i).random((14 - i, 14 - i)) > 0.3) * 255
    return MovingMnist(digits, num_frames=T, num_digits=1, canvas=CANVAS, seed=3).batch(np.arange(B))


@functools.lru_cache(maxsize=None)
def _jitted_rollout(model, teacher_forcing):
    def run(params, frames, p, rng):
        return model.rollout(params, frames, N, jnp.full((B,), p), jax.random.key(rng),
                             teacher_forcing=teacher_forcing)
    return jax.jit(run)


def _rollout(model, params, frames, p, teacher_forcing=False, rng=1):
    """Logits of frames 1..T-1; one compilation per (model, teacher_forcing)."""
    return _jitted_rollout(model, teacher_forcing)(params, jnp.asarray(frames), p, rng)


def test_patchify_is_the_openstl_reshape_and_inverts():
    x = np.arange(2 * 8 * 8 * 3, dtype=np.float32).reshape(2, 8, 8, 3)
    g = patchify(jnp.asarray(x), 4)
    assert g.shape == (2, 2, 2, 48)
    np.testing.assert_array_equal(g[0, 1, 0], x[0, 4:8, 0:4].reshape(-1))  # patch (1, 0)
    np.testing.assert_array_equal(unpatchify(g, 4, 3), x)


@pytest.mark.parametrize("frame_input", ["patches", "rows", pytest.param("flat", marks=pytest.mark.slow),
                                         pytest.param("flat_rows", marks=pytest.mark.slow)])
def test_rollout_shapes_and_modes(frame_input, videos):
    """T-1 next-frame logits; the context part is the same in every mode; teacher
    forcing and free running differ in the forecast; true_prob 1 / 0 through the
    scheduled-sampling scan equal teacher forcing / a step-by-step free run."""
    model = _model(frame_input)
    params = model.init(jax.random.key(0))
    teacher = _rollout(model, params, videos, 1.0, teacher_forcing=True)
    assert teacher.shape == (B, T - 1, CANVAS, CANVAS, 1)
    free = _rollout(model, params, videos, 0.0)
    np.testing.assert_allclose(free[:, :N], teacher[:, :N], atol=1e-6)
    assert float(jnp.abs(free[:, N:] - teacher[:, N:]).max()) > 1e-3
    np.testing.assert_allclose(_rollout(model, params, videos, 1.0), teacher, atol=1e-5)

    if frame_input not in ("patches", "rows"):  # one frame step per frame, or a row loop
        return
    carry, reference = model.initial_carry(params, B), []  # free running, by hand
    frame, frame_step = jnp.asarray(videos[:, 0]), jax.jit(model.frame_step)
    for t in range(T - 1):
        carry, logits = frame_step(params, params["cell"], carry, frame)
        reference.append(logits)
        frame = jnp.asarray(videos[:, t + 1]) if t + 1 < N else jax.nn.sigmoid(logits)
    np.testing.assert_allclose(free, jnp.stack(reference, 1), atol=1e-5)


def test_scheduled_sampling_mixes_per_example_and_step(videos):
    model = _model()
    params = model.init(jax.random.key(0))
    teacher = _rollout(model, params, videos, 1.0, teacher_forcing=True)
    free = _rollout(model, params, videos, 0.0)
    # The first forecast step reads frame N (true) or prediction N; its output picks one.
    first = N  # logits index of frame N+1
    outcomes = set()
    for seed in range(12):
        mixed = _rollout(model, params, videos, 0.5, rng=seed)
        for b in range(B):
            is_teacher = bool(jnp.allclose(mixed[b, first], teacher[b, first], atol=1e-5))
            is_free = bool(jnp.allclose(mixed[b, first], free[b, first], atol=1e-5))
            assert is_teacher != is_free
            outcomes.add(is_teacher)
    assert outcomes == {True, False}


def test_separate_forecaster_uses_its_own_weights(videos):
    model = _model("flat", separate_forecaster=True)
    params = model.init(jax.random.key(0))
    base = _rollout(model, params, videos, 0.0)
    changed = dict(params, forecaster=jax.tree.map(lambda a: a * 0.5, params["forecaster"]))
    other = _rollout(model, changed, videos, 0.0)
    np.testing.assert_allclose(other[:, :N], base[:, :N], atol=1e-6)
    assert float(jnp.abs(other[:, N:] - base[:, N:]).max()) > 1e-4


def test_truncation_cuts_gradients_beyond_k_frames(videos):
    """With truncation=2 the last logits (read from frame T-2 = 3) see frames 2..3 only,
    through the carry and through fed-back predictions alike."""
    model = _model(time_loop=TimeLoop(truncation=2))
    params = model.init(jax.random.key(0))

    @functools.partial(jax.jit, static_argnums=1)
    def last_logits_grad(p, teacher_forcing):
        def f(frames):
            logits = model.rollout(params, frames, N, jnp.full((B,), p), jax.random.key(0),
                                   teacher_forcing=teacher_forcing)
            return logits[:, -1].sum()
        return jax.grad(f)(jnp.asarray(videos))

    teacher = last_logits_grad(1.0, True)
    assert float(jnp.abs(teacher[:, :2]).max()) == 0.0  # beyond the window
    assert float(jnp.abs(teacher[:, 2]).max()) > 0.0 and float(jnp.abs(teacher[:, 3]).max()) > 0.0
    assert float(jnp.abs(teacher[:, 4]).max()) == 0.0  # the frame being predicted is no input
    for p in (1.0, 0.5, 0.0):  # the scheduled-sampling scan
        assert float(jnp.abs(last_logits_grad(p, False)[:, :2]).max()) == 0.0, p
    np.testing.assert_allclose(last_logits_grad(1.0, False), teacher, atol=1e-6)


def test_predict_reads_only_the_context(videos):
    model = _model()
    params = model.init(jax.random.key(0))
    pred = jax.jit(model.predict, static_argnums=2)(params, jnp.asarray(videos[:, :N]), T - N)
    assert pred.shape == (B, T - N, CANVAS, CANVAS, 1)
    assert 0.0 <= float(pred.min()) and float(pred.max()) <= 1.0
    free = jax.nn.sigmoid(_rollout(model, params, videos, 0.0)[:, N - 1:])
    np.testing.assert_allclose(pred, free, atol=1e-5)


def test_a_short_training_run_lowers_the_loss(videos):
    model = _model()
    params = model.init(jax.random.key(0))
    tx = optax.adam(1e-2)
    frames = jnp.asarray(videos)

    def loss_fn(params):
        logits = model.rollout(params, frames, N, jnp.ones((B,)), jax.random.key(0),
                               teacher_forcing=True)
        return jnp.mean(jnp.square(jax.nn.sigmoid(logits) - frames[:, 1:]))

    @jax.jit
    def step(params, opt):
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), opt, loss

    opt, losses = tx.init(params), []
    for _ in range(25):
        params, opt, loss = step(params, opt)
        losses.append(float(loss))
    assert losses[-1] < 0.85 * losses[0] and losses[-1] == min(losses), losses


def test_sampling_schedule():
    obj = mm_config.get_config().objective.copy_and_resolve_references()
    obj.sampling_start, obj.sampling_end, obj.sampling_steps = 1.0, 0.0, 100
    assert [true_frame_probability(obj, s) for s in (0, 25, 100, 500)] == [1.0, 0.75, 0.0, 0.0]
    obj.sampling = "teacher"
    assert true_frame_probability(obj, 10**6) == 1.0
    obj.sampling = "free"
    assert true_frame_probability(obj, 0) == 0.0


def _smoke(variant="smoke", **overrides):
    return override(mm_config.get_config(variant), **overrides)


def test_every_variant_builds():
    for name in mm_config.VARIANTS:
        config = mm_config.get_config(name)
        assert config.task == "moving_mnist"
    assert mm_config.get_config("fc_lstm,real,tfds_test").data.eval_set == "tfds"
    with pytest.raises(ValueError, match="unknown config variant"):
        mm_config.get_config("nope")


@pytest.mark.parametrize("variant", ["fc_lstm", "row_lstm"])
def test_other_cell_families_build_as_tasks(variant):
    task = build_task(_smoke(f"{variant},smoke"))
    params = jax.eval_shape(task.init_params, jax.random.key(0))  # shapes only: no compile
    batch = task.train_batch(0, slice(None))
    loss, metrics = jax.eval_shape(task.loss, params, batch, jax.random.key(0))
    assert loss.shape == () and metrics["frame_mse"].shape == ()
    pred = jax.eval_shape(task.predict, params, {"context": batch["frames"][:, :3]})
    assert pred.shape == (4, 3, 32, 32, 1)


@pytest.mark.parametrize("field,value,match", [
    ("model.frame_input", "flat", "model.frame_input"),  # conv_lstm cannot read vectors
    ("model.patch", 3, "model.patch"),
    ("data.num_context", 6, "data.num_context"),
    ("objective.sampling", "sometimes", "objective.sampling"),
    ("data.eval_set", "tfds", "data.eval_set"),  # the official set needs 20 = 10 + 10 frames
])
def test_bad_configs_name_the_field(field, value, match):
    with pytest.raises(ConfigError, match=match):
        build_task(_smoke(**{field: value}))


def test_smoke_run_writes_results_and_figures(tmp_path):
    results = loop.run(_smoke(), str(tmp_path))
    on_disk = json.loads((tmp_path / "results.json").read_text())
    for key in ("mse", "mae", "ssim", "psnr", "copy_last/mse", "copy_last/ssim", "mean_frame/mse",
                "mse/step_01", "copy_last/mse/step_03", "mse_ratio_to_copy_last"):
        assert key in on_disk, key
    assert on_disk["step"] == 6 and on_disk["num_sequences"] == 8
    assert results["mse"] == pytest.approx(on_disk["mse"])
    figures = set(os.listdir(tmp_path / "figures"))
    assert {"predictions.png", "predictions.gif", "per_step_mse.png", "learning_curves.png"} <= figures
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [2, 4, 6]
    assert rows[0]["true_prob"] == pytest.approx(np.mean([1.0, 0.75]))  # steps 0 and 1 of 4


def test_evaluation_on_the_tfds_test_set_under_mock_data():
    tfds = pytest.importorskip("tensorflow_datasets")
    pytest.importorskip("tensorflow")
    config = _smoke(**{"data.eval_set": "tfds", "data.canvas": 64, "data.num_frames": 20,
                       "data.num_context": 10, "eval.num_sequences": 3, "eval.batch_size": 2,
                       "model.patch": 16})  # a 4x4 grid: a cheap model, the data path is tested
    task = build_task(config)
    params = task.init_params(jax.random.key(0))
    apply = lambda fn, p, batch: jax.device_get(jax.jit(fn)(p, batch))  # noqa: E731
    with tfds.testing.mock_data(num_examples=3):
        chunks = list(task.eval_chunks())
        results = task.evaluate(params, apply)
    assert [c.shape for c in chunks] == [(2, 20, 64, 64, 1), (1, 20, 64, 64, 1)]
    assert results["num_sequences"] == 3
    assert len([k for k in results if k.startswith("mse/step_")]) == 10
    assert np.isfinite(results["mse"]) and np.isfinite(results["copy_last/mse"])


@pytest.mark.slow
def test_default_real_run_beats_copy_last_by_30_percent(tmp_path):
    """The README bar: the default ConvLSTM on real digits, 10 predicted frames, per-frame
    MSE at least 30% below copy-last-frame on the fixed evaluation set (about 7 minutes
    on 2 cores)."""
    from rnnvision.data.mnist import default_mnist_dir
    if default_mnist_dir() is None:
        pytest.skip("the real MNIST subset (../shared/data/mnist) is not here")
    config = override(mm_config.get_config("real"), **{"train.progress": False})
    results = loop.run(config, str(tmp_path / "run"))
    assert results["num_sequences"] == 1000
    assert results["mse_ratio_to_copy_last"] <= 0.7, results
