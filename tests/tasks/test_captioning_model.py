"""Captioning model: attention, loss, greedy and beam search (jitted, batched)."""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnvision import cells
from rnnvision.data.vocab import BOS_ID, EOS_ID, PAD_ID
from rnnvision.models.attention import SoftAttention
from rnnvision.models.captioner import Captioner, caption_loss
from rnnvision.models.search import SpecialTokens, beam_search, greedy_search
from rnnvision.models.resnet import ResNetEncoder
from rnnvision.metrics.attention import box_coverage

VOCAB = 12
SPECIAL = SpecialTokens(pad=PAD_ID, bos=BOS_ID, eos=EOS_ID)


def _model(attention="soft", cell="lstm", score="mlp"):
    encoder = ResNetEncoder(width=8, num_stages=2, blocks_per_stage=1, stem_stride=2, norm="group")
    return Captioner(encoder, cells.get(cell, hidden_size=16), VOCAB, SPECIAL, embed_dim=8,
                     attention=attention, attention_dim=8, attention_score=score)


def _images(n=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 16, 16, 1)).astype(np.uint8)


@pytest.fixture(scope="module")
def soft_model():
    model = _model()
    # Large output weights make the next-word distributions peaked and varied.
    params = model.init(jax.random.key(0), (16, 16, 1))
    params["out_logits"]["w"] = params["out_logits"]["w"] * 6.0
    return model, params


@pytest.fixture(scope="module")
def search(soft_model):
    """Jitted decoders shared by the tests (each compiles once, for batches of 5)."""
    model, _ = soft_model
    return {"greedy": jax.jit(lambda p, x: model.greedy(p, x, 8)),
            "beam1": jax.jit(lambda p, x: model.beam(p, x, 8, beam_width=1)),
            "beam4": jax.jit(lambda p, x: model.beam(p, x, 8, beam_width=4))}


@pytest.mark.parametrize("score", ["mlp", "dot"])
def test_attention_weights_sum_to_one(score):
    attn = SoftAttention(attention_dim=5, score=score)
    params = attn.init(jax.random.key(1), feature_dim=4, query_dim=3)
    features = jax.random.normal(jax.random.key(2), (2, 7, 4))
    context, alpha = attn(params, attn.keys(params, features), features,
                          jax.random.normal(jax.random.key(3), (2, 3)))
    assert alpha.shape == (2, 7) and context.shape == (2, 4)
    np.testing.assert_allclose(alpha.sum(-1), 1.0, rtol=1e-6)
    assert (alpha >= 0).all()
    np.testing.assert_allclose(context, jnp.einsum("nl,nld->nd", alpha, features), rtol=1e-5)


def test_teacher_forced_shapes_and_per_step_attention(soft_model):
    model, params = soft_model
    tokens = jnp.asarray([[BOS_ID, 5, 6, EOS_ID], [BOS_ID, 7, EOS_ID, PAD_ID]])
    logits, alphas = model.teacher_forced(params, _images(2), tokens[:, :-1])
    assert logits.shape == (2, 3, VOCAB) and alphas.shape == (2, 3, 16)  # a 4 x 4 grid
    np.testing.assert_allclose(alphas.sum(-1), 1.0, rtol=1e-5)
    assert float(jnp.abs(alphas[:, 0] - alphas[:, 1]).max()) > 0  # attention moves


def test_doubly_stochastic_term_is_the_documented_formula(soft_model):
    model, params = soft_model
    tokens = jnp.asarray([[BOS_ID, 5, 6, EOS_ID], [BOS_ID, 7, EOS_ID, PAD_ID]])
    mask = jnp.asarray([[1.0, 1, 1], [1, 1, 0]])

    @jax.jit
    def both(params, images):  # one compilation for the three forward passes
        plain, m0 = caption_loss(model, params, images, tokens, mask)
        regularised, m1 = caption_loss(model, params, images, tokens, mask, doubly_stochastic=0.5)
        _, alphas = model.teacher_forced(params, images, tokens[:, :-1])
        return plain, m0, regularised, m1, alphas

    plain, m0, regularised, m1, alphas = both(params, _images(2))
    coverage = (alphas * mask[..., None]).sum(1)
    expected = 0.5 * jnp.mean((1.0 - coverage) ** 2)
    np.testing.assert_allclose(regularised - plain, expected, rtol=1e-5)
    np.testing.assert_allclose(m1["attention_reg"], expected, rtol=1e-5)
    np.testing.assert_allclose(m0["cross_entropy"], plain, rtol=1e-6)


