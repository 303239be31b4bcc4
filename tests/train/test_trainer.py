"""The trainer on a toy task: clipping, metrics read back in windows, non-finite policy,
resume, profiling, config checks."""

from __future__ import annotations

import glob
import gzip
import json
import math
import os
import sys

import jax
import numpy as np
import optax
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import toy_task  # noqa: E402

from rnnvision.train import build_task, loop, optim, state as state_lib  # noqa: E402
from rnnvision.config_checks import ConfigError  # noqa: E402
from rnnvision.train.step import make_train_step  # noqa: E402
from rnnvision.train.workdir import ConfigMismatchError  # noqa: E402


def _params(state):
    return jax.tree.leaves(jax.device_get(state.params))


def _rows(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_train_step_is_clipped_adam_step():
    config = toy_task.get_config(**{"optim.clip.threshold": 0.05})
    task = build_task(config)
    params = task.init_params(jax.random.key(0))
    tx = optim.make_optimizer(config.optim, 10)
    step = jax.jit(make_train_step(task.loss, tx, optim.make_clipper(config.optim.clip)))
    batch = task.train_batch(0, slice(None))
    new_state, metrics = step(state_lib.create(params, tx), batch, jax.random.key(1))

    grads = jax.grad(lambda p: task.loss(p, batch, None)[0])(params)
    norm = optax.global_norm(grads)
    assert float(norm) > 0.05  # the threshold is active in this case
    np.testing.assert_allclose(metrics["grad_norm"], norm, rtol=1e-6)
    np.testing.assert_allclose(metrics["clipped_grad_norm"], 0.05, rtol=1e-5)
    assert metrics["clipped"] == 1.0
    clipped = jax.tree.map(lambda g: g * 0.05 / norm, grads)
    updates, _ = tx.update(clipped, tx.init(params), params)
    expected = optax.apply_updates(params, updates)
    for a, b in zip(jax.tree.leaves(new_state.params), jax.tree.leaves(expected)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    assert int(new_state.step) == 1


@pytest.mark.parametrize("method,threshold", [("none", 1.0), ("global_norm", 0.1), ("value", 0.01)])
def test_clipping_methods_bound_what_they_promise(method, threshold):
    grads = {"w": jax.numpy.array([[3.0, -4.0], [0.5, 0.0]]), "b": jax.numpy.array([0.2, -0.1])}
    params = {"w": jax.numpy.ones((2, 2)), "b": jax.numpy.ones((2,))}
    clipper = optim.make_clipper(toy_task.get_config(**{
        "optim.clip.method": method, "optim.clip.threshold": threshold}).optim.clip)
    out, _ = clipper.update(grads, clipper.init(params), params)
    if method == "none":
        assert optax.global_norm(out) == optax.global_norm(grads)
    elif method == "global_norm":
        np.testing.assert_allclose(optax.global_norm(out), threshold, rtol=1e-6)
    else:
        assert max(float(abs(x).max()) for x in jax.tree.leaves(out)) <= threshold + 1e-7


def _agc_reference(grad, param, ratio, eps=1e-3):
    """optax.adaptive_grad_clip as its documentation states it (Brock et al. 2021).

    A unit is the whole array for a vector, a column (axis 0) for a (in, out) matrix,
    an output channel (axes 0, 1, 2) for an HWIO kernel. A unit whose gradient norm
    is not below ratio * max(||param unit||, eps) is scaled to exactly that norm.
    """
    grad, param = np.asarray(grad, np.float64), np.asarray(param, np.float64)
    axes = {1: None, 2: (0,), 4: (0, 1, 2)}[grad.ndim]
    g_norm = np.sqrt(np.sum(grad ** 2, axis=axes, keepdims=True))
    limit = ratio * np.maximum(np.sqrt(np.sum(param ** 2, axis=axes, keepdims=True)), eps)
    return np.where(g_norm < limit, grad, grad * limit / g_norm)


def test_adaptive_clipping_is_unitwise_agc_on_every_leaf():
    ratio, rng = 0.1, np.random.default_rng(0)
    params = {"b": np.ones(3), "w": rng.standard_normal((3, 4)),
              "kernel": rng.standard_normal((2, 2, 3, 2))}
    params["w"][:, 3] = 0.0  # a zero-initialised unit: its limit is ratio * eps
    grads = {"b": np.array([0.2, -0.1, 0.05]),  # norm 0.23 > 0.1 * sqrt(3): clipped
             # columns 0, 2 small (kept), 1 large (clipped), 3 against the eps floor
             "w": rng.standard_normal((3, 4)) * np.array([0.01, 1.0, 0.01, 0.01]),
             "kernel": rng.standard_normal((2, 2, 3, 2)) * np.array([0.01, 1.0])}
    clipper = optim.make_clipper(toy_task.get_config(**{
        "optim.clip.method": "adaptive", "optim.clip.threshold": ratio}).optim.clip)
    as_jax = lambda tree: jax.tree.map(lambda a: jax.numpy.asarray(a, jax.numpy.float32), tree)  # noqa: E731
    out, _ = clipper.update(as_jax(grads), clipper.init(as_jax(params)), as_jax(params))
    clipped = {}
    for name in grads:
        expected = _agc_reference(grads[name], params[name], ratio)
        np.testing.assert_allclose(out[name], expected, rtol=1e-5, atol=1e-9, err_msg=name)
        changed = expected != grads[name]  # one unit per output (last axis); a vector is one
        units = changed.reshape(-1, changed.shape[-1]) if changed.ndim > 1 else changed[:, None]
        clipped[name] = np.any(units, axis=0).tolist()
    # Both branches are exercised, as the comments above say.
    assert clipped == {"b": [True], "w": [False, True, False, True], "kernel": [False, True]}


@pytest.mark.parametrize("mode", ["jit", "pmap"])
def test_resume_equals_uninterrupted_run(tmp_path, mode):
    config = lambda **kw: toy_task.get_config(**{"train.parallel": mode, **kw})
    full, _ = loop.train_and_evaluate(config(), str(tmp_path / "full"))
    half = str(tmp_path / "half")
    loop.run(config(**{"train.num_steps": 4}), half)
    resumed, results = loop.train_and_evaluate(config(), half)
    for a, b in zip(_params(full), _params(resumed)):
        np.testing.assert_array_equal(a, b)
    steps = [r["step"] for r in _rows(half) if "loss" in r]
    assert steps == [2, 4, 6, 8]  # nothing duplicated, nothing missing
    assert results["step"] == 8

    # At the final step a re-run only evaluates: same results, no new metrics rows.
    before = _rows(half)
    _, again = loop.train_and_evaluate(config(), half)
    assert again["mse"] == results["mse"] and _rows(half) == before


# -- metrics read back in windows: the rows a read-back after every step gives ------------

def _per_step_reference(config):
    """A plain loop over the compiled step, reading every step's metrics back: the
    summary rows {step: row} (without steps_per_second) and the final state."""
    task = build_task(config)
    tx = optim.make_optimizer(config.optim, config.train.num_steps)
    step_fn = jax.jit(make_train_step(task.loss, tx, optim.make_clipper(config.optim.clip)))
    rng = jax.random.key(config.seed)
    state = state_lib.create(task.init_params(jax.random.fold_in(rng, 0)), tx)
    rows, window = {}, []
    for step in range(1, config.train.num_steps + 1):
        batch = task.train_batch(step - 1, slice(None))
        state, metrics = step_fn(state, batch, jax.random.fold_in(rng, 1))
        window.append({k: float(v) for k, v in metrics.items()})
        if step % config.train.log_every == 0 or step == config.train.num_steps:
            row = {k: float(np.mean([m[k] for m in window])) for k in window[0] if k != "finite"}
            row["skipped"] = float(sum(m["finite"] == 0 for m in window))
            rows[step], window = row, []
    return rows, state


def _summary_rows(workdir) -> dict[int, dict]:
    """{step: row} of the training rows, "nan"/"inf" strings as floats, no timing."""
    parse = lambda v: float(v) if isinstance(v, str) else v
    return {r["step"]: {k: parse(v) for k, v in r.items() if k not in ("step", "steps_per_second")}
            for r in _rows(workdir) if "steps_per_second" in r}


def _assert_rows_equal(rows: dict, reference: dict) -> None:
    assert sorted(rows) == sorted(reference)
    for step, ref in reference.items():
        assert sorted(rows[step]) == sorted(ref), step
        for k in ref:
            assert math.isclose(rows[step][k], ref[k], rel_tol=1e-5, abs_tol=1e-7) or (
                math.isnan(rows[step][k]) and math.isnan(ref[k])), (step, k, rows[step][k], ref[k])


@pytest.mark.parametrize("mode", ["jit", "pmap"])
def test_metrics_read_back_in_windows_equal_a_read_back_every_step(tmp_path, mode):
    # Read-backs at steps 3 (log), 4 (checkpoint), 6 (log), 8 (checkpoint): windows cut
    # in two by a checkpoint, and a last one shorter than log_every.
    config = toy_task.get_config(**{"train.num_steps": 8, "train.log_every": 3,
                                    "train.checkpoint_every": 4, "train.parallel": mode})
    state, _ = loop.train_and_evaluate(config, str(tmp_path))
    reference, ref_state = _per_step_reference(config)
    _assert_rows_equal(_summary_rows(str(tmp_path)), reference)
    for a, b in zip(_params(state), _params(ref_state), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    assert 0 < reference[3]["clipped"] < 1  # a fraction: some steps clipped, some not


def test_nonfinite_skip_mid_window_counts_like_a_read_back_every_step(tmp_path):
    config = toy_task.get_config(**{"model.nan_at_step": 5, "train.nonfinite": "skip",
                                    "train.log_every": 4})  # NaN at step 6, window 5..8
    state, results = loop.train_and_evaluate(config, str(tmp_path))
    reference, ref_state = _per_step_reference(config)
    rows = _summary_rows(str(tmp_path))
    _assert_rows_equal(rows, reference)
    assert [rows[s]["skipped"] for s in (4, 8)] == [0, 1] and math.isnan(rows[8]["loss"])
    assert results["skipped_updates"] == 1 and int(state.step) == 8
    for a, b in zip(_params(state), _params(ref_state), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
        assert np.isfinite(a).all()


def test_nonfinite_stop_mid_window_names_the_step_and_saves_nothing_after_it(tmp_path):
    # NaN at step 6; read-backs at 4 (checkpoint), 5 (log), 8 (checkpoint): the run goes
    # on to step 8 before it sees the NaN, and must not save the checkpoint of step 8.
    workdir = str(tmp_path / "run")
    config = toy_task.get_config(**{"model.nan_at_step": 5, "train.log_every": 5,
                                    "train.num_steps": 12})
    with pytest.raises(loop.NonFiniteError, match=r"step 6: non-finite loss") as info:
        loop.run(config, workdir)
    assert info.value.step == 6 and info.value.quantity == "loss"
    assert "The last checkpoint (step 4) is intact" in str(info.value)
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["4"]
    rows = _rows(workdir)
    assert [r["step"] for r in rows] == [5, 6]  # the window up to 5, then the step of the NaN
    assert rows[1]["loss"] == "nan" and rows[1]["finite"] == 0.0


def test_nonfinite_loss_stops_with_step_and_keeps_last_checkpoint(tmp_path):
    workdir = str(tmp_path / "nan")
    with pytest.raises(loop.NonFiniteError, match=r"step 6: non-finite loss") as info:
        loop.run(toy_task.get_config(**{"model.nan_at_step": 5}), workdir)
    assert "step 4" in str(info.value)  # the last checkpoint, intact
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["4"]
    state, _ = loop.train_and_evaluate(
        toy_task.get_config(**{"model.nan_at_step": 5, "train.num_steps": 4}), workdir)
    assert all(np.isfinite(x).all() for x in _params(state))


def test_nonfinite_skip_policy_skips_and_counts(tmp_path):
    config = toy_task.get_config(**{"model.nan_at_step": 5, "train.nonfinite": "skip"})
    state, results = loop.train_and_evaluate(config, str(tmp_path / "skip"))
    assert results["skipped_updates"] == 1 and int(state.step) == 8
    assert all(np.isfinite(x).all() for x in _params(state))


def test_changed_model_config_refuses_to_resume(tmp_path):
    workdir = str(tmp_path / "run")
    loop.run(toy_task.get_config(**{"train.num_steps": 2}), workdir)
    changed = toy_task.get_config(**{"model.hidden_size": 16})
    with pytest.raises(ConfigMismatchError, match=r"model\.hidden_size: 8 -> 16"):
        loop.run(changed, workdir)
    # A resume-safe field (more steps) is accepted.
    assert loop.run(toy_task.get_config(**{"train.num_steps": 4}), workdir)["step"] == 4


@pytest.mark.parametrize("field,value", [
    ("train.truncation", -1), ("optim.clip.threshold", 0.0), ("optim.clip.threshold", -2.0),
    ("train.batch_size", 0), ("optim.learning_rate", 0.0), ("optim.clip.method", "norm"),
    ("train.nonfinite", "ignore"), ("optim.optimizer", "adamax"), ("seed", -3),
    ("train.parallel", "shard_map"), ("train.profile_steps", "5:3"),
    ("train.profile_steps", "0:2"), ("train.profile_steps", "3"), ("train.profile_steps", "a:b"),
])
def test_bad_config_values_are_rejected_naming_the_field(tmp_path, field, value):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        loop.run(toy_task.get_config(**{field: value}), str(tmp_path / "bad"))
    assert not os.path.exists(tmp_path / "bad" / "checkpoints")  # stopped before any compute


def test_batch_not_divisible_by_devices_is_rejected():
    from rnnvision.train.config import validate
    with pytest.raises(ConfigError, match=r"train\.batch_size=10 .*multiple of the device count \(4\)"):
        validate(toy_task.get_config(**{"train.batch_size": 10}), num_devices=4)


# -- parameter norms ----------------------------------------------------------------------

def test_global_norm_does_not_overflow_float32():
    from rnnvision.train.norms import global_norm

    jnp = jax.numpy
    big = {"a": jnp.full((3,), 1e20, jnp.float32), "b": jnp.array([3e19, -4e19], jnp.float32)}
    exact = np.sqrt(sum(np.sum(np.asarray(x, np.float64) ** 2) for x in big.values()))
    assert not np.isfinite(optax.global_norm(big))  # squaring first overflows
    np.testing.assert_allclose(global_norm(big), exact, rtol=1e-6)
    small = {"w": jax.random.normal(jax.random.key(0), (7, 5)), "b": jnp.arange(3.0)}
    np.testing.assert_allclose(global_norm(small), optax.global_norm(small), rtol=1e-6)
    assert global_norm({"a": jnp.full((2,), 3e38, jnp.float32)}) == np.inf  # 4.2e38 > max
    assert np.isnan(global_norm({"a": jnp.array([1.0, jnp.nan])}))
    assert global_norm({"a": jnp.array([1.0, -jnp.inf])}) == np.inf
    assert global_norm({}) == 0 and global_norm({"a": jnp.zeros(3)}) == 0


def _with_a_constant_param(monkeypatch, value: float) -> None:
    """The toy task with an extra parameter the loss ignores (its update stays 0)."""
    class Task(toy_task.ToySumTask):
        def init_params(self, rng):
            return {**super().init_params(rng), "big": jax.numpy.full((2,), value)}

    monkeypatch.setattr(loop.tasks, "build", Task)


def test_huge_but_finite_parameters_get_a_finite_norm(tmp_path, monkeypatch, caplog):
    _with_a_constant_param(monkeypatch, 1e20)  # squares overflow float32, the norm does not
    with caplog.at_level("WARNING"):
        loop.run(toy_task.get_config(), str(tmp_path / "run"))
    norms = [r["param_norm"] for r in _rows(str(tmp_path / "run")) if "param_norm" in r]
    np.testing.assert_allclose(norms, np.sqrt(2) * 1e20, rtol=1e-5)
    assert not [r for r in caplog.records if "param_norm" in r.getMessage()]


def test_an_unrepresentable_norm_of_finite_parameters_is_reported(tmp_path, monkeypatch, caplog):
    _with_a_constant_param(monkeypatch, 3e38)  # each finite, the norm (4.2e38) is not
    with caplog.at_level("WARNING"):
        state, _ = loop.train_and_evaluate(toy_task.get_config(), str(tmp_path / "run"))
    assert all(np.isfinite(x).all() for x in _params(state))
    assert {r["param_norm"] for r in _rows(str(tmp_path / "run")) if "param_norm" in r} == {"inf"}
    (warning,) = [r.getMessage() for r in caplog.records if "param_norm" in r.getMessage()]
    assert "step 1: the parameters are finite but their global norm exceeds the float32" in warning


def test_profile_steps_write_a_trace_of_those_steps(tmp_path):
    workdir = str(tmp_path / "run")
    loop.run(toy_task.get_config(**{"train.profile_steps": "3:5"}), workdir)
    runs = glob.glob(os.path.join(workdir, "profile", "plugins", "profile", "*"))
    assert len(runs) == 1  # one trace, in TensorBoard's profile layout
    assert glob.glob(os.path.join(runs[0], "*.xplane.pb"))
    with gzip.open(os.path.join(runs[0], "perfetto_trace.json.gz")) as f:
        events = json.load(f)["traceEvents"]
    steps = sorted({int(e["args"]["step_num"]) for e in events
                    if e.get("name") == "train" and "step_num" in e.get("args", {})})
    assert steps == [3, 4, 5]
    assert any(e.get("name") == "train_batch" for e in events)  # the prefetch thread's work


def test_profile_range_reads_first_and_last_step():
    from rnnvision.train.config import profile_range
    assert profile_range("") is None and profile_range("2:2") == (2, 2)
    assert profile_range("10:15") == (10, 15)
