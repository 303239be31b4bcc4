"""Blocks and helpers shared by the experiment configs."""

from __future__ import annotations

import os
from typing import Any, Callable

import ml_collections

from rnnvision.data.mnist import (MNIST_DIR_ENV, MNIST_SUBSET_EVAL_SLICE, MNIST_SUBSET_IMAGES,
                                  MNIST_SUBSET_LABELS, MNIST_SUBSET_TRAIN_SLICE, default_mnist_dir)


def variants(arg: str | None, known: dict) -> list[str]:
    """"gru,idx" -> ["gru", "idx"], each checked against `known` (name -> description)."""
    names = [v.strip() for v in (arg or "").split(",") if v.strip()]
    for name in names:
        if name not in known:
            raise ValueError(f"unknown config variant {name!r}; known variants: "
                             + "; ".join(f"{k} ({v})" for k, v in known.items()))
    return names


def apply_variants(config, arg: str | None, known: dict, apply: Callable) -> Any:
    """Applies each variant of `arg` in order, then locks and returns `config`.

    "real" (when `known` lists it) points config.data at the real MNIST subset
    (`use_real_mnist`); every other name goes to `apply(config, name)`.
    """
    for name in variants(arg, known):
        if name == "real":
            use_real_mnist(config.data)
        else:
            apply(config, name)
    config.lock()
    return config


def use_real_mnist(data) -> None:
    """Points `data` at the real MNIST t10k[0:8000] IDX files: first 7000 train, last 1000 eval.

    The directory is $RNNVISION_MNIST_DIR or ../shared/data/mnist next to the repo.
    """
    directory = str(default_mnist_dir() or os.environ.get(MNIST_DIR_ENV, "../shared/data/mnist"))
    data.source = "idx"
    data.idx_images = os.path.join(directory, MNIST_SUBSET_IMAGES)
    data.idx_labels = os.path.join(directory, MNIST_SUBSET_LABELS)
    data.train_slice = MNIST_SUBSET_TRAIN_SLICE
    data.eval_slice = MNIST_SUBSET_EVAL_SLICE


def mnist_source(num_train: int, num_eval: int) -> ml_collections.ConfigDict:
    """The MNIST digit-source fields every experiment on digits shares (a `data` section
    to extend); `num_train` / `num_eval`: the synthetic pools' sizes."""
    d = ml_collections.ConfigDict()
    d.source = "synthetic"       # "synthetic" (offline, generated), "idx" (local files) or "tfds"
    d.num_train = num_train      # synthetic: training-pool digits generated
    d.num_eval = num_eval        # synthetic: evaluation-pool digits (a separate seed stream)
    d.seed = 0                   # synthetic: digit generator seed (some tasks also seed data with it)
    d.idx_images = ""            # idx: training-pool image file (IDX, .gz or plain)
    d.idx_labels = ""            # idx: training-pool label file
    d.eval_idx_images = ""       # idx: separate evaluation pool ("" = slice the training pool)
    d.eval_idx_labels = ""       # idx: its labels
    d.train_slice = ""           # idx: "start:stop" rows of the pool for training ("" = all)
    d.eval_slice = ""            # idx: rows for evaluation when no separate pool is given
    d.tfds_name = "mnist"        # tfds: data set name
    d.tfds_data_dir = ""         # tfds: data_dir ("" = TFDS default)
    return d
