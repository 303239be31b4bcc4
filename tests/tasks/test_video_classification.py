"""Video classification end to end: the data split, the loss, the metrics, the CLI, TFDS.

References are computed independently of the task's code paths: each video run alone
on its own valid frames (no padding, no masking) for the loss and for early answers,
numpy log-sum-exp for the NLL, hand-made predictions for the metrics.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

from configs import video_classification as vc_config  # noqa: E402
from rnnvision.config_checks import ConfigError, override  # noqa: E402
from rnnvision.data import idx  # noqa: E402
from rnnvision.data.mnist import default_mnist_dir  # noqa: E402
from rnnvision.data.synthetic_digits import make_digits  # noqa: E402
from rnnvision.data.video_actions import CLASS_NAMES  # noqa: E402
from rnnvision.tasks.video_classification import classification_metrics  # noqa: E402
from rnnvision.train import build_task, loop  # noqa: E402


def _config(variant="smoke", **fields):
    return override(vc_config.get_config(variant), **fields)


def _apply(fn, params, batch):
    return jax.device_get(jax.jit(fn)(params, batch))


def _cli(*args, timeout=900):
    cmd = [sys.executable, "-m", "experiments.video_classification", *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"})


def _ce(logits, labels):
    """-log softmax(logits)[label] per row, numpy float64."""
    logits = np.asarray(logits, np.float64)
    top = logits.max(-1, keepdims=True)
    log_z = top[:, 0] + np.log(np.exp(logits - top).sum(-1))
    return log_z - logits[np.arange(len(labels)), labels]


@pytest.fixture(scope="module")
def smoke_task():
    task = build_task(_config())
    return task, task.init_params(jax.random.key(0))


# ------------------------------------------------------------------- config


def test_every_variant_builds_a_config():
    for name in vc_config.VARIANTS:
        assert vc_config.get_config(name).task == "video_classification"
    assert vc_config.get_config("conv_lstm,real").data.source == "idx"
    with pytest.raises(ValueError, match="unknown config variant 'gruu'.*order_blind"):
        vc_config.get_config("gruu")


@pytest.mark.parametrize("fields,match", [
    ({"data.dataset": "vimeo"}, "data.dataset='vimeo'"),
    ({"model.classifier": "bag"}, "model.classifier='bag'"),
    ({"model.frame_input": "grid"}, "model.frame_input='grid'"),  # lstm cannot take grids
    ({"model.cell": "conv_lstm"}, "model.frame_input='vector'"),  # conv_lstm cannot take vectors
    ({"data.canvas": 32}, "data.canvas=32"),
    ({"data.spin_frames": 4}, "data.spin_frames=4"),  # smoke: min_frames 4
    ({"data.max_frames": 3}, "data.max_frames=3"),
    ({"model.cnn_norm": "batch"}, "model.cnn_norm='batch'"),
    ({"model.cnn_norm": "group", "model.cnn_width": 12}, "model.cnn_width=12"),
    ({"eval.num_videos": 0}, "eval.num_videos=0"),
    ({"model.classifier": "order_blind", "train.truncation": 2}, "train.truncation=2"),
    ({"model.classifier": "order_blind", "train.remat": True}, "train.remat=True"),
])
def test_bad_configs_name_the_field(fields, match):
    with pytest.raises(ConfigError, match=match.replace("(", r"\(")):
        build_task(_config(**fields))


def test_the_time_loop_reaches_the_model():
    task = build_task(_config(**{"train.truncation": 2, "train.remat": True}))
    assert task.model.time_loop.truncation == 2 and task.model.time_loop.remat


# --------------------------------------------------------------------- data


@pytest.fixture(scope="module")
def idx_files(tmp_path_factory):
    """40 distinct synthetic digits as IDX files: rows 0-29 train, 30-39 evaluation."""
    directory = tmp_path_factory.mktemp("idx")
    images, labels = make_digits(40, seed=5)
    idx.write_idx(str(directory / "images.idx"), images)
    idx.write_idx(str(directory / "labels.idx"), labels.astype(np.uint8))
    return directory, images


def test_evaluation_set_is_fixed_across_seeds_and_uses_evaluation_digits_only(idx_files):
    directory, images = idx_files
    fields = {"data.source": "idx", "data.idx_images": str(directory / "images.idx"),
              "data.idx_labels": str(directory / "labels.idx"), "data.train_slice": "0:30",
              "data.eval_slice": "30:40"}
    tasks = [build_task(_config(**fields, seed=seed)) for seed in (0, 7)]
    chunks = [list(t.data.eval_chunks(8)) for t in tasks]
    assert [len(c["label"]) for c in chunks[0]] == [8, 8, 4]  # eval.num_videos = 20
    for a, b in zip(*chunks):
        for key in ("frames", "lengths", "label"):
            np.testing.assert_array_equal(a[key], b[key])
    # Training videos follow the seed; evaluation videos do not.
    first = [t.train_batch(0, slice(None))["frames"] for t in tasks]
    assert not np.array_equal(first[0], first[1])
    data = tasks[0].data
    np.testing.assert_array_equal(data.eval.digits, images[30:40])
    np.testing.assert_array_equal(data.train.digits, images[:30])
    train_digits = {d.tobytes() for d in images[:30]}
    used = data.eval.batch(np.arange(20)).digit_ids
    assert not any(data.eval.digits[i].tobytes() in train_digits for i in used)
    # The chunks are the generator's first 20 videos of the evaluation stream.
    np.testing.assert_array_equal(np.concatenate([c["frames"] for c in chunks[0]]),
                                  data.eval.batch(np.arange(20)).frames)


def test_training_batches_are_a_function_of_the_step_and_split_by_rows(smoke_task):
    task, _ = smoke_task
    whole = task.train_batch(3, slice(None))
    again = task.train_batch(3, slice(None))
    halves = [task.train_batch(3, slice(0, 4)), task.train_batch(3, slice(4, 8))]
    for key in ("frames", "lengths", "label"):
        np.testing.assert_array_equal(whole[key], again[key])
        np.testing.assert_array_equal(whole[key], np.concatenate([h[key] for h in halves]))
    assert not np.array_equal(whole["frames"], task.train_batch(4, slice(None))["frames"])
    np.testing.assert_array_equal(whole["label"], (24 + np.arange(8)) % 10)


# --------------------------------------------------------------------- loss


def _alone(task, params, frames, lengths):
    """Logits (N, K) of videos run on their own valid frames only (no padding, no mask):
    the videos of each length m go through the model as frames[:, :m] of length m."""
    run = jax.jit(lambda p, f, n: task.model(p, f, n).logits)
    logits = np.zeros((len(frames), task.num_classes), np.float32)
    for m in np.unique(lengths):
        rows = lengths == m
        logits[rows] = run(params, frames[rows, :m], np.full(rows.sum(), m))
    return logits


def test_loss_is_read_at_each_videos_own_last_frame(smoke_task):
    task, params = smoke_task
    batch = task.train_batch(0, slice(None))
    assert len(set(batch["lengths"])) > 1  # lengths 4..6 differ
    loss, metrics = jax.jit(task.loss)(params, batch, jax.random.key(0))
    logits = _alone(task, params, batch["frames"], batch["lengths"])
    np.testing.assert_allclose(float(loss), _ce(logits, batch["label"]).mean(), rtol=1e-5)
    np.testing.assert_allclose(float(metrics["accuracy"]),
                               (logits.argmax(-1) == batch["label"]).mean())
    # Padding frames change nothing; the last valid frame does.
    noisy = dict(batch, frames=batch["frames"].copy())
    valid = np.arange(noisy["frames"].shape[1])[None, :] < batch["lengths"][:, None]
    noisy["frames"][~valid] = np.random.default_rng(0).random(noisy["frames"][~valid].shape)
    np.testing.assert_allclose(float(jax.jit(task.loss)(params, noisy, jax.random.key(0))[0]),
                               float(loss), rtol=1e-6)
    last = dict(batch, frames=batch["frames"].copy())
    b = int(np.argmin(batch["lengths"]))
    last["frames"][b, batch["lengths"][b] - 1] = 1.0 - last["frames"][b, batch["lengths"][b] - 1]
    assert abs(float(jax.jit(task.loss)(params, last, jax.random.key(0))[0]) - float(loss)) > 1e-6


# ------------------------------------------------------------------ metrics


def test_classification_metrics_on_hand_made_predictions():
    labels = np.array([0, 1, 1, 8, 9])
    logits = np.full((5, 10), -2.0)
    logits[0, 0] = logits[1, 0] = logits[2, 1] = logits[3, 9] = logits[4, 9] = 3.0
    per_frame = np.repeat(logits[:, None], 3, axis=1).copy()
    per_frame[:, 0] = 0.0  # after one frame: all tied -> argmax 0, right only for video 0
    pred = {"label": labels, "logits": logits, "per_frame": per_frame}
    pairs = np.array([0, 0, 1, 1, 2, 2, 3, 3, 4, 4])
    r = classification_metrics(pred, CLASS_NAMES, pairs)
    assert r["accuracy"] == pytest.approx(3 / 5)
    assert r["accuracy/move_right"] == 1.0 and r["accuracy/move_left"] == 0.5
    assert r["accuracy/spin_cw_then_rest"] == 0.0 and r["accuracy/spin_ccw_then_rest"] == 1.0
    assert "accuracy/grow" not in r  # no video of that class
    assert r["pair_accuracy"] == 1.0  # every mistake stays inside its pair
    expected_nll = np.log(np.exp(3.0) + 9 * np.exp(-2.0)) - np.array([3.0, -2, 3, -2, 3])
    assert r["nll"] == pytest.approx(expected_nll.mean())
    assert r["early_accuracy/frames_01"] == pytest.approx(1 / 5)
    assert r["early_accuracy/frames_03"] == r["accuracy"] and r["num_videos"] == 5


def test_early_accuracy_is_the_accuracy_of_videos_cut_after_t_frames(smoke_task):
    task, params = smoke_task
    results = task.evaluate(params, _apply)
    assert results["num_videos"] == 20
    assert results["early_accuracy/frames_06"] == results["accuracy"]
    chunks = list(task.data.eval_chunks(20))
    frames, lengths, labels = (np.concatenate([c[k] for c in chunks])
                               for k in ("frames", "lengths", "label"))
    per_frame = task.predictions(params, _apply)["per_frame"]  # (20, 6, 10)
    for t in range(1, 7):
        cut = _alone(task, params, frames, np.minimum(lengths, t))
        np.testing.assert_allclose(per_frame[:, t - 1], cut, rtol=1e-4, atol=1e-5)
        accuracy = (cut.argmax(-1) == labels).mean()
        assert results[f"early_accuracy/frames_{t:02d}"] == pytest.approx(accuracy)
    assert np.abs(np.diff(per_frame, axis=1)).max() > 1e-3  # answers change as frames come in
    logits = _alone(task, params, frames, lengths)
    assert results["nll"] == pytest.approx(_ce(logits, labels).mean(), rel=1e-5)


# ------------------------------------------------------------- end to end


def test_smoke_run_writes_the_workdir_contract(tmp_path):
    workdir = tmp_path / "run"
    proc = _cli("--config=configs/video_classification.py:smoke", f"--workdir={workdir}",
                "--config.optim.learning_rate=3e-3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((workdir / "results.json").read_text())
    assert results["step"] == 6 and results["num_videos"] == 20
    assert 0.0 <= results["accuracy"] <= 1.0 and results["nll"] > 0
    assert results["early_accuracy/frames_06"] == results["accuracy"]
    assert {f"accuracy/{name}" for name in CLASS_NAMES} <= set(results)
    assert json.loads((workdir / "config.json").read_text())["optim"]["learning_rate"] == 3e-3
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [2, 4, 6]
    assert "accuracy" in rows[0] and "grad_norm" in rows[0]
    assert sorted(os.listdir(workdir / "checkpoints")) == ["3", "6"]
    assert {"confusion.png", "early_recognition.png", "frames.png", "learning_curves.png"} <= set(
        os.listdir(workdir / "figures"))
    assert os.listdir(workdir / "tensorboard")
    bad = _cli("--config=configs/video_classification.py:smoke", f"--workdir={tmp_path / 'bad'}",
               "--config.model.classifier=bag")
    assert bad.returncode == 2 and "model.classifier='bag'" in bad.stderr
    assert "Traceback" not in bad.stderr and not (tmp_path / "bad" / "checkpoints").exists()


@pytest.mark.parametrize("variant", ["gru,smoke", "bidirectional,smoke", "conv_lstm,smoke",
                                     "order_blind,smoke"])
def test_other_models_build_and_give_per_frame_answers(variant):
    task = build_task(_config(variant))
    params = jax.eval_shape(task.init_params, jax.random.key(0))  # shapes only: no compile
    batch = task.train_batch(0, slice(None))
    loss, _ = jax.eval_shape(task.loss, params, batch, jax.random.key(0))
    out = jax.eval_shape(task.predict, params, batch)
    assert loss.shape == () and out["per_frame"].shape == (8, 6, 10)


def test_ucf101_end_to_end_under_mock_data(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    pytest.importorskip("tensorflow")
    config = _config("ucf101,smoke", **{"eval.batch_size": 4, "eval.num_figure_videos": 2})
    with tfds.testing.mock_data(num_examples=10):
        results = loop.run(config, str(tmp_path))
    assert results["num_videos"] == 10 and results["step"] == 6
    assert "early_accuracy/frames_04" in results and "early_accuracy/frames_05" not in results
    assert "pair_accuracy" not in results
    per_class = [k for k in results if k.startswith("accuracy/")]
    assert per_class and all(k[len("accuracy/"):].isidentifier() for k in per_class)
    assert "accuracy/ApplyEyeMakeup" in results or len(per_class) < 101
    assert {"confusion.png", "early_recognition.png", "frames.png"} <= set(
        os.listdir(tmp_path / "figures"))


# ---------------------------------------------------------------- the bars


def _bar_run(tmp_path, variant):
    if default_mnist_dir() is None:
        pytest.skip("the real MNIST subset (../shared/data/mnist) is not here")
    workdir = tmp_path / "run"
    proc = _cli(f"--config=configs/video_classification.py:{variant}", f"--workdir={workdir}",
                timeout=3600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((workdir / "results.json").read_text())
    assert results["num_videos"] == 1000
    return results


@pytest.mark.slow
def test_default_real_run_reaches_95_percent(tmp_path):
    """The README bar: the default LRCN on real digits, >= 95% on the fixed evaluation set."""
    results = _bar_run(tmp_path, "real")
    assert results["accuracy"] >= 0.95, results


@pytest.mark.slow
def test_order_blind_baseline_stays_at_or_below_60_percent(tmp_path):
    """The order-blind baseline on the same data: the pairs, not the order inside them."""
    results = _bar_run(tmp_path, "order_blind,real")
    assert results["accuracy"] <= 0.60, results
    assert results["pair_accuracy"] >= 0.8, results  # it did learn what it can see
