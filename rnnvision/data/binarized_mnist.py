"""Binarised MNIST: digits with 0/1 pixels, each pixel ~ Bernoulli(intensity / 255).

The grey digits come from any MNIST source (`rnnvision.data.mnist.load_mnist`:
synthetic, idx files or TFDS); this module only turns them into binary images,
in the two ways that likelihood results on binarised MNIST rely on:

  training    binarised afresh every time a digit is drawn ("dynamic"
              binarisation): each epoch shows a new binary version of every
              digit, samples of the one distribution "binarised digit". Batch s
              is a pure function of (seed, s): `BinarizedDigits.batch(s)`, so a
              run resumed at step s draws exactly the batches it would have.
  evaluation  binarised once, with a fixed seed (`EVAL_SEED`) that does not
              depend on the run's seed: every run and every model is scored on
              the same binary images, so their NLLs compare
              (`binarize_fixed`).

These are not the images of the standard, fixed binarised MNIST that the
PixelRNN paper's numbers are on: NLLs here compare with each other, and only
roughly with the paper's.

Shape legend: N digits, B batch, (H, W) = (28, 28); binary images are uint8
(N, H, W, 1) with values 0 and 1, the channel axis added for image models.
"""

from __future__ import annotations

import numpy as np

from rnnvision.data.sampler import EpochSampler

EVAL_SEED = 0  # fixed for every run: the evaluation images never change
# Two streams, so training draws never repeat the evaluation's: training batch s uses
# default_rng([seed, _TRAIN_STREAM, s]), the evaluation default_rng([EVAL_SEED, _EVAL_STREAM]).
_TRAIN_STREAM, _EVAL_STREAM = 0, 1


def binarize(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """uint8 (N, H, W) intensities -> uint8 (N, H, W, 1): 1 with probability intensity / 255."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise ValueError(f"binarize takes uint8 (N, H, W) digits; got {images.dtype} "
                         f"{images.shape}")
    return (rng.random(images.shape) < images / 255.0).astype(np.uint8)[..., None]


def binarize_fixed(images: np.ndarray, seed: int = EVAL_SEED) -> np.ndarray:
    """The evaluation images: `binarize` once with `seed` (default EVAL_SEED)."""
    return binarize(images, np.random.default_rng([seed, _EVAL_STREAM]))


class BinarizedDigits:
    """Training batches of binarised digits, a fresh binarisation for every draw.

    Attributes:
      images: uint8 (N, H, W) the grey digits.
      sampler: the EpochSampler choosing which digits batch s holds.
      seed: integer >= 0; seeds both the shuffling and the binarisation.

    Example:
      train = BinarizedDigits(load_mnist(config.data, "train")[0], batch_size=32, seed=0)
      batch = train.batch(step)            # uint8 (32, 28, 28, 1) in {0, 1}
    """

    def __init__(self, images: np.ndarray, batch_size: int, seed: int):
        self.images = np.asarray(images)
        if self.images.dtype != np.uint8 or self.images.ndim != 3:
            raise ValueError(f"BinarizedDigits takes uint8 (N, H, W) digits; got "
                             f"{self.images.dtype} {self.images.shape}")
        self.sampler = EpochSampler(len(self.images), batch_size, seed)
        self.seed = self.sampler.seed

    def batch(self, step: int) -> np.ndarray:
        """uint8 (B, H, W, 1): the digits of step `step`, binarised by (seed, step)."""
        digits = self.images[self.sampler.indices(step)]
        return binarize(digits, np.random.default_rng([self.seed, _TRAIN_STREAM, step]))
