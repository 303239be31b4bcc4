"""load_mnist from each source, the real shared digits, and config errors."""

import types

import numpy as np
import pytest

from rnnvision.data import idx, mnist
from rnnvision.data.mnist import load_mnist


def _config(**fields):
    return types.SimpleNamespace(**fields)


@pytest.fixture()
def idx_pool(tmp_path):
    """Writes a 40-record train pool and a 12-record eval pool; returns their paths."""
    rng = np.random.default_rng(0)
    paths = {}
    for name, size in (("train", 40), ("eval", 12)):
        images = rng.integers(0, 256, (size, 28, 28), dtype=np.uint8)
        labels = (np.arange(size) % 10).astype(np.uint8)
        paths[name] = (tmp_path / f"{name}-images.gz", tmp_path / f"{name}-labels.gz")
        idx.write_idx(paths[name][0], images)
        idx.write_idx(paths[name][1], labels)
    return paths


# ------------------------------------------------------------------ real digits


def test_real_mnist_subset(real_mnist_files):
    images, labels = idx.load_idx_pair(*real_mnist_files)
    assert images.shape == (8000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (8000,) and labels.dtype == np.int32
    counts = np.bincount(labels, minlength=10)
    assert counts.sum() == 8000 and np.all((counts >= 600) & (counts <= 1000)), counts
    assert abs(images.mean() - 33.3) < 2.0  # MNIST's mean pixel is about 33/255.
    assert images.max() == 255 and np.median(images) == 0


def test_real_mnist_subset_through_load_mnist(real_mnist_files):
    data = _config(source="idx", idx_images=str(real_mnist_files[0]),
                   idx_labels=str(real_mnist_files[1]), eval_idx_images="",
                   eval_idx_labels="", train_slice=mnist.MNIST_SUBSET_TRAIN_SLICE,
                   eval_slice=mnist.MNIST_SUBSET_EVAL_SLICE)
    train_images, train_labels = load_mnist(data, "train")
    eval_images, eval_labels = load_mnist(data, "eval")
    assert train_images.shape == (7000, 28, 28) and eval_images.shape == (1000, 28, 28)
    all_images, _ = idx.load_idx_pair(*real_mnist_files)
    np.testing.assert_array_equal(eval_images, all_images[7000:])


def test_default_mnist_dir_honours_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(mnist.MNIST_DIR_ENV, str(tmp_path))
    assert mnist.default_mnist_dir() == tmp_path
    monkeypatch.setenv(mnist.MNIST_DIR_ENV, "")
    found = mnist.default_mnist_dir()
    assert found is None or (found.is_dir() and found.name == "mnist")


# ------------------------------------------------------------------ idx source


def test_idx_separate_eval_pool(idx_pool):
    data = _config(source="idx", idx_images=str(idx_pool["train"][0]),
                   idx_labels=str(idx_pool["train"][1]),
                   eval_idx_images=str(idx_pool["eval"][0]),
                   eval_idx_labels=str(idx_pool["eval"][1]))
    train, evaluation = load_mnist(data, "train"), load_mnist(data, "eval")
    assert train[0].shape == (40, 28, 28) and evaluation[0].shape == (12, 28, 28)
    assert train[1].dtype == np.int32 and evaluation[1].dtype == np.int32
    np.testing.assert_array_equal(evaluation[0], idx.read_idx(idx_pool["eval"][0]))
    data.eval_slice = "2:5"  # Slices apply to the pool the split reads.
    np.testing.assert_array_equal(load_mnist(data, "eval")[0], evaluation[0][2:5])


def test_idx_split_one_pool_by_slices(idx_pool):
    data = _config(source="idx", idx_images=str(idx_pool["train"][0]),
                   idx_labels=str(idx_pool["train"][1]), eval_idx_images="",
                   eval_idx_labels="", train_slice="0:30", eval_slice="30:")
    pool = idx.read_idx(idx_pool["train"][0])
    np.testing.assert_array_equal(load_mnist(data, "train")[0], pool[:30])
    np.testing.assert_array_equal(load_mnist(data, "eval")[0], pool[30:])


@pytest.mark.parametrize("slices, message", [
    (("0:30", "20:40"), "share 10 of the 40 records"),
    (("", ""), "share 40 of the 40 records"),
    (("0:30", "30:50"), r"data.eval_slice='30:50' is out of range for 40 records"),
    (("0-30", "30:40"), r"data.train_slice='0-30' is not a slice"),
    ((30, "30:40"), r"data.train_slice=30 is not a slice"),
    (("0:30", "40:40"), "the 'eval' split is empty"),
])
def test_idx_bad_slices(idx_pool, slices, message):
    data = _config(source="idx", idx_images=str(idx_pool["train"][0]),
                   idx_labels=str(idx_pool["train"][1]), eval_idx_images="",
                   eval_idx_labels="", train_slice=slices[0], eval_slice=slices[1])
    with pytest.raises(ValueError, match=message):
        load_mnist(data, "eval")


def test_idx_half_an_eval_pool_is_an_error(idx_pool):
    data = _config(source="idx", idx_images=str(idx_pool["train"][0]),
                   idx_labels=str(idx_pool["train"][1]),
                   eval_idx_images=str(idx_pool["eval"][0]), eval_idx_labels="")
    with pytest.raises(ValueError, match="set both"):
        load_mnist(data, "train")


@pytest.mark.parametrize("images", [None, ""])  # Configs default paths to "".
def test_idx_missing_field_is_named(images):
    data = _config(source="idx", eval_slice="0:1", train_slice="1:2")
    if images is not None:
        data.idx_images = images
    with pytest.raises(ValueError, match="data.idx_images is required for data.source='idx'"):
        load_mnist(data, "train")


# ------------------------------------------------------------------ synthetic source


def test_synthetic_source():
    data = _config(source="synthetic", num_train=50, num_eval=20, seed=3)
    train_images, train_labels = load_mnist(data, "train")
    eval_images, eval_labels = load_mnist(data, "eval")
    assert train_images.shape == (50, 28, 28) and train_images.dtype == np.uint8
    assert eval_images.shape == (20, 28, 28) and eval_labels.dtype == np.int32
    np.testing.assert_array_equal(load_mnist(data, "train")[0], train_images)
    same = (eval_images[:, None] == train_images[None]).all(axis=(2, 3))
    assert not same.any()  # Eval digits come from another stream: never a train digit.


def test_synthetic_source_reads_a_config_dict():
    ml_collections = pytest.importorskip("ml_collections")
    data = ml_collections.ConfigDict(dict(source="synthetic", num_train=10, num_eval=10,
                                          seed=0))
    assert load_mnist(data, "eval")[0].shape == (10, 28, 28)


def test_synthetic_source_rejects_empty_split():
    data = _config(source="synthetic", num_train=0, num_eval=20, seed=3)
    with pytest.raises(ValueError, match=r"data.num_train=0; must be an integer >= 1"):
        load_mnist(data, "train")


# ------------------------------------------------------------------ tfds source


def test_tfds_source_on_mock_data():
    tfds = pytest.importorskip("tensorflow_datasets")
    pytest.importorskip("tensorflow")
    data = _config(source="tfds", tfds_name="mnist", tfds_data_dir="")
    with tfds.testing.mock_data(num_examples=7):
        for split in ("train", "eval"):
            images, labels = load_mnist(data, split)
            assert images.shape == (7, 28, 28) and images.dtype == np.uint8
            assert labels.shape == (7,) and labels.dtype == np.int32
            assert labels.min() >= 0 and labels.max() <= 9


# ------------------------------------------------------------------ errors


def test_unknown_source_names_the_field_and_the_choices():
    with pytest.raises(ValueError) as err:
        load_mnist(_config(source="mnist_csv"), "train")
    message = str(err.value)
    assert "data.source='mnist_csv'" in message
    assert all(source in message for source in ("tfds", "idx", "synthetic"))


def test_missing_source_and_unknown_split():
    with pytest.raises(ValueError, match="data.source=None is not a known source; allowed"):
        load_mnist(_config(), "train")
    with pytest.raises(ValueError, match="split='test'; allowed: train, eval"):
        load_mnist(_config(source="synthetic"), "test")


def test_idx_images_must_be_28x28(tmp_path):
    images, labels = tmp_path / "i.gz", tmp_path / "l.gz"
    idx.write_idx(images, np.zeros((10, 32, 32), np.uint8))
    idx.write_idx(labels, np.zeros(10, np.uint8))
    data = _config(source="idx", idx_images=str(images), idx_labels=str(labels),
                   train_slice="0:5", eval_slice="5:10")
    with pytest.raises(ValueError, match="images are 32x32.*needs 28x28") as err:
        load_mnist(data, "train")
    assert str(err.value).startswith(str(images))
