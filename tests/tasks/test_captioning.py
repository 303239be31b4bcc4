"""Captioning task end to end: the trainer, results.json, figures, vocabulary, COCO (mocked)."""

from __future__ import annotations

import contextlib
import io
import json
import os

import jax
import numpy as np
import pytest

from configs import captioning as captioning_config
from rnnvision.data.mnist import default_mnist_dir
from rnnvision.metrics.captioning import caption_metrics
from rnnvision.tasks.captioning import CaptioningTask
from rnnvision.train import build_task, loop
from rnnvision.config_checks import ConfigError, override


def _config(arg="smoke", **overrides):
    return override(captioning_config.get_config(arg), **overrides)


def _apply(fn, params, batch):
    return jax.tree.map(np.asarray, jax.jit(fn)(params, batch))


METRICS = ("bleu1", "bleu2", "bleu3", "bleu4", "cider", "exact_match", "attention_in_box",
           "attention_in_box_uniform", "mean_length", "seen_bleu4", "seen_exact_match")


def test_smoke_run_writes_results_figures_and_vocabulary(tmp_path, monkeypatch):
    """One tiny run through the trainer (the default beam decoder, both evaluation sets)."""
    workdir = str(tmp_path / "run")
    results = loop.run(_config(), workdir)
    saved = json.loads(open(os.path.join(workdir, "results.json")).read())
    for key in METRICS:
        assert key in saved and isinstance(saved[key], (int, float)), key
        assert saved[key] == pytest.approx(results[key])
    assert 0.0 <= saved["bleu4"] <= 1.0 and 0.0 <= saved["exact_match"] <= 1.0
    assert saved["num_examples"] == 24 and saved["step"] == 4
    assert {"learning_curves.png", "captions.png", "attention.png"} <= set(
        os.listdir(os.path.join(workdir, "figures")))
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    assert {"cross_entropy", "attention_reg", "token_accuracy"} <= set(rows[0])
    vocab = json.loads(open(os.path.join(workdir, "vocab.json")).read())
    assert vocab["words"][:4] == ["<pad>", "<bos>", "<eos>", "<unk>"] and "above" in vocab["words"]

    # A restart (resume) reads the vocabulary back from the workdir instead of building it.
    def no_rebuild(self):
        raise AssertionError("the vocabulary must be loaded from the workdir")
    monkeypatch.setattr(CaptioningTask, "build_vocabulary", no_rebuild)
    task = build_task(_config())
    task.attach_workdir(workdir, is_main=True)
    assert task.vocab.words == vocab["words"]


def test_vocabulary_path_is_loaded_on_resume(tmp_path):
    config = _config()
    first = build_task(config)
    first.attach_workdir(str(tmp_path), is_main=True)
    path = tmp_path / "vocab.json"
    data = json.loads(path.read_text())
    data["words"].append("zebra")  # a vocabulary that the data would not build
    path.write_text(json.dumps(data))
    second = build_task(config)
    second.attach_workdir(str(tmp_path), is_main=True)
    assert second.vocab.words == first.vocab.words + ["zebra"]
    assert second.model.vocab_size == len(first.vocab) + 1


def test_train_batches_are_deterministic_teacher_forcing_arrays():
    task = build_task(_config())
    a, b = task.train_batch(3, slice(0, 8)), task.train_batch(3, slice(0, 8))
    for key in ("image", "tokens", "mask"):
        np.testing.assert_array_equal(a[key], b[key])
    assert a["image"].shape == (8, 48, 48, 1) and a["image"].dtype == np.uint8
    assert a["tokens"].shape == (8, 18) and a["mask"].shape == (8, 17)
    half = task.train_batch(3, slice(4, 8))  # rows of one process match the global batch
    np.testing.assert_array_equal(half["tokens"], a["tokens"][4:])
    assert not np.array_equal(task.train_batch(4, slice(0, 8))["image"], a["image"])
    for tokens in a["tokens"]:
        words = task.vocab.decode(tokens)
        assert "a" in words and any(w.isdigit() for w in words) and len(words) >= 5
    np.testing.assert_array_equal(a["cut"], 0.0)  # max_length 16 fits every digit caption


def test_long_captions_are_cut_and_counted(caplog):
    """A too-small data.max_length is never silent: a start-up warning and a metric."""
    task = build_task(_config(**{"data.max_length": 4}))
    with caplog.at_level("WARNING"):
        task._warn_long_captions()
    assert "longer than data.max_length=4" in caplog.text
    batch = task.train_batch(0, slice(0, 8))
    assert batch["tokens"].shape == (8, 6) and batch["mask"].shape == (8, 5)
    assert batch["cut"].mean() > 0.5  # digit captions have 5+ words
    params = task.init_params(jax.random.key(0))
    _, aux = task.loss(params, batch, jax.random.key(1))
    assert float(aux["captions_cut"]) == float(batch["cut"].mean())


