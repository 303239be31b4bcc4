"""Caption metrics: agreement with pycocoevalcap and hand-checkable invariants."""

import contextlib
import io
import math

import pytest

from rnnvision import metrics

# Several images with several pre-tokenized references each. Hypotheses cover:
# exact match of one reference, shorter and longer than every reference, a tie
# in "closest reference length" (4 and 6 words for a 5-word hypothesis), a
# repeated word (CIDEr-D clipping), zero n-gram matches, a one-word hypothesis
# and an empty one (an immediate end token).
REFERENCES = {
    "img0": ["a man riding a horse on a beach",
             "a person rides a brown horse along the shore",
             "man on horseback at the beach"],
    "img1": ["two dogs playing in the snow",
             "a pair of dogs run through snow",
             "dogs playing together outside in winter snow"],
    "img2": ["a plate of food with broccoli and rice",
             "a white plate topped with rice and vegetables"],
    "img3": ["a red bus driving down a city street",
             "a double decker bus on the road",
             "a bus in the street"],
    "img4": ["people standing in a kitchen cooking food",
             "a group of cooks preparing a meal",
             "chefs at work"],
    "img5": ["a cat on laptop",
             "a cat lies on a computer"],
    "img6": ["a small boat", "a boat on the lake"],
}
HYPOTHESES = {
    "img0": "a man riding a horse on a beach",             # exact match of a reference
    "img1": "dogs",                                         # much shorter, one word
    "img2": "a plate of rice and broccoli with some food on a white table today",  # longer
    "img3": "a bus a bus a bus",                           # repeated n-grams
    "img4": "an elephant swims under water",                # zero matches at every order
    "img5": "a cat sleeping on laptop",                     # ties 4 and 6 words
    "img6": "",                                             # empty (immediate end token)
}


def _pycocoevalcap_scores(references, hypotheses):
    bleu_module = pytest.importorskip(
        "pycocoevalcap.bleu.bleu",
        reason="pycocoevalcap not installed (pip install pycocoevalcap; part of the test extra)")
    cider_module = pytest.importorskip("pycocoevalcap.cider.cider")
    res = {k: [h] for k, h in hypotheses.items()}
    with contextlib.redirect_stdout(io.StringIO()):  # Bleu prints its statistics.
        bleu, _ = bleu_module.Bleu(4).compute_score(references, res)
        cider, per_image = cider_module.Cider().compute_score(references, res)
    return bleu, float(cider), [float(s) for s in per_image]


@pytest.mark.parametrize(
    "ids", [list(HYPOTHESES), ["img1", "img4"], ["img2", "img3", "img5", "img6"]])
def test_matches_pycocoevalcap(ids):
    refs = {k: REFERENCES[k] for k in ids}
    hyps = {k: HYPOTHESES[k] for k in ids}
    want_bleu, want_cider, want_per_image = _pycocoevalcap_scores(refs, hyps)
    got = metrics.caption_metrics(refs, hyps)
    assert list(got) == ["bleu1", "bleu2", "bleu3", "bleu4", "cider"]
    for k in range(4):
        assert got[f"bleu{k + 1}"] == pytest.approx(want_bleu[k], abs=1e-6, rel=0)
    assert got["cider"] == pytest.approx(want_cider, abs=1e-6, rel=0)
    per_image = metrics.cider_d_per_image(refs, hyps)
    assert [per_image[k] for k in ids] == pytest.approx(want_per_image, abs=1e-6, rel=0)


def test_bleu_of_exact_matches_is_one():
    hyps = {k: refs[1] for k, refs in REFERENCES.items()}
    assert metrics.bleu(REFERENCES, hyps) == pytest.approx([1.0] * 4, abs=1e-8)


def test_bleu_brevity_penalty_uses_the_closest_reference_length():
    # 3-word hypothesis, references of 3 and 9 words: closest is 3, no penalty.
    refs = {0: ["a b c", "a b c d e f g h i"]}
    assert metrics.bleu(refs, {0: "a b c"})[0] == pytest.approx(1.0, abs=1e-8)
    # 2 words against a closest length of 3: BP = exp(1 - 3/2).
    assert metrics.bleu(refs, {0: "a b"})[0] == pytest.approx(math.exp(-0.5), abs=1e-8)


def test_cider_hand_computed():
    # N = 2 images, every reference n-gram has df = 1, so idf = log 2 for all.
    # img a: unigram and bigram vectors equal the reference's -> cos 1, 1; no
    #   3/4-grams -> 0, 0. CIDEr = 10 * (1 + 1 + 0 + 0) / 4 = 5.
    # img b: "c" vs "c d": unigram cos = 1 / sqrt(2); length penalty for one
    #   word less: exp(-1^2 / (2 * 6^2)). CIDEr = 10 * cos * pen / 4.
    refs = {"a": ["a b"], "b": ["c d"]}
    per_image = metrics.cider_d_per_image(refs, {"a": "a b", "b": "c"})
    want_b = 10 * (1 / math.sqrt(2)) * math.exp(-1 / 72) / 4
    assert per_image == pytest.approx({"a": 5.0, "b": want_b}, abs=1e-12)
    assert metrics.cider_d(refs, {"a": "a b", "b": "c"}) == pytest.approx((5 + want_b) / 2)


