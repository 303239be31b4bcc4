"""Decoding a sequence model word by word: greedy and beam search, jit-able.

Shape legend: N batch, K beams, T steps (max_steps), V vocabulary.

    out = greedy_search(step_fn, state, N, T, special)
    out = beam_search(step_fn, state, N, T, beam_width=K, special=special)

`step_fn(state, tokens (N,)) -> (state, log-probabilities (N, V), extras (N, ...))` is
any step function over batched states (the captioner's decoder step, for one); the
searches run it under `lax.while_loop` (batched, a fixed maximum length, early exit
once every sequence has produced <eos>) and return a `Decoded`.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

Array = jax.Array
# step_fn(state, tokens (N,)) -> (state, log-probabilities (N, V), per-step extras (N, ...))
StepFn = Callable[[Any, Array], tuple[Any, Array, Any]]


class SpecialTokens(NamedTuple):
    """The vocabulary's ids of padding, start and end of sequence."""

    pad: int
    bos: int
    eos: int


class Decoded(NamedTuple):
    tokens: Array        # int32 (N, T): words, then <eos>, then <pad>
    scores: Array        # float32 (N,): sum of the log-probabilities of the tokens to <eos>
    lengths: Array       # int32 (N,): tokens including <eos> (T when it never came)
    extras: Any          # step_fn's per-step extras, (N, T, ...), zeros after the end


def _zeros_like_steps(extras_shape: Any, max_steps: int, lead: tuple[int, ...]) -> Any:
    return jax.tree.map(lambda s: jnp.zeros(lead + (max_steps,) + s.shape[len(lead):], s.dtype),
                        extras_shape)


def greedy_search(step_fn: StepFn, state: Any, batch_size: int, max_steps: int,
                  special: SpecialTokens) -> Decoded:
    """The most likely word at every step, for `max_steps` steps or until all ended.

    `state` leaves lead with `batch_size`; a sequence that emitted <eos> emits <pad>.
    """
    last = jnp.full((batch_size,), special.bos, jnp.int32)
    extras_shape = jax.eval_shape(step_fn, state, last)[2]
    init = (jnp.zeros((), jnp.int32), state, last,
            jnp.full((batch_size, max_steps), special.pad, jnp.int32),
            _zeros_like_steps(extras_shape, max_steps, (batch_size,)),
            jnp.zeros((batch_size,), bool), jnp.zeros((batch_size,), jnp.float32),
            jnp.zeros((batch_size,), jnp.int32))

    def cond(c):
        return (c[0] < max_steps) & ~jnp.all(c[5])

    def body(c):
        t, state, last, tokens, extras, done, scores, lengths = c
        state, logp, extra = step_fn(state, last)
        word = jnp.argmax(logp, axis=-1).astype(jnp.int32)
        word = jnp.where(done, special.pad, word)
        gained = jnp.take_along_axis(logp, word[:, None], axis=-1)[:, 0]
        scores = scores + jnp.where(done, 0.0, gained)
        put = lambda buf, e: buf.at[:, t].set(  # noqa: E731
            jnp.where(done.reshape((-1,) + (1,) * (e.ndim - 1)), jnp.zeros_like(e), e))
        extras = jax.tree.map(put, extras, extra)
        lengths = lengths + (~done).astype(jnp.int32)
        done = done | (word == special.eos)
        return t + 1, state, word, tokens.at[:, t].set(word), extras, done, scores, lengths

    _, _, _, tokens, extras, _, scores, lengths = lax.while_loop(cond, body, init)
    return Decoded(tokens, scores, lengths, extras)


def _take_beams(x: Array, parent: Array) -> Array:
    """x (B, K, ...) -> x[b, parent[b, k], ...]."""
    return jnp.take_along_axis(x, parent.reshape(parent.shape + (1,) * (x.ndim - 2)), axis=1)


def beam_search(step_fn: StepFn, state: Any, batch_size: int, max_steps: int,
                beam_width: int, special: SpecialTokens, length_penalty: float = 0.0) -> Decoded:
    """Beam search over `beam_width` hypotheses per example; returns the best of each.

    `state` leaves lead with batch_size * beam_width, example-major (row n * K + k;
    all K rows of an example equal at the start). A finished hypothesis stays in the
    beam with its score and extends only with <pad> at no cost. The best hypothesis
    maximises score / ((5 + length) / 6) ** length_penalty (Wu et al., 2016; 0 = the raw
    sum of log-probabilities). With beam_width 1 this is exactly `greedy_search`.
    """
    b, k = batch_size, beam_width
    last = jnp.full((b * k,), special.bos, jnp.int32)
    extras_shape = jax.eval_shape(step_fn, state, last)[2]
    extras_shape = jax.tree.map(lambda s: jax.ShapeDtypeStruct((b, k) + s.shape[1:], s.dtype),
                                extras_shape)
    scores = jnp.tile(jnp.where(jnp.arange(k) == 0, 0.0, -jnp.inf)[None], (b, 1))
    init = (jnp.zeros((), jnp.int32), state, last,
            jnp.full((b, k, max_steps), special.pad, jnp.int32),
            _zeros_like_steps(extras_shape, max_steps, (b, k)), jnp.zeros((b, k), bool),
            scores.astype(jnp.float32), jnp.zeros((b, k), jnp.int32))

    def cond(c):
        return (c[0] < max_steps) & ~jnp.all(c[5])

    def body(c):
        t, state, last, tokens, extras, done, scores, lengths = c
        state, logp, extra = step_fn(state, last)
        vocab = logp.shape[-1]
        logp = logp.reshape(b, k, vocab)
        ended = jnp.where(jnp.arange(vocab) == special.pad, 0.0, -jnp.inf)
        logp = jnp.where(done[..., None], ended, logp)
        top, index = lax.top_k((scores[..., None] + logp).reshape(b, k * vocab), k)
        parent, word = index // vocab, (index % vocab).astype(jnp.int32)
        regroup = lambda x: _take_beams(x.reshape((b, k) + x.shape[1:]), parent)  # noqa: E731
        state = jax.tree.map(lambda x: regroup(x).reshape(x.shape), state)
        was_done = _take_beams(done, parent)
        put = lambda buf, e: _take_beams(buf, parent).at[:, :, t].set(  # noqa: E731
            jnp.where(was_done.reshape((b, k) + (1,) * (e.ndim - 2)), jnp.zeros_like(e), e))
        extras = jax.tree.map(put, extras, jax.tree.map(regroup, extra))
        tokens = _take_beams(tokens, parent).at[:, :, t].set(word)
        lengths = _take_beams(lengths, parent) + (~was_done).astype(jnp.int32)
        done = was_done | (word == special.eos)
        return t + 1, state, word.reshape(b * k), tokens, extras, done, top, lengths

    _, _, _, tokens, extras, _, scores, lengths = lax.while_loop(cond, body, init)
    normalised = scores / ((5.0 + lengths) / 6.0) ** length_penalty
    best = jnp.argmax(normalised, axis=1)[:, None]
    pick = lambda x: _take_beams(x, best)[:, 0]  # noqa: E731
    return Decoded(pick(tokens), pick(scores), pick(lengths), jax.tree.map(pick, extras))
