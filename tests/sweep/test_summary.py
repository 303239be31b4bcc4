"""summary.csv / summary.md from run directories written by hand: the statistics are checked
against numbers worked out by hand, and runs that failed or never finished are counted."""

from __future__ import annotations

import csv
import json
import math
import os

import pytest

from rnnvision.sweep import collect, figures, summary
from rnnvision.sweep.runner import STATUS_FILE


def _run(root, point, seed, status, results=None, rows=(), values=None, **record):
    workdir = os.path.join(root, "runs", point, f"seed{seed}")
    os.makedirs(workdir)
    if status is not None:
        with open(os.path.join(workdir, STATUS_FILE), "w") as f:
            json.dump({"status": status, "values": values or {}, "start_step": 0, **record}, f)
    if results is not None:
        with open(os.path.join(workdir, "results.json"), "w") as f:
            json.dump(results, f)
    with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return workdir


def _rows(losses, sps):
    """Logged training rows every 10 steps; steps_per_second as the trainer writes it (mean
    since start), here from a run that spends 2 s compiling and then 0.1 s per step."""
    return [{"step": 10 * (i + 1), "loss": loss, "steps_per_second": sps(10 * (i + 1))}
            for i, loss in enumerate(losses)]


@pytest.fixture
def root(tmp_path):
    root = str(tmp_path)
    sps = lambda step: step / (2.0 + 0.1 * step)
    a = "model.cell=lstm"
    _run(root, a, 0, "done", {"accuracy": 0.5, "loss": 1.0, "note": "text", "ok": True},
         _rows([2.0, 1.0], sps), {"model.cell": "lstm"}, wall_seconds=10.0, num_params=100)
    _run(root, a, 1, "done", {"accuracy": 0.7, "loss": 2.0, "extra": 3},
         _rows([3.0, 2.0], sps), {"model.cell": "lstm"}, wall_seconds=20.0, num_params=100)
    _run(root, a, 2, "done", {"accuracy": 0.9, "loss": "nan"},
         _rows([1.0, 1.0], sps), {"model.cell": "lstm"}, wall_seconds=30.0, num_params=100)
    b = "model.cell=gru"
    _run(root, b, 0, "diverged", None, _rows([5.0, float("nan")], sps), {"model.cell": "gru"},
         reason="step 20: non-finite loss (nan); stopping.")
    _run(root, b, 1, "bad_config", None, (), {"model.cell": "gru"},
         reason="config field optim.learning_rate=-1.0 is not allowed: a finite number > 0")
    _run(root, b, 2, "running", None, _rows([4.0], sps), {"model.cell": "gru"})
    _run(root, b, 10, "done", {"accuracy": 0.25}, _rows([1.0], sps), {"model.cell": "gru"},
         num_params=75)
    return root


def test_statistics_match_numbers_worked_out_by_hand(root):
    rows = summary.write(root, collect.groups(root), "accuracy", "test")
    gru, lstm = rows  # sorted by name: the directory has no sweep.json to order them
    assert (lstm["point"], lstm["model.cell"], lstm["n_seeds"], lstm["runs"]) == (
        "model.cell=lstm", "lstm", 3, 3)
    # accuracy 0.5, 0.7, 0.9: mean 0.7, population std sqrt((0.04 + 0 + 0.04) / 3)
    assert lstm["accuracy_mean"] == pytest.approx(0.7)
    assert lstm["accuracy_std"] == pytest.approx(math.sqrt(0.08 / 3))
    assert (lstm["accuracy_min"], lstm["accuracy_max"]) == (0.5, 0.9)
    assert math.isnan(lstm["loss_mean"])                   # one seed's loss is "nan"
    assert lstm["extra_mean"] == 3 and lstm["extra_std"] == 0  # present in one run only
    assert "note_mean" not in lstm and "ok_mean" not in lstm   # not numbers
    assert lstm["num_params"] == 100 and lstm["wall_seconds_mean"] == pytest.approx(20.0)
    # elapsed = 2 + 0.1 * step: after the first logged row, 0.1 s per step = 10 steps/s
    assert lstm["steps_per_second_mean"] == pytest.approx(10.0)
    # seed10 (seed directories sort by index); one done run, std 0
    assert (gru["n_seeds"], gru["runs"], gru["diverged"], gru["failed"], gru["incomplete"]) == (
        1, 4, 1, 1, 1)
    assert (gru["accuracy_mean"], gru["accuracy_std"]) == (0.25, 0.0)
    seeds = collect.seed_dirs(os.path.join(root, "runs", "model.cell=gru"))
    assert [os.path.basename(d) for d in seeds] == ["seed0", "seed1", "seed2", "seed10"]


def test_csv_and_markdown_hold_the_rows_and_the_failures(root):
    groups = collect.groups(root)
    summary.write(root, groups, "accuracy", "test",
                  figures=figures.write_all(groups, "accuracy", os.path.join(root, "figures")))
    with open(os.path.join(root, "summary.csv")) as f:
        table = list(csv.DictReader(f))
    # sorted by name: the directory has no sweep.json to order them
    assert [r["point"] for r in table] == ["model.cell=gru", "model.cell=lstm"]
    assert float(table[1]["accuracy_std"]) == pytest.approx(math.sqrt(0.08 / 3))
    assert table[0]["extra_mean"] == "nan"  # a key of no finished gru run
    text = open(os.path.join(root, "summary.md")).read()
    assert "| lstm | 3/3 | 0.7 ± 0.16 |" in text
    assert "1/4, 1 diverged, 1 failed, 1 incomplete" in text
    assert "optim.learning_rate=-1.0 is not allowed" in text and "non-finite loss" in text
    assert {"curves.png", "final_accuracy.png"} <= set(os.listdir(os.path.join(root, "figures")))


def test_band_is_mean_and_std_over_the_seeds_that_have_each_step():
    steps, mean, std = figures.band([{1: 1.0, 2: 3.0}, {1: 3.0}, {1: 5.0, 2: 5.0}])
    assert steps.tolist() == [1, 2]
    assert mean.tolist() == [3.0, 4.0]
    assert std.tolist() == pytest.approx([math.sqrt(8 / 3), 1.0])


def test_a_single_run_workdir_is_one_group(tmp_path):
    workdir = str(tmp_path / "single")
    os.makedirs(workdir)
    with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump({"mse": 0.5, "step": 8}, f)
    with open(os.path.join(workdir, "config.json"), "w") as f:
        json.dump({"task": "toy_sum"}, f)
    (group,) = collect.groups(workdir)
    assert group.label == "single" and group.runs[0].status == "done"
    row = summary.aggregate(group, "mse")
    assert (row["n_seeds"], row["mse_mean"], row["mse_std"]) == (1, 0.5, 0.0)
