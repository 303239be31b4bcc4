"""Shared fixtures for the data-layer tests."""

import pathlib

import pytest

from rnnvision.data import mnist


@pytest.fixture(scope="session")
def real_mnist_files() -> tuple[pathlib.Path, pathlib.Path]:
    """(images, labels) paths of the real MNIST t10k[0:8000] subset, or a skip."""
    folder = mnist.default_mnist_dir()
    if folder is None:
        pytest.skip(
            f"no real MNIST files: set ${mnist.MNIST_DIR_ENV} or provide "
            "<repo>/../shared/data/mnist (never copied into the repo)"
        )
    return folder / mnist.MNIST_SUBSET_IMAGES, folder / mnist.MNIST_SUBSET_LABELS
