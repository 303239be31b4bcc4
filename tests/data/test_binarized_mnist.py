"""Binarised digits: Bernoulli(intensity) pixels, fresh per training draw and
deterministic per (seed, step), a fixed evaluation set; CIFAR-10 under TFDS mocks."""

import subprocess
import sys

import numpy as np
import pytest

from rnnvision.data import idx
from rnnvision.data.binarized_mnist import BinarizedDigits, binarize, binarize_fixed
from rnnvision.data.cifar10 import load_cifar10


def test_binarize_draws_bernoulli_of_the_intensity():
    levels = np.array([0, 51, 128, 204, 255], np.uint8)
    images = np.broadcast_to(levels[:, None, None], (5, 100, 100))
    binary = binarize(images, np.random.default_rng(0))
    assert binary.shape == (5, 100, 100, 1) and binary.dtype == np.uint8
    assert set(np.unique(binary)) <= {0, 1}
    means = binary.mean(axis=(1, 2, 3))
    np.testing.assert_allclose(means, levels / 255.0, atol=0.015)  # 10^4 draws: std <= 0.005
    assert means[0] == 0.0 and means[-1] == 1.0


def test_binarize_rejects_what_is_not_uint8_digits():
    with pytest.raises(ValueError, match="uint8"):
        binarize(np.zeros((2, 28, 28), np.float32), np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        BinarizedDigits(np.zeros((2, 28, 28, 1), np.uint8), batch_size=1, seed=0)


def test_training_batches_are_fresh_per_draw_and_a_function_of_seed_and_step():
    # Identical grey digits: whatever the shuffling, two batches differ only by their
    # binarisation.
    images = np.full((4, 28, 28), 128, np.uint8)
    train = BinarizedDigits(images, batch_size=2, seed=3)
    first = train.batch(0)
    np.testing.assert_array_equal(first, BinarizedDigits(images, 2, seed=3).batch(0))
    for other in (train.batch(1), train.batch(2), BinarizedDigits(images, 2, seed=4).batch(0)):
        assert np.mean(first != other) > 0.4  # ~0.5 for independent draws with p = 1/2


def test_evaluation_set_is_fixed():
    images = np.random.default_rng(0).integers(0, 256, (10, 28, 28), dtype=np.uint8)
    np.testing.assert_array_equal(binarize_fixed(images), binarize_fixed(images))
    assert not np.array_equal(binarize_fixed(images), binarize_fixed(images, seed=1))


def test_real_digits_binarised(real_mnist_files):
    images, _ = idx.load_idx_pair(*real_mnist_files)
    evaluation = binarize_fixed(images[7000:])
    assert evaluation.shape == (1000, 28, 28, 1)
    # MNIST's mean intensity is about 33/255; the binary mean must match it.
    assert abs(evaluation.mean() - images[7000:].mean() / 255.0) < 0.005


def test_binarized_mnist_imports_no_models_tasks_or_train():
    code = ("import sys, rnnvision.data.binarized_mnist, rnnvision.data.cifar10; "
            "print(sorted(m for m in sys.modules if m.startswith(('rnnvision.models', "
            "'rnnvision.tasks', 'rnnvision.train'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_cifar10_on_mock_data():
    tfds = pytest.importorskip("tensorflow_datasets")
    pytest.importorskip("tensorflow")
    with tfds.testing.mock_data(num_examples=5):
        for split in ("train", "eval"):
            images, labels = load_cifar10(split)
            assert images.shape == (5, 32, 32, 3) and images.dtype == np.uint8
            assert labels.shape == (5,) and labels.dtype == np.int32
            assert labels.min() >= 0 and labels.max() <= 9
    with pytest.raises(ValueError, match="split='test'; allowed: train, eval"):
        load_cifar10("test")
