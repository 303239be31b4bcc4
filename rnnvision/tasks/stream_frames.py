r"""Streaming next-frame prediction on long Moving-MNIST sequences, trained with TBPTT(k1, k2).

The setting where truncation is used in practice: sequences of T frames (e.g. 100)
with a loss at every step, consumed k1 frames per optimizer step while the
recurrent state is carried over between steps (the trainer's streaming hook,
`Task.init_stream`, kept in TrainState.stream and checkpointed).

Data. Sequence batch n holds videos n*B .. n*B + B - 1 of a `MovingMnist`
generator (T + 1 frames each: the last is only a target). With W = T / k1 windows
per sequence, optimizer step s trains on window j = s % W of sequence batch
n = s // W: inputs frames [j k1, (j+1) k1), targets frames [j k1 + 1, (j+1) k1 + 1).
batch["start"] is True on window 0; with data.reset_at_start the stream is reset
there (carry to the cell's initial carry, history emptied), otherwise the state
runs on from the previous, unrelated, sequence as in one endless stream.

Truncation. k2 = train.truncation (0 = full: k1 = k2 = T, one update per
sequence); k1 = model.k1, or k2 when 0. Each update runs the cell over the last
k2 - k1 stored inputs and the k1 new ones from the stored carry (gradient
stopped): `rnnvision.recurrence.stream_unroll`, so a loss term reaches back at
most k2 steps. Memory per step is that of k2 steps, whatever T is.

Model. Frames are average-pooled by data.downsample (64 -> 16 by default) and
flattened for a dense cell (lstm/gru/rnn: input (h*w,)), or kept as (h, w, 1) for
conv_lstm; a linear readout (per pixel for conv_lstm) gives the next frame's
logits. Loss: sigmoid cross-entropy per pixel, mean over pixels, frames, batch.
Metrics: mse of sigmoid(logits). Evaluation runs whole sequences (no truncation
in a forward pass) and reports mse, the copy-last-frame baseline's mse and
the mse of the last tenth of the frames.
"""

from __future__ import annotations

import os
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rnnvision import recurrence
from rnnvision.config_checks import ConfigError, check, int_at_least
from rnnvision.data.mnist import load_mnist
from rnnvision.data.moving_mnist import MovingMnist
from rnnvision.metrics.gradients import recurrent_sigma_max
from rnnvision.models.cell_factory import make_cell
from rnnvision.tasks.base import Apply, Capability, RecurrentLoss, Task
from rnnvision.tasks.evaluation import map_in_chunks

_EVAL_SEED = 20261122  # seed of the evaluation videos, shared by every run
_CONV_CELLS = ("conv_lstm",)


