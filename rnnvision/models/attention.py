r"""Soft (deterministic) attention over a grid of features (Bahdanau et al., 2015; Xu et al., 2015).

Shape legend: N batch (or batch x beams), L = h * w grid locations, D feature size,
H query (decoder state) size, A attention size.

    attn = SoftAttention(attention_dim=128)
    params = attn.init(key, feature_dim=D, query_dim=H)
    keys = attn.keys(params, features)                 # (N, L, A), once per image
    context, alpha = attn(params, keys, features, h)   # (N, D), (N, L); alpha sums to 1

Scores e_ti of location i at step t, by `score`:
  "mlp"  e_ti = v^T tanh(W_a a_i + W_h h_{t-1} + b)       Xu et al. (section 4.2), additive
  "dot"  e_ti = (W_a a_i + b)^T (W_h h_{t-1}) / sqrt(A)   bilinear (Luong et al., 2015)
then
  alpha_t = softmax_i(e_t)                  (soft, deterministic: the expected context)
  z_t = sum_i alpha_ti a_i
`keys` precomputes W_a a_i + b, which does not change during a caption.
Parameters: {"w_a": (D, A), "w_h": (H, A), "b": (A,), "v": (A,) ("mlp" only)}.
Cost: "mlp" evaluates a tanh on N x L x A numbers per step, and its gradient; on a
CPU that dominates a small captioner's step (about 5x the time of "dot" at L = 144,
A = 64). "dot" is all matrix products.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

SCORES = ("mlp", "dot")


@dataclasses.dataclass(frozen=True)
class SoftAttention:
    attention_dim: int = 128
    score: str = "mlp"  # one of SCORES

    def __post_init__(self):
        if self.score not in SCORES:
            raise ValueError(f"score={self.score!r}; allowed: {SCORES}")

    def init(self, key: jax.Array, feature_dim: int, query_dim: int) -> dict:
        k_a, k_h, k_v = jax.random.split(key, 3)
        normal = jax.nn.initializers.lecun_normal()
        params = {"w_a": normal(k_a, (feature_dim, self.attention_dim), jnp.float32),
                  "w_h": normal(k_h, (query_dim, self.attention_dim), jnp.float32),
                  "b": jnp.zeros((self.attention_dim,), jnp.float32)}
        if self.score == "mlp":
            params["v"] = normal(k_v, (self.attention_dim, 1), jnp.float32)[:, 0]
        return params

    def keys(self, params: dict, features: jax.Array) -> jax.Array:
        """features (N, L, D) -> (N, L, A): the part of the score that ignores the query."""
        return features @ params["w_a"] + params["b"]

    def __call__(self, params: dict, keys: jax.Array, features: jax.Array,
                 query: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(context (N, D), weights alpha (N, L)) for query h_{t-1} (N, H)."""
        q = query @ params["w_h"]  # (N, A)
        if self.score == "mlp":
            scores = jnp.tanh(keys + q[:, None, :]) @ params["v"]  # (N, L)
        else:
            scores = jnp.einsum("nla,na->nl", keys, q) / jnp.sqrt(float(self.attention_dim))
        alpha = jax.nn.softmax(scores, axis=-1)
        return jnp.einsum("nl,nld->nd", alpha, features), alpha
