"""MNIST-like digits from one of three sources, chosen by config: `load_mnist(data, split)`.

Every source returns the same thing: images uint8 (N, 28, 28) with white ink on black,
and labels int32 (N,) in 0..9. `split` is "train" or "eval".

Config fields (`data` is any object with attributes: an ml_collections ConfigDict, a
SimpleNamespace, ...; optional fields may be absent):

  source           "tfds" | "idx" | "synthetic".

  source="synthetic": offline, generated, deterministic (`synthetic_digits`); the
  quick-start default.
  num_train        number of training digits.
  num_eval         number of evaluation digits.
  seed             integer seed. Train digits are stream 0 of the seed and eval digits
                   stream 1, so the two never coincide, whatever their sizes.

  source="idx": local IDX files (plain or gzip), e.g. the real MNIST subset in
  `default_mnist_dir()`.
  idx_images, idx_labels            the training pool's files.
  eval_idx_images, eval_idx_labels  the evaluation pool's files; empty strings (or
                   absent) mean "split the training pool instead".
  train_slice      optional "start:stop" applied to the pool "train" reads, e.g.
                   "0:7000"; empty or absent means the whole pool.
  eval_slice       the same for "eval", e.g. "7000:8000". Without eval files both
                   slices cut the training pool and must not overlap (so at least
                   one must be set): evaluating on training records is refused.

  source="tfds": TensorFlow Datasets (downloads on first use; needs tensorflow).
  tfds_name        data set name; optional, default "mnist" ("fashion_mnist",
                   "kmnist", ... have the same features).
  tfds_data_dir    optional TFDS data directory; empty or absent for TFDS's default.
  "train" reads the TFDS split "train" and "eval" reads "test".

Every error about these fields is a `DataSourceError` (a ValueError) naming the field,
its value and what to do, on one line; a malformed file is an `idx.IdxFileError`.

The real MNIST digits shared with the project (`default_mnist_dir()`) are records
0..7999 of the official t10k test set. Their documented split is the first 7000 for
training and the last 1000 for evaluation (`MNIST_SUBSET_TRAIN_SLICE`,
`MNIST_SUBSET_EVAL_SLICE`); results on them are labelled "MNIST t10k[0:8000] subset",
never "MNIST". The files are read in place and never copied into the repository.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

import numpy as np

from rnnvision.data import idx, synthetic_digits

IMAGE_SIZE = 28  # Every source yields (N, 28, 28) images.
SOURCES = ("tfds", "idx", "synthetic")
SPLITS = ("train", "eval")

MNIST_DIR_ENV = "RNNVISION_MNIST_DIR"
MNIST_SUBSET_IMAGES = "mnist-t10k-0-8000-images-idx3-ubyte.gz"
MNIST_SUBSET_LABELS = "mnist-t10k-0-8000-labels-idx1-ubyte.gz"
MNIST_SUBSET_TRAIN_SLICE = "0:7000"
MNIST_SUBSET_EVAL_SLICE = "7000:8000"
MNIST_SUBSET_NAME = "MNIST t10k[0:8000] subset"  # How tables must label results on it.

_TFDS_SPLITS = {"train": "train", "eval": "test"}


class DataSourceError(ValueError):
    """A data.* field that does not give a usable source: unset, a missing file, a bad
    slice; the message names the field."""


_TRAIN_STREAM, _EVAL_STREAM = 0, 1  # Synthetic digit streams; see synthetic_digits.


def default_mnist_dir() -> pathlib.Path | None:
    """The folder holding the real MNIST subset files, or None where there is none.

    `$RNNVISION_MNIST_DIR` when set (returned even if missing, so a wrong setting fails
    loudly instead of skipping), else `<repo>/../shared/data/mnist` when it exists.
    """
    if os.environ.get(MNIST_DIR_ENV):
        return pathlib.Path(os.environ[MNIST_DIR_ENV])
    repo = pathlib.Path(__file__).resolve().parents[2]
    shared = repo.parent / "shared" / "data" / "mnist"
    return shared if shared.is_dir() else None


def load_mnist(data: Any, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Loads one split of MNIST-like digits as the config `data` says (module docstring).

    Args:
      data: the data config; `data.source` picks the source.
      split: "train" or "eval".

    Returns:
      images: uint8 (N, 28, 28), N >= 1.
      labels: int32 (N,) in 0..9.

    Raises:
      DataSourceError (a ValueError): an unknown source, a missing or bad field, a missing
        file, or an empty split; idx.IdxFileError: a malformed file; ValueError: an
        unknown split.
    """
    if split not in SPLITS:
        raise ValueError(f"load_mnist: split={split!r}; allowed: {', '.join(SPLITS)}.")  # a bug
    source = getattr(data, "source", None)
    loaders = {"tfds": _load_tfds, "idx": _load_idx, "synthetic": _load_synthetic}
    if source not in loaders:
        raise DataSourceError(
            f"data.source={source!r} is not a known source; allowed: {', '.join(SOURCES)}."
        )
    images, labels = loaders[source](data, split)
    if len(images) == 0:
        raise DataSourceError(f"data.source={source!r}: the {split!r} split is empty.")
    if images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):  # E.g. a tfds_name of another shape.
        raise DataSourceError(
            f"data.source={source!r}: images of shape {images.shape[1:]}; allowed: "
            f"({IMAGE_SIZE}, {IMAGE_SIZE}) MNIST-style digits."
        )
    return images, labels


def _field(data: Any, name: str, default: Any = None, required: bool = True) -> Any:
    """`data.<name>`; a ValueError naming the field if it is required and unset.

    Configs declare every field with an empty default ("" for paths), so "" counts as
    unset too.
    """
    value = getattr(data, name, default)
    if required and (value is None or value == ""):
        raise DataSourceError(
            f"data.{name} is required for data.source={data.source!r} but is not set; set "
            f"it with --config.data.{name}=..."
        )
    return value


