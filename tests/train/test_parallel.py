"""Data parallelism: 1 vs 4 devices, and 2 processes x 2 devices, give the same training."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(__file__)
RUN_TOY = os.path.join(HERE, "run_toy.py")


def _env(num_devices: int) -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={num_devices}"
    env["JAX_PLATFORMS"] = "cpu"
    return env


def _load(path) -> tuple[list[np.ndarray], dict]:
    d = np.load(path)
    leaves = [d[f"arr_{i}"] for i in range(sum(k.startswith("arr_") for k in d.files))]
    return leaves, {"mse": float(d["mse"]), "devices": int(d["devices"])}


def _run(tmp_path, name, num_devices, *overrides, extra_env=None, background=False, workdir=None):
    out = tmp_path / f"{name}.npz"
    cmd = [sys.executable, RUN_TOY, str(tmp_path / (workdir or name)), str(out), *overrides]
    env = {**_env(num_devices), **(extra_env or {})}
    if background:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT), out
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


def _assert_same_params(a, b, rtol=2e-5, atol=2e-6):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


def test_one_and_four_devices_train_the_same(tmp_path):
    one, meta1 = _load(_run(tmp_path, "one", 1))
    four, meta4 = _load(_run(tmp_path, "four", 4))
    assert (meta1["devices"], meta4["devices"]) == (1, 4)
    _assert_same_params(one, four)
    # The test can fail: training moved the parameters away from their initial values.
    init, _ = _load(_run(tmp_path, "zero", 1, "optim.learning_rate=1e-9"))
    assert max(np.abs(a - b).max() for a, b in zip(one, init) if a.size > 1) > 1e-3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_train_in_lockstep(tmp_path):
    port = _free_port()
    procs = []
    for pid in range(2):
        procs.append(_run(
            tmp_path, f"host{pid}", 2, "distributed.initialize=True",
            f"distributed.coordinator_address=127.0.0.1:{port}", "distributed.num_processes=2",
            f"distributed.process_id={pid}", "distributed.cpu_collectives=gloo",
            background=True, workdir="shared_workdir"))  # hosts share one workdir
    outputs = []
    for proc, out in procs:
        log, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, log.decode()[-4000:]
        outputs.append(_load(out))
    (p0, m0), (p1, m1) = outputs
    assert m0["devices"] == m1["devices"] == 4
    _assert_same_params(p0, p1, rtol=0, atol=0)  # lockstep: bit-identical across hosts
    single, _ = _load(_run(tmp_path, "single4", 4))
    _assert_same_params(p0, single)
