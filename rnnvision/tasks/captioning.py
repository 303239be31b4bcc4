"""Image captioning with attention: Show, Attend and Tell on digit scenes or COCO.

Data (data.dataset):
  digit_scenes  1-3 MNIST digits on a canvas, captioned by a documented grammar; the
                evaluation split holds digit pairs never seen together in training
                (`rnnvision.data.digit_scenes`). Digits from any MNIST source.
  coco          COCO Captions through TFDS (`rnnvision.data.coco_captions`).
Model: `rnnvision.models.captioner.Captioner` (small ResNet encoder, any vector cell as
decoder, soft attention or none). Loss: teacher-forced cross-entropy + Xu et al.'s
doubly stochastic attention regulariser.
Evaluation (eval.decode: greedy or beam search): corpus BLEU-1..4 and CIDEr-D against
all references, exact match (the caption equals one reference), mean length; on digit
scenes also `attention_in_box`: for every generated word that names a digit of the
scene, the attention mass of that step inside that digit's box, averaged over the
evaluation set (`attention_in_box_uniform` is what uniform attention would score), and
the same metrics with a `seen_` prefix on the control split of seen combinations.

The vocabulary is built from the training captions on the first start and saved as
`vocab.json` in the workdir (or data.vocab_path); a resumed run and a re-evaluation
load it from there.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Mapping

import jax
import numpy as np
from absl import logging

from rnnvision.config_checks import ConfigError, check, finite_number
from rnnvision.config_checks import int_at_least as _int
from rnnvision.data import digit_scenes
from rnnvision.data.vocab import BOS_ID, EOS_ID, PAD_ID, Vocabulary, tokenize
from rnnvision.metrics.attention import attention_in_box
from rnnvision.metrics.captioning import caption_metrics
from rnnvision.models.attention import SCORES
from rnnvision.models.captioner import ATTENTION_MODES, Captioner, caption_loss
from rnnvision.models.cell_factory import make_cell
from rnnvision.models.resnet import NORMS, ResNetEncoder
from rnnvision.models.search import SpecialTokens
from rnnvision.tasks.base import Apply, Task
from rnnvision.tasks.evaluation import map_in_chunks

DATASETS = ("digit_scenes", "coco")
DECODERS = ("greedy", "beam")
VOCAB_FILE = "vocab.json"


_RULES = [
    ("data.dataset", lambda v: v in DATASETS, f"one of {DATASETS}"),
    ("data.max_length", _int(1), "an integer >= 1 (words per caption)"),
    ("data.vocab_min_count", _int(1), "an integer >= 1"),
    ("model.embed_dim", _int(1), "an integer >= 1"),
    ("model.hidden_size", _int(1), "an integer >= 1"),
    ("model.attention", lambda v: v in ATTENTION_MODES, f"one of {ATTENTION_MODES}"),
    ("model.attention_score", lambda v: v in SCORES, f"one of {SCORES}"),
    ("model.attention_dim", _int(1), "an integer >= 1"),
    ("model.doubly_stochastic", finite_number(0.0, strict=False), "a finite number >= 0"),
    ("model.dropout", lambda v: finite_number(0.0, strict=False)(v) and v < 1, "a number in [0, 1)"),
    ("model.encoder_width", _int(1), "an integer >= 1"),
    ("model.encoder_stages", _int(1), "an integer >= 1"),
    ("model.encoder_blocks", _int(1), "an integer >= 1"),
    ("model.encoder_stem_stride", _int(1), "an integer >= 1"),
    ("model.encoder_norm", lambda v: v in NORMS, f"one of {NORMS}"),
    ("eval.decode", lambda v: v in DECODERS, f"one of {DECODERS}"),
    ("eval.beam_width", _int(1), "an integer >= 1"),
    ("eval.num_figures", _int(1), "an integer >= 1"),
]


@dataclasses.dataclass
class EvalSet:
    images: np.ndarray                  # uint8 (N, H, W) or (N, H, W, C)
    captions: list[list[str]]           # the references of each image
    classes: np.ndarray | None = None   # digit scenes: int (N, K) classes, -1 for none
    boxes: np.ndarray | None = None     # digit scenes: int (N, K, 4) pixel boxes


class _DigitSceneData:
    """Training scenes are an endless stream: step s, row r is scene s * B + r."""

    def __init__(self, config):
        from rnnvision.data.mnist import load_mnist

        d = config.data
        check(config, [("data.num_eval_scenes", _int(1), "an integer >= 1"),
                       ("data.num_eval_seen_scenes", _int(0), "an integer >= 0"),
                       ("data.vocab_scenes", _int(1), "an integer >= 1")])
        kw = dict(canvas_size=d.canvas_size, small_size=d.small_size, large_size=d.large_size)
        try:
            pools = {split: load_mnist(d, split) for split in ("train", "eval")}
            self.train = digit_scenes.DigitScenes(*pools["train"], "train", d.seed,
                                                  max_digits=d.max_digits, **kw)
            evals = {"": digit_scenes.DigitScenes(*pools["eval"], "eval", d.seed, **kw)}
            if d.num_eval_seen_scenes:
                evals["seen_"] = digit_scenes.DigitScenes(*pools["eval"], "eval_seen", d.seed,
                                                          max_digits=d.max_digits, **kw)
        except ValueError as e:
            raise ConfigError("data", f"source={d.source!r}", str(e)) from None
        sizes = {"": d.num_eval_scenes, "seen_": d.num_eval_seen_scenes}
        self.eval_sets = {}
        for prefix, scenes in evals.items():
            b = scenes.batch(range(sizes[prefix]))
            self.eval_sets[prefix] = EvalSet(b.images, b.captions, b.classes, b.boxes)
        self.image_shape = (d.canvas_size, d.canvas_size, 1)
        self.vocab_scenes = d.vocab_scenes

    def train_examples(self, step: int, rows: slice, batch_size: int):
        batch = self.train.batch(step * batch_size + np.arange(batch_size)[rows])
        return batch.images[..., None], batch.captions

    def vocabulary_captions(self):
        for i in range(self.vocab_scenes):
            yield from digit_scenes.captions(self.train.layout(i))


class _CocoData:
    def __init__(self, config):
        from rnnvision.data.coco_captions import load_coco_captions
        from rnnvision.data.sampler import EpochSampler

        d = config.data
        self.train = load_coco_captions(d, d.coco_train_split)
        evaluation = load_coco_captions(d, d.coco_eval_split)
        self.eval_sets = {"": EvalSet(evaluation.images, evaluation.captions)}
        self.sampler = EpochSampler(len(self.train.ids), config.train.batch_size, config.seed,
                                    drop_remainder=False)
        self.image_shape = tuple(self.train.images.shape[1:])

    def train_examples(self, step: int, rows: slice, batch_size: int):
        index = np.sort(self.sampler.indices(step)[rows])  # sorted: memmap reads in order
        return np.asarray(self.train.images[index]), [self.train.captions[i] for i in index]

    def vocabulary_captions(self):
        for refs in self.train.captions:
            yield from refs


class CaptioningTask(Task):
    """Captioning with a CNN encoder and a recurrent decoder (see the module docstring)."""

    def __init__(self, config, time_loop):
        super().__init__(config, time_loop)
        check(config, _RULES)
        self.cell = make_cell(config.model)
        # Teacher forcing honours truncation (in words), remat and unroll; the decoder's
        # step also attends over the image, so it is no cell a fused loop could run.
        self.check_time_loop(custom_loop="the decoder's step attends over the image features")
        self.data = (_DigitSceneData if config.data.dataset == "digit_scenes" else _CocoData)(config)
        self.max_steps = config.data.max_length + 1  # words + <eos>
        self._vocab: Vocabulary | None = None
        self._model: Captioner | None = None

    # -- vocabulary ------------------------------------------------------------------
    def attach_workdir(self, workdir: str, is_main: bool) -> None:
        """Loads the vocabulary from the workdir (or data.vocab_path), or builds and saves it."""
        path = self.config.data.vocab_path or os.path.join(workdir, VOCAB_FILE)
        if os.path.exists(path):
            self._vocab = Vocabulary.load(path)
        else:
            self._vocab = self.build_vocabulary()
            if is_main:
                self._vocab.save(path)
        self._warn_long_captions()

    def _warn_long_captions(self) -> None:
        """Counts the vocabulary captions longer than data.max_length (they are cut)."""
        max_length = self.config.data.max_length
        lengths = [len(tokenize(c)) for c in self.data.vocabulary_captions()]
        cut = sum(n > max_length for n in lengths)
        if cut:
            logging.warning("%d of %d training captions (%.1f%%) are longer than "
                            "data.max_length=%d words and will be cut (longest: %d words)",
                            cut, len(lengths), 100 * cut / len(lengths), max_length, max(lengths))

    def build_vocabulary(self) -> Vocabulary:
        return Vocabulary.build(self.data.vocabulary_captions(), self.config.data.vocab_min_count)

    @property
    def vocab(self) -> Vocabulary:
        if self._vocab is None:  # used without a workdir (tests, notebooks): in memory only
            self._vocab = self.build_vocabulary()
        return self._vocab

    @property
    def model(self) -> Captioner:
        if self._model is None:
            m = self.config.model
            encoder = ResNetEncoder(
                width=m.encoder_width, num_stages=m.encoder_stages, blocks_per_stage=m.encoder_blocks,
                stem_kernel=m.encoder_stem_kernel, stem_stride=m.encoder_stem_stride,
                stem_pool=m.encoder_stem_pool, norm=m.encoder_norm, dtype=m.compute_dtype)
            self._model = Captioner(
                encoder, self.cell, len(self.vocab), SpecialTokens(PAD_ID, BOS_ID, EOS_ID),
                embed_dim=m.embed_dim, attention=m.attention, attention_dim=m.attention_dim,
                attention_score=m.attention_score, gate=m.attention_gate, dropout=m.dropout,
                coordinates=m.coordinates, time_loop=self.time_loop)
        return self._model

    # -- training --------------------------------------------------------------------
    def init_params(self, rng):
        try:
            return self.model.init(rng, self.data.image_shape)
        except ValueError as e:  # e.g. a convolutional cell, which takes no vector input
            raise ConfigError("model.cell", self.config.model.cell,
                              f"a cell with vector inputs (lstm, gru, rnn): {e}") from None

    def train_batch(self, step: int, rows: slice) -> dict[str, np.ndarray]:
        batch_size = self.config.train.batch_size
        images, references = self.data.train_examples(step, rows, batch_size)
        # One phrasing per image, drawn for the whole global batch so every process agrees.
        draws = np.random.default_rng([self.config.seed, step, 2]).integers(
            0, 2**31, size=batch_size)[rows]
        chosen = [tokenize(refs[d % len(refs)]) for refs, d in zip(references, draws)]
        max_length = self.config.data.max_length
        tokens, mask = self.vocab.encode_batch(chosen, max_length)
        # Captions longer than data.max_length are cut; the fraction is logged as
        # "captions_cut" so a too-small max_length shows in the metrics.
        cut = np.array([len(words) > max_length for words in chosen], np.float32)
        return {"image": images, "tokens": tokens, "mask": mask, "cut": cut}

    def loss(self, params, batch, rng):
        loss, aux = caption_loss(self.model, params, batch["image"], batch["tokens"],
                                 batch["mask"], rng, self.config.model.doubly_stochastic)
        if "cut" in batch:
            aux = {**aux, "captions_cut": batch["cut"].mean()}
        return loss, aux

    # -- decoding and evaluation -------------------------------------------------------
    def decode(self, params, batch) -> dict:
        """Pure: images (N, H, W, C) -> tokens (N, T), attention (N, T, L), scores, lengths."""
        cfg = self.config.eval
        if cfg.decode == "greedy":
            out = self.model.greedy(params, batch["image"], self.max_steps)
        else:
            out = self.model.beam(params, batch["image"], self.max_steps, cfg.beam_width,
                                  cfg.length_penalty)
        return {"tokens": out.tokens, "alphas": out.extras, "scores": out.scores,
                "lengths": out.lengths}

    def decode_images(self, params, apply: Apply, images: np.ndarray) -> dict[str, np.ndarray]:
        """Decodes in batches of exactly eval.batch_size (the last one padded), so one
        compiled decoder serves every evaluation set and figure."""
        return map_in_chunks(apply, self.decode, params, {"image": images},
                             self.config.eval.batch_size, pad=True)

    def evaluate(self, params, apply: Apply) -> dict[str, float]:
        results = {}
        for prefix, scenes in self.data.eval_sets.items():
            images = scenes.images[..., None] if scenes.images.ndim == 3 else scenes.images
            out = self.decode_images(params, apply, images)
            hyps = [" ".join(self.vocab.decode(t)) for t in out["tokens"]]
            refs = [[" ".join(tokenize(r)) for r in rs] for rs in scenes.captions]
            metrics = caption_metrics(dict(enumerate(refs)), dict(enumerate(hyps)))
            metrics["exact_match"] = float(np.mean([h in r for h, r in zip(hyps, refs)]))
            metrics["mean_length"] = float(np.mean([len(h.split()) for h in hyps]))
            metrics["num_examples"] = len(hyps)
            if scenes.boxes is not None:
                metrics.update(self.attention_in_box(out, scenes, images.shape[1:3]))
            results.update({prefix + k: v for k, v in metrics.items()})
        return results

    def attention_in_box(self, out: dict, scenes, image_hw) -> dict[str, float]:
        """Mean attention mass inside the box of the digit each generated digit word names."""
        word_class = np.full(len(self.vocab), -1)
        for c in range(10):
            if str(c) in self.vocab.words:
                word_class[self.vocab.words.index(str(c))] = c
        return attention_in_box(out["alphas"], word_class[out["tokens"]], scenes.classes,
                                scenes.boxes, self.grid_shape, image_hw)

    @functools.cached_property
    def grid_shape(self) -> tuple[int, int]:
        """(h, w) of the encoder's feature grid for the task's images."""
        x = jax.ShapeDtypeStruct((1, *self.data.image_shape), np.float32)
        grid = jax.eval_shape(lambda k, x: self.model.encoder.init_with_output(k, x)[0],
                              jax.random.key(0), x)
        return int(grid.shape[1]), int(grid.shape[2])

    # -- figures ---------------------------------------------------------------------------
    def figures(self, params, apply: Apply, outdir: str,
                history: list[Mapping]) -> list[str]:
        from rnnvision.viz import attention as viz
        from rnnvision.viz import curves

        scenes = self.data.eval_sets[""]
        n = min(self.config.eval.num_figures, len(scenes.captions))
        images = scenes.images[:n]
        images = images[..., None] if images.ndim == 3 else images
        out = self.decode_images(params, apply, images)
        words = [self.vocab.decode(t) for t in out["tokens"]]
        hyps = [" ".join(w) for w in words]
        refs = [[" ".join(tokenize(r)) for r in rs] for rs in scenes.captions[:n]]
        grid = self.grid_shape
        alphas = out["alphas"].reshape(n, -1, *grid)
        shown = min(n, 6)
        return [
            curves.plot_history(history, ["loss", "cross_entropy", "token_accuracy", "eval/bleu4",
                                          "eval/exact_match"],
                                os.path.join(outdir, "learning_curves.png")),
            viz.caption_grid(images, hyps, os.path.join(outdir, "captions.png"),
                             correct=[h in r for h, r in zip(hyps, refs)],
                             references=[r[0] for r in refs]),
            viz.attention_maps(images[:shown], words[:shown], alphas[:shown],
                               os.path.join(outdir, "attention.png"),
                               boxes=None if scenes.boxes is None else scenes.boxes[:shown]),
        ]