class StreamFramesTask(Task):
    """Next-frame prediction over long videos in streaming TBPTT(k1, k2) windows."""

    capabilities = frozenset({Capability.STREAMING, Capability.RECURRENT_LOSS})

    def __init__(self, config, time_loop):
        super().__init__(config, time_loop)
        d = config.data
        check(config, [
            ("data.num_frames", int_at_least(1), "an integer T >= 1"),
            ("data.num_objects", lambda v: v in (1, 2, 3), "1, 2 or 3 digits per video"),
            ("data.canvas", int_at_least(29), "an integer > 28"),
            ("data.downsample", lambda v: int_at_least(1)(v) and d.canvas % v == 0,
             f"a divisor of data.canvas ({d.canvas})"),
            ("data.num_eval_sequences", int_at_least(1), "an integer >= 1"),
            ("model.k1", int_at_least(0), "0 (= k2) or an integer >= 1"),
        ])
        # train.truncation is k2 here: the stream's own windows, not a cut inside one unroll.
        self.k2 = time_loop.truncation or d.num_frames
        self.k1 = config.model.k1 or self.k2
        if self.k1 > self.k2:
            raise ConfigError("model.k1", self.k1, f"at most k2 = train.truncation ({self.k2})")
        if d.num_frames % self.k1:
            raise ConfigError("data.num_frames", d.num_frames, f"a multiple of k1 ({self.k1})")
        self.windows = d.num_frames // self.k1
        self.cell = make_cell(config.model)
        self.check_time_loop([self.cell])
        self.window_loop = time_loop.replace(truncation=None)  # each window: k2 steps, whole
        side = d.canvas // d.downsample
        self.conv = config.model.cell in _CONV_CELLS
        self.step_shape = (side, side, 1) if self.conv else (side * side,)
        self.frame_shape = (side, side)
        train_digits, _ = load_mnist(d, "train")
        eval_digits, _ = load_mnist(d, "eval")
        self.train_videos = MovingMnist(train_digits, d.num_frames + 1, d.num_objects, d.canvas,
                                        seed=config.seed)
        eval_videos = MovingMnist(eval_digits, d.num_frames + 1, d.num_objects, d.canvas,
                                  seed=_EVAL_SEED)
        self.eval_frames = self.frames(eval_videos.batch(np.arange(d.num_eval_sequences)))
        self._cache: tuple[int, np.ndarray] | None = None

    # -- data ------------------------------------------------------------------------------
    def frames(self, videos: np.ndarray) -> np.ndarray:
        """(B, T', canvas, canvas, 1) -> (B, T', *step_shape) pooled by data.downsample."""
        f = self.config.data.downsample
        b, t, h, w, _ = videos.shape
        pooled = videos.reshape(b, t, h // f, f, w // f, f).mean(axis=(3, 5))
        return pooled.reshape((b, t) + self.step_shape).astype(np.float32)

    def sequence_batch(self, n: int) -> np.ndarray:
        """Frames (B, T + 1, *step_shape) of sequence batch n (the global batch; cached)."""
        if self._cache is None or self._cache[0] != n:
            size = self.config.train.batch_size
            self._cache = (n, self.frames(self.train_videos.batch(np.arange(n * size, (n + 1) * size))))
        return self._cache[1]

    def window_of(self, step: int) -> tuple[int, int]:
        """(sequence batch n, window j) trained at optimizer step `step` (0-based)."""
        return step // self.windows, step % self.windows

    def train_batch(self, step: int, rows: slice) -> dict[str, np.ndarray]:
        n, j = self.window_of(step)
        frames = self.sequence_batch(n)[rows]
        lo = j * self.k1
        return {"x": frames[:, lo:lo + self.k1], "y": frames[:, lo + 1:lo + self.k1 + 1],
                "start": np.full((len(frames),), j == 0)}

    # -- model -----------------------------------------------------------------------------
    def init_params(self, rng):
        k_cell, k_head = jax.random.split(rng)
        out = self.cell.output_shape(self.step_shape)
        pixels = 1 if self.conv else int(np.prod(self.step_shape))
        w = jax.nn.initializers.lecun_normal()(k_head, (out[-1], pixels))
        return {"cell": self.cell.init(k_cell, self.step_shape),
                "head": {"w": w, "b": jnp.zeros((pixels,), jnp.float32)}}

    def logits(self, params, ys):
        """ys (B, T, *F_out) -> next-frame logits (B, T, *step_shape)."""
        return ys @ params["head"]["w"] + params["head"]["b"]

    def _fresh_stream(self, params, batch_size: int):
        x_shape = (batch_size,) + self.step_shape
        carry = self.cell.initial_carry(params, x_shape)
        return recurrence.stream_init(self.cell, params, carry, x_shape, self.k1, self.k2)

    def init_stream(self, batch_size: int):
        make = lambda key: self._fresh_stream(self.cell.init(key, self.step_shape), batch_size)
        return self._storable(jax.device_get(jax.jit(make)(jax.random.key(0))))

    def _storable(self, stream: recurrence.StreamState) -> recurrence.StreamState:
        """With k1 == k2 the history is empty (B, 0, ...); orbax cannot save zero-size
        arrays, so the trainer's copy holds None there (`_usable` puts them back)."""
        if self.k1 < self.k2:
            return stream
        return stream._replace(history=None, valid=None)

    def _usable(self, stream: recurrence.StreamState, batch_size: int) -> recurrence.StreamState:
        if stream.history is not None:
            return stream
        return stream._replace(history=jnp.zeros((batch_size, 0) + self.step_shape, jnp.float32),
                               valid=jnp.zeros((batch_size, 0), bool))

    def frame_losses(self, logits, targets):
        """(per-step loss (T,), mse) of logits vs target frames (B, T, *step_shape)."""
        axes = tuple(i for i in range(logits.ndim) if i != 1)
        bce = optax.sigmoid_binary_cross_entropy(logits, targets).mean(axis=axes)
        mse = jnp.mean((jax.nn.sigmoid(logits) - targets) ** 2)
        return bce, mse

    def stream_loss(self, params, batch, rng, stream):
        stream = self._usable(stream, batch["x"].shape[0])
        if self.config.data.reset_at_start:
            fresh = self._fresh_stream(params["cell"], batch["x"].shape[0])
            start = batch["start"]
            stream = jax.tree.map(
                lambda f, s: jnp.where(start.reshape((-1,) + (1,) * (s.ndim - 1)), f, s),
                fresh, stream)
        ys, new_stream = recurrence.stream_unroll(self.cell, params["cell"], stream, batch["x"],
                                                  **self.window_loop.options())
        per_step, mse = self.frame_losses(self.logits(params, ys), batch["y"])
        metrics = {"mse": mse, "recurrent_sigma_max": recurrent_sigma_max(params["cell"])}
        return per_step.mean(), (metrics, self._storable(new_stream))

    def loss(self, params, batch, rng):
        """The loss of one window from a fresh stream (the trainer calls `stream_loss`)."""
        fresh = self._storable(self._fresh_stream(params["cell"], batch["x"].shape[0]))
        loss, (metrics, _) = self.stream_loss(params, batch, rng, fresh)
        return loss, metrics

    def recurrent_loss(self, batch) -> RecurrentLoss:
        """The loss over whole sequences (a loss at every step)."""
        targets = jnp.asarray(batch["y"])

        def step_losses(params, ys):
            per_step, _ = self.frame_losses(self.logits(params, ys), targets)
            return per_step / per_step.shape[0]

        return RecurrentLoss(self.cell, jnp.asarray(batch["x"]), step_losses)

    # -- evaluation ------------------------------------------------------------------------
    def predict(self, params, batch):
        """Whole sequences: per-frame MSE and cross-entropy (B, T) of the prediction, and the
        MSE of copying the last frame."""
        x, y = batch["frames"][:, :-1], batch["frames"][:, 1:]
        carry = self.cell.initial_carry(params["cell"], x[:, 0].shape)
        _, ys = self.window_loop.run(self.cell, params["cell"], carry, x)
        axes = tuple(range(2, x.ndim))
        logits = self.logits(params, ys)
        return {"mse": jnp.mean((jax.nn.sigmoid(logits) - y) ** 2, axis=axes),
                "bce": optax.sigmoid_binary_cross_entropy(logits, y).mean(axis=axes),
                "copy_mse": jnp.mean((x - y) ** 2, axis=axes)}

    def per_frame_mse(self, params, apply: Apply) -> dict[str, np.ndarray]:
        per_sequence = map_in_chunks(apply, self.predict, params, {"frames": self.eval_frames},
                                     self.config.eval.batch_size)
        return {k: v.mean(0) for k, v in per_sequence.items()}

    def evaluate(self, params, apply: Apply) -> dict[str, float]:
        curves = self.per_frame_mse(params, apply)
        tail = max(1, len(curves["mse"]) // 10)
        return {"loss": float(curves["bce"].mean()), "mse": float(curves["mse"].mean()),
                "copy_last_mse": float(curves["copy_mse"].mean()),
                "mse_last_tenth": float(curves["mse"][-tail:].mean()),
                "recurrent_sigma_max": float(recurrent_sigma_max(params["cell"]))}

    def figures(self, params, apply: Apply, outdir: str, history: list[Mapping]) -> list[str]:
        from rnnvision.viz import curves as curves_viz, frames as frames_viz

        curves = self.per_frame_mse(params, apply)
        return [curves_viz.plot_history(history, ["loss", "mse", "recurrent_sigma_max"],
                                        os.path.join(outdir, "learning_curves.png")),
                frames_viz.per_step_curve(
                    {"model": curves["mse"], "copy last frame": curves["copy_mse"]},
                    os.path.join(outdir, "per_frame_mse.png"),
                    ylabel="per-frame MSE (mean over pixels)")]