def test_cider_invariants():
    # All references equal the hypothesis and share no n-gram with other images:
    # every order has cosine 1 and no length penalty -> the maximum, 10.
    refs = {0: ["a b c d e"] * 3, 1: ["v w x y z"] * 2}
    assert metrics.cider_d(refs, {0: "a b c d e", 1: "v w x y z"}) == pytest.approx(10.0)
    # No n-gram in common -> 0.
    assert metrics.cider_d(refs, {0: "z y", 1: "e d"}) == 0.0
    # A one-image corpus has idf = log 1 - log 1 = 0 everywhere -> 0.
    assert metrics.cider_d({0: ["a b c"]}, {0: "a b c"}) == 0.0
    # Clipping: "a a" against "a" scores min(2w, w) * w / (|2w| |w|) = 1/2 on
    # unigrams (an unclipped cosine would give 1); its bigram "a a" is not in the
    # reference (0), and one word more costs exp(-1 / 72).
    per_image = metrics.cider_d_per_image({0: ["a"], 1: ["b"]}, {0: "a a", 1: "b"})
    assert per_image[0] == pytest.approx(10 * 0.5 * math.exp(-1 / 72) / 4, abs=1e-12)


def test_rejects_mismatched_ids_and_untokenized_lists():
    with pytest.raises(ValueError, match="same ids"):
        metrics.caption_metrics({0: ["a b"]}, {1: "a b"})
    with pytest.raises(TypeError, match="one string"):
        metrics.caption_metrics({0: ["a b"]}, {0: ["a b"]})
    with pytest.raises(ValueError, match="non-empty list"):
        metrics.caption_metrics({0: []}, {0: "a b"})


@pytest.mark.parametrize("ids", [
    list(HYPOTHESES),
    ["img1", "img5"],            # 6 words against closest lengths 6 + 4: brevity penalty applies
    ["img1", "img6"],            # 1 and 0 words: no bigram to 4-gram guessed at all
])
def test_bleu_matches_pycocoevalcap_to_the_last_bit(ids):
    # Same operations in the same order as pycocoevalcap, so its tiny guards
    # (+1e-15, +1e-9) show in the last bits; a sign flip of either changes them.
    refs = {k: REFERENCES[k] for k in ids}
    hyps = {k: HYPOTHESES[k] for k in ids}
    want_bleu, _, _ = _pycocoevalcap_scores(refs, hyps)
    got = metrics.bleu(refs, hyps)
    assert all(type(v) is float for v in got)
    assert got == want_bleu


def test_bleu_closest_reference_can_be_the_longer_one():
    # 8 words against references of 3 and 9 words: the closest is 9 (not the
    # shortest), all 8 unigrams match, BP = exp(1 - 9/8).
    refs = {0: ["a b c", "a b c d e f g h i"]}
    hyps = {0: "a b c d e f g h"}
    assert metrics.bleu(refs, hyps)[0] == pytest.approx(math.exp(1 - 9 / 8), abs=1e-8)
    assert metrics.bleu(refs, hyps) == _pycocoevalcap_scores(refs, hyps)[0]


def test_cider_d_passes_sigma_on():
    # The hand-computed case of `test_cider_hand_computed` with sigma = 2: one
    # word less costs exp(-1^2 / (2 * 2^2)).
    refs, hyps = {"a": ["a b"], "b": ["c d"]}, {"a": "a b", "b": "c"}
    want_b = 10 * (1 / math.sqrt(2)) * math.exp(-1 / 8) / 4
    assert metrics.cider_d_per_image(refs, hyps, sigma=2.0)["b"] == pytest.approx(want_b,
                                                                                abs=1e-12)
    assert metrics.cider_d(refs, hyps, sigma=2.0) == pytest.approx((5 + want_b) / 2, abs=1e-12)


def test_input_errors_name_the_problem():
    for fn in (metrics.bleu, metrics.cider_d_per_image, metrics.caption_metrics):
        with pytest.raises(ValueError, match=r"^empty corpus: no references given$"):
            fn({}, {})
    with pytest.raises(ValueError, match=r"^references and hypotheses must have the same ids; "
                                         r"differ on \['0', '2'\]$"):
        metrics.bleu({0: ["a"], 1: ["b"]}, {1: "b", 2: "c"})
    # At most 5 differing ids are listed (sorted as strings).
    with pytest.raises(ValueError, match=r"differ on \['0', '1', '10', '11', '12'\]$"):
        metrics.bleu({k: ["a"] for k in range(6)}, {k: "a" for k in range(10, 16)})
    with pytest.raises(TypeError, match=r"^hypotheses\[0\] must be one string, "
                                        r"got <class 'list'>$"):
        metrics.bleu({0: ["a b"]}, {0: ["a b"]})
