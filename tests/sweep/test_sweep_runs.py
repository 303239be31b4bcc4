"""Sweeps of real (toy) runs: shards, the summary against the runs' results.json, re-runs
that skip finished runs, refused changes, failures recorded, kill -9 and resume, compare.

One 2-point x 2-seed sweep of the toy task (tests/train/toy_task.py, 8 steps) is run once
for the module, as two shards; the tests read it (and the kill test re-creates it)."""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest

from toy_sweep_config import toy_config
from rnnvision.sweep import Sweep, collect, compare, manifest, run
from rnnvision.sweep.runner import STATUS_FILE, read_status

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GRID = ["model.hidden_size=4,8"]
SEEDS = 2
RUN_ORDER = ["model.hidden_size=4/seed0", "model.hidden_size=4/seed1",
             "model.hidden_size=8/seed0", "model.hidden_size=8/seed1"]
TIMING = ("eval_seconds", "wall_seconds", "steps_per_second")


def _sweep(config=None, grid=GRID, seeds=SEEDS) -> Sweep:
    return Sweep.parse(config or toy_config(), grid, seeds)


def _records(root):
    return {label: read_status(os.path.join(root, "runs", *label.split("/")))
            for label in RUN_ORDER}


def _csv(root):
    with open(os.path.join(root, "summary.csv")) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """(root, rows after shard 0 alone, log lines): the sweep run as shards 0/2 then 1/2."""
    root = str(tmp_path_factory.mktemp("sweep"))
    log: list[str] = []
    partial = run(_sweep(), root, shard="0/2", log=log.append, compilation_cache=False)
    run(_sweep(), root, shard="1/2", log=log.append, compilation_cache=False)
    return root, partial, log


def test_shards_run_every_run_exactly_once_and_either_rebuilds_the_summary(swept):
    root, partial, log = swept
    records = _records(root)
    assert [records[label]["shard"] for label in RUN_ORDER] == ["0/2", "1/2", "0/2", "1/2"]
    assert all(r["status"] == "done" and r["attempts"] == 1 for r in records.values())
    assert [r["config_seed"] for r in records.values()] == [0, 1, 0, 1]
    # shard 0 alone: one seed of each point; after shard 1, both
    assert [(r["point"], r["n_seeds"]) for r in partial] == [
        ("model.hidden_size=4", 1), ("model.hidden_size=8", 1)]
    assert [r["n_seeds"] for r in _csv(root)] == ["2", "2"]
    assert any("sweep: 4/4 runs finished (4 done)" in line for line in log)
    assert any("ETA" in line for line in log)


def test_summary_mean_and_std_are_those_of_the_runs_results(swept):
    root, _, _ = swept
    for row in _csv(root):
        results = []
        for seed in range(SEEDS):
            with open(os.path.join(root, "runs", row["point"], f"seed{seed}", "results.json")) as f:
                results.append(json.load(f))
        assert row["n_seeds"] == "2"
        for key in results[0]:
            values = [float(r[key]) for r in results]
            mean = sum(values) / len(values)
            std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
            assert float(row[f"{key}_mean"]) == pytest.approx(mean, rel=1e-12), key
            assert float(row[f"{key}_std"]) == pytest.approx(std, rel=1e-9, abs=1e-15), key
            assert float(row[f"{key}_min"]) == min(values)
            assert float(row[f"{key}_max"]) == max(values)
    assert [r["model.hidden_size"] for r in _csv(root)] == ["4", "8"]
    # LSTM parameters: 4 (H (I + H) + H) + the readout w (H): I = 3
    assert [int(float(r["num_params"])) for r in _csv(root)] == [
        4 * (4 * 7 + 4) + 4, 4 * (8 * 11 + 8) + 8]
    text = open(os.path.join(root, "summary.md")).read()
    assert "| model.hidden_size | n_seeds | mse (mean ± std) |" in text
    assert {"curves.png", "final_mse.png"} <= set(os.listdir(os.path.join(root, "figures")))


def test_rerun_skips_finished_runs(swept):
    root, _, _ = swept
    before = {p: os.stat(os.path.join(root, "runs", *p.split("/"), "results.json")).st_mtime_ns
              for p in RUN_ORDER}
    log: list[str] = []
    run(_sweep(), root, log=log.append, compilation_cache=False)
    after = {p: os.stat(os.path.join(root, "runs", *p.split("/"), "results.json")).st_mtime_ns
             for p in RUN_ORDER}
    assert before == after
    assert log[0] == ("sweep: 4 runs, 4 in shard 0/1: 4 finished earlier (skipped), "
                      "0 to run")
    assert all(r["attempts"] == 1 for r in _records(root).values())


@pytest.mark.parametrize("change,expected", [
    (dict(grid=["model.hidden_size=4,16"]),
     "grid: '--grid=model.hidden_size=4,8' -> '--grid=model.hidden_size=4,16'"),
    (dict(seeds=3), "seeds: 2 -> 3"),
    (dict(config=toy_config(**{"optim.learning_rate": 0.02})),
     "base_config.optim.learning_rate: 0.01 -> 0.02"),
])
def test_a_changed_grid_or_base_config_is_refused_naming_the_difference(swept, change, expected):
    root, _, _ = swept
    with pytest.raises(manifest.SweepMismatchError, match="grid 'sweep'") as error:
        run(_sweep(**change), root, compilation_cache=False, only_summary=True)
    assert expected in str(error.value)
    # presentation-only fields may differ: progress, and what the summary ranks by
    run(_sweep(config=toy_config(**{"train.progress": True})), root, compilation_cache=False,
        only_summary=True)
    run(_sweep(config=toy_config(**{"eval.main_metric": "loss"})), root,
        compilation_cache=False, only_summary=True)


