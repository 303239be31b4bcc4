"""Runs of the real command line in subprocesses, shared by the reliability tests.

`toy_cli.py` is `rnnvision.train.cli` on the toy task (16 steps, a row every 2 steps, a
checkpoint every 4, the last 3 kept) of this checkout; `experiment(...)` runs a real
experiment module (`python -m experiments.<name>`) from the repository root. The
subprocesses share a persistent XLA compilation cache, so each costs seconds, not a
compile.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
TOY = [sys.executable, os.path.join(HERE, "toy_cli.py"),
       f"--config={os.path.join(HERE, 'toy_config.py')}"]
NUM_STEPS, LOG_EVERY = 16, 2
TIMEOUT = 600  # seconds; generous: the machine may be shared and slow
VOLATILE = ("steps_per_second", "eval/eval_seconds")  # timings differ between runs


def env(jax_cache: str | None = None, **faults) -> dict:
    """The subprocesses' environment: CPU, this checkout first, the shared XLA cache,
    and RELIABILITY_<FAULT> variables for toy_cli.py's fault hooks."""
    out = {**os.environ, "JAX_PLATFORMS": "cpu",
           "PYTHONPATH": os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    if jax_cache:
        out.update(JAX_COMPILATION_CACHE_DIR=jax_cache,
                   JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                   JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    out.update({f"RELIABILITY_{k.upper()}": str(v) for k, v in faults.items()})
    return out


def start(workdir, jax_cache, *flags, command=TOY, **faults) -> subprocess.Popen:
    """Starts `command` (default: the toy CLI) on `workdir` with `flags`."""
    args = [*command] + ([f"--workdir={workdir}"] if workdir is not None else []) + list(flags)
    return subprocess.Popen(args, env=env(jax_cache, **faults), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float = TIMEOUT) -> tuple[int, str]:
    """(exit code, stderr) once `proc` ends; fails the test if it runs past `timeout`."""
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"run did not finish in {timeout}s:\n{err[-3000:]}")
    return proc.returncode, err


def run(workdir, jax_cache, *flags) -> str:
    """Runs the toy command to completion (resuming whatever is in `workdir`); its stderr."""
    code, err = finish(start(workdir, jax_cache, *flags))
    assert code == 0, err[-3000:]
    return err


def wait_until(condition, proc: subprocess.Popen, what: str) -> None:
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


def paused_run(workdir, jax_cache, step: int, *flags) -> tuple[subprocess.Popen, str]:
    """Starts a run that waits before training `step` until the returned gate file exists."""
    gate = os.path.join(os.path.dirname(workdir), f"gate{step}")
    proc = start(workdir, jax_cache, *flags, pause_at=step, gate=gate)
    wait_until(lambda: os.path.exists(gate + ".waiting"), proc, f"pause before step {step}")
    return proc, gate


def open_gate(gate: str) -> None:
    open(gate, "w").close()


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def checkpoints(workdir) -> list[str]:
    path = os.path.join(workdir, "checkpoints")
    return sorted(os.listdir(path), key=lambda n: (len(n), n)) if os.path.isdir(path) else []


def rows(workdir) -> list[dict]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def train_steps(rows_: list[dict]) -> list[int]:
    return [r["step"] for r in rows_ if "loss" in r]


def final_params(workdir) -> list[np.ndarray]:
    with ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, "checkpoints"))) as m:
        assert m.latest_step() == NUM_STEPS
        state = m.restore(NUM_STEPS, args=ocp.args.StandardRestore())
    return jax.tree.leaves(state["params"])


def stable(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in VOLATILE}


def assert_same_as_reference(workdir, reference, split_window_step=None):
    """Params bit for bit; every row once and equal to the reference's, except the row
    whose logging window a SIGTERM stop split (it averages only the steps after it)."""
    params, ref_rows, _ = reference
    for a, b in zip(final_params(workdir), params, strict=True):
        np.testing.assert_array_equal(a, b)
    got = rows(workdir)
    assert train_steps(got) == train_steps(ref_rows)  # no step missing, none twice
    assert [r["step"] for r in got] == [r["step"] for r in ref_rows]  # incl. the final eval row
    for row, ref in zip(got, ref_rows):
        if row["step"] != split_window_step:
            assert stable(row) == stable(ref)
    assert not [n for n in os.listdir(os.path.join(workdir, "checkpoints")) if "tmp" in n]
