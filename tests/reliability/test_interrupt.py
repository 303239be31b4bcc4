"""Kill a training run (SIGTERM, SIGINT, SIGKILL) at known points, re-run the same
command, and compare with an uninterrupted run: the final parameters bit for bit, and
metrics.jsonl with every logged step exactly once.

Runs go through the real command line (`toy_cli.py`: `rnnvision.train.cli` on the toy
task, 16 steps, a row every 2 steps, a checkpoint every 4). The subprocesses share a
persistent XLA compilation cache, so each costs seconds, not a compile.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
COMMAND = [sys.executable, os.path.join(HERE, "toy_cli.py"),
           f"--config={os.path.join(HERE, 'toy_config.py')}"]
NUM_STEPS, LOG_EVERY = 16, 2
TIMEOUT = 600  # seconds; generous: the machine may be shared and slow
VOLATILE = ("steps_per_second", "eval/eval_seconds")  # timings differ between runs


@pytest.fixture(scope="module")
def jax_cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("xla_cache"))


def _env(jax_cache, **faults) -> dict:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_COMPILATION_CACHE_DIR": jax_cache,
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
           "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
    env.update({f"RELIABILITY_{k.upper()}": str(v) for k, v in faults.items()})
    return env


def _start(workdir, jax_cache, *flags, **faults) -> subprocess.Popen:
    return subprocess.Popen([*COMMAND, f"--workdir={workdir}", *flags],
                            env=_env(jax_cache, **faults), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"run did not finish in {TIMEOUT}s:\n{err[-3000:]}")
    return proc.returncode, err


def _run(workdir, jax_cache, *flags) -> str:
    """Runs the command to completion (resuming whatever is in `workdir`)."""
    code, err = _finish(_start(workdir, jax_cache, *flags))
    assert code == 0, err[-3000:]
    return err


def _wait_until(condition, proc: subprocess.Popen, what: str) -> None:
    """Polls `condition()` while the run lives; fails if the run exits or time runs out."""
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        if proc.poll() is not None:
            err = proc.stderr.read()[-3000:]
            pytest.fail(f"run exited ({proc.returncode}) before {what}:\n{err}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no {what} in {TIMEOUT}s")
        time.sleep(0.05)


def _paused_run(workdir, jax_cache, step: int) -> tuple[subprocess.Popen, str]:
    """Starts a run that waits before training `step` until the returned gate file exists."""
    gate = os.path.join(os.path.dirname(workdir), f"gate{step}")
    proc = _start(workdir, jax_cache, pause_at=step, gate=gate)
    _wait_until(lambda: os.path.exists(gate + ".waiting"), proc, f"pause before step {step}")
    return proc, gate


def _open(gate: str) -> None:
    open(gate, "w").close()


def _sigterm_before(step: int, workdir, jax_cache) -> None:
    """Runs until just before `step`, sends SIGTERM: the run must save at `step` and stop."""
    proc, gate = _paused_run(workdir, jax_cache, step=step)
    proc.send_signal(signal.SIGTERM)
    _open(gate)  # the signal is already handled: the run trains `step`, saves, stops
    code, err = _finish(proc)
    assert code == 128 + signal.SIGTERM, err[-3000:]
    assert f"stopped by SIGTERM after step {step}" in err
    assert _checkpoints(workdir)[-1] == str(step)  # saved at the step it stopped at


def _checkpoints(workdir) -> list[str]:
    path = os.path.join(workdir, "checkpoints")
    return sorted(os.listdir(path), key=lambda n: (len(n), n)) if os.path.isdir(path) else []


def _rows(workdir) -> list[dict]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def _train_steps(rows) -> list[int]:
    return [r["step"] for r in rows if "loss" in r]


def _final_params(workdir) -> list[np.ndarray]:
    with ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, "checkpoints"))) as m:
        assert m.latest_step() == NUM_STEPS
        state = m.restore(NUM_STEPS, args=ocp.args.StandardRestore())
    return jax.tree.leaves(state["params"])


def _stable(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in VOLATILE}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, jax_cache):
    """An uninterrupted run: its final parameters, metrics rows and workdir."""
    workdir = str(tmp_path_factory.mktemp("reference") / "run")
    _run(workdir, jax_cache)
    rows = _rows(workdir)
    assert _train_steps(rows) == list(range(LOG_EVERY, NUM_STEPS + 1, LOG_EVERY))
    return _final_params(workdir), rows, workdir


def _assert_same_as_reference(workdir, reference, split_window_step=None):
    """Params bit for bit; every row once and equal to the reference's, except the row
    whose logging window a SIGTERM stop split (it averages only the steps after it)."""
    params, ref_rows, _ = reference
    for a, b in zip(_final_params(workdir), params, strict=True):
        np.testing.assert_array_equal(a, b)
    rows = _rows(workdir)
    assert _train_steps(rows) == _train_steps(ref_rows)  # no step missing, none twice
    assert [r["step"] for r in rows] == [r["step"] for r in ref_rows]  # incl. the final eval row
    for row, ref in zip(rows, ref_rows):
        if row["step"] != split_window_step:
            assert _stable(row) == _stable(ref)
    assert not [n for n in os.listdir(os.path.join(workdir, "checkpoints")) if "tmp" in n]


# -- default suite: a SIGTERM, then a SIGKILL inside a checkpoint write, then a re-run -------

def test_sigterm_then_sigkill_in_a_checkpoint_write_then_rerun_matches(tmp_path, jax_cache,
                                                                       reference):
    workdir = str(tmp_path / "run")
    _sigterm_before(7, workdir, jax_cache)
    assert _checkpoints(workdir) == ["4", "7"]
    assert _train_steps(_rows(workdir)) == [2, 4, 6]

    code, err = _finish(_start(workdir, jax_cache, kill_in_save=12))
    assert code == -signal.SIGKILL and "at step 7" in err, err[-3000:]  # resumed at 7
    assert _checkpoints(workdir) == ["4", "7", "8", "12.orbax-checkpoint-tmp"]  # 12: partial
    assert _train_steps(_rows(workdir)) == [2, 4, 6, 8, 10, 12]  # 10, 12: past checkpoint 8

    assert "at step 8" in _run(workdir, jax_cache)  # the last complete checkpoint
    _assert_same_as_reference(workdir, reference, split_window_step=8)


def test_killed_before_the_final_eval_row_the_rerun_writes_it_once(tmp_path, jax_cache, reference):
    """As if SIGKILLed after the last checkpoint but before the final evaluation was logged:
    the re-run only evaluates, and writes the missing row (once)."""
    workdir = str(tmp_path / "run")
    shutil.copytree(reference[2], workdir)
    rows = _rows(workdir)
    assert "eval/mse" in rows[-1]
    with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows[:-1])
    os.remove(os.path.join(workdir, "results.json"))
    _run(workdir, jax_cache)
    _assert_same_as_reference(workdir, reference)


# -- slow: more moments ----------------------------------------------------------------------

@pytest.mark.slow
def test_sigkill_during_a_checkpoint_write_resumes_from_the_last_complete_one(
        tmp_path, jax_cache, reference):
    workdir = str(tmp_path / "run")
    code, err = _finish(_start(workdir, jax_cache, kill_in_save=8))
    assert code == -signal.SIGKILL, err[-3000:]
    assert _checkpoints(workdir) == ["4", "8.orbax-checkpoint-tmp"]  # 8: never committed
    assert _train_steps(_rows(workdir)) == [2, 4, 6, 8]  # rows past the last checkpoint
    err = _run(workdir, jax_cache)
    assert "at step 4" in err  # resumed from the last complete checkpoint, no clean-up needed
    _assert_same_as_reference(workdir, reference)


@pytest.mark.slow
@pytest.mark.parametrize("step,expected_checkpoints", [
    (3, []),       # before the first checkpoint: the re-run starts over, row 2 is dropped
    (7, ["4"]),    # after row 6 was logged: the re-run drops it and logs it again
])
def test_sigkill_between_steps(tmp_path, jax_cache, reference, step, expected_checkpoints):
    workdir = str(tmp_path / "run")
    proc, _ = _paused_run(workdir, jax_cache, step=step)
    proc.kill()
    assert _finish(proc)[0] == -signal.SIGKILL
    assert _checkpoints(workdir) == expected_checkpoints
    _run(workdir, jax_cache)
    _assert_same_as_reference(workdir, reference)


@pytest.mark.slow
@pytest.mark.parametrize("step,split_window_step", [
    (7, 8),             # inside a logging window: row 8 then averages step 8 alone
    (8, None),          # at a checkpoint step: saved once
    (NUM_STEPS, None),  # at the last step: the re-run only evaluates and logs the eval row
])
def test_sigterm_then_rerun(tmp_path, jax_cache, reference, step, split_window_step):
    workdir = str(tmp_path / "run")
    _sigterm_before(step, workdir, jax_cache)
    assert f"at step {step}" in _run(workdir, jax_cache)  # resumed from the checkpoint of `step`
    _assert_same_as_reference(workdir, reference, split_window_step)


@pytest.mark.slow
def test_second_sigint_force_quits(tmp_path, jax_cache, reference):
    workdir = str(tmp_path / "run")
    proc, _ = _paused_run(workdir, jax_cache, step=5)  # the gate stays closed
    deadline = time.monotonic() + TIMEOUT
    while proc.poll() is None and time.monotonic() < deadline:
        proc.send_signal(signal.SIGINT)  # the first asks to stop, a later one quits at once
        time.sleep(0.5)
    code, err = _finish(proc)
    assert code not in (0, 128 + signal.SIGINT) and "KeyboardInterrupt" in err, err[-3000:]
    assert _checkpoints(workdir) == ["4"]  # no checkpoint of step 5: it quit without saving
    _run(workdir, jax_cache)
    _assert_same_as_reference(workdir, reference)


@pytest.mark.slow
def test_sigkill_at_random_moments(tmp_path, jax_cache, reference):
    """Three SIGKILLs at random moments of a run that checkpoints every step (so many fall
    inside a checkpoint write), then a full re-run: same parameters, every row once."""
    workdir = str(tmp_path / "run")
    flags = ("--config.train.checkpoint_every=1",)  # resume-safe: same training as the reference
    rng = random.Random(0)
    metrics = os.path.join(workdir, "metrics.jsonl")
    for _ in range(3):
        started = time.time()
        proc = _start(workdir, jax_cache, *flags)
        # The run (re)writes metrics.jsonl once restored, just before training.
        _wait_until(lambda: os.path.exists(metrics) and os.path.getmtime(metrics) >= started,
                    proc, "training")
        time.sleep(rng.uniform(0.0, 1.5))  # a random moment, not a wait for something
        proc.kill()
        _finish(proc)
    _run(workdir, jax_cache, *flags)
    params, ref_rows, _ = reference
    for a, b in zip(_final_params(workdir), params, strict=True):
        np.testing.assert_array_equal(a, b)
    assert [r["step"] for r in _rows(workdir)] == [r["step"] for r in ref_rows]