@pytest.mark.parametrize("attention,cell", [("none", "lstm"), ("soft", "gru")])
def test_variants_train_and_decode(attention, cell):
    model = _model(attention, cell, score="dot")
    params = model.init(jax.random.key(0), (16, 16, 1))
    tokens = jnp.asarray([[BOS_ID, 5, EOS_ID]])
    grads = jax.grad(lambda p: caption_loss(model, p, _images(1), tokens, jnp.ones((1, 2)),
                                            doubly_stochastic=1.0)[0])(params)
    assert all(bool(jnp.isfinite(g).all()) for g in jax.tree.leaves(grads))
    out = model.greedy(params, _images(1), 5)
    assert out.tokens.shape == (1, 5) and out.extras.shape == (1, 5, 16)


@pytest.mark.parametrize("decoder", ["greedy", "beam4"])
def test_decoder_ends_on_eos_and_scores_its_sequence(soft_model, search, decoder):
    model, params = soft_model
    images = _images(5)
    out = search[decoder](params, images)
    tokens, lengths = np.asarray(out.tokens), np.asarray(out.lengths)
    for row, n in zip(tokens, lengths):
        ended = np.flatnonzero(row == EOS_ID)
        assert (n == ended[0] + 1) if len(ended) else n == 8
        assert (row[n:] == PAD_ID).all() and (row[:n - 1] != EOS_ID).all()
    # The score is the teacher-forced log-probability of the emitted tokens.
    inputs = np.concatenate([np.full((5, 1), BOS_ID), tokens[:, :-1]], axis=1)
    logits, alphas = model.teacher_forced(params, images, jnp.asarray(inputs))
    logp = jax.nn.log_softmax(logits)
    picked = np.take_along_axis(np.asarray(logp), tokens[..., None], -1)[..., 0]
    valid = np.arange(8)[None] < lengths[:, None]
    np.testing.assert_allclose(out.scores, (picked * valid).sum(1), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(out.extras) * valid[..., None],
                               np.asarray(alphas) * valid[..., None], atol=1e-5)


def test_beam_width_one_equals_greedy(soft_model, search):
    _, params = soft_model
    images = _images(5, seed=1)
    greedy = search["greedy"](params, images)
    beam = search["beam1"](params, images)
    np.testing.assert_array_equal(beam.tokens, greedy.tokens)
    np.testing.assert_array_equal(beam.lengths, greedy.lengths)
    np.testing.assert_allclose(beam.scores, greedy.scores, rtol=1e-5)
    np.testing.assert_allclose(beam.extras, greedy.extras, atol=1e-6)


def test_beam_decodes_each_image_alone(soft_model, search):
    _, params = soft_model
    images = _images(5, seed=2)
    beam = search["beam4"](params, images)
    alone = search["beam4"](params, np.repeat(images[2:3], 5, axis=0))  # no cross-talk
    np.testing.assert_array_equal(alone.tokens[0], beam.tokens[2])
    np.testing.assert_allclose(alone.scores[0], beam.scores[2], rtol=1e-5)


def _best_by_enumeration(model, params, image, steps):
    """The best caption of at most `steps` words for one image, found by scoring every
    word sequence (V^steps) with the teacher-forced model; words after the first <eos>
    are <pad> and cost nothing. Returns (tokens (steps,), score, length)."""
    vocab = model.vocab_size
    prefixes = list(itertools.product(range(vocab), repeat=steps - 1))
    inputs = np.asarray([[BOS_ID, *prefix] for prefix in prefixes])
    logits, _ = _teacher_forced(model, params, np.repeat(image[None], len(inputs), 0), inputs)
    logp = {prefix: row for prefix, row in zip(prefixes, np.asarray(jax.nn.log_softmax(logits)))}
    best = (None, -np.inf, 0)
    for words in itertools.product(range(vocab), repeat=steps):
        ends = words.index(EOS_ID) + 1 if EOS_ID in words else steps
        score = sum(logp[words[:-1]][t, words[t]] for t in range(ends))
        if score > best[1]:
            best = (np.asarray(words[:ends] + (PAD_ID,) * (steps - ends)), score, ends)
    return best


@functools.partial(jax.jit, static_argnums=0)
def _teacher_forced(model, params, images, inputs):
    return model.teacher_forced(params, images, inputs)


def test_an_exhaustive_beam_finds_the_best_caption(soft_model):
    """With beam_width >= V^(steps-1) no hypothesis is ever dropped, so beam search
    must return the best sequence there is: checked against enumeration of all V^steps
    word sequences. The output scales give best captions that greedy misses (greedy
    is checked to miss some) and that end after 3, 2 and 1 words."""
    model, params = soft_model
    steps, images = 3, _images(4, seed=2)
    decode = jax.jit(lambda p, x: (model.beam(p, x, steps, beam_width=VOCAB ** (steps - 1)),
                                   model.greedy(p, x, steps)))
    greedy_missed, lengths = 0, set()
    for scale in (1.0, 0.5, 1 / 6):  # smaller: flatter next-word distributions
        out_logits = dict(params["out_logits"], w=params["out_logits"]["w"] * scale)
        scaled = dict(params, out_logits=out_logits)
        beam, greedy = decode(scaled, images)
        for n, image in enumerate(images):
            tokens, score, length = _best_by_enumeration(model, scaled, image, steps)
            np.testing.assert_array_equal(beam.tokens[n], tokens)
            np.testing.assert_allclose(beam.scores[n], score, rtol=1e-5)
            assert int(beam.lengths[n]) == length
            greedy_missed += bool(np.any(np.asarray(greedy.tokens[n]) != tokens))
            lengths.add(length)
    assert greedy_missed >= 2 and lengths == {1, 2, 3}  # the cases the test is meant to cover


