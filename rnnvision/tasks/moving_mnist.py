"""Moving MNIST video prediction: read N context frames, forecast the rest.

Data: sequences generated on the fly by `rnnvision.data.MovingMnist` (2 bouncing
digits on a 64x64 canvas by default), sequence i of step s being index s*B + i of
the seeded stream, so every batch is a pure function of (data.train_sequence_seed,
step). Digits come from `load_mnist(data, "train")`. Evaluation uses a fixed set:
`data.eval_set="generated"` draws eval.num_sequences sequences from the separate
evaluation digit pool (`load_mnist(data, "eval")`) with data.eval_sequence_seed;
"tfds" reads the official fixed test set (TFDS `moving_mnist`, 10,000 x 20 frames).

Model: `rnnvision.models.video.VideoPredictor` with any registered cell
(model.cell; model.frame_input says how a frame is fed to it), the PredRNN
family (st_lstm, causal_lstm: whole stacks of model.num_layers layers) included.
Training feeds the forecast steps the true frame, the previous prediction, or a
per-step mix (objective.sampling); the probability of the true frame for step s of
training is in the batch ("true_prob") and the coins are drawn from the trainer's
step RNG. objective.sampling="reverse" is PredRNN-V2's reverse scheduled sampling
(Wang et al. 2022): the context steps 1..N-1 also read the model's own prediction,
with a probability in the batch ("context_true_prob"); see
`true_frame_probability`.

Loss: objective.loss on the T-1 next-frame predictions (or the future ones), plus
objective.decoupling_weight (PredRNN-V2's beta) times the mean memory decoupling
term over every frame step, layer and example, for cells that have one (st_lstm,
causal_lstm; refused for others).

Metrics (results.json): per-frame MSE / MAE (summed over the 64x64 pixels in [0, 1],
averaged over sequences), SSIM, PSNR, each averaged and per predicted step, for the
model and for the copy-last-frame and mean-frame baselines on the same frames
(`rnnvision.metrics.image.video_prediction_metrics`), plus the model's MSE as a
fraction of each baseline's.
"""

from __future__ import annotations

import math
import os
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rnnvision.config_checks import ConfigError, check, finite_number
from rnnvision.config_checks import int_at_least as _int
from rnnvision.data import MovingMnist, load_mnist, load_moving_mnist_tfds
from rnnvision.metrics.image import video_prediction_metrics
from rnnvision.models.cell_factory import cells_with_decoupling, make_cell
from rnnvision.models.video import FRAME_INPUTS, FrameCodec, VideoPredictor
from rnnvision.tasks.base import Apply, Task
from rnnvision.tasks.evaluation import weighted_means

LOSSES = ("mse", "bce")
LOSS_FRAMES = ("all", "future")
SAMPLING = ("teacher", "free", "scheduled", "reverse")
EVAL_SETS = ("generated", "tfds")
TFDS_FRAMES, TFDS_CONTEXT = 20, 10  # the official test set: 10 context + 10 future frames
TFDS_TEST_SIZE = 10_000  # sequences in TFDS moving_mnist "test"
TFDS_READ = 1000  # sequences read from TFDS at a time (330 MB as float32)


def _prob(v) -> bool:
    return finite_number(0.0, strict=False)(v) and v <= 1.0


_RULES = [
    ("data.num_frames", _int(2), "an integer >= 2"),
    ("data.num_context", _int(1), "an integer >= 1"),
    ("data.num_digits", lambda v: v in (1, 2, 3), "1, 2 or 3"),
    ("data.canvas", _int(29), "an integer > 28 (the digit size)"),
    ("data.train_sequence_seed", _int(0), "an integer >= 0"),
    ("data.eval_sequence_seed", _int(0), "an integer >= 0"),
    ("data.eval_set", lambda v: v in EVAL_SETS, f"one of {EVAL_SETS}"),
    ("model.frame_input", lambda v: v in FRAME_INPUTS, f"one of {FRAME_INPUTS}"),
    ("model.patch", _int(1), "an integer >= 1 dividing data.canvas"),
    ("model.row_band", _int(0), "an integer >= 0"),
    ("objective.loss", lambda v: v in LOSSES, f"one of {LOSSES}"),
    ("objective.frames", lambda v: v in LOSS_FRAMES, f"one of {LOSS_FRAMES}"),
    ("objective.sampling", lambda v: v in SAMPLING, f"one of {SAMPLING}"),
    ("objective.sampling_start", _prob, "a probability in [0, 1]"),
    ("objective.sampling_end", _prob, "a probability in [0, 1]"),
    ("objective.sampling_steps", _int(1), "an integer >= 1"),
    ("objective.rss_start", _int(0), "an integer >= 0"),
    ("objective.rss_stop", _int(1), "an integer >= 1"),
    ("objective.rss_time_constant", finite_number(0.0), "a number of steps > 0"),
    ("objective.decoupling_weight", finite_number(0.0, strict=False), "a number >= 0"),
    ("eval.num_sequences", _int(0), "an integer >= 0 (0 = the whole TFDS test set)"),
    ("eval.num_figure_sequences", _int(1), "an integer >= 1"),
    ("eval.mean_frame_sequences", _int(1), "an integer >= 1"),
]


