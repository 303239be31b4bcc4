"""The sweep: grid expansion, sharding, sub-run configs, diverged runs, summaries from parts."""

from __future__ import annotations

import collections
import json
import math
import os

import pytest

from rnnvision.ablation import summary, sweep
from rnnvision.config_checks import ConfigError
from rnnvision.train.writer import write_json


def test_grid_is_the_product_of_each_study(smoke_config):
    c = smoke_config
    c.sweep.studies = "copy,clip"
    c.studies.copy.truncations, c.studies.copy.clips = "1,2,full", "none,global_norm:1,value:0.5"
    c.studies.copy.seeds = 3
    c.studies.clip.truncations, c.studies.clip.clips, c.studies.clip.seeds = "4", "adaptive:0.1", 2
    runs = sweep.expand(c)
    assert len(runs) == 3 * 3 * 3 + 1 * 1 * 2
    assert len({(r.setting.name, r.seed) for r in runs}) == len(runs)
    names = {r.setting.name for r in runs}
    assert {"copy-k1-none", "copy-kfull-global_norm_1", "copy-k2-value_0.5",
            "clip-k4-adaptive_0.1"} <= names
    assert len(names) == 10


@pytest.mark.parametrize("num_shards", [1, 2, 3, 5, 40])
def test_shards_cover_every_run_exactly_once(smoke_config, num_shards):
    c = smoke_config
    c.sweep.studies = "copy,clip,clip_trunc"
    c.studies.copy.truncations, c.studies.copy.seeds = "1,2,4,8,full", 3
    c.studies.clip.clips = "none,global_norm:1,global_norm:10,value:0.1,adaptive:0.1"
    everything = sweep.expand(c)
    seen = collections.Counter()
    for i in range(num_shards):
        seen.update(sweep.shard(everything, f"{i}/{num_shards}"))
    assert set(seen) == set(everything) and set(seen.values()) == {1}


@pytest.mark.parametrize("field,value", [("truncations", "1,x"), ("truncations", ""),
                                         ("clips", "clipall:1"), ("clips", "value:0"),
                                         ("clips", "global_norm")])
def test_bad_grid_fields_name_the_problem(smoke_config, field, value):
    smoke_config.studies.copy[field] = value
    with pytest.raises(ConfigError):
        sweep.expand(smoke_config)


@pytest.mark.parametrize("spec", ["1/1", "2", "-1/3", "a/b"])
def test_bad_shard_spec(spec):
    with pytest.raises(ConfigError, match="sweep.shard"):
        sweep.parse_shard(spec)


def test_run_config_sets_k_clip_and_seed(smoke_config):
    run = sweep.Run(sweep.Setting("copy", 0, "value", 0.25), seed=1)
    c = sweep.run_config(smoke_config, run)
    assert c.train.truncation == 0 and c.optim.clip.method == "value"
    assert c.optim.clip.threshold == 0.25 and c.seed == smoke_config.studies.copy.run.seed + 1
    assert smoke_config.studies.copy.run.optim.clip.threshold == 1.0  # the study is untouched


def test_nonfinite_run_is_recorded_as_diverged_not_raised(smoke_config, tmp_path):
    c = smoke_config
    c.studies.clip.run.optim.learning_rate = 1e30  # the first update overflows
    c.studies.clip.run.train.num_steps = 3
    run = sweep.Run(sweep.Setting("clip", 0, "none", 0.0), seed=0)
    record = sweep.run_one(c, run, str(tmp_path))
    assert record["status"] == "diverged" and record["diverged_step"] >= 1
    assert sweep.read_status(run.workdir(str(tmp_path)))["status"] == "diverged"
    again = sweep.run_one(c, run, str(tmp_path))  # not run again
    assert again == sweep.read_status(run.workdir(str(tmp_path)))
    row = summary.collect(c, str(tmp_path))[0]
    assert row["diverged"] == 1 and row["done"] == 0


