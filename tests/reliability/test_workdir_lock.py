"""One writer per workdir: a second run is refused at once naming the holder, the kernel
frees the lock of a killed run, a sweep skips a sub-run another process holds, and no
process hangs at exit after an error."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from cli_runs import (REPO, assert_same_as_reference, checkpoints, env,  # noqa: E402
                      error_lines, finish, open_gate, paused_run, rows, run, start,
                      train_steps)

from rnnvision.train import lock as lock_lib  # noqa: E402


# -- the lock itself ------------------------------------------------------------------------

def test_a_held_lock_refuses_a_second_holder_even_in_the_same_process(tmp_path):
    first = lock_lib.WorkdirLock(str(tmp_path)).acquire()
    holder = lock_lib.read_holder(str(tmp_path))
    assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
    with pytest.raises(lock_lib.WorkdirBusyError) as info:
        lock_lib.WorkdirLock(str(tmp_path)).acquire()
    message = str(info.value)
    assert f"workdir {tmp_path} is in use" in message and f"pid {os.getpid()}" in message
    assert holder["started"] in message
    first.release()
    with lock_lib.WorkdirLock(str(tmp_path)):  # free again
        pass
    assert os.path.exists(tmp_path / lock_lib.LOCK_FILE)  # the file stays; only the lock goes


# -- two runs on one workdir ----------------------------------------------------------------

def test_a_second_run_is_refused_at_once_naming_the_holder(tmp_path, jax_cache, reference):
    workdir = str(tmp_path / "run")
    first, gate = paused_run(workdir, jax_cache, step=3)  # holds the workdir, waits
    code, err = finish(start(workdir, jax_cache))
    assert first.poll() is None  # the second run ended while the first still waits
    assert code == 2, err[-3000:]
    assert err.strip().splitlines() == error_lines(err)  # one line, nothing else
    (line,) = error_lines(err)
    assert f"workdir {workdir} is in use by another run (pid {first.pid} on host " \
           f"{socket.gethostname()}, started " in line
    open_gate(gate)
    code, err = finish(first)
    assert code == 0, err[-3000:]
    assert_same_as_reference(workdir, reference)  # every row once: the second wrote nothing


def test_after_a_kill_9_of_the_holder_a_new_run_takes_over_and_resumes(tmp_path, jax_cache,
                                                                       reference):
    workdir = str(tmp_path / "run")
    first, _ = paused_run(workdir, jax_cache, step=7)  # checkpoint 4 saved, holds the lock
    first.send_signal(signal.SIGKILL)
    assert finish(first)[0] == -signal.SIGKILL
    assert json.loads(open(os.path.join(workdir, ".lock")).read())["pid"] == first.pid
    assert "resuming from the checkpoint at step 4" in run(workdir, jax_cache)
    assert_same_as_reference(workdir, reference)


# -- no hang at exit ------------------------------------------------------------------------

@pytest.mark.parametrize("case,flags,expected_code", [
    ("user error", ("--config.train.batch_size=0",), 2),
    ("non-finite loss", ("--config.model.nan_at_step=1",), 1),
    ("success", ("--config.train.num_steps=2",), 0),
])
def test_no_exit_hangs_on_a_stuck_thread(tmp_path, jax_cache, case, flags, expected_code):
    """A non-daemon thread that never ends (as orbax's did after two runs collided) would
    keep the interpreter alive forever; the CLI's exit watchdog ends the process."""
    t0 = time.monotonic()
    proc = start(str(tmp_path / "run"), jax_cache, *flags, stuck_thread=1, exit_grace=1)
    code, err = finish(proc, timeout=300)
    assert code == expected_code, f"{case}: {err[-3000:]}"
    assert time.monotonic() - t0 < 300


# -- the sweep --------------------------------------------------------------------------------

def _ablation_config():
    spec = importlib.util.spec_from_file_location(
        "_tbptt_ablation_config", os.path.join(REPO, "configs", "tbptt_ablation.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config("smoke")
    config.unlock()
    config.sweep.measure_memory = False
    return config


def test_the_sweep_skips_and_reports_a_sub_run_another_process_holds(tmp_path):
    from rnnvision.ablation import sweep

    config = _ablation_config()
    config.sweep.studies = "clip"
    study = config.studies.clip
    study.truncations, study.clips, study.seeds = "full", "none", 2
    study.run.train.num_steps = 2
    runs = sweep.expand(config)
    assert len(runs) == 2
    held = runs[1].workdir(str(tmp_path))
    os.makedirs(held)
    log: list[str] = []
    with lock_lib.WorkdirLock(held):  # as another shard running this sub-run would
        records = sweep.run_shard(config, str(tmp_path), log=log.append)
    assert [r["status"] for r in records] == ["done", "held"]
    skipped = [line for line in log if line.startswith(f"sweep: skipped {runs[1].label}")]
    assert len(skipped) == 1, log
    assert f"workdir {held} is in use by another run (pid {os.getpid()}" in skipped[0]
    from rnnvision.sweep.runner import STATUS_FILE
    assert not os.path.exists(os.path.join(held, STATUS_FILE))  # not ours to write
    assert not os.path.exists(os.path.join(held, "checkpoints"))
    again = sweep.run_shard(config, str(tmp_path), log=log.append)  # released: it runs now
    assert [r["status"] for r in again] == ["done", "done"]
    assert train_steps(rows(held)) and checkpoints(held)


# -- several processes ----------------------------------------------------------------------

def _two_processes(workdir: str, *overrides: str) -> list[tuple[int, str]]:
    """Runs tests/train/run_toy.py as 2 processes x 2 devices on one workdir (one run)."""
    import subprocess

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run_toy = os.path.join(os.path.dirname(HERE), "train", "run_toy.py")
    environ = {**env(), "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    procs = [subprocess.Popen(
        [sys.executable, run_toy, workdir, os.path.join(os.path.dirname(workdir), f"{i}.npz"),
         "distributed.initialize=True", f"distributed.coordinator_address=127.0.0.1:{port}",
         "distributed.num_processes=2", f"distributed.process_id={i}",
         "distributed.cpu_collectives=gloo", *overrides],
        env=environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for i in range(2)]
    outputs = []
    for proc in procs:
        try:
            out, _ = proc.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            proc.kill()
            out = proc.communicate()[0] + "\n(killed: no exit in 600 s)"
        outputs.append((proc.returncode, out))
    return outputs


@pytest.mark.slow
def test_two_processes_resume_together_and_a_held_workdir_stops_both(tmp_path):
    """Process 0 holds the lock, chooses the checkpoint and the other follows; when the
    workdir is held elsewhere both stop (none waits in a collective)."""
    import numpy as np

    workdir = str(tmp_path / "run")
    for num_steps in (4, 8):  # the second resumes from the checkpoint of step 4
        results = _two_processes(workdir, f"train.num_steps={num_steps}")
        assert [code for code, _ in results] == [0, 0], results[0][1][-3000:] + results[1][1][-3000:]
    assert "resuming from the checkpoint at step 4" in results[0][1]
    a, b = np.load(tmp_path / "0.npz"), np.load(tmp_path / "1.npz")
    assert all((a[k] == b[k]).all() for k in a.files if k.startswith("arr_"))
    with lock_lib.WorkdirLock(workdir):
        (code0, out0), (code1, out1) = _two_processes(workdir, "train.num_steps=12")
    assert code0 != 0 and "WorkdirBusyError" in out0 and f"pid {os.getpid()}" in out0
    assert code1 != 0 and "process 0 could not take the workdir" in out1
