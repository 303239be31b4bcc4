"""Caption metrics: corpus BLEU-1..4 and CIDEr-D, as the COCO caption evaluation.

A pure Python re-implementation of `pycocoevalcap` (the pip package of
tylin/coco-caption): `bleu/bleu_scorer.py` called as `Bleu(4)` does (option
"closest") and `cider/cider_scorer.py` (which is CIDEr-D), including their
numerical quirks, so that numbers match published COCO tables (the tests check
agreement to 1e-6). We re-implement rather than import it to keep the library
free of its Java-based tokenizer and its prints.

Inputs everywhere:
  references: {image_id: [ref_1, ref_2, ...]}   at least one reference each
  hypotheses: {image_id: hyp}                    the same ids, one caption each
with pre-tokenized captions: lower-cased, space-separated tokens (what
pycocoevalcap's PTBTokenizer would output). No tokenization is done here.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence

NGram = tuple[str, ...]
References = Mapping[Hashable, Sequence[str]]
Hypotheses = Mapping[Hashable, str]

# pycocoevalcap's BleuScorer guards: (correct + TINY) / (guess + SMALL), so a
# zero-match corpus gets a tiny positive score rather than a division by zero.
_TINY, _SMALL = 1e-15, 1e-9


def _ngram_counts(sentence: str, max_n: int) -> Counter[NGram]:
    """Counts of all k-grams, 1 <= k <= max_n, of a whitespace-tokenized sentence."""
    words = sentence.split()
    return Counter(tuple(words[i:i + k])
                   for k in range(1, max_n + 1) for i in range(len(words) - k + 1))


def _check_corpus(references: References, hypotheses: Hypotheses) -> None:
    if not references:
        raise ValueError("empty corpus: no references given")
    if set(references) != set(hypotheses):
        raise ValueError("references and hypotheses must have the same ids; "
                         f"differ on {sorted(map(str, set(references) ^ set(hypotheses)))[:5]}")
    for key, refs in references.items():
        if isinstance(refs, str) or len(refs) == 0:
            raise ValueError(f"references[{key!r}] must be a non-empty list of strings")
        if not isinstance(hypotheses[key], str):
            raise TypeError(f"hypotheses[{key!r}] must be one string, got {type(hypotheses[key])}")


def _bleu_stats(refs: Sequence[str], hyp: str, max_n: int):
    """Sufficient statistics of one caption: (hyp_len, ref_len, correct, guess).

    ref_len is the reference length closest to hyp_len (ties go to the shorter
    one); correct[k-1] the clipped k-gram matches, sum_g min(count_hyp(g),
    max_r count_r(g)); guess[k-1] = max(0, hyp_len - k + 1) the k-grams of hyp.
    """
    hyp_len = len(hyp.split())
    ref_len = min((len(r.split()) for r in refs), key=lambda n: (abs(n - hyp_len), n))
    max_ref_counts = Counter()
    for ref in refs:
        max_ref_counts |= _ngram_counts(ref, max_n)  # `|` is the elementwise max.
    correct = [0] * max_n
    for gram, count in _ngram_counts(hyp, max_n).items():
        correct[len(gram) - 1] += min(count, max_ref_counts[gram])
    guess = [max(0, hyp_len - k) for k in range(max_n)]
    return hyp_len, ref_len, correct, guess


def bleu(references: References, hypotheses: Hypotheses, max_n: int = 4) -> list[float]:
    """Corpus-level BLEU-1..max_n (Papineni et al., 2002) as pycocoevalcap.

    With statistics summed over the corpus (see `_bleu_stats`):
      p_k    = (correct_k + 1e-15) / (guess_k + 1e-9)
      BLEU-N = BP * (p_1 * ... * p_N)^(1/N)
      BP     = exp(1 - r/c) if c < r else 1,  c = sum hyp_len, r = sum ref_len
    where ref_len is the closest reference length of each caption. No other
    smoothing: BLEU-N is small but not 0 (e.g. ~1e-4) when some order has no match.

    Returns:
      [BLEU-1, ..., BLEU-max_n] as python floats.
    """
    _check_corpus(references, hypotheses)
    c = r = 0
    correct, guess = [0] * max_n, [0] * max_n
    for key, hyp in hypotheses.items():
        hyp_len, ref_len, img_correct, img_guess = _bleu_stats(references[key], hyp, max_n)
        c, r = c + hyp_len, r + ref_len
        correct = [a + b for a, b in zip(correct, img_correct)]
        guess = [a + b for a, b in zip(guess, img_guess)]
    scores, product = [], 1.0
    for k in range(max_n):
        # A running product, in pycocoevalcap's order, to match it to the last bits.
        product *= (correct[k] + _TINY) / (guess[k] + _SMALL)
        scores.append(product ** (1.0 / (k + 1)))
    ratio = (c + _TINY) / (r + _SMALL)
    brevity_penalty = math.exp(1.0 - 1.0 / ratio) if ratio < 1.0 else 1.0
    return [s * brevity_penalty for s in scores]


def _document_frequency(references: References, n: int) -> Counter[NGram]:
    """df(g) = number of images whose references (any of them) contain n-gram g."""
    df = Counter()
    for refs in references.values():
        df.update(set().union(*(_ngram_counts(r, n) for r in refs)))
    return df


def _tfidf(sentence: str, df: Counter[NGram], log_num_images: float, n: int):
    """TF-IDF vectors of one caption, one dict per n-gram order, their norms, and "length".

    w(g) = count(g) * (log N - log max(1, df(g))), N the number of images.
    "length" is the number of bigrams, max(0, words - 1), as pycocoevalcap
    counts it (`if n == 1` with a 0-based n). Length differences are then
    word-count differences, except with an empty caption, which scores 0
    anyway: the penalty is the paper's.
    """
    counts = _ngram_counts(sentence, n)
    vec = [{} for _ in range(n)]
    for gram, tf in counts.items():
        vec[len(gram) - 1][gram] = tf * (log_num_images - math.log(max(1.0, df[gram])))
    norms = [math.sqrt(sum(w * w for w in v.values())) for v in vec]
    length = sum(tf for gram, tf in counts.items() if len(gram) == 2)
    return vec, norms, length


def _cider_d_similarity(hyp, ref, sigma: float) -> list[float]:
    """Per-order CIDEr-D similarity of a hypothesis and ONE reference.

    s_k = exp(-(l_h - l_r)^2 / (2 sigma^2)) * sum_g min(h_g, r_g) r_g / (|h| |r|)
    for k-grams g, with the `_tfidf` weights h, r; the division is skipped when
    a norm is 0 (the sum is 0 then). `min` is CIDEr-D's clipping of repeated words.
    """
    (vec_h, norm_h, len_h), (vec_r, norm_r, len_r) = hyp, ref
    penalty = math.exp(-float(len_h - len_r) ** 2 / (2 * sigma**2))
    sims = []
    for k in range(len(vec_h)):
        s = sum(min(w, vec_r[k].get(g, 0.0)) * vec_r[k].get(g, 0.0)
                for g, w in vec_h[k].items())
        if norm_h[k] != 0 and norm_r[k] != 0:
            s /= norm_h[k] * norm_r[k]
        sims.append(s * penalty)
    return sims


def cider_d_per_image(references: References, hypotheses: Hypotheses,
                      n: int = 4, sigma: float = 6.0) -> dict[Hashable, float]:
    """CIDEr-D (Vedantam et al., 2015) of each caption, as pycocoevalcap's Cider.

      CIDEr-D(h, R) = 10 / n * sum_{k=1..n} 1/|R| sum_{r in R} s_k(h, r)

    with `_cider_d_similarity` s_k. IDF uses the document frequencies of the
    REFERENCES of the evaluated corpus (so scores depend on the whole corpus,
    and a one-image corpus scores 0), n=4, sigma=6.

    Returns:
      {image_id: score} as python floats.
    """
    _check_corpus(references, hypotheses)
    df = _document_frequency(references, n)
    log_num_images = math.log(float(len(references)))
    scores = {}
    for key, hyp in hypotheses.items():
        hyp_vec = _tfidf(hyp, df, log_num_images, n)
        totals = [0.0] * n
        for ref in references[key]:
            sims = _cider_d_similarity(hyp_vec, _tfidf(ref, df, log_num_images, n), sigma)
            totals = [t + s for t, s in zip(totals, sims)]
        scores[key] = sum(totals) / n / len(references[key]) * 10.0
    return scores


def cider_d(references: References, hypotheses: Hypotheses,
            n: int = 4, sigma: float = 6.0) -> float:
    """Corpus CIDEr-D: the mean over images of `cider_d_per_image`."""
    per_image = cider_d_per_image(references, hypotheses, n, sigma)
    return math.fsum(per_image.values()) / len(per_image)


def caption_metrics(references: References, hypotheses: Hypotheses) -> dict[str, float]:
    """The COCO caption metrics we report: corpus BLEU-1..4 and CIDEr-D.

    Returns:
      {"bleu1", "bleu2", "bleu3", "bleu4", "cider"} -> python float, the values
      pycocoevalcap's `Bleu(4)` and `Cider()` give on the same tokenized input
      (on the 0-1 scale for BLEU; CIDEr-D includes its x10 factor).
    """
    out = {f"bleu{k}": v for k, v in enumerate(bleu(references, hypotheses, 4), start=1)}
    out["cider"] = cider_d(references, hypotheses)
    return out
