"""PixelRNN task: the data rules, the baseline and the NLL against direct computations,
bad configs, CIFAR-10 under TFDS mock data, and a smoke run through the command line.

Models are tiny (h = 4 or 3) so the file runs in a few minutes on a busy 2-core CPU;
the README bar (real digits, nll_nats <= 100) is the one `slow` test.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

from configs import pixel_rnn as pixel_config  # noqa: E402
from rnnvision.config_checks import ConfigError, override  # noqa: E402
from rnnvision.data import binarize_fixed, load_mnist  # noqa: E402
from rnnvision.tasks.pixel_rnn import (independent_pixel_log_probs,  # noqa: E402
                                       independent_pixel_nll)
from rnnvision.train import build_task  # noqa: E402


def _apply(fn, params, batch):
    """The trainer's `apply` on one device: fn(params, batch) as numpy."""
    return jax.device_get(jax.jit(fn)(params, batch))


def _smoke(variant="smoke", **overrides):
    return override(pixel_config.get_config(variant), **overrides)


def _cli(*args, timeout=1800):
    cmd = [sys.executable, "-m", "experiments.pixel_rnn", *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"})


# -- the independent-pixel baseline -----------------------------------------------------

def _direct_nll(images, probs):
    """-sum log p over every pixel channel, by plain Python loops: images (N, H, W, C),
    probs (H, W, C, K) -> (N,)."""
    out = []
    for image in images:
        total = 0.0
        for index in np.ndindex(image.shape):
            total -= math.log(probs[index][image[index]])
        out.append(total)
    return np.array(out)


@pytest.mark.parametrize("levels, shape", [(2, (3, 4, 1)), (256, (2, 3, 3))])
def test_baseline_nll_is_the_direct_sum_of_logs(levels, shape):
    rng = np.random.default_rng(0)
    train = rng.integers(0, levels, (20, *shape))
    counts = np.zeros((*shape, levels))
    for image in train:  # count by hand
        for index in np.ndindex(shape):
            counts[(*index, image[index])] += 1
    probs = (counts + 1) / (len(train) + levels)
    np.testing.assert_allclose(probs.sum(-1), 1.0)
    images = rng.integers(0, levels, (5, *shape))
    log_probs = independent_pixel_log_probs(counts, len(train))
    got = independent_pixel_nll(log_probs, {"images": images})
    np.testing.assert_allclose(got, _direct_nll(images, probs), rtol=1e-5)


def test_task_baseline_is_fitted_to_the_training_intensities():
    """Binary digits: p(pixel = 1) = (sum of intensity / 255 over training digits + 1)
    / (N + 2), the mean of training's fresh binarisations, add-one smoothed; the
    result is its NLL on the fixed evaluation images."""
    config = _smoke()
    task = build_task(config)
    digits, _ = load_mnist(config.data, "train")
    ones = np.zeros((28, 28))
    for digit in digits:
        ones += digit / 255.0
    p1 = (ones + 1) / (len(digits) + 2)
    probs = np.stack([1 - p1, p1], -1)[:, :, None, :]  # (28, 28, 1, 2)
    want = _direct_nll(task.eval_images, probs).mean()
    results = task.evaluate(task.init_params(jax.random.key(0)), _apply)
    assert results["baseline_nll_nats"] == pytest.approx(want, rel=1e-5)
    assert results["baseline_bits_per_dim"] == pytest.approx(want / (784 * math.log(2)), rel=1e-5)
    assert results["num_images"] == config.data.num_eval == len(task.eval_images)


def test_evaluation_nll_and_loss_are_the_models_nll():
    config = _smoke(**{"eval.batch_size": 10})  # 24 images: chunks of 10, 10 and 4 (padded)
    task = build_task(config)
    params = task.init_params(jax.random.key(1))
    per_image = np.asarray(jax.jit(task.model.nll)(params, task.eval_images.astype(np.int32)))
    results = task.evaluate(params, _apply)
    assert results["nll_nats"] == pytest.approx(per_image.mean(), rel=1e-5)
    assert results["bits_per_dim"] == pytest.approx(per_image.mean() / (784 * math.log(2)),
                                                    rel=1e-5)
    assert results["num_parameters"] == sum(x.size for x in jax.tree.leaves(params))
    batch = task.train_batch(0, slice(None))
    loss, metrics = jax.jit(task.loss)(params, batch, jax.random.key(0))
    direct = np.asarray(jax.jit(task.model.nll)(params, batch["images"])).mean()
    assert float(metrics["nll_nats"]) == pytest.approx(direct, rel=1e-5)
    assert float(loss) == pytest.approx(direct / 784, rel=1e-5)


# -- data -----------------------------------------------------------------------------

def test_evaluation_set_is_fixed_across_seeds_and_training_is_binarised_afresh():
    a, b = build_task(_smoke(seed=0)), build_task(_smoke(seed=7))
    np.testing.assert_array_equal(a.eval_images, b.eval_images)
    digits, _ = load_mnist(a.config.data, "eval")
    np.testing.assert_array_equal(a.eval_images, binarize_fixed(digits))
    assert set(np.unique(a.eval_images)) == {0, 1} and a.eval_images.shape == (24, 28, 28, 1)
    # Training batches: a pure function of (seed, step), different across seeds.
    first = a.train_batch(3, slice(None))["images"]
    np.testing.assert_array_equal(first, build_task(_smoke(seed=0)).train_batch(3, slice(None))["images"])
    assert not np.array_equal(first, b.train_batch(3, slice(None))["images"])
    np.testing.assert_array_equal(a.train_batch(3, slice(2, 5))["images"], first[2:5])
    # The same digit drawn again (epoch 1: steps 8..15 of 64 digits in batches of 8) is
    # binarised afresh: other pixels on, never one without ink.
    sampler = a.data.train.sampler
    digit = sampler.indices(0)[0]
    step = next(s for s in range(8, 16) if digit in sampler.indices(s))
    row = int(np.flatnonzero(sampler.indices(step) == digit)[0])
    x0 = a.train_batch(0, slice(0, 1))["images"][0, ..., 0]
    x1 = a.train_batch(step, slice(row, row + 1))["images"][0, ..., 0]
    no_ink = a.data.train.images[digit] == 0
    assert x0[no_ink].sum() == 0 and x1[no_ink].sum() == 0
    assert not np.array_equal(x0, x1)


def test_mnist_through_tfds_under_mock_data():
    tfds = pytest.importorskip("tensorflow_datasets")
    pytest.importorskip("tensorflow")
    with tfds.testing.mock_data(num_examples=16):
        task = build_task(_smoke("tfds,smoke"))
        digits, _ = load_mnist(task.config.data, "eval")
    assert task.config.data.source == "tfds"
    np.testing.assert_array_equal(task.eval_images, binarize_fixed(digits))
    batch = task.train_batch(0, slice(None))["images"]
    assert batch.shape == (8, 28, 28, 1) and set(np.unique(batch)) <= {0, 1}


# -- configs --------------------------------------------------------------------------

def test_every_variant_builds_a_config():
    for name in pixel_config.VARIANTS:
        assert pixel_config.get_config(name).task == "pixel_rnn"
    assert pixel_config.get_config("diagonal,real").model.layer == "diagonal_bilstm"
    assert pixel_config.get_config("real").data.source == "idx"
    with pytest.raises(ValueError, match="unknown config variant"):
        pixel_config.get_config("nope")


@pytest.mark.parametrize("overrides, field", [
    ({"data.dataset": "svhn"}, "data.dataset"),
    ({"model.layer": "lstm"}, "model.layer"),
    ({"model.features": 0}, "model.features"),
    ({"model.input_kernel": 4}, "model.input_kernel"),
    ({"model.compute_dtype": "int8"}, "model.compute_dtype"),
    ({"eval.num_samples": 0}, "eval.num_samples"),
    ({"train.loop_impl": "fused"}, "train.loop_impl"),  # no fused Row LSTM / Diagonal BiLSTM
    # CIFAR-10 comes through TFDS only; its features split into 3 colour groups.
    ({"data.dataset": "cifar10", "model.features": 6, "model.head_features": 6}, "data.source"),
    ({"data.dataset": "cifar10", "data.source": "tfds"}, "model.features"),  # 4 features
])
def test_bad_configs_name_the_field(overrides, field):
    with pytest.raises(ConfigError, match=f"config field {field}="):
        build_task(_smoke(**overrides))


def test_time_loop_reaches_the_model():
    task = build_task(_smoke(**{"train.truncation": 5, "train.remat": True}))
    assert task.model.time_loop.truncation == 5 and task.model.time_loop.remat is True


# -- CIFAR-10 ---------------------------------------------------------------------------

def test_cifar10_under_mock_data():
    tfds = pytest.importorskip("tensorflow_datasets")
    pytest.importorskip("tensorflow")
    config = _smoke("cifar10,smoke", **{"model.features": 3, "model.head_features": 6,
                                        "train.batch_size": 4})
    with tfds.testing.mock_data(num_examples=6):
        task = build_task(config)
        train_images = task.data.train_images
    assert task.model.levels == 256 and task.model.image_shape == (32, 32, 3)
    batch = task.train_batch(0, slice(None))["images"]
    assert batch.shape == (4, 32, 32, 3) and batch.max() <= 255
    params = task.init_params(jax.random.key(0))
    results = task.evaluate(params, _apply)
    counts = np.zeros((32, 32, 3, 256))
    for image in train_images:
        np.add.at(counts, (*np.indices((32, 32, 3)), image), 1)
    probs = (counts + 1) / (len(train_images) + 256)
    want = _direct_nll(task.eval_images, probs).mean()
    assert results["baseline_nll_nats"] == pytest.approx(want, rel=1e-5)
    # An untrained softmax over 256 levels: close to 8 bits per dimension.
    assert 7.0 < results["bits_per_dim"] < 9.5, results


# -- figures -------------------------------------------------------------------------------

def test_image_grids_place_and_scale_the_images(tmp_path):
    from rnnvision.viz import images as image_viz

    rgb = np.stack([np.full((2, 3, 3), v) for v in (0, 51, 255)])  # three flat RGB images
    unit = image_viz.to_unit(rgb, 256)
    assert unit.shape == (3, 2, 3, 3) and unit[1].max() == pytest.approx(0.2)
    mosaic = image_viz.tile(unit, cols=2, gap=1)  # 2 rows x 2 columns of 2x3 tiles
    assert mosaic.shape == (5, 7, 3)
    np.testing.assert_allclose(mosaic[0:2, 4:7], 0.2)   # image 1: row 0, column 1
    np.testing.assert_allclose(mosaic[3:5, 0:3], 1.0)   # image 2: row 1, column 0
    np.testing.assert_allclose(mosaic[2], 0.5)          # the gap between rows
    np.testing.assert_allclose(mosaic[3:5, 4:7], 0.5)   # the empty fourth cell
    binary = np.ones((2, 4, 4, 1), np.int32)
    completions = np.zeros((2, 3, 4, 4, 1), np.int32)
    path = image_viz.completion_grid(binary, completions, 2, 2, str(tmp_path / "c.png"))
    assert os.path.getsize(path) > 0
    with pytest.raises(ValueError, match="2 channels"):
        image_viz.to_unit(np.zeros((1, 4, 4, 2)), 2)


# -- the command line -----------------------------------------------------------------------

def test_smoke_run_writes_the_workdir_contract(tmp_path):
    workdir = tmp_path / "run"
    proc = _cli("--config=configs/pixel_rnn.py:smoke", f"--workdir={workdir}",
                "--config.optim.learning_rate=3e-3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "results (" in proc.stdout
    results = json.loads((workdir / "results.json").read_text())
    assert results["step"] == 6 and results["num_images"] == 24
    for key in ("nll_nats", "bits_per_dim", "baseline_nll_nats", "baseline_bits_per_dim"):
        assert np.isfinite(results[key]), key
    assert results["bits_per_dim"] == pytest.approx(results["nll_nats"] / (784 * math.log(2)))
    assert json.loads((workdir / "config.json").read_text())["optim"]["learning_rate"] == 3e-3
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [2, 4, 6]
    assert {"nll_nats", "bits_per_dim", "grad_norm"} <= set(rows[0])
    assert sorted(os.listdir(workdir / "checkpoints")) == ["3", "6"]
    assert {"samples.png", "completions.png", "learning_curves.png"} <= set(
        os.listdir(workdir / "figures"))
    assert os.listdir(workdir / "tensorboard")


def test_bad_config_stops_before_compute_naming_the_field(tmp_path):
    proc = _cli("--config=configs/pixel_rnn.py:smoke", f"--workdir={tmp_path / 'bad'}",
                "--config.model.layer=diagonal")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "model.layer='diagonal' is not allowed" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "bad" / "checkpoints").exists()


@pytest.mark.slow
def test_real_digits_bar(tmp_path):
    """The README bar, by its documented command: on the real digits, nll_nats <= 100 on
    the 1000 fixed evaluation images (see configs/pixel_rnn.py for the time it takes)."""
    from rnnvision.data.mnist import default_mnist_dir
    if default_mnist_dir() is None:
        pytest.skip("the real MNIST subset (../shared/data/mnist) is not here")
    workdir = tmp_path / "real"
    proc = _cli("--config=configs/pixel_rnn.py:real", f"--workdir={workdir}",
                "--config.train.progress=False", timeout=3 * 3600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((workdir / "results.json").read_text())
    assert results["num_images"] == 1000
    assert 200 < results["baseline_nll_nats"] < 230, results
    assert results["nll_nats"] <= 100, results
