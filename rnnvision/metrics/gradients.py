"""Gradient diagnostics for the trainer and the truncated-BPTT ablation.

Pytree functions treat a tree as one flat vector: the concatenation of all of
its leaves (the same view as `jax.flatten_util.ravel_pytree`, without the copy).
All functions are jit-able and return scalar jax arrays. Reductions run in at
least float32 (bf16 gradients are upcast), and use elementwise products plus
sums rather than `jnp.dot`, which on GPUs defaults to TF32 for float32 inputs.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

Array = jax.Array
PyTree = Any


def _upcast(x) -> Array:
    x = jnp.asarray(x)
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _tree_vdot(tree_a: PyTree, tree_b: PyTree) -> Array:
    """<a, b> = sum over leaves and elements of a * b (trees must match)."""
    products = jax.tree.map(lambda a, b: jnp.sum(_upcast(a) * _upcast(b)), tree_a, tree_b)
    return sum(jax.tree.leaves(products), jnp.zeros((), jnp.float32))


@jax.jit
def global_norm(tree: PyTree) -> Array:
    """||tree||_2 = sqrt(sum over all leaves of sum(x^2)); 0 for an empty tree.

    Same value as `optax.global_norm`, the norm gradient clipping uses.
    """
    return jnp.sqrt(_tree_vdot(tree, tree))


@jax.jit
def cosine_similarity(tree_a: PyTree, tree_b: PyTree) -> Array:
    """<a, b> / (||a|| ||b||) of two trees of the same structure, flattened.

    In [-1, 1]. Defined as 0 when either tree is all zeros (e.g. a truncated
    gradient with no path to the compared parameters), rather than nan.
    """
    denominator = global_norm(tree_a) * global_norm(tree_b)
    safe = jnp.where(denominator > 0, denominator, 1.0)
    return jnp.where(denominator > 0, _tree_vdot(tree_a, tree_b) / safe, 0.0)


@jax.jit
def relative_norm_error(approx: PyTree, exact: PyTree) -> Array:
    """||approx - exact|| / ||exact||, norms over all leaves (`global_norm`).

    E.g. truncated-BPTT gradient vs full-BPTT gradient. No epsilon: a zero
    `exact` gives inf (nan if `approx` is zero too), which flags the case.
    """
    diff = jax.tree.map(lambda a, e: _upcast(a) - _upcast(e), approx, exact)
    return global_norm(diff) / global_norm(exact)


def largest_singular_value(matrix, num_iters: int | None = None,
                           key: Array | None = None) -> Array:
    """sigma_max(matrix), the spectral norm of a (M, N) matrix.

    num_iters=None: exact, the first value of `jnp.linalg.svd` (O(M N min(M, N));
    fine for recurrent weight matrices up to a few thousand units).
    num_iters=k: k steps of power iteration on A^T A from a random unit vector
    v (drawn with `key`, default PRNGKey(0)), returning ||A v||. Each step costs
    two mat-vecs. The estimate is a lower bound that converges like
    (sigma_2 / sigma_1)^(2k); use it for big matrices or inside training steps.
    `num_iters` may be traced (changing it does not recompile). Use `jax.vmap`
    for a batch of matrices.
    """
    matrix = _upcast(matrix)
    if matrix.ndim != 2:
        raise ValueError(f"expected a (M, N) matrix, got shape {matrix.shape}")
    if num_iters is None:
        return _exact_largest_singular_value(matrix)
    key = jax.random.PRNGKey(0) if key is None else key
    return _power_iteration(matrix, num_iters, key)


@jax.jit
def _exact_largest_singular_value(a: Array) -> Array:
    return jnp.linalg.svd(a, compute_uv=False)[0]  # sorted in descending order


@jax.jit
def _power_iteration(a: Array, num_iters, key: Array) -> Array:
    """||A v_k|| with v_{i+1} = A^T A v_i / ||A^T A v_i||, v_0 ~ N(0, I) normalized."""
    # HIGHEST: full float32 mat-vecs; TF32 would cap the accuracy at ~1e-3.
    matvec = lambda m, x: jnp.matmul(m, x, precision=jax.lax.Precision.HIGHEST)

    def normalize(v):
        norm = jnp.linalg.norm(v)
        return v / jnp.where(norm > 0, norm, 1.0)  # a zero matrix stays at 0.

    v0 = normalize(jax.random.normal(key, (a.shape[1],), a.dtype))
    v = jax.lax.fori_loop(0, num_iters, lambda _, v: normalize(matvec(a.T, matvec(a, v))), v0)
    return jnp.linalg.norm(matvec(a, v))


def recurrent_matrix(cell_params: PyTree) -> Array | None:
    """The first parameter named "w_h" (the recurrent kernel of the dense cells), or None."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(cell_params):
        if path and getattr(path[-1], "key", None) == "w_h":
            return leaf
    return None


@jax.jit
def recurrent_sigma_max(cell_params: PyTree) -> Array:
    """Largest singular value of the recurrent kernel's (H, H) gate blocks (0 if none).

    W_h is (H, G*H) for a cell with G gate blocks (rnn 1, gru 3, lstm 4); each block
    maps the previous state to one gate, and is orthogonal times `recurrent_scale` at
    init. The maximum over blocks is the spectral radius at init (1 for the defaults),
    and >1 / <1 is the exploding / vanishing regime for the tanh RNN. 16 steps of
    power iteration (jit-friendly; exact for a scaled orthogonal block). Overflowing
    weights (a diverging run), which make power iteration return 0, give nan.
    """
    w_h = recurrent_matrix(cell_params)
    if w_h is None:
        return jnp.zeros(())
    hidden = w_h.shape[0]
    blocks = w_h.reshape(hidden, -1, hidden).transpose(1, 0, 2)  # (G, H, H)
    value = jnp.max(jax.vmap(lambda b: largest_singular_value(b, num_iters=16))(blocks))
    return jnp.where((value > 0) | (jnp.max(jnp.abs(w_h)) == 0), value, jnp.nan)
