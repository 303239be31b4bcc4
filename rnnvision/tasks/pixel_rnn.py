r"""PixelRNN: images modelled pixel by pixel with an exact likelihood (van den Oord et al., 2016).

Data (data.dataset):
  binarized_mnist  28x28 digits from any MNIST source (data.source = synthetic, idx or
                   tfds; `rnnvision.data.load_mnist`) with 0/1 pixels, a Bernoulli per
                   pixel (rnnvision.data.binarized_mnist):
                     training    binarised afresh every time a digit is drawn (pixel ~
                                 Bernoulli(intensity / 255)); batch s is a pure function
                                 of (seed, s), so a resumed run draws the same batches;
                     evaluation  binarised once with the fixed seed EVAL_SEED, whatever
                                 the run's seed: every run and every model is scored on
                                 the same binary images.
  cifar10          32x32 colour images through TFDS (train 50,000 / test 10,000;
                   data.source must be "tfds"), each channel a 256-way softmax.

Model: rnnvision.models.pixel_rnn.PixelRNN, Row LSTM or Diagonal BiLSTM layers
(model.layer). Its recurrences (over rows, or over skewed columns) run through the
run's TimeLoop, so train.truncation (in rows / skewed columns), train.remat and
train.unroll reach them; train.loop_impl="fused" is refused (neither layer has a
fused fast path). Sampling and completion (figures) use the exact incremental
sampler (rnnvision.models.pixel_rnn_sampling); they compute no gradients, so
truncation and remat have nothing to act on there.

Shape legend: B images, (H, W, C) an image, D = H*W*C dimensions, K levels per
channel (2 or 256).

Loss: the negative log-likelihood in nats per dimension, averaged over the batch
(per dimension so that one clipping threshold suits any image size); logged with
it: `nll_nats` (per image) and `bits_per_dim`.

results.json (the evaluation set, eval.num_images of it if > 0):
  nll_nats               mean NLL per image, nats
  bits_per_dim           nll_nats / (D ln 2)
  baseline_nll_nats      the independent-pixel baseline on the same images: every
                         pixel channel an independent categorical (a Bernoulli for
                         binary pixels) fitted to the training images, add-one smoothed
  baseline_bits_per_dim
  num_images, num_parameters
Figures (DIR/figures/): samples.png (eval.num_samples new images), completions.png
(eval.num_completions evaluation images with their top half given, the bottom half
sampled eval.completion_samples times, next to the originals), learning_curves.png.
"""

from __future__ import annotations

import math
import os
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from rnnvision.config_checks import ConfigError, check, int_at_least, one_of
from rnnvision.cells.base import COMPUTE_DTYPES
from rnnvision.data import BinarizedDigits, EpochSampler, binarize_fixed, load_cifar10, load_mnist
from rnnvision.models.pixel_rnn import LAYERS, PixelRNN, num_parameters
from rnnvision.models.pixel_rnn_sampling import complete, sample
from rnnvision.tasks.base import Apply, Task
from rnnvision.tasks.evaluation import map_in_chunks

DATASETS = ("binarized_mnist", "cifar10")


def _odd(v) -> bool:
    return int_at_least(1)(v) and v % 2 == 1


_RULES = [
    ("data.dataset", one_of(DATASETS), f"one of {DATASETS}"),
    ("model.layer", one_of(LAYERS), f"one of {LAYERS}"),
    ("model.num_layers", int_at_least(1), "an integer >= 1"),
    ("model.features", int_at_least(1), "an integer >= 1"),
    ("model.head_features", int_at_least(1), "an integer >= 1"),
    ("model.input_kernel", _odd, "an odd integer >= 1"),
    ("model.row_kernel", _odd, "an odd integer >= 1"),
    ("model.compute_dtype", one_of(COMPUTE_DTYPES), f"one of {COMPUTE_DTYPES}"),
    ("eval.num_images", int_at_least(0), "0 (the whole evaluation set) or an integer >= 1"),
    ("eval.num_samples", int_at_least(1), "an integer >= 1"),
    ("eval.num_completions", int_at_least(1), "an integer >= 1"),
    ("eval.completion_samples", int_at_least(1), "an integer >= 1"),
    ("eval.sample_seed", int_at_least(0), "an integer >= 0"),
]


