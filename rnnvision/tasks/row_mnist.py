"""Sequential MNIST: classify a digit by reading it one row (or one pixel) at a time.

Inputs (model.input):
  rows      28 steps of a 28-pixel row (B, 28, 28); for `row_lstm`, rows of
            (W=28, C=1) pixels so the state is a row of feature vectors.
  pixels    784 steps of one pixel (B, 784, 1): the long-range variant.
  permuted  pixels in a fixed random order (seeded by data.permutation_seed).
Model: `rnnvision.models.readout.LastStepReadout` (any registered cell, a linear
readout of the last step's output). Loss: softmax cross-entropy.
"""

from __future__ import annotations

import os
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rnnvision.config_checks import ConfigError, check, int_at_least, one_of
from rnnvision.data.mnist import load_mnist
from rnnvision.data.sampler import EpochSampler
from rnnvision.models.cell_factory import make_cell
from rnnvision.models.readout import LastStepReadout
from rnnvision.tasks.base import Apply, Capability, RecurrentLoss, Task
from rnnvision.tasks.evaluation import map_in_chunks

INPUTS = ("rows", "pixels", "permuted")


def random_shift(images: np.ndarray, max_shift: int, rng: np.random.Generator) -> np.ndarray:
    """Shifts each (28, 28) image by up to `max_shift` pixels in x and y (zero fill)."""
    if max_shift == 0:
        return images
    n, h, w = images.shape
    padded = np.pad(images, ((0, 0), (max_shift, max_shift), (max_shift, max_shift)))
    dy, dx = rng.integers(0, 2 * max_shift + 1, size=(2, n))
    rows = dy[:, None] + np.arange(h)[None]
    cols = dx[:, None] + np.arange(w)[None]
    return padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


class RowMnistTask(Task):
    """Row-by-row (or pixel-by-pixel) MNIST classification with any registered cell."""

    capabilities = frozenset({Capability.RECURRENT_LOSS})

    def __init__(self, config, time_loop):
        super().__init__(config, time_loop)
        check(config, [
            ("model.input", one_of(INPUTS), f"one of {INPUTS}"),
            ("model.hidden_size", int_at_least(1), "an integer >= 1"),
            ("data.augment_shift", lambda v: int_at_least(0)(v) and v <= 8, "an integer in 0..8"),
        ])
        self.cell = make_cell(config.model)
        if config.model.cell in ("row_lstm", "conv_lstm") and config.model.input != "rows":
            raise ConfigError("model.input", config.model.input,
                              f"'rows' for cell {config.model.cell!r}")
        self.check_time_loop([self.cell])
        self.model = LastStepReadout(self.cell, 10, time_loop)
        self.train_images, self.train_labels = load_mnist(config.data, "train")
        self.eval_images, self.eval_labels = load_mnist(config.data, "eval")
        self.sampler = EpochSampler(len(self.train_labels), config.train.batch_size, config.seed)
        perm_rng = np.random.default_rng(config.data.permutation_seed)
        self.permutation = perm_rng.permutation(28 * 28)

    # -- data ------------------------------------------------------------------
    def sequences(self, images: np.ndarray) -> np.ndarray:
        """uint8 (B, 28, 28) -> float32 (B, T, *F) in [0, 1] for model.input."""
        x = images.astype(np.float32) / 255.0
        mode = self.config.model.input
        if mode == "rows":
            return x[..., None] if self.config.model.cell == "row_lstm" else x
        x = x.reshape(len(x), 28 * 28)
        if mode == "permuted":
            x = x[:, self.permutation]
        return x[..., None]

    def train_batch(self, step: int, rows: slice) -> dict[str, np.ndarray]:
        idx = self.sampler.indices(step)[rows]
        rng = np.random.default_rng([self.config.seed, step, 1])
        images = random_shift(self.train_images[idx], self.config.data.augment_shift, rng)
        return {"x": self.sequences(images), "label": self.train_labels[idx].astype(np.int32)}

    # -- model -------------------------------------------------------------------
    def init_params(self, rng):
        step_shape = self.sequences(self.train_images[:1]).shape[2:]
        return self.model.init(rng, step_shape)

    def loss(self, params, batch, rng):
        logits = self.model.apply(params, batch["x"])
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
        accuracy = (logits.argmax(-1) == batch["label"]).mean()
        return loss, {"accuracy": accuracy}

    def recurrent_loss(self, batch) -> RecurrentLoss:
        """The loss on `batch` as the cell's unroll plus a loss at the last step only."""
        labels = jnp.asarray(batch["label"])

        def last_loss(params, y_last):
            logits = self.model.readout(params, y_last)
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

        xs = jnp.asarray(batch["x"])
        return RecurrentLoss(self.cell, xs, LastStepReadout.last_step_losses(last_loss),
                             loss_steps=(xs.shape[1] - 1,))

    def predict(self, params, batch):
        return self.model.apply(params, batch["x"])

    # -- evaluation ----------------------------------------------------------------
    def eval_logits(self, params, apply: Apply) -> np.ndarray:
        return map_in_chunks(apply, self.predict, params,
                             {"x": self.sequences(self.eval_images)}, self.config.eval.batch_size)

    def evaluate(self, params, apply: Apply) -> dict[str, float]:
        logits = self.eval_logits(params, apply)
        labels = self.eval_labels
        loss = optax.softmax_cross_entropy_with_integer_labels(jnp.asarray(logits), labels)
        accuracy = float((logits.argmax(-1) == labels).mean())
        return {"accuracy": accuracy, "error_rate": 1.0 - accuracy, "loss": float(loss.mean()),
                "num_examples": int(len(labels))}

    def figures(self, params, apply: Apply, outdir: str,
                history: list[Mapping]) -> list[str]:
        from rnnvision.viz import curves, digits

        logits = self.eval_logits(params, apply)
        paths = [curves.plot_history(history, ["loss", "accuracy", "eval/accuracy", "grad_norm",
                                               "clipped"],
                                     os.path.join(outdir, "learning_curves.png")),
                 digits.prediction_grid(self.eval_images[:32], self.eval_labels[:32],
                                        logits[:32].argmax(-1),
                                        os.path.join(outdir, "predictions.png")),
                 digits.confusion_matrix(self.eval_labels, logits.argmax(-1),
                                         os.path.join(outdir, "confusion.png"))]
        return paths