def parse_slice(text: str | None, field: str, size: int) -> slice:
    """Parses "start:stop" (either part optional; "" or None: all) into a slice.

    Bounds must lie in 0..size, so a slice that asks for records a file lacks fails
    here instead of silently yielding fewer.
    """
    if not text:
        return slice(0, size)
    parts = text.split(":") if isinstance(text, str) else []
    try:
        if len(parts) != 2:
            raise ValueError
        start, stop = (int(p) if p.strip() else None for p in parts)
    except ValueError:
        raise DataSourceError(
            f"{field}={text!r} is not a slice; allowed: 'start:stop' with optional "
            "non-negative integers, e.g. '0:7000'."
        ) from None
    start = 0 if start is None else start
    stop = size if stop is None else stop
    if not 0 <= start <= stop <= size:
        raise DataSourceError(
            f"{field}={text!r} is out of range for {size} records; need "
            f"0 <= start <= stop <= {size}."
        )
    return slice(start, stop)


def _load_idx(data: Any, split: str) -> tuple[np.ndarray, np.ndarray]:
    eval_images = _field(data, "eval_idx_images", "", required=False)
    eval_labels = _field(data, "eval_idx_labels", "", required=False)
    if bool(eval_images) != bool(eval_labels):
        raise DataSourceError(
            f"data.eval_idx_images={eval_images!r} and data.eval_idx_labels="
            f"{eval_labels!r}: set both (a separate eval pool) or neither (split the "
            "training pool)."
        )
    if split == "eval" and eval_images:
        images_path, labels_path = eval_images, eval_labels
    else:
        images_path, labels_path = _field(data, "idx_images"), _field(data, "idx_labels")
    for name, path in _idx_fields(split, bool(eval_images), images_path, labels_path):
        _check_file(name, path)
    images, labels = idx.load_idx_pair(images_path, labels_path)
    if images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise DataSourceError(
            f"{os.fspath(images_path)}: images are {images.shape[1]}x{images.shape[2]}; "
            f"data.source='idx' needs {IMAGE_SIZE}x{IMAGE_SIZE} MNIST-style digits."
        )
    field = f"data.{split}_slice"
    part = parse_slice(_field(data, f"{split}_slice", "", required=False), field, len(images))
    if not eval_images:
        _check_disjoint(data, len(images))
    return images[part], labels[part]


def _idx_fields(split: str, separate_eval: bool, images: str, labels: str):
    """(field name, path) of the two files `split` reads."""
    prefix = "eval_" if split == "eval" and separate_eval else ""
    return ((f"data.{prefix}idx_images", images), (f"data.{prefix}idx_labels", labels))


def _check_file(field: str, path: Any) -> None:
    """A DataSourceError naming `field` when `path` is not an existing regular file."""
    path = os.fspath(path)
    if os.path.isdir(path):
        problem = "is a directory, not a file"
    elif not os.path.exists(path):
        problem = "does not exist"
    else:
        return
    raise DataSourceError(
        f"{field}={path!r} {problem}; set it to an IDX file (plain or .gz), e.g. the "
        "real MNIST subset of the `real` config variant"
    )


def _check_disjoint(data: Any, size: int) -> None:
    """Train and eval slices of one pool must not share records: that would leak."""
    texts = {name: _field(data, f"{name}_slice", "", required=False)
             for name in ("train", "eval")}
    train, evaluation = (parse_slice(texts[name], f"data.{name}_slice", size)
                         for name in ("train", "eval"))
    overlap = min(train.stop, evaluation.stop) - max(train.start, evaluation.start)
    if overlap > 0:
        raise DataSourceError(
            f"data.train_slice={texts['train']!r} and data.eval_slice={texts['eval']!r} "
            f"share {overlap} of the {size} records of the one IDX pool; without eval "
            "files they must be disjoint, e.g. '0:7000' and '7000:8000'."
        )


def _load_synthetic(data: Any, split: str) -> tuple[np.ndarray, np.ndarray]:
    num_field = "num_train" if split == "train" else "num_eval"
    num = _field(data, num_field)
    if isinstance(num, bool) or not isinstance(num, (int, np.integer)) or num < 1:
        raise DataSourceError(f"data.{num_field}={num!r}; must be an integer >= 1.")
    stream = _TRAIN_STREAM if split == "train" else _EVAL_STREAM
    return synthetic_digits.make_digits(int(num), int(_field(data, "seed")), stream=stream)


def _load_tfds(data: Any, split: str) -> tuple[np.ndarray, np.ndarray]:
    import tensorflow_datasets as tfds  # Lazy: TensorFlow is heavy and often absent.

    name = _field(data, "tfds_name", "mnist", required=False) or "mnist"
    data_dir = _field(data, "tfds_data_dir", None, required=False) or None
    dataset = tfds.load(name, split=_TFDS_SPLITS[split], data_dir=data_dir)
    # Batches of 4096, not batch_size=-1: TFDS turns -1 into one batch of the split's
    # recorded size; under tfds.testing.mock_data none is recorded and TF 2.21 aborts
    # the whole process (std::length_error in vector::reserve).
    batches = list(tfds.as_numpy(dataset.batch(4096)))
    if not batches:
        return np.zeros((0, 28, 28), np.uint8), np.zeros((0,), np.int32)
    images = np.concatenate([b["image"] for b in batches])[..., 0]  # Drop channel axis.
    labels = np.concatenate([b["label"] for b in batches]).astype(np.int32)
    return images.astype(np.uint8), labels