# -- the independent-pixel baseline ---------------------------------------------------

def independent_pixel_log_probs(counts: np.ndarray, num_images: float) -> np.ndarray:
    """Counts (H, W, C, K) of each level at each pixel channel over `num_images`
    training images -> log p (H, W, C, K), add-one smoothed: p = (count + 1) / (N + K)."""
    levels = counts.shape[-1]
    return np.log((counts + 1.0) / (num_images + levels)).astype(np.float32)


def independent_pixel_nll(log_probs: jax.Array, batch: Mapping[str, jax.Array]) -> jax.Array:
    """-sum_d log p_d(x_d) per image: log_probs (H, W, C, K), batch["images"] int
    (B, H, W, C) -> (B,) nats."""
    images = batch["images"]
    dims, levels = math.prod(images.shape[1:]), log_probs.shape[-1]
    # Flat gather: the (B, D, K) one-hot product would not fit for K = 256.
    index = jnp.arange(dims) * levels + images.reshape(len(images), dims).astype(jnp.int32)
    return -jnp.sum(log_probs.reshape(-1)[index], axis=1)


# -- data ---------------------------------------------------------------------------

class _BinarizedMnist:
    """Binary digits (module docstring): uint8 (N, 28, 28, 1) in {0, 1}."""

    image_shape, levels = (28, 28, 1), 2

    def __init__(self, config):
        train_digits, _ = load_mnist(config.data, "train")
        eval_digits, _ = load_mnist(config.data, "eval")
        self.train = BinarizedDigits(train_digits, config.train.batch_size, config.seed)
        self.eval_images = binarize_fixed(eval_digits)

    def train_batch(self, step: int) -> np.ndarray:
        return self.train.batch(step)

    def level_counts(self) -> tuple[np.ndarray, int]:
        """(H, W, 1, 2) expected counts of 0 and 1 over one binarisation of the training
        digits (the mean of the fresh binarisations training draws), and N."""
        ones = self.train.images.astype(np.float64).sum(axis=0)[..., None] / 255.0
        n = len(self.train.images)
        return np.stack([n - ones, ones], axis=-1), n


class _Cifar10:
    """CIFAR-10 from TFDS: uint8 (N, 32, 32, 3) in 0..255."""

    image_shape, levels = (32, 32, 3), 256

    def __init__(self, config):
        if config.data.source != "tfds":
            raise ConfigError("data.source", config.data.source,
                              "'tfds' for data.dataset='cifar10' (CIFAR-10 is read through TFDS)")
        data_dir = config.data.tfds_data_dir or None
        self.train_images, _ = load_cifar10("train", data_dir)
        self.eval_images, _ = load_cifar10("eval", data_dir)
        self.sampler = EpochSampler(len(self.train_images), config.train.batch_size, config.seed)

    def train_batch(self, step: int) -> np.ndarray:
        return self.train_images[self.sampler.indices(step)]

    def level_counts(self) -> tuple[np.ndarray, int]:
        """(H, W, 3, 256) counts of each level at each pixel channel, and N."""
        n, dims = len(self.train_images), math.prod(self.image_shape)
        flat = self.train_images.reshape(n, dims).astype(np.int64) + np.arange(dims) * self.levels
        counts = np.bincount(flat.reshape(-1), minlength=dims * self.levels)
        return counts.reshape(*self.image_shape, self.levels).astype(np.float64), n


# -- the task ---------------------------------------------------------------------------