def _markov_step(table):
    """A step function whose next-word log-probabilities depend only on the last word."""
    logp = jnp.log(jnp.asarray(table, jnp.float32) + 1e-12)

    def step(state, tokens):
        return state, logp[tokens], jnp.zeros((tokens.shape[0], 1))
    return step


def test_beam_search_beats_greedy_on_a_constructed_case():
    # Words: 0 <pad>, 1 <bos>, 2 <eos>, 3 A, 4 B, 5 C, 6 D.
    # From <bos>: A 0.55, B 0.45. After A the mass is spread (C, D, <eos> about 1/3 each);
    # after B, <eos> is certain. Greedy takes A (best first word) and ends near 0.55 / 3;
    # the best sequence is B <eos> with probability 0.45.
    table = np.zeros((7, 7))
    table[BOS_ID, [3, 4]] = [0.55, 0.45]
    table[3, [5, 6, EOS_ID]] = [0.34, 0.33, 0.33]
    table[4, EOS_ID] = table[5, EOS_ID] = table[6, EOS_ID] = 1.0
    table[PAD_ID, PAD_ID] = table[EOS_ID, PAD_ID] = 1.0
    step = _markov_step(table)
    state = jnp.zeros((2, 1))
    greedy = jax.jit(lambda s: greedy_search(step, s, 2, 5, SPECIAL))(state)
    np.testing.assert_array_equal(greedy.tokens[0], [3, 5, EOS_ID, PAD_ID, PAD_ID])
    np.testing.assert_allclose(greedy.scores[0], np.log(0.55 * 0.34), rtol=1e-5)
    beam = jax.jit(lambda s: beam_search(step, s, 1, 5, beam_width=2, special=SPECIAL))(jnp.zeros((2, 1)))
    np.testing.assert_array_equal(beam.tokens[0], [4, EOS_ID, PAD_ID, PAD_ID, PAD_ID])
    np.testing.assert_allclose(beam.scores[0], np.log(0.45), rtol=1e-5)
    assert int(beam.lengths[0]) == 2
    assert float(beam.scores[0]) > float(greedy.scores[0])


def test_a_finished_hypothesis_keeps_its_length_when_it_changes_slot():
    # Words: 0 <pad>, 1 <bos>, 2 <eos>, 3 X, 4 Y, 5 Z, 6 W. From <bos>: X 0.6, <eos> 0.4;
    # X -> Y 0.75 (Z 0.25); Y -> W 0.8 (<eos> 0.2). Width 2: after step 2 the beams are
    # [X Y] (0.45, slot 0) and [<eos>] (0.4, slot 1); after step 3 [<eos>] (0.4) leads,
    # now in slot 0, over [X Y W] (0.36). Its length stays 1, whatever slot 0 held before.
    table = np.zeros((7, 7))
    table[BOS_ID, [3, EOS_ID]] = [0.6, 0.4]
    table[3, [4, 5]] = [0.75, 0.25]
    table[4, [6, EOS_ID]] = [0.8, 0.2]
    table[5, EOS_ID] = table[6, EOS_ID] = 1.0
    table[PAD_ID, PAD_ID] = table[EOS_ID, PAD_ID] = 1.0
    beam = jax.jit(lambda s: beam_search(_markov_step(table), s, 1, 3, beam_width=2, special=SPECIAL))(jnp.zeros((2, 1)))
    np.testing.assert_array_equal(beam.tokens[0], [EOS_ID, PAD_ID, PAD_ID])
    np.testing.assert_allclose(beam.scores[0], np.log(0.4), rtol=1e-5)
    assert int(beam.lengths[0]) == 1


def test_box_coverage_reads_attention_mass_inside_a_box():
    boxes = np.array([[[0, 0, 4, 4], [2, 4, 6, 8], [-1, -1, -1, -1]]])  # image 8 x 8, grid 2 x 2
    cover = box_coverage(boxes, (2, 2), (8, 8))
    np.testing.assert_allclose(cover[0, 0], [1, 0, 0, 0])
    np.testing.assert_allclose(cover[0, 1], [0, 0, 0.5, 0.5])
    np.testing.assert_allclose(cover[0, 2], 0)
