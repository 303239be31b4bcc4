"""Gradient diagnostics against numpy on flattened trees."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnvision import metrics


def _tree(seed):
    rng = np.random.default_rng(seed)
    return {"cell": {"w": rng.standard_normal((4, 3)).astype(np.float32),
                     "b": rng.standard_normal(3).astype(np.float32)},
            "head": [rng.standard_normal((3, 2)).astype(np.float32)]}


def _flat(tree):
    return np.concatenate([np.ravel(x).astype(np.float64) for x in jax.tree.leaves(tree)])


def test_global_norm_matches_numpy():
    tree = _tree(0)
    assert float(metrics.global_norm(tree)) == pytest.approx(np.linalg.norm(_flat(tree)),
                                                             rel=1e-6)
    assert float(metrics.global_norm({})) == 0.0
    bf16 = jax.tree.map(lambda x: jnp.asarray(x, jnp.bfloat16), tree)
    assert metrics.global_norm(bf16).dtype == jnp.float32


def test_cosine_similarity_matches_numpy():
    a, b = _tree(0), _tree(1)
    fa, fb = _flat(a), _flat(b)
    want = fa @ fb / (np.linalg.norm(fa) * np.linalg.norm(fb))
    assert float(metrics.cosine_similarity(a, b)) == pytest.approx(want, abs=1e-6)
    neg_2a = jax.tree.map(lambda x: -2 * x, a)
    assert float(metrics.cosine_similarity(a, neg_2a)) == pytest.approx(-1.0, abs=1e-6)
    zeros = jax.tree.map(np.zeros_like, a)
    assert float(metrics.cosine_similarity(a, zeros)) == 0.0
    with pytest.raises(ValueError):
        metrics.cosine_similarity(a, {"cell": a["cell"]})


def test_relative_norm_error_matches_numpy_and_is_jittable():
    approx, exact = _tree(0), _tree(1)
    want = np.linalg.norm(_flat(approx) - _flat(exact)) / np.linalg.norm(_flat(exact))
    got = jax.jit(metrics.relative_norm_error)(approx, exact)
    assert float(got) == pytest.approx(want, rel=1e-6)
    assert float(metrics.relative_norm_error(exact, exact)) == 0.0


def _matrix_with_spectrum(singular_values, shape, seed=0):
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.standard_normal((shape[0], shape[0])))
    v, _ = np.linalg.qr(rng.standard_normal((shape[1], shape[1])))
    s = np.zeros(shape)
    s[np.arange(len(singular_values)), np.arange(len(singular_values))] = singular_values
    return (u @ s @ v.T).astype(np.float32)


def test_largest_singular_value_exact_and_power_iteration():
    m = _matrix_with_spectrum([3.0, 1.5, 1.0, 0.5, 0.1], (7, 5))
    want = np.linalg.svd(m.astype(np.float64), compute_uv=False)[0]
    assert want == pytest.approx(3.0, rel=1e-5)
    assert float(metrics.largest_singular_value(m)) == pytest.approx(want, rel=1e-5)
    # sigma_2 / sigma_1 = 1/2: 30 steps converge far below float32 precision.
    power = metrics.largest_singular_value
    assert float(power(m, 30)) == pytest.approx(want, rel=1e-5)
    # Few steps: a lower bound that is not yet converged (so the iteration count matters).
    one_step = float(power(m, 1))
    assert one_step <= want * (1 + 1e-6) and one_step < float(power(m, 30))


def test_largest_singular_value_power_iteration_on_random_matrix():
    m = np.random.default_rng(2).standard_normal((7, 5)).astype(np.float32)
    want = np.linalg.svd(m.astype(np.float64), compute_uv=False)[0]
    got = metrics.largest_singular_value(m, num_iters=200, key=jax.random.PRNGKey(3))
    assert float(got) == pytest.approx(want, rel=1e-4)
    # Inside jit, with a traced iteration count.
    jitted = jax.jit(lambda m, k: metrics.largest_singular_value(m, num_iters=k))
    assert float(jitted(m, 200)) == pytest.approx(want, rel=1e-4)
    assert float(metrics.largest_singular_value(np.zeros((7, 5)), num_iters=5)) == 0.0


def test_recurrent_sigma_max_is_the_largest_gate_block_singular_value():
    from rnnvision import cells
    from rnnvision.metrics.gradients import recurrent_matrix, recurrent_sigma_max

    cell = cells.get("lstm", hidden_size=6)
    params = cell.init(jax.random.key(0), (3,))
    w_h = np.asarray(params["w_h"]) * np.repeat([0.5, 2.0, 1.0, 3.0], 6)[None, :]  # scale blocks
    params = dict(params, w_h=jnp.asarray(w_h))
    want = max(np.linalg.svd(w_h[:, 6 * g:6 * (g + 1)], compute_uv=False)[0] for g in range(4))
    assert float(recurrent_sigma_max(params)) == pytest.approx(want, rel=1e-4)
    assert recurrent_matrix({"w_x": params["w_x"]}) is None
    assert float(recurrent_sigma_max({"w_x": params["w_x"]})) == 0.0
    huge = dict(params, w_h=jnp.full((6, 24), 3e38, jnp.float32))   # overflows: reported as nan
    assert np.isnan(float(recurrent_sigma_max(huge)))


def test_dtypes_under_x64_follow_the_inputs():
    # With jax_enable_x64 on, a dtype left to the default (or a float64 constant)
    # would turn float32 / bf16 gradients' diagnostics into float64 ones.
    a, b = _tree(0), _tree(1)
    with jax.enable_x64(True):
        for dtype in (jnp.float32, jnp.bfloat16):
            ta, tb = (jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, dtype), t)
                      for t in (a, b))
            for fn, args in [(metrics.global_norm, (ta,)), (metrics.cosine_similarity, (ta, tb)),
                             (metrics.relative_norm_error, (ta, tb)),
                             (metrics.largest_singular_value, (ta["head"][0],))]:
                assert jax.eval_shape(fn, *args).dtype == jnp.float32, (fn.__name__, dtype)
        assert metrics.global_norm({}).dtype == jnp.float32
        # float64 trees are reduced in float64: numpy to ~1e-15.
        a64 = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), a)
        got = metrics.global_norm(a64)
        assert got.dtype == jnp.float64
        assert float(got) == pytest.approx(np.linalg.norm(_flat(a)), rel=1e-14)


def test_largest_singular_value_rejects_non_matrices_naming_the_shape():
    with pytest.raises(ValueError, match=r"expected a \(M, N\) matrix, got shape \(2, 3, 4\)"):
        metrics.largest_singular_value(np.zeros((2, 3, 4)))


def test_power_iteration_starts_from_the_given_key():
    # One step from v0 = normalize(normal(key)), redone in float64 numpy: the
    # estimate depends on v0, so it tells which key was used (default PRNGKey(0)).
    m = _matrix_with_spectrum([3.0, 1.5, 1.0, 0.5, 0.1], (7, 5))
    a = m.astype(np.float64)

    def one_step(key):
        v = np.asarray(jax.random.normal(key, (5,), jnp.float32), np.float64)
        v = a.T @ (a @ (v / np.linalg.norm(v)))
        return np.linalg.norm(a @ (v / np.linalg.norm(v)))

    want_default, want_3 = one_step(jax.random.PRNGKey(0)), one_step(jax.random.PRNGKey(3))
    assert abs(want_default - want_3) > 1e-3 * want_3  # the key matters at one step
    power = metrics.largest_singular_value
    assert float(power(m, 1)) == pytest.approx(want_default, rel=1e-5)
    assert float(power(m, 1, jax.random.PRNGKey(3))) == pytest.approx(want_3, rel=1e-5)


def test_recurrent_matrix_skips_list_entries_before_w_h():
    # Paths through lists end in SequenceKey (no `.key`); they must be skipped, not fail.
    from rnnvision.metrics.gradients import recurrent_matrix, recurrent_sigma_max

    w_h = 2.0 * np.eye(3, dtype=np.float32)
    params = {"a_layers": [np.ones(2, np.float32)], "w_h": w_h}
    assert recurrent_matrix(params) is w_h
    assert float(recurrent_sigma_max(params)) == pytest.approx(2.0, rel=1e-5)
