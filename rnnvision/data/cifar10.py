"""CIFAR-10 through TensorFlow Datasets (`cifar10`): 32x32 colour images, 10 classes.

    images, labels = load_cifar10("train")    # uint8 (50000, 32, 32, 3), int32 (50000,)
    images, labels = load_cifar10("eval")     # the TFDS "test" split, 10000 images

TFDS downloads the data set on first use (about 160 MB) into its data directory
(`data_dir`, default TFDS's own, e.g. ~/tensorflow_datasets); TensorFlow is
imported only inside `load_cifar10`.
"""

from __future__ import annotations

import numpy as np

IMAGE_SHAPE = (32, 32, 3)
SPLITS = {"train": "train", "eval": "test"}  # our split -> the TFDS split


def load_cifar10(split: str, data_dir: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One split of CIFAR-10: images uint8 (N, 32, 32, 3) and labels int32 (N,) in 0..9.

    Args:
      split: "train" or "eval" (TFDS "test").
      data_dir: TFDS data directory; None or "" for TFDS's default.
    """
    if split not in SPLITS:
        raise ValueError(f"load_cifar10: split={split!r}; allowed: {', '.join(SPLITS)}.")
    import tensorflow_datasets as tfds  # Lazy: TensorFlow is heavy and often absent.

    dataset = tfds.load("cifar10", split=SPLITS[split], data_dir=data_dir or None)
    # Batches of 4096, not batch_size=-1: under tfds.testing.mock_data TFDS has no
    # recorded split size for -1 and TF aborts (see rnnvision.data.mnist).
    batches = list(tfds.as_numpy(dataset.batch(4096)))
    if not batches:
        raise ValueError(f"load_cifar10: the {split!r} split is empty.")
    images = np.concatenate([b["image"] for b in batches]).astype(np.uint8)
    labels = np.concatenate([b["label"] for b in batches]).astype(np.int32)
    if images.shape[1:] != IMAGE_SHAPE:
        raise ValueError(f"load_cifar10: images of shape {images.shape[1:]}; "
                         f"expected {IMAGE_SHAPE}")
    return images, labels