class PixelRNNTask(Task):
    """PixelRNN likelihood training, evaluation and sampling (see the module docstring)."""

    def __init__(self, config, time_loop):
        super().__init__(config, time_loop)
        check(config, _RULES)
        data_class = _Cifar10 if config.data.dataset == "cifar10" else _BinarizedMnist
        self.model = self._build_model(config, data_class)
        self.check_time_loop([self.model.cell])
        self.data = data_class(config)
        self.eval_images = self.data.eval_images[:config.eval.num_images or None]
        self._baseline_log_probs: np.ndarray | None = None
        self._baseline_nll: float | None = None  # depends on no parameter: computed once

    def _build_model(self, config, data_class) -> PixelRNN:
        m, channels = config.model, data_class.image_shape[-1]
        for name in ("features", "head_features"):
            if m[name] % channels:
                raise ConfigError(f"model.{name}", m[name], f"a multiple of {channels} (one "
                                  f"group per colour channel of {config.data.dataset})")
        return PixelRNN(image_shape=data_class.image_shape, levels=data_class.levels,
                        layer=m.layer, num_layers=m.num_layers, features=m.features,
                        head_features=m.head_features, input_kernel=m.input_kernel,
                        row_kernel=m.row_kernel, time_loop=self.time_loop,
                        compute_dtype=m.compute_dtype)

    @property
    def num_dims(self) -> int:
        return math.prod(self.model.image_shape)

    # -- training -------------------------------------------------------------------
    def init_params(self, rng):
        return self.model.init(rng)

    def train_batch(self, step: int, rows: slice) -> dict[str, np.ndarray]:
        return {"images": self.data.train_batch(step)[rows].astype(np.int32)}

    def loss(self, params, batch, rng):
        nll = self.model.nll(params, batch["images"]).mean()
        return nll / self.num_dims, {"nll_nats": nll, "bits_per_dim": self.model.bits_per_dim(nll)}

    def image_nll(self, params, batch) -> jax.Array:
        """(B,) the NLL of each image of batch["images"] (B, H, W, C), nats."""
        return self.model.nll(params, batch["images"])

    # -- evaluation -------------------------------------------------------------------
    def baseline_log_probs(self) -> np.ndarray:
        """(H, W, C, K) log-probabilities of the independent-pixel baseline (computed once)."""
        if self._baseline_log_probs is None:
            self._baseline_log_probs = independent_pixel_log_probs(*self.data.level_counts())
        return self._baseline_log_probs

    def baseline_nll(self, apply: Apply) -> float:
        """The baseline's mean NLL per evaluation image, nats (computed once)."""
        if self._baseline_nll is None:
            per_image = map_in_chunks(apply, independent_pixel_nll, self.baseline_log_probs(),
                                      {"images": self.eval_images.astype(np.int32)},
                                      self.config.eval.batch_size, pad=True)
            self._baseline_nll = float(np.mean(per_image))
        return self._baseline_nll

    def evaluate(self, params, apply: Apply) -> dict[str, float]:
        images = {"images": self.eval_images.astype(np.int32)}
        nll = float(np.mean(map_in_chunks(apply, self.image_nll, params, images,
                                          self.config.eval.batch_size, pad=True)))
        baseline = self.baseline_nll(apply)
        to_bits = 1.0 / (self.num_dims * math.log(2.0))
        return {"nll_nats": nll, "bits_per_dim": nll * to_bits,
                "baseline_nll_nats": baseline, "baseline_bits_per_dim": baseline * to_bits,
                "num_images": int(len(self.eval_images)), "num_parameters": num_parameters(params)}

    def figures(self, params, apply: Apply, outdir: str, history: list[Mapping]) -> list[str]:
        from rnnvision.viz import curves, images as image_viz

        e, levels = self.config.eval, self.model.levels
        key_sample, key_complete = jax.random.split(jax.random.key(e.sample_seed))
        samples = np.asarray(sample(self.model, params, key_sample, e.num_samples))
        originals = self.eval_images[:e.num_completions]
        given_rows = self.model.image_shape[0] // 2
        completions = np.asarray(complete(self.model, params, key_complete, originals,
                                          e.completion_samples, given_rows))
        baseline = {"independent pixels": self.baseline_nll(apply)}
        references = {"nll_nats": baseline, "eval/nll_nats": baseline}
        return [
            image_viz.sample_grid(samples, levels, os.path.join(outdir, "samples.png")),
            image_viz.completion_grid(originals, completions, given_rows, levels,
                                      os.path.join(outdir, "completions.png")),
            curves.plot_history(history, ["loss", "nll_nats", "eval/nll_nats", "grad_norm"],
                                os.path.join(outdir, "learning_curves.png"), references),
        ]