def true_frame_probability(objective, step: int) -> float:
    """P(a forecast step reads the true frame) at training step `step` (0-based).

    teacher: 1; free: 0; scheduled: linear from sampling_start to sampling_end over
    the first sampling_steps steps, then sampling_end (PredRNN/OpenSTL's schedule);
    reverse: PredRNN-V2's forecast schedule, with s1 = rss_start, s2 = rss_stop,

      0.5 for step < s1;  0.5 * (s2 - step) / (s2 - s1) for s1 <= step < s2;  0 after.
    """
    if objective.sampling == "reverse":
        s1, s2 = objective.rss_start, objective.rss_stop
        if step < s1:
            return 0.5
        return 0.5 * (s2 - step) / (s2 - s1) if step < s2 else 0.0
    if objective.sampling != "scheduled":
        return float(objective.sampling == "teacher")
    frac = min(step / objective.sampling_steps, 1.0)
    return float(objective.sampling_start + frac * (objective.sampling_end - objective.sampling_start))


def context_true_frame_probability(objective, step: int) -> float | None:
    """P(a context step 1..N-1 reads the true frame) at training step `step`, or None
    (they always do) unless objective.sampling is "reverse" (reverse scheduled
    sampling, Wang et al. 2022, as in their code and OpenSTL's), where it rises:

      0.5 for step < s1;  1 - 0.5 exp(-(step - s1) / tau) for s1 <= step < s2;  1 after,

    with s1 = rss_start, s2 = rss_stop, tau = rss_time_constant. Early in training
    the encoder half the time reads its own (poor) predictions, so it cannot lean
    on the true frames the forecast steps will not have; at the end it reads the
    true context, as at evaluation.
    """
    if objective.sampling != "reverse":
        return None
    s1, s2 = objective.rss_start, objective.rss_stop
    if step < s1:
        return 0.5
    return 1.0 - 0.5 * math.exp(-(step - s1) / objective.rss_time_constant) if step < s2 else 1.0