def test_metrics_agree_with_pycocoevalcap_on_digit_captions():
    bleu_module = pytest.importorskip("pycocoevalcap.bleu.bleu")
    cider_module = pytest.importorskip("pycocoevalcap.cider.cider")
    refs = {0: ["a small 7 above a large 2", "a large 2 below a small 7",
                "there is a small 7 above a large 2", "there is a large 2 below a small 7"],
            1: ["a small 3 a large 8 and a small 1 from left to right",
                "a small 1 a large 8 and a small 3 from right to left"],
            2: ["a large 5 at the centre", "there is a large 5 at the centre"],
            3: ["a small 0 left of a small 9", "a small 9 right of a small 0"]}
    hyps = {0: "a large 2 below a small 7", 1: "a small 3 a large 8 and a small 7 from left to right",
            2: "a large 5 at the top", 3: ""}
    ours = caption_metrics(refs, hyps)
    with contextlib.redirect_stdout(io.StringIO()):
        bleu, _ = bleu_module.Bleu(4).compute_score(refs, {k: [h] for k, h in hyps.items()})
        cider, _ = cider_module.Cider().compute_score(refs, {k: [h] for k, h in hyps.items()})
    np.testing.assert_allclose([ours[f"bleu{n}"] for n in range(1, 5)], bleu, rtol=1e-6)
    assert ours["cider"] == pytest.approx(float(cider), rel=1e-6)


@pytest.mark.parametrize("arg", ["", "real", "no_attention", "mean_context", "gru", "coco",
                                 "smoke", "real,no_attention,gru", "gru,smoke"])
def test_config_variants_build(arg):
    config = captioning_config.get_config(arg or None)
    assert config.task == "captioning"
    if "no_attention" in arg:
        assert config.model.attention == "none"
    if arg == "coco":
        assert config.data.dataset == "coco" and config.model.attention_score == "mlp"


def test_unknown_variant_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown config variant 'attn'.*no_attention"):
        captioning_config.get_config("attn")


@pytest.mark.parametrize("field,value,message", [
    ("data.dataset", "flickr", "data.dataset='flickr'"),
    ("model.attention", "hard", "model.attention='hard'"),
    ("eval.decode", "sample", "eval.decode='sample'"),
    ("model.cell", "conv_lstm", "model.cell='conv_lstm'"),
])
def test_bad_fields_raise_config_errors(field, value, message):
    with pytest.raises(ConfigError, match=message):
        task = build_task(_config(**{field: value}))
        task.init_params(jax.random.key(0))


def test_coco_task_under_tfds_mock():
    tfds = pytest.importorskip("tensorflow_datasets")
    config = _config("coco,smoke", **{"data.image_size": 32, "data.coco_max_images": 8,
                                       "data.vocab_min_count": 1, "eval.decode": "greedy"})
    with tfds.testing.mock_data(num_examples=8):
        task = build_task(config)
    params = task.init_params(jax.random.key(0))
    batch = task.train_batch(0, slice(0, 8))
    assert batch["image"].shape == (8, 32, 32, 3) and batch["tokens"].shape == (8, 22)
    loss, metrics = jax.jit(task.loss)(params, batch, jax.random.key(1))
    assert np.isfinite(float(loss)) and float(metrics["token_accuracy"]) >= 0
    results = task.evaluate(params, _apply)
    assert results["num_examples"] == 8 and "attention_in_box" not in results
    assert {"bleu1", "bleu4", "cider", "exact_match"} <= set(results)


@pytest.mark.slow
def test_default_real_run_meets_the_bars(tmp_path):
    """The README bar: BLEU-4 >= 0.6 on held-out pairs; attention mostly inside the named
    digit's box. Trains the default config on real digits (minutes)."""
    if default_mnist_dir() is None:
        pytest.skip("the real MNIST subset (../shared/data/mnist) is not here")
    results = loop.run(_config("real"), str(tmp_path / "run"))
    assert results["bleu4"] >= 0.6
    assert results["attention_in_box"] > 0.5
    assert results["attention_in_box"] > 3 * results["attention_in_box_uniform"]


@pytest.mark.slow
def test_attention_beats_no_attention_on_the_same_budget(tmp_path):
    """The README's claim: with the same steps, data and decoder, soft attention beats
    Show and Tell (no attention) on BLEU-4, CIDEr-D and exact match (README figures:
    0.773 / 4.65 / 21.9% against 0.544 / 2.53 / 0%). Two default real runs (minutes)."""
    if default_mnist_dir() is None:
        pytest.skip("the real MNIST subset (../shared/data/mnist) is not here")
    soft = loop.run(_config("real"), str(tmp_path / "soft"))
    plain = loop.run(_config("real,no_attention"), str(tmp_path / "plain"))
    assert soft["bleu4"] >= plain["bleu4"] + 0.1, (soft["bleu4"], plain["bleu4"])
    assert soft["cider"] > plain["cider"] and soft["exact_match"] > plain["exact_match"]