def _fake_run(workdir, status, loss, accuracy, rows):
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
        for step, row_loss, acc in rows:
            f.write(json.dumps({"step": step, "loss": row_loss, "accuracy": acc, "grad_norm": 2.0,
                                "clipped": 0.5, "steps_per_second": step / (1.0 + 0.01 * step),
                                "recurrent_sigma_max": 1.5}) + "\n")
    if status != "incomplete":
        write_json(os.path.join(workdir, sweep.STATUS_FILE),
                   {"status": status, "start_step": 0, "wall_seconds": 10.0,
                    "memory": {"peak_bytes": 2**20}})
    if status == "done":
        write_json(os.path.join(workdir, "results.json"), {"loss": loss, "accuracy": accuracy})


def test_summary_is_rebuilt_from_partial_sub_workdirs(smoke_config, tmp_path):
    c = smoke_config
    c.sweep.studies = "copy"
    c.studies.copy.truncations, c.studies.copy.seeds = "1,2,4", 3
    root = str(tmp_path)
    base = os.path.join(root, "runs")
    rows = [(10, 2.0, 0.1), (20, 1.0, 0.995), (30, 0.5, 1.0)]
    _fake_run(f"{base}/copy-k1-global_norm_1/seed0", "done", 2.0, 0.2, rows)
    _fake_run(f"{base}/copy-k1-global_norm_1/seed1", "done", 1.0, 0.4, rows[:1])
    _fake_run(f"{base}/copy-k1-global_norm_1/seed2", "incomplete", 0.0, 0.0, rows[:2])
    _fake_run(f"{base}/copy-k4-global_norm_1/seed1", "diverged", 0.0, 0.0, rows[:1])
    out = summary.write(c, root)
    assert [r["setting"] for r in out] == ["copy-k1-global_norm_1", "copy-k4-global_norm_1"]
    k1, k4 = out
    assert (k1["seeds"], k1["done"], k1["incomplete"], k1["diverged"]) == (3, 2, 1, 0)
    assert k1["final_metric_mean"] == pytest.approx(0.3) and k1["final_metric_std"] == pytest.approx(0.1)
    assert k1["steps_to_target_mean"] == 20 and k1["reached_target"] == 1  # seed1 never reached
    assert k1["ms_per_step"] == pytest.approx(10.0)  # elapsed = 1 + 0.01 * step
    assert k1["peak_mib"] == pytest.approx(1.0) and k1["clipped_fraction"] == pytest.approx(0.5)
    assert (k4["diverged"], k4["done"]) == (1, 0) and math.isnan(k4["final_metric_mean"])
    text = open(os.path.join(root, "summary.md")).read()
    assert "copy-k1-global_norm_1" in text and "copy-k2" not in text
    assert len(summary.read_csv(os.path.join(root, "summary.csv"))) == 2


def test_equal_data_scales_steps_by_windows_per_sequence(smoke_config):
    c = smoke_config
    c.studies.stream.equal_data = True
    base = c.studies.stream.run.train.num_steps
    frames = c.studies.stream.run.data.num_frames  # 8 in the smoke variant
    steps = {k: sweep.run_config(c, sweep.Run(sweep.Setting("stream", k, "none", 0.0), 0)).train.num_steps
             for k in (1, 2, 0)}
    assert steps == {1: base * frames, 2: base * frames // 2, 0: base}


def test_a_changed_study_in_the_same_directory_is_refused(smoke_config, tmp_path):
    """The studies are sweep grids recorded in DIR/sweep.json: changing one is refused
    (naming the difference), adding another study is not."""
    from rnnvision.sweep.manifest import SweepMismatchError

    c = smoke_config
    c.sweep.studies, c.sweep.stage, c.grad_bias.study, c.memory.lengths = "copy", "report", "", ""
    c.sweep.compilation_cache = False
    sweep.main(c, str(tmp_path), log=lambda _: None)
    c.studies.copy.truncations = "2,8"
    with pytest.raises(SweepMismatchError, match="grid 'copy'") as error:
        sweep.main(c, str(tmp_path), log=lambda _: None)
    assert "'--grid=train.truncation=2,4 " in str(error.value)
    assert "-> '--grid=train.truncation=2,8 " in str(error.value)
    c.studies.copy.truncations, c.sweep.studies = "2,4", "copy,clip"
    sweep.main(c, str(tmp_path), log=lambda _: None)
