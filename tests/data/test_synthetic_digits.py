"""Synthetic digits: deterministic per (seed, stream, index), MNIST-like, learnable."""

import numpy as np
import pytest

from rnnvision.data import synthetic_digits
from rnnvision.data.synthetic_digits import make_digit, make_digits


@pytest.fixture(scope="module")
def train_and_heldout():
    """1000 training digits (stream 0) and 500 held-out ones (stream 1) of seed 0."""
    return make_digits(1000, seed=0), make_digits(500, seed=0, stream=1)


def _flat(images):
    return images.reshape(len(images), -1).astype(np.float32) / 255


def _class_means(images, labels):
    return np.stack([_flat(images[labels == c]).mean(0) for c in range(10)])


def test_shapes_dtypes_and_balance():
    images, labels = make_digits(30, seed=1)
    assert images.shape == (30, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (30,) and labels.dtype == np.int32
    np.testing.assert_array_equal(np.bincount(labels, minlength=10), np.full(10, 3))
    assert images.max() == 255  # The pen's core is full white, like MNIST.
    assert make_digits(0, seed=1)[0].shape == (0, 28, 28)


def test_deterministic_and_any_subset_regenerates():
    images, labels = make_digits(25, seed=7)
    again_images, again_labels = make_digits(25, seed=7)
    np.testing.assert_array_equal(images, again_images)
    np.testing.assert_array_equal(labels, again_labels)
    part_images, part_labels = make_digits(9, seed=7, start=13)
    np.testing.assert_array_equal(part_images, images[13:22])
    np.testing.assert_array_equal(part_labels, labels[13:22])
    image, label = make_digit(7, 18)
    np.testing.assert_array_equal(image, images[18])
    assert label == labels[18]


def test_seeds_and_streams_differ():
    base, _ = make_digits(20, seed=0)
    other_seed, _ = make_digits(20, seed=1)
    other_stream, _ = make_digits(20, seed=0, stream=1)
    for other in (other_seed, other_stream):
        same = (base[:, None] == other[None]).all(axis=(2, 3))
        assert not same.any()


def test_looks_like_mnist(train_and_heldout):
    (images, _), _ = train_and_heldout
    ink = images > 0
    # MNIST: mean pixel 0.13, ~19% of pixels inked, longer side of the ink box <= 20
    # px, centre of mass at pixel (14, 14), empty border.
    assert 0.09 < images.mean() / 255 < 0.18
    assert 0.13 < ink.mean() < 0.26
    rows, cols = ink.any(axis=2), ink.any(axis=1)
    height = 28 - rows.argmax(1) - rows[:, ::-1].argmax(1)
    width = 28 - cols.argmax(1) - cols[:, ::-1].argmax(1)
    assert np.all(np.maximum(height, width) >= 16)
    assert np.all(np.maximum(height, width) <= 22)
    weights = images.astype(np.float64)
    total = weights.sum(axis=(1, 2))
    com_y = (weights.sum(2) * np.arange(28)).sum(1) / total
    com_x = (weights.sum(1) * np.arange(28)).sum(1) / total
    assert np.all(np.abs(com_y - 14) < 2) and np.all(np.abs(com_x - 14) < 2)
    assert ink[:, :2].mean() < 0.01 and ink[:, :, :2].mean() < 0.01


def test_nearest_class_mean_learns_heldout_digits(train_and_heldout):
    (images, labels), (test_images, test_labels) = train_and_heldout
    means = _class_means(images, labels)
    distance = ((_flat(test_images)[:, None] - means[None]) ** 2).sum(-1)
    predicted = distance.argmin(1)
    assert (predicted == test_labels).mean() > 0.8
    recall = [(predicted[test_labels == c] == c).mean() for c in range(10)]
    assert min(recall) > 0.6, recall  # No class is swallowed by another.


def test_classes_are_distinct(train_and_heldout):
    (images, labels), _ = train_and_heldout
    means = _class_means(images, labels)
    pairwise = np.sqrt(((means[:, None] - means[None]) ** 2).sum(-1))
    spread = np.mean([np.sqrt(((_flat(images[labels == c]) - means[c]) ** 2).sum(-1)).mean()
                      for c in range(10)])
    off_diagonal = pairwise[np.triu_indices(10, 1)]
    # Real MNIST t10k[0:8000]: min 0.39 and mean 0.77 of the within-class spread.
    assert off_diagonal.min() > 0.35 * spread
    assert off_diagonal.mean() > 0.7 * spread


def test_shuffled_labels_are_not_learnable():
    # Guards the test above: the same classifier must fail when labels carry no signal.
    images, labels = make_digits(400, seed=3)
    shuffled = np.random.default_rng(0).permutation(labels)
    means = _class_means(images[:300], shuffled[:300])
    distance = ((_flat(images[300:])[:, None] - means[None]) ** 2).sum(-1)
    assert (distance.argmin(1) == shuffled[300:]).mean() < 0.3


@pytest.mark.parametrize("kwargs", [dict(num=-1, seed=0), dict(num=2, seed=-3),
                                    dict(num=2, seed=0, start=-1), dict(num=2.5, seed=0)])
def test_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError, match="must be an integer >= 0"):
        make_digits(**kwargs)


def test_every_class_has_a_skeleton():
    assert len(synthetic_digits._SKELETONS) == synthetic_digits.NUM_CLASSES
