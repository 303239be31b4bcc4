r"""Image captioning: a CNN encoder and a recurrent decoder with soft attention.

Show, Attend and Tell (Xu et al., 2015), soft ("deterministic") attention, with any
registered vector cell (lstm, gru, rnn, stacked) as the decoder; Show and Tell
(Vinyals et al., 2015) is the same model without attention.

Shape legend: N batch, T caption steps, V vocabulary, L = h * w grid locations,
D feature size, E embedding size, H decoder output size, K beams.

    model = Captioner(ResNetEncoder(...), cells.get("lstm", hidden_size=256), vocab_size=V,
                      special_tokens=SpecialTokens(pad=0, bos=1, eos=2))
    params = model.init(key, image_shape=(48, 48, 1))
    logits, alphas = model.teacher_forced(params, images, tokens[:, :-1])   # (N,T,V), (N,T,L)
    loss, metrics = caption_loss(model, params, images, tokens, mask, rng)
    out = model.greedy(params, images, max_steps)          # Decoded: tokens (N, T), ...
    out = model.beam(params, images, max_steps, beam_width=3)

Decoder, one step t (y_{t-1} the previous word, h_{t-1} the previous output):
  a = encoder(image) as L vectors a_i (with `coordinates`, each a_i ends with its cell's
      (x, y) in [-1, 1], so attention can select and report by position);  a_mean = mean_i a_i
  carry_0 = tanh(W_c a_mean + b) per carry leaf, h_0 = tanh(W_o a_mean + b)   (Xu's f_init)
  z_t, alpha_t = SoftAttention(a, h_{t-1});  z_t *= sigmoid(w_beta . h_{t-1} + b)  (the gate)
  carry_t, h_t = cell([E y_{t-1}; z_t], carry_{t-1})
  logits_t = L_o dropout(E y_{t-1} + L_h h_t + L_z z_t)                    (deep output)
Attention modes: "soft" as above; "mean" uses z_t = a_mean (uniform alpha, a fixed global
context); "none" drops z_t altogether (Show and Tell: the image enters only through the
initial state).

Loss (teacher forcing): mean cross-entropy over caption tokens (words and <eos>) plus
Xu's doubly stochastic regulariser, here as
  lambda * mean_{n, i} (1 - sum_t alpha_nti)^2,
which is the paper's lambda_paper * sum_i (...)^2 with lambda_paper = lambda / L.

Teacher forcing runs through `time_loop.scan` (truncated BPTT over the words, remat),
like every time loop of the project; decoding uses `rnnvision.models.search`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from rnnvision.cells.base import Cell
from rnnvision.models.attention import SoftAttention
from rnnvision.models.resnet import ResNetEncoder
from rnnvision.models.search import Decoded, SpecialTokens, StepFn, beam_search, greedy_search
from rnnvision.recurrence import TimeLoop

ATTENTION_MODES = ("soft", "mean", "none")
Array = jax.Array


class Encoded(NamedTuple):
    features: Array      # (N, L, D)
    keys: Array | None   # (N, L, A), soft attention only
    mean: Array          # (N, D)


class DecoderState(NamedTuple):
    carry: Any           # the cell's carry
    out: Array           # (N, H) the previous output h_{t-1}


def _dense_init(key: Array, n_in: int, n_out: int, bias: bool = True) -> dict:
    p = {"w": jax.nn.initializers.lecun_normal()(key, (n_in, n_out), jnp.float32)}
    if bias:
        p["b"] = jnp.zeros((n_out,), jnp.float32)
    return p


def _dense(p: dict, x: Array) -> Array:
    y = x @ p["w"]
    return y + p["b"] if "b" in p else y


@dataclasses.dataclass(frozen=True)
class Captioner:
    """The model's hyper-parameters; every method is a pure function of `params`."""

    encoder: ResNetEncoder
    cell: Cell
    vocab_size: int
    special_tokens: SpecialTokens  # the vocabulary's <pad>, <bos>, <eos> ids
    embed_dim: int = 64
    attention: str = "soft"       # one of ATTENTION_MODES
    attention_dim: int = 128
    attention_score: str = "mlp"  # "mlp" (Xu et al.) or "dot", see models/attention.py
    gate: bool = True             # Xu's gating scalar beta on the context
    dropout: float = 0.0          # on the deep-output layer's input, training only
    coordinates: bool = False     # append each grid cell's (x, y) in [-1, 1] to its feature
    time_loop: TimeLoop = TimeLoop()  # teacher forcing's loop: truncation (in words), remat

    def __post_init__(self):
        if self.attention not in ATTENTION_MODES:
            raise ValueError(f"attention={self.attention!r}; allowed: {ATTENTION_MODES}")

    @property
    def _attention(self) -> SoftAttention:
        return SoftAttention(self.attention_dim, self.attention_score)

    @property
    def feature_dim(self) -> int:
        """D: the encoder's channels, plus 2 with `coordinates`."""
        return self.encoder.features + (2 if self.coordinates else 0)

    @property
    def _context_dim(self) -> int:
        return 0 if self.attention == "none" else self.feature_dim

    # -- parameters ------------------------------------------------------------------
    def init(self, key: Array, image_shape: tuple[int, ...]) -> dict:
        """Parameters for images of shape `image_shape` (H, W, C)."""
        k = iter(jax.random.split(key, 10))
        d, e, v = self.feature_dim, self.embed_dim, self.vocab_size
        enc = self.encoder.init(next(k), jnp.zeros((1, *image_shape), jnp.float32))["params"]
        input_size = e + self._context_dim
        cell_params = self.cell.init(next(k), (input_size,))
        (h,) = self.cell.output_shape((input_size,))
        carry = jax.eval_shape(lambda p: self.cell.initial_carry(p, (1, input_size)), cell_params)
        params = {
            "encoder": enc, "cell": cell_params,
            "embed": jax.random.normal(next(k), (v, e), jnp.float32) * 0.1,
            "init_carry": [_dense_init(kk, d, leaf.shape[-1]) for kk, leaf in
                           zip(jax.random.split(next(k), len(jax.tree.leaves(carry))),
                               jax.tree.leaves(carry))],
            "init_out": _dense_init(next(k), d, h),
            "out_h": _dense_init(next(k), h, e), "out_logits": _dense_init(next(k), e, v)}
        if self.attention != "none":
            params["out_z"] = _dense_init(next(k), d, e, bias=False)
        if self.attention == "soft":
            params["attention"] = self._attention.init(next(k), d, h)
            if self.gate:
                params["gate"] = _dense_init(next(k), h, 1)
        return params

    # -- the pieces of a forward pass --------------------------------------------------
    def encode(self, params: dict, images: Array) -> Encoded:
        """uint8 or float images (N, H, W, C) in [0, 255] -> Encoded."""
        x = images.astype(jnp.float32) / 255.0 - 0.5
        grid = self.encoder.apply({"params": params["encoder"]}, x)
        if self.coordinates:
            n, h, w, _ = grid.shape
            ys, xs = jnp.meshgrid(jnp.linspace(-1, 1, h), jnp.linspace(-1, 1, w), indexing="ij")
            coords = jnp.broadcast_to(jnp.stack([xs, ys], -1), (n, h, w, 2)).astype(grid.dtype)
            grid = jnp.concatenate([grid, coords], axis=-1)
        features = grid.reshape(grid.shape[0], -1, grid.shape[-1])
        keys = (self._attention.keys(params["attention"], features)
                if self.attention == "soft" else None)
        return Encoded(features, keys, features.mean(axis=1))

    def initial_state(self, params: dict, enc: Encoded) -> DecoderState:
        n, input_size = enc.mean.shape[0], self.embed_dim + self._context_dim
        template = self.cell.initial_carry(params["cell"], (n, input_size))
        leaves, treedef = jax.tree.flatten(template)
        leaves = [jnp.tanh(_dense(p, enc.mean)).astype(x.dtype)
                  for p, x in zip(params["init_carry"], leaves)]
        return DecoderState(jax.tree.unflatten(treedef, leaves),
                            jnp.tanh(_dense(params["init_out"], enc.mean)))

    def step(self, params: dict, enc: Encoded, state: DecoderState, tokens: Array,
             rng: Array | None = None) -> tuple[DecoderState, Array, Array]:
        """One word: tokens y_{t-1} (N,) -> (state, logits (N, V), alpha (N, L))."""
        emb = params["embed"][tokens]
        n, num_locations = enc.features.shape[:2]
        alpha = jnp.full((n, num_locations), 1.0 / num_locations, jnp.float32)
        context = None
        if self.attention == "soft":
            context, alpha = self._attention(params["attention"], enc.keys, enc.features, state.out)
            if self.gate:
                context = context * jax.nn.sigmoid(_dense(params["gate"], state.out))
        elif self.attention == "mean":
            context = enc.mean
        x = emb if context is None else jnp.concatenate([emb, context], axis=-1)
        carry, h = self.cell.step(params["cell"], state.carry, x)
        deep = emb + _dense(params["out_h"], h)
        if context is not None:
            deep = deep + _dense(params["out_z"], context)
        if rng is not None and self.dropout > 0:
            keep = jax.random.bernoulli(rng, 1.0 - self.dropout, deep.shape)
            deep = jnp.where(keep, deep / (1.0 - self.dropout), 0.0)
        return DecoderState(carry, h), _dense(params["out_logits"], deep), alpha

    def teacher_forced(self, params: dict, images: Array, inputs: Array,
                       rng: Array | None = None) -> tuple[Array, Array]:
        """inputs (N, T) = <bos> w_1 .. -> logits (N, T, V) and attention (N, T, L)."""
        enc = self.encode(params, images)
        steps = jnp.broadcast_to(jnp.arange(inputs.shape[1]), inputs.shape)

        def body(state, xs):
            tokens, t = xs
            key = None if rng is None else jax.random.fold_in(rng, t[0])
            state, logits, alpha = self.step(params, enc, state, tokens, key)
            return state, (logits, alpha)

        _, (logits, alphas) = self.time_loop.scan(body, self.initial_state(params, enc),
                                                  (inputs, steps))
        return logits, alphas

    # -- decoding ---------------------------------------------------------------------
    def _step_fn(self, params: dict, enc: Encoded) -> StepFn:
        def step_fn(state, tokens):
            state, logits, alpha = self.step(params, enc, state, tokens)
            return state, jax.nn.log_softmax(logits), alpha
        return step_fn

    def greedy(self, params: dict, images: Array, max_steps: int) -> Decoded:
        """Greedy decoding; `extras` are the attention maps (N, T, L)."""
        enc = self.encode(params, images)
        return greedy_search(self._step_fn(params, enc), self.initial_state(params, enc),
                             enc.mean.shape[0], max_steps, self.special_tokens)

    def beam(self, params: dict, images: Array, max_steps: int, beam_width: int,
             length_penalty: float = 0.0) -> Decoded:
        """Beam search; the best beam per image, `extras` its attention maps (N, T, L)."""
        enc = self.encode(params, images)
        state = self.initial_state(params, enc)
        tile = lambda x: jnp.repeat(x, beam_width, axis=0)  # noqa: E731 - row n*K + k
        enc = jax.tree.map(tile, enc)
        return beam_search(self._step_fn(params, enc), jax.tree.map(tile, state),
                           images.shape[0], max_steps, beam_width, self.special_tokens,
                           length_penalty)


def caption_loss(model: Captioner, params: dict, images: Array, tokens: Array, mask: Array,
                 rng: Array | None = None, doubly_stochastic: float = 0.0):
    """Teacher-forced loss. tokens (N, T + 1) <bos> .. <eos> <pad>..; mask (N, T) on targets.

    Returns (loss, metrics): loss = mean token cross-entropy + the doubly stochastic
    term (module docstring); metrics hold both parts and the token accuracy.
    """
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    logits, alphas = model.teacher_forced(params, images, inputs, rng)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    num_tokens = jnp.maximum(mask.sum(), 1.0)
    cross_entropy = (ce * mask).sum() / num_tokens
    accuracy = ((logits.argmax(-1) == targets) * mask).sum() / num_tokens
    regulariser = jnp.zeros((), jnp.float32)
    if model.attention == "soft" and doubly_stochastic > 0:
        coverage = (alphas * mask[..., None]).sum(axis=1)  # (N, L): sum over words
        regulariser = doubly_stochastic * jnp.mean((1.0 - coverage) ** 2)
    return cross_entropy + regulariser, {"cross_entropy": cross_entropy,
                                         "attention_reg": regulariser,
                                         "token_accuracy": accuracy}
