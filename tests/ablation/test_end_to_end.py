"""A smoke sweep end to end: sub-runs, analyses, summary.csv/md and figures; resume; CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from rnnvision.ablation import summary, sweep
from rnnvision.train.writer import write_json

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _tiny(config):
    c = config
    c.sweep.studies = "copy"
    c.sweep.compilation_cache = False  # a global JAX setting: keep it out of the test process
    c.sweep.measure_memory = False     # tested in test_memory.py; compiles take time
    c.studies.copy.truncations = "4"
    c.grad_bias.truncation, c.grad_bias.truncations = "4", "1,4"
    c.memory.lengths, c.memory.modes = "16", "full,stream"
    return c


@pytest.mark.slow
def test_smoke_sweep_writes_summary_figures_and_analyses(smoke_config, tmp_path):
    """Real sub-runs, gradient bias on a run's checkpoints, memory, summary, figures, resume
    (about 2 minutes on a busy 2-core CPU)."""
    root = str(tmp_path)
    c = _tiny(smoke_config)
    log = []
    rows = sweep.main(c, root, log=log.append)
    assert [r["setting"] for r in rows] == ["copy-k4-global_norm_1"]
    assert all(r["done"] == 1 and r["diverged"] == 0 for r in rows)
    for name in ("summary.csv", "summary.md", "memory.csv", "grad_bias/grad_bias.csv",
                 "grad_bias/lags.csv", "runs/copy-k4-global_norm_1/seed0/results.json"):
        assert os.path.exists(os.path.join(root, name)), name
    figures = set(os.listdir(os.path.join(root, "figures")))
    assert {"curves_copy.png", "final_vs_k_copy.png", "grad_norms_copy.png",
            "sigma_max_copy.png", "grad_bias.png", "memory.png"} <= figures
    bias = summary.read_csv(os.path.join(root, "grad_bias", "grad_bias.csv"))
    assert {r["step"] for r in bias} == {"0", "2", "4"}  # init + both checkpoints
    assert all(float(r["cosine"]) == pytest.approx(1.0, abs=1e-5) for r in bias if r["k"] == "4")
    text = open(os.path.join(root, "summary.md")).read()
    assert "Gradient bias" in text and "Memory" in text and "figures/memory.png" in text
    # Re-running the command skips finished runs and rebuilds the same summary.
    log.clear()
    again = sweep.main(c, root, log=log.append)
    assert [r["final_metric_mean"] for r in again] == [r["final_metric_mean"] for r in rows]
    assert all(line.endswith("done (%.0f s)" % float(line.split("(")[-1].split()[0]))
               for line in log if line.startswith("["))


def test_report_stage_rebuilds_summary_and_figures_from_existing_runs(smoke_config, tmp_path):
    """The report stage on sub-workdirs that exist (here: written by hand, one diverged):
    summary.csv/md and every figure, plus the memory analysis, without training."""
    root = str(tmp_path)
    c = _tiny(smoke_config)
    c.sweep.studies, c.sweep.stage, c.grad_bias.study = "copy", "report", ""
    c.studies.copy.truncations, c.studies.copy.seeds = "2,4", 2
    c.memory.modes = "full"
    rows = [(2, 2.0, 0.1, 1.5), (4, 1.0, 0.3, 1.7)]
    for name, seed, status in [("copy-k2-global_norm_1", 0, "done"), ("copy-k4-global_norm_1", 0, "done"),
                               ("copy-k4-global_norm_1", 1, "diverged")]:
        workdir = os.path.join(root, "runs", name, f"seed{seed}")
        os.makedirs(workdir)
        with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
            for step, loss, acc, sigma in rows:
                f.write(json.dumps({"step": step, "loss": loss, "accuracy": acc, "grad_norm": 3.0,
                                    "clipped": 1.0, "steps_per_second": 10.0,
                                    "recurrent_sigma_max": sigma}) + "\n")
        write_json(os.path.join(workdir, sweep.STATUS_FILE), {"status": status, "start_step": 0})
        if status == "done":
            write_json(os.path.join(workdir, "results.json"), {"loss": 1.0, "accuracy": 0.25})
    out = sweep.main(c, root, log=lambda _: None)
    assert [(r["setting"], r["done"], r["diverged"]) for r in out] == [
        ("copy-k2-global_norm_1", 1, 0), ("copy-k4-global_norm_1", 1, 1)]
    assert not os.path.exists(os.path.join(root, "runs", "copy-k2-global_norm_1", "seed1"))
    figures = set(os.listdir(os.path.join(root, "figures")))
    assert {"curves_copy.png", "final_vs_k_copy.png", "grad_norms_copy.png",
            "sigma_max_copy.png", "memory.png"} <= figures
    text = open(os.path.join(root, "summary.md")).read()
    assert "copy-k4-global_norm_1" in text and "1/2" in text and "figures/memory.png" in text
    assert len(summary.read_csv(os.path.join(root, "summary.csv"))) == 2


@pytest.mark.slow
def test_cli_smoke_variant_sharded(tmp_path):
    """The command line, two shards then the report stage (minutes on a busy CPU)."""
    root = str(tmp_path / "sweep")
    base = [sys.executable, "-m", "experiments.tbptt_ablation",
            "--config=configs/tbptt_ablation.py:smoke", f"--workdir={root}",
            "--config.sweep.studies=copy,clip", "--config.sweep.compilation_cache=False"]
    for shard in ("0/2", "1/2"):
        subprocess.run(base + [f"--config.sweep.shard={shard}", "--config.sweep.stage=runs"],
                       cwd=REPO, check=True)
    subprocess.run(base + ["--config.sweep.stage=report"], cwd=REPO, check=True)
    rows = summary.read_csv(os.path.join(root, "summary.csv"))
    assert len(rows) == 4 and all(r["done"] == "1" for r in rows)
    assert os.path.exists(os.path.join(root, "figures", "grad_bias.png"))
    bad = subprocess.run(base + ["--config.sweep.shard=3/2"], cwd=REPO, capture_output=True, text=True)
    assert bad.returncode == 2 and "sweep.shard" in bad.stderr


@pytest.mark.slow
def test_default_sweep_reproduces_the_expected_results(tmp_path):
    """The README bar: the default variant end to end (under 2 minutes on an idle 2-core
    CPU) shows the copy-task cliff at k = L, cosine(truncated, full) rising towards 1 with
    k, and the spectral-radius-2.5 tanh RNN diverging unclipped but training clipped."""
    root = str(tmp_path / "tbptt")
    subprocess.run([sys.executable, "-m", "experiments.tbptt_ablation",
                    "--config=configs/tbptt_ablation.py", f"--workdir={root}"],
                   cwd=REPO, check=True)
    rows = {r["setting"]: r for r in summary.read_csv(os.path.join(root, "summary.csv"))}
    final = {name: float(r["final_metric_mean"]) for name, r in rows.items()
             if r["final_metric_mean"] not in ("", "nan")}
    # Copy task, L = 20: nothing below k = L learns, k = L does.
    assert final["copy-k20-global_norm_1"] >= 0.99
    for k in (1, 5, 10, 19):
        assert final[f"copy-k{k}-global_norm_1"] < 0.5, k
    # Clipping: every unclipped run diverges, no clipped one does, and the clipped runs
    # beat predicting the mean (MSE 1/6).
    assert rows["clip-kfull-none"]["diverged"] == "2"
    for name in ("global_norm_1", "global_norm_10", "value_0.1", "adaptive_0.1"):
        assert rows[f"clip-kfull-{name}"]["diverged"] == "0", name
        assert final[f"clip-kfull-{name}"] < 1 / 6, name
    # Gradient bias at initialisation: cosine rises with k (windows aligned to the start,
    # so k | T or k = 1) and is 1 at k = T.
    bias = [r for r in summary.read_csv(os.path.join(root, "grad_bias", "grad_bias.csv"))
            if r["step"] == "0"]
    cosine = {int(r["k"]): float(r["cosine"]) for r in bias}
    ks = [1, 2, 4, 5, 10]
    assert all(cosine[a] < cosine[b] for a, b in zip(ks, ks[1:])), cosine
    assert cosine[10] < 0.99 and cosine[20] == pytest.approx(1.0, abs=1e-5)
