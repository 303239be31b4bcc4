"""Video classification: name the action in a video from its frames, in order.

Shape legend: B videos, T frames (padded), (H, W, C) a frame, K classes, L = lengths[b]
a video's own number of frames (frames L..T-1 are padding).

Data (data.dataset):
  video_actions  one real digit doing one of ten actions, made on the fly by
                 `rnnvision.data.VideoActions` (time-reversed class pairs and a pair
                 that differs only in its first frames, lengths min_frames..max_frames);
                 digits from any MNIST source (`load_mnist`). Training video r of step s
                 is video s * B + r of the stream seeded by `config.seed`, drawn from
                 the training digit pool; the evaluation set is the first
                 eval.num_videos videos of the stream seeded by data.eval_video_seed,
                 drawn from the evaluation digit pool only (fixed, whatever the seed).
  ucf101         UCF101 through TFDS (`rnnvision.data.ucf101`): data.ucf101_num_frames
                 frames per video, evenly spaced; every video has that length.
Models (`rnnvision.models.video_classifier`): LRCN (a per-frame ResNet, any vector cell,
optionally stacked or bidirectional), the ConvLSTM classifier (model.frame_input="grid")
or the order-blind baseline (model.classifier="order_blind").
Loss: softmax cross-entropy of the logits at each video's own last valid frame.

Results (results.json): `accuracy` (top-1 on the fixed evaluation set), `nll` (mean
negative log-likelihood of the true class, nats), `accuracy/<class name>` per class,
`early_accuracy/frames_XX`: the accuracy had every video stopped after XX frames
(a video shorter than XX frames counts with its answer at its own last frame, so
frames_T equals `accuracy`), and for video_actions `pair_accuracy`: the fraction whose
predicted class is in the true class's pair (an order-blind model can reach 1 here
while staying at 0.5 inside pairs).
Figures: the confusion matrix, the early-recognition curve, a strip of frames of a few
evaluation videos with true and predicted classes, the learning curves.
"""

from __future__ import annotations

import os
from typing import Iterator, Mapping

import jax
import numpy as np
import optax

from rnnvision.config_checks import ConfigError, check, one_of
from rnnvision.config_checks import int_at_least as _int
from rnnvision.data import ucf101
from rnnvision.data.mnist import load_mnist
from rnnvision.data.sampler import EpochSampler
from rnnvision.data.video_actions import CLASS_NAMES, MEMORY_PAIR, REVERSED_PAIRS, VideoActions
from rnnvision.models.cell_factory import make_cell
from rnnvision.models.resnet import NORMS, ResNetEncoder
from rnnvision.models.video_classifier import (FRAME_INPUTS, OrderBlindClassifier,
                                               RecurrentVideoClassifier)
from rnnvision.tasks.base import TIME_LOOP_FIELDS, Apply, Task
from rnnvision.tasks.evaluation import map_in_chunks

DATASETS = ("video_actions", "ucf101")
CLASSIFIERS = ("recurrent", "order_blind")

_RULES = [
    ("data.dataset", one_of(DATASETS), f"one of {DATASETS}"),
    ("model.classifier", one_of(CLASSIFIERS), f"one of {CLASSIFIERS}"),
    ("model.frame_input", one_of(FRAME_INPUTS), f"one of {FRAME_INPUTS}"),
    ("model.bidirectional", lambda v: isinstance(v, bool), "True or False"),
    ("model.feature_size", _int(1), "an integer >= 1"),
    ("model.mlp_hidden", _int(1), "an integer >= 1"),
    ("model.cnn_width", _int(1), "an integer >= 1"),
    ("model.cnn_stages", _int(1), "an integer >= 1"),
    ("model.cnn_blocks", _int(1), "an integer >= 1"),
    ("model.cnn_stem_kernel", _int(1), "an integer >= 1"),
    ("model.cnn_stem_stride", _int(1), "an integer >= 1"),
    ("model.cnn_stem_pool", lambda v: isinstance(v, bool), "True or False"),
    ("model.cnn_norm", one_of(NORMS), f"one of {NORMS}"),
    ("eval.num_figure_videos", _int(1), "an integer >= 1"),
]
_ACTION_RULES = [
    ("data.canvas", _int(40), "an integer >= 40 (a grown digit is up to 34 px)"),
    ("data.min_frames", _int(2), "an integer >= 2"),
    ("data.eval_video_seed", _int(0), "an integer >= 0"),
    ("eval.num_videos", _int(1), "an integer >= 1"),
]
_UCF101_RULES = [
    ("data.ucf101_num_frames", _int(1), "an integer >= 1"),
    ("data.ucf101_image_size", _int(1), "an integer >= 1"),
    ("eval.num_videos", _int(0), "an integer >= 0 (0 = the whole split)"),
]