class MovingMnistTask(Task):
    """Next-frame prediction on Moving MNIST with any registered cell."""

    # Evaluation-only fields: changing them and re-running a finished workdir re-evaluates.
    resume_safe_fields = ("data.eval_set", "data.eval_sequence_seed", "data.moving_mnist_data_dir",
                          "data.eval_idx_images", "data.eval_idx_labels", "data.eval_slice")

    def __init__(self, config, time_loop):
        super().__init__(config, time_loop)
        check(config, _RULES)
        data = config.data
        self.num_context, self.num_frames = data.num_context, data.num_frames
        if self.num_context >= self.num_frames:
            raise ConfigError("data.num_context", self.num_context,
                              f"fewer than data.num_frames ({self.num_frames})")
        if data.eval_set == "tfds" and (self.num_frames, self.num_context) != (TFDS_FRAMES, TFDS_CONTEXT):
            raise ConfigError("data.eval_set", "tfds", "data.num_frames=20 and data.num_context=10 "
                              "(the official test set's split)")
        if data.eval_set == "generated" and config.eval.num_sequences == 0:
            raise ConfigError("eval.num_sequences", 0, "an integer >= 1 for data.eval_set='generated'")
        self._check_reverse_sampling(config.objective)
        self.model = self._build_model(config)
        digits, _ = load_mnist(data, "train")
        self.train_videos = MovingMnist(digits, self.num_frames, data.num_digits, data.canvas,
                                        data.train_sequence_seed,
                                        (data.speed_min, data.speed_max))
        self._mean_frame: np.ndarray | None = None
        self.last_results: dict[str, float] | None = None

    def _check_reverse_sampling(self, objective) -> None:
        if objective.sampling != "reverse":
            return
        if self.num_context < 2:
            raise ConfigError("objective.sampling", "reverse", "another mode for data.num_context=1 "
                              "(reverse scheduled sampling samples context steps 1..N-1)")
        if objective.rss_stop <= objective.rss_start:
            raise ConfigError("objective.rss_stop", objective.rss_stop,
                              f"an integer > objective.rss_start ({objective.rss_start})")

    def _build_model(self, config) -> VideoPredictor:
        m = config.model
        try:
            codec = FrameCodec((config.data.canvas, config.data.canvas, 1), m.patch, m.frame_input,
                               m.row_band)
        except ValueError as e:
            raise ConfigError("model.patch", m.patch, str(e)) from None
        decoupling = config.objective.decoupling_weight > 0
        if decoupling and m.cell not in cells_with_decoupling():
            raise ConfigError("objective.decoupling_weight", config.objective.decoupling_weight,
                              f"0 for model.cell={m.cell!r}: the memory decoupling loss needs a "
                              f"cell with PredRNN-V2's decoupling term, one of "
                              f"{cells_with_decoupling()}")
        cell = make_cell(m, **({"decoupling": True} if decoupling else {}))
        self.check_time_loop(custom_loop="the forecast loop feeds each prediction back as the "
                                         "next input")
        model = VideoPredictor(cell, codec, m.separate_forecaster, self.time_loop, m.readout_bias,
                               decoupling=decoupling)
        try:  # the cell must accept the steps of this frame_input: fail now, naming the field
            jax.eval_shape(model.init, jax.random.key(0))
        except (ValueError, TypeError) as e:
            raise ConfigError("model.frame_input", m.frame_input,
                              f"a layout cell {m.cell!r} accepts ({e})") from None
        return model

    # -- data ------------------------------------------------------------------
    def train_batch(self, step: int, rows: slice) -> dict[str, np.ndarray]:
        batch = self.config.train.batch_size
        indices = step * batch + np.arange(batch)[rows]
        objective = self.config.objective
        p = true_frame_probability(objective, step)
        batch = {"frames": self.train_videos.batch(indices),
                 "true_prob": np.full((len(indices),), p, np.float32)}
        p_context = context_true_frame_probability(objective, step)
        if p_context is not None:
            batch["context_true_prob"] = np.full((len(indices),), p_context, np.float32)
        return batch

    def eval_chunks(self, limit: int | None = None):
        """Yields the fixed evaluation set in order, float32 (b, T, H, W, 1) chunks of at
        most eval.batch_size sequences (the first `limit` sequences if given).

        Chunks are generated (or read from TFDS) on demand, never all held at once:
        the whole TFDS test set is 3.3 GB as float32.
        """
        data, size = self.config.data, self.config.eval.batch_size
        total = self.config.eval.num_sequences or TFDS_TEST_SIZE
        total = min(total, limit or total)
        if data.eval_set == "tfds":
            step = max(size, TFDS_READ)
            for start in range(0, total, step):
                block = load_moving_mnist_tfds(f"test[{start}:{min(start + step, total)}]",
                                               data.moving_mnist_data_dir or None)
                yield from (block[i:i + size] for i in range(0, len(block), size))
            return
        digits, _ = load_mnist(data, "eval")
        videos = MovingMnist(digits, self.num_frames, data.num_digits, data.canvas,
                             data.eval_sequence_seed, (data.speed_min, data.speed_max))
        for start in range(0, total, size):
            yield videos.batch(np.arange(start, min(start + size, total)))

    def mean_frame(self) -> np.ndarray:
        """(H, W, 1) the mean training frame (the mean-frame baseline)."""
        if self._mean_frame is None:
            n = self.config.eval.mean_frame_sequences
            self._mean_frame = self.train_videos.batch(np.arange(n)).mean(axis=(0, 1))
        return self._mean_frame

    # -- model -------------------------------------------------------------------
    def init_params(self, rng):
        return self.model.init(rng)

    def loss(self, params, batch, rng):
        """objective.loss on the predictions (+ decoupling_weight * the mean decoupling term)."""
        frames, obj = batch["frames"], self.config.objective
        args = (params, frames, self.num_context, batch["true_prob"], rng)
        kwargs = {"teacher_forcing": obj.sampling == "teacher",
                  "context_true_prob": batch.get("context_true_prob")}
        if self.model.decoupling:
            logits, terms = self.model.rollout_with_decoupling(*args, **kwargs)
        else:
            logits, terms = self.model.rollout(*args, **kwargs), None
        target = frames[:, 1:]
        if obj.frames == "future":
            logits, target = logits[:, self.num_context - 1:], target[:, self.num_context - 1:]
        pred = jax.nn.sigmoid(logits)
        if obj.loss == "bce":
            loss = optax.sigmoid_binary_cross_entropy(logits, target).mean()
        else:
            loss = jnp.mean(jnp.square(pred - target))
        future = (pred - target)[:, -(self.num_frames - self.num_context):]
        metrics = {"frame_mse": jnp.sum(jnp.square(future), axis=(-3, -2, -1)).mean(),
                   "true_prob": batch["true_prob"].mean()}
        if "context_true_prob" in batch:
            metrics["context_true_prob"] = batch["context_true_prob"].mean()
        if terms is not None:  # PredRNN-V2: every frame step, layer and example alike
            metrics["decoupling"] = terms.mean()
            loss = loss + obj.decoupling_weight * metrics["decoupling"]
        return loss, metrics

    def predict(self, params, batch):
        """Free-running forecast of the frames after the context, pixels in [0, 1]."""
        return self.model.predict(params, batch["context"], self.num_frames - self.num_context)

    # -- evaluation ----------------------------------------------------------------
    def evaluate(self, params, apply: Apply) -> dict[str, float]:
        n, parts = self.num_context, []
        for chunk in self.eval_chunks():  # generated on demand: never all held at once
            pred = apply(self.predict, params, {"context": chunk[:, :n]})
            parts.append((len(chunk), video_prediction_metrics(pred, chunk[:, n:], chunk[:, n - 1],
                                                               self.mean_frame())))
        results = weighted_means(parts)
        total = sum(size for size, _ in parts)
        results["mse_ratio_to_copy_last"] = results["mse"] / results["copy_last/mse"]
        results["mse_ratio_to_mean_frame"] = results["mse"] / results["mean_frame/mse"]
        results["num_sequences"] = total
        self.last_results = results
        return results

    def figures(self, params, apply: Apply, outdir: str, history: list[Mapping]) -> list[str]:
        from rnnvision.viz import curves, frames as frame_viz

        k, n = self.config.eval.num_figure_sequences, self.num_context
        # Whole evaluation chunks, then the first k: the same shapes as `evaluate`, so
        # the compiled forecast is reused.
        chunks = self.eval_chunks()
        videos = next(chunks)
        pred = apply(self.predict, params, {"context": videos[:, :n]})
        for chunk in chunks:
            if len(videos) >= k:
                break
            videos = np.concatenate([videos, chunk])
            pred = np.concatenate([pred, apply(self.predict, params, {"context": chunk[:, :n]})])
        videos, pred = videos[:k], pred[:k]
        paths = [
            frame_viz.prediction_grid(videos[:, :n], videos[:, n:], pred,
                                      os.path.join(outdir, "predictions.png")),
            frame_viz.prediction_gif(videos[:, :n], videos[:, n:], pred,
                                     os.path.join(outdir, "predictions.gif")),
            curves.plot_history(history, ["loss", "frame_mse", "eval/mse"],
                                os.path.join(outdir, "learning_curves.png")),
        ]
        results = self.last_results or next(
            ({k[5:]: v for k, v in r.items() if k.startswith("eval/")}
             for r in reversed(history) if "eval/mse/step_01" in r), None)
        if results:
            steps = sorted(key for key in results if key.startswith("mse/step_"))
            curves_by_name = {"model": [results[s] for s in steps]}
            for base in ("copy_last", "mean_frame"):
                if f"{base}/{steps[0]}" in results:
                    curves_by_name[base.replace("_", "-")] = [results[f"{base}/{s}"] for s in steps]
            paths.append(frame_viz.per_step_curve(curves_by_name, os.path.join(outdir, "per_step_mse.png")))
        return paths