def test_failing_grid_points_are_recorded_and_the_others_finish(tmp_path):
    root = str(tmp_path)
    sweep = _sweep(grid=["model.nan_at_step=-1,3", "optim.learning_rate=0.01,-1.0"], seeds=1)
    rows = run(sweep, root, log=lambda _: None, compilation_cache=False)
    status = {r.point.name: read_status(r.workdir(root)) for r in sweep.runs}
    ok, bad, nan, nan_bad = (status[p.name] for p in sweep.points)
    assert ok["status"] == "done"
    assert os.path.exists(os.path.join(root, "runs", sweep.points[0].name, "seed0", "results.json"))
    assert bad["status"] == nan_bad["status"] == "bad_config"
    assert bad["field"] == "optim.learning_rate" and "-1.0" in bad["reason"]
    assert nan["status"] == "diverged" and nan["diverged_step"] == 4
    assert "non-finite loss" in nan["reason"]
    assert [(r["n_seeds"], r["diverged"], r["failed"]) for r in rows] == [
        (1, 0, 0), (0, 0, 1), (0, 1, 0), (0, 0, 1)]
    text = open(os.path.join(root, "summary.md")).read()
    assert "optim.learning_rate=-1.0 is not allowed" in text and "non-finite loss" in text
    # re-running does not retry what would fail again
    run(sweep, root, log=lambda _: None, compilation_cache=False)
    assert all(read_status(r.workdir(root))["attempts"] == 1 for r in sweep.runs)


def _cli(root, *extra, env=None):
    return [sys.executable, "-m", "experiments.sweep", "--config=tests/sweep/toy_sweep_config.py",
            f"--workdir={root}", *(f"--grid={g}" for g in GRID), f"--seeds={SEEDS}",
            "--compilation_cache=false", *extra]


def _env(**extra):
    return {**os.environ, "JAX_DISABLE_MOST_OPTIMIZATIONS": "true", **extra}


def test_kill_9_mid_sweep_then_resume_gives_the_same_summary(swept, tmp_path):
    """SIGKILL the sweep inside its second run (after that run's checkpoint at step 4: the
    pause is in building the batch of step 8, which the trainer's prefetch thread does
    only once the loop has taken the batch of step 6, after saving step 4), then
    run the same sweep again: it resumes that run from its checkpoint, skips the first,
    and summarises exactly what the uninterrupted sweep did."""
    reference, _, _ = swept
    root, gate = str(tmp_path / "sweep"), str(tmp_path / "gate")
    process = subprocess.Popen(_cli(root), cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True,
                               env=_env(SWEEP_TEST_PAUSE="1:8", SWEEP_TEST_GATE=gate))
    deadline = time.monotonic() + 600
    while not os.path.exists(gate + ".waiting"):
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    records = _records(root)
    assert records[RUN_ORDER[0]]["status"] == "done"
    assert records[RUN_ORDER[1]]["status"] == "running" and not records[RUN_ORDER[2]]
    first_results = os.stat(os.path.join(root, "runs", *RUN_ORDER[0].split("/"), "results.json"))

    run(_sweep(), root, log=lambda _: None, compilation_cache=False)
    records = _records(root)
    assert records[RUN_ORDER[1]]["start_step"] == 4 and records[RUN_ORDER[1]]["attempts"] == 2
    assert records[RUN_ORDER[0]]["attempts"] == 1 and first_results.st_mtime_ns == os.stat(
        os.path.join(root, "runs", *RUN_ORDER[0].split("/"), "results.json")).st_mtime_ns
    resumed, uninterrupted = _csv(root), _csv(reference)
    assert [list(r) for r in resumed] == [list(r) for r in uninterrupted]
    for a, b in zip(resumed, uninterrupted):
        for column in a:
            if not column.startswith(TIMING):
                assert a[column] == b[column], column


def test_bad_grid_value_on_the_command_line_exits_2_naming_it_before_any_run(tmp_path):
    root = str(tmp_path / "sweep")
    out = subprocess.run(_cli(root, "--grid=optim.learning_rate=0.01,fast"), cwd=REPO,
                         capture_output=True, text=True, env=_env())
    assert out.returncode == 2
    assert "optim.learning_rate='fast'" in out.stderr and "a number" in out.stderr
    assert not os.path.exists(os.path.join(root, "runs"))


def test_compare_puts_a_sweep_and_a_single_run_side_by_side(swept, tmp_path):
    root, _, _ = swept
    single = os.path.join(root, "runs", "model.hidden_size=8", "seed1")
    rows, text = compare.compare([root, single], out=str(tmp_path / "cmp"))
    assert [r["point"] for r in rows] == [f"{root}: model.hidden_size=4",
                                          f"{root}: model.hidden_size=8", single]
    assert [r["n_seeds"] for r in rows] == [2, 2, 1]
    assert [r["model.hidden_size"] for r in rows] == [4, 8, 8]  # the differing config field
    with open(os.path.join(single, "results.json")) as f:
        assert rows[2]["mse_mean"] == json.load(f)["mse"]
    assert "| point | model.hidden_size | n_seeds | mse (mean ± std) |" in text
    files = set(os.listdir(tmp_path / "cmp")) | set(os.listdir(tmp_path / "cmp" / "figures"))
    assert {"compare.csv", "compare.md", "curves.png", "final_mse.png"} <= files
    assert collect.groups(single)[0].runs[0].status == "done"