class _ActionVideos:
    """video_actions: training videos per (seed, step), a fixed evaluation set."""

    def __init__(self, config):
        d = config.data
        check(config, _ACTION_RULES)
        check(config, [("data.max_frames", _int(d.min_frames), "an integer >= data.min_frames"),
                       ("data.spin_frames", lambda v: _int(3)(v) and v < d.min_frames,
                        f"an integer in 3..data.min_frames - 1 ({d.min_frames - 1})")])
        try:
            self.train_pool = load_mnist(d, "train")
            self.eval_pool = load_mnist(d, "eval")
        except (ValueError, OSError) as e:
            raise ConfigError("data", f"source={d.source!r}", str(e)) from None
        sizes = dict(canvas=d.canvas, min_frames=d.min_frames, max_frames=d.max_frames,
                     spin_frames=d.spin_frames)
        self.train = VideoActions(*self.train_pool, seed=config.seed, **sizes)
        self.eval = VideoActions(*self.eval_pool, seed=d.eval_video_seed, **sizes)
        self.num_eval = config.eval.num_videos
        self.frame_shape = (d.canvas, d.canvas, 1)
        self.num_frames = d.max_frames
        self.class_names = CLASS_NAMES
        self.class_pairs = _action_pairs()

    def train_examples(self, step: int, rows: slice, batch_size: int) -> dict[str, np.ndarray]:
        return _as_examples(self.train.batch(step * batch_size + np.arange(batch_size)[rows]))

    def eval_chunks(self, size: int, limit: int | None = None) -> Iterator[dict[str, np.ndarray]]:
        """The fixed evaluation set in order, chunks of at most `size` videos, made on
        demand (1000 videos of 20 48x48 frames are 184 MB as float32)."""
        total = min(self.num_eval, limit or self.num_eval)
        for start in range(0, total, size):
            yield _as_examples(self.eval.batch(np.arange(start, min(start + size, total))))


def _as_examples(batch) -> dict[str, np.ndarray]:
    return {"frames": batch.frames, "lengths": batch.lengths, "label": batch.labels}


