"""Kill a training run (SIGTERM, SIGINT, SIGKILL) at known points, re-run the same
command, and compare with an uninterrupted run: the final parameters bit for bit, and
metrics.jsonl with every logged step exactly once.

Runs go through the real command line (`toy_cli.py`: `rnnvision.train.cli` on the toy
task, 16 steps, a row every 2 steps, a checkpoint every 4; helpers in cli_runs.py).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sys
import time

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from cli_runs import (NUM_STEPS, TIMEOUT, assert_same_as_reference, checkpoints,  # noqa: E402
                      final_params, finish, open_gate, paused_run, rows, run, start,
                      train_steps, wait_until)


def _sigterm_before(step: int, workdir, jax_cache) -> None:
    """Runs until just before `step`, sends SIGTERM: the run must save at `step` and stop."""
    proc, gate = paused_run(workdir, jax_cache, step=step)
    proc.send_signal(signal.SIGTERM)
    open_gate(gate)  # the signal is already handled: the run trains `step`, saves, stops
    code, err = finish(proc)
    assert code == 128 + signal.SIGTERM, err[-3000:]
    assert f"stopped by SIGTERM after step {step}" in err
    assert checkpoints(workdir)[-1] == str(step)  # saved at the step it stopped at


# -- default suite: a SIGTERM, then a SIGKILL inside a checkpoint write, then a re-run -------

def test_sigterm_then_sigkill_in_a_checkpoint_write_then_rerun_matches(tmp_path, jax_cache,
                                                                       reference):
    workdir = str(tmp_path / "run")
    _sigterm_before(7, workdir, jax_cache)
    assert checkpoints(workdir) == ["4", "7"]
    assert train_steps(rows(workdir)) == [2, 4, 6]

    code, err = finish(start(workdir, jax_cache, kill_in_save=12))
    assert code == -signal.SIGKILL and "at step 7" in err, err[-3000:]  # resumed at 7
    assert checkpoints(workdir) == ["4", "7", "8", "12.orbax-checkpoint-tmp"]  # 12: partial
    assert train_steps(rows(workdir)) == [2, 4, 6, 8, 10, 12]  # 10, 12: past checkpoint 8

    assert "at step 8" in run(workdir, jax_cache)  # the last complete checkpoint
    assert_same_as_reference(workdir, reference, split_window_step=8)


def test_killed_before_the_final_eval_row_the_rerun_writes_it_once(tmp_path, jax_cache, reference):
    """As if SIGKILLed after the last checkpoint but before the final evaluation was logged:
    the re-run only evaluates, and writes the missing row (once)."""
    workdir = str(tmp_path / "run")
    shutil.copytree(reference[2], workdir)
    logged = rows(workdir)
    assert "eval/mse" in logged[-1]
    with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in logged[:-1])
    os.remove(os.path.join(workdir, "results.json"))
    run(workdir, jax_cache)
    assert_same_as_reference(workdir, reference)


# -- slow: more moments ----------------------------------------------------------------------

@pytest.mark.slow
def test_sigkill_during_a_checkpoint_write_resumes_from_the_last_complete_one(
        tmp_path, jax_cache, reference):
    workdir = str(tmp_path / "run")
    code, err = finish(start(workdir, jax_cache, kill_in_save=8))
    assert code == -signal.SIGKILL, err[-3000:]
    assert checkpoints(workdir) == ["4", "8.orbax-checkpoint-tmp"]  # 8: never committed
    assert train_steps(rows(workdir)) == [2, 4, 6, 8]  # rows past the last checkpoint
    err = run(workdir, jax_cache)
    assert "at step 4" in err  # resumed from the last complete checkpoint, no clean-up needed
    assert_same_as_reference(workdir, reference)


@pytest.mark.slow
@pytest.mark.parametrize("step,expected_checkpoints", [
    (3, []),       # before the first checkpoint: the re-run starts over, row 2 is dropped
    (7, ["4"]),    # after row 6 was logged: the re-run drops it and logs it again
])
def test_sigkill_between_steps(tmp_path, jax_cache, reference, step, expected_checkpoints):
    workdir = str(tmp_path / "run")
    proc, _ = paused_run(workdir, jax_cache, step=step)
    proc.kill()
    assert finish(proc)[0] == -signal.SIGKILL
    assert checkpoints(workdir) == expected_checkpoints
    run(workdir, jax_cache)
    assert_same_as_reference(workdir, reference)


@pytest.mark.slow
@pytest.mark.parametrize("step,split_window_step", [
    (7, 8),             # inside a logging window: row 8 then averages step 8 alone
    (8, None),          # at a checkpoint step: saved once
    (NUM_STEPS, None),  # at the last step: the re-run only evaluates and logs the eval row
])
def test_sigterm_then_rerun(tmp_path, jax_cache, reference, step, split_window_step):
    workdir = str(tmp_path / "run")
    _sigterm_before(step, workdir, jax_cache)
    assert f"at step {step}" in run(workdir, jax_cache)  # resumed from the checkpoint of `step`
    assert_same_as_reference(workdir, reference, split_window_step)


@pytest.mark.slow
def test_second_sigint_force_quits(tmp_path, jax_cache, reference):
    workdir = str(tmp_path / "run")
    proc, _ = paused_run(workdir, jax_cache, step=5)  # the gate stays closed
    deadline = time.monotonic() + TIMEOUT
    while proc.poll() is None and time.monotonic() < deadline:
        proc.send_signal(signal.SIGINT)  # the first asks to stop, a later one quits at once
        time.sleep(0.5)
    code, err = finish(proc)
    assert code not in (0, 128 + signal.SIGINT) and "KeyboardInterrupt" in err, err[-3000:]
    assert checkpoints(workdir) == ["4"]  # no checkpoint of step 5: it quit without saving
    run(workdir, jax_cache)
    assert_same_as_reference(workdir, reference)


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
        proc = start(workdir, jax_cache, *flags)
        # The run (re)writes metrics.jsonl once restored, just before training.
        wait_until(lambda: os.path.exists(metrics) and os.path.getmtime(metrics) >= started,
                   proc, "training")
        time.sleep(rng.uniform(0.0, 1.5))  # a random moment, not a wait for something
        proc.kill()
        finish(proc)
    run(workdir, jax_cache, *flags)
    params, ref_rows, _ = reference
    for a, b in zip(final_params(workdir), params, strict=True):
        np.testing.assert_array_equal(a, b)
    assert [r["step"] for r in rows(workdir)] == [r["step"] for r in ref_rows]