class _Ucf101Videos:
    """ucf101: both splits held in memory as uint8 clips; training batches by epochs."""

    def __init__(self, config):
        d = config.data
        check(config, _UCF101_RULES)
        kw = dict(num_frames=d.ucf101_num_frames, image_size=d.ucf101_image_size,
                  config=d.ucf101_config, data_dir=d.ucf101_data_dir or None)
        eval_split = d.ucf101_eval_split
        if config.eval.num_videos:
            eval_split = f"{eval_split}[:{config.eval.num_videos}]"
        self.train_videos, self.train_labels = ucf101.load_ucf101(d.ucf101_train_split, **kw)
        self.eval_videos, self.eval_labels = ucf101.load_ucf101(eval_split, **kw)
        if config.train.batch_size > len(self.train_labels):
            raise ConfigError("train.batch_size", config.train.batch_size,
                              f"at most the {len(self.train_labels)} videos of "
                              f"{d.ucf101_train_split!r}")
        self.sampler = EpochSampler(len(self.train_labels), config.train.batch_size, config.seed,
                                    drop_remainder=False)
        self.frame_shape = tuple(self.train_videos.shape[2:])
        self.num_frames = d.ucf101_num_frames
        self.class_names = _ucf101_class_names(d.ucf101_config, d.ucf101_data_dir or None)
        self.class_pairs = None

    def train_examples(self, step: int, rows: slice, batch_size: int) -> dict[str, np.ndarray]:
        index = self.sampler.indices(step)[rows]
        return self._examples(self.train_videos[index], self.train_labels[index])

    def eval_chunks(self, size: int, limit: int | None = None) -> Iterator[dict[str, np.ndarray]]:
        total = min(len(self.eval_labels), limit or len(self.eval_labels))
        for start in range(0, total, size):
            rows = slice(start, min(start + size, total))
            yield self._examples(self.eval_videos[rows], self.eval_labels[rows])

    def _examples(self, videos: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
        lengths = np.full(len(labels), self.num_frames, np.int32)
        return {"frames": videos, "lengths": lengths, "label": labels.astype(np.int32)}


def _ucf101_class_names(config_name: str, data_dir: str | None) -> tuple[str, ...]:
    """UCF101's 101 action names, from the TFDS builder's label feature (no download)."""
    import tensorflow_datasets as tfds  # Lazy: heavy, and only this data set needs it.

    names = tfds.builder(f"ucf101/{config_name}", data_dir=data_dir).info.features["label"].names
    return tuple(names)


def frame_cnn(model_cfg) -> ResNetEncoder:
    """The per-frame ResNet of the model config's cnn_* fields."""
    m = model_cfg
    return ResNetEncoder(width=m.cnn_width, num_stages=m.cnn_stages, blocks_per_stage=m.cnn_blocks,
                         stem_kernel=m.cnn_stem_kernel, stem_stride=m.cnn_stem_stride,
                         stem_pool=m.cnn_stem_pool, norm=m.cnn_norm, dtype=m.compute_dtype)


def _action_pairs() -> np.ndarray:
    """int (10,): the pair of each video_actions class (pairs the order tells apart)."""
    pair = np.empty(len(CLASS_NAMES), np.int64)
    for i, members in enumerate(REVERSED_PAIRS + (MEMORY_PAIR,)):
        pair[list(members)] = i
    return pair


class VideoClassificationTask(Task):
    """Action recognition with a per-frame CNN and a recurrence (module docstring)."""

    # Evaluation-only fields: changing them and re-running a finished workdir re-evaluates.
    resume_safe_fields = ("data.eval_video_seed", "data.eval_idx_images", "data.eval_idx_labels",
                          "data.eval_slice", "data.ucf101_eval_split")

    def __init__(self, config, time_loop):
        super().__init__(config, time_loop)
        check(config, _RULES)
        self.data = (_ActionVideos if config.data.dataset == "video_actions"
                     else _Ucf101Videos)(config)
        self.num_classes = len(self.data.class_names)
        self.model = self._build_model(config.model)
        self._predictions: tuple | None = None  # (params, predictions) of the last evaluation

    def _build_model(self, m):
        if m.cnn_norm == "group" and m.cnn_width % 8:
            raise ConfigError("model.cnn_width", m.cnn_width,
                              "a multiple of 8 with model.cnn_norm='group' (groups of 8 channels)")
        cnn = frame_cnn(m)
        if m.classifier == "order_blind":
            why = "the order-blind model has no time loop"
            self.check_time_loop(unsupported={option: why for option in TIME_LOOP_FIELDS})
            return OrderBlindClassifier(cnn, self.num_classes, m.feature_size, m.mlp_hidden)
        cell = make_cell(m)
        self.check_time_loop([cell])
        model = RecurrentVideoClassifier(cnn, cell, self.num_classes, m.frame_input,
                                         m.feature_size, m.bidirectional, self.time_loop)
        try:  # the cell must take this frame_input's steps: fail now, naming the field
            jax.eval_shape(lambda key: model.init(key, self.data.frame_shape), jax.random.key(0))
        except (ValueError, TypeError) as e:
            raise ConfigError("model.frame_input", m.frame_input,
                              f"a frame input cell {m.cell!r} accepts ({e})") from None
        return model

    # -- training ----------------------------------------------------------------------
    def init_params(self, rng):
        return self.model.init(rng, self.data.frame_shape)

    def train_batch(self, step: int, rows: slice) -> dict[str, np.ndarray]:
        return self.data.train_examples(step, rows, self.config.train.batch_size)

    def loss(self, params, batch, rng):
        """Cross-entropy of the answer at each video's own last valid frame."""
        logits = self.model(params, batch["frames"], batch["lengths"]).logits  # (B, K)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
        return loss, {"accuracy": (logits.argmax(-1) == batch["label"]).mean()}

    def predict(self, params, batch) -> dict:
        """Pure: logits (B, K) and per-frame (early) logits (B, T, K)."""
        out = self.model(params, batch["frames"], batch["lengths"])
        return {"logits": out.logits, "per_frame": out.per_frame}

    # -- evaluation ----------------------------------------------------------------------
    def predictions(self, params, apply: Apply) -> dict[str, np.ndarray]:
        """label (N,), lengths (N,), logits (N, K), per_frame (N, T, K) on the evaluation
        set; chunks of exactly eval.batch_size (one compiled program). Cached for the
        same params object, so `figures` after `evaluate` does not predict again."""
        if self._predictions is not None and self._predictions[0] is params:
            return self._predictions[1]
        size, parts = self.config.eval.batch_size, []
        for chunk in self.data.eval_chunks(size):
            out = map_in_chunks(apply, self.predict, params, chunk, size, pad=True)
            parts.append({"label": chunk["label"], "lengths": chunk["lengths"], **out})
        result = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        self._predictions = (params, result)
        return result

    def evaluate(self, params, apply: Apply) -> dict[str, float]:
        return classification_metrics(self.predictions(params, apply), self.data.class_names,
                                      self.data.class_pairs)

    def figures(self, params, apply: Apply, outdir: str, history: list[Mapping]) -> list[str]:
        from rnnvision.viz import curves, video

        pred = self.predictions(params, apply)
        names = self.data.class_names
        early = {"all classes": early_accuracy(pred["per_frame"], pred["label"])}
        if len(names) <= 10:  # one line per class only where they stay readable
            for c, name in enumerate(names):
                rows = pred["label"] == c
                if rows.any():
                    early[name] = early_accuracy(pred["per_frame"][rows], pred["label"][rows])
        n = self.config.eval.num_figure_videos
        shown = next(self.data.eval_chunks(n, limit=n))
        return [
            video.labelled_confusion_matrix(pred["label"], pred["logits"].argmax(-1), names,
                                            os.path.join(outdir, "confusion.png")),
            video.early_recognition_curve(early, os.path.join(outdir, "early_recognition.png"),
                                          chance=1.0 / len(names)),
            video.frame_strip(shown["frames"], shown["lengths"], [names[c] for c in shown["label"]],
                              [names[c] for c in pred["logits"][:n].argmax(-1)],
                              os.path.join(outdir, "frames.png"),
                              early=[[names[c] for c in row] for row in
                                     pred["per_frame"][:n].argmax(-1)]),
            curves.plot_history(history, ["loss", "accuracy", "eval/accuracy", "grad_norm"],
                                os.path.join(outdir, "learning_curves.png")),
        ]


def early_accuracy(per_frame: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(T,): accuracy of the answers per_frame (N, T, K) after 1..T frames seen."""
    return (per_frame.argmax(-1) == labels[:, None]).mean(axis=0)


def classification_metrics(pred: Mapping[str, np.ndarray], class_names,
                           class_pairs: np.ndarray | None = None) -> dict[str, float]:
    """The results of predictions (see `VideoClassificationTask.predictions`), flat.

    nll: mean over videos of -log softmax(logits)[label] (nats), in float64.
    """
    labels, logits = pred["label"], pred["logits"].astype(np.float64)
    predicted = logits.argmax(-1)
    top = logits.max(-1)
    log_z = top + np.log(np.exp(logits - top[:, None]).sum(-1))
    nll = log_z - logits[np.arange(len(labels)), labels]
    results = {"accuracy": float((predicted == labels).mean()), "nll": float(nll.mean()),
               "num_videos": int(len(labels))}
    for c, name in enumerate(class_names):
        if (labels == c).any():
            results[f"accuracy/{name}"] = float((predicted[labels == c] == c).mean())
    for t, value in enumerate(early_accuracy(pred["per_frame"], labels)):
        results[f"early_accuracy/frames_{t + 1:02d}"] = float(value)
    if class_pairs is not None:
        results["pair_accuracy"] = float((class_pairs[predicted] == class_pairs[labels]).mean())
    return results
