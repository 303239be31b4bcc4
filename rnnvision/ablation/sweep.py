r"""The ablation command: its studies' grids run by `rnnvision.sweep`, then the analyses.

    DIR/sweep.json                  every study's grid and run config (checked on re-runs)
    DIR/runs/<setting>/seed<i>/     a normal workdir (config.json, checkpoints/, metrics.jsonl,
                                    results.json, figures/) + sweep_run.json (status, timing,
                                    parameters, and here memory and sigma_max history)
    DIR/summary.csv, DIR/summary.md one row per setting, rebuilt from whatever runs exist
    DIR/grad_bias/, DIR/memory.csv  the analyses;  DIR/figures/  the figures

A setting is (study, k, clip); its name is `<study>-k<k|full>-<method>[_<threshold>]`,
e.g. `copy-k8-global_norm_1` (rnnvision/ablation/grid.py). Runs are the sweep's
(rnnvision/sweep/runner.py): each resumes on its own, so re-running the command
continues an interrupted ablation; finished and diverged runs are skipped; a run whose
loss or gradient becomes NaN/Inf is recorded as diverged, not raised.

Sharding: `sweep.shard = "i/n"` runs the runs j with j % n == i of the expanded list;
the shards together run every run exactly once. With n > 1 the analyses (gradient
bias, memory) run only with `sweep.stage = "report"`, once all shards are done; the
summary is rebuilt by every shard from what exists. Each sub-run holds its workdir's lock
(`rnnvision.train.lock`), so two shards never run the same sub-run.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable

from absl import logging

from rnnvision.ablation import figures, grad_bias, grid, memory, summary
from rnnvision.ablation.grid import (  # noqa: F401 -- the ablation's grid, re-exported
    STATUS_FILE, Run, Setting, expand, parse_clips, parse_shard, parse_truncations, read_status,
    run_config, settings, shard)
from rnnvision.config_checks import ConfigError
from rnnvision.sweep import manifest, runner

STAGES = ("all", "runs", "report")


# -- the status hook: what the ablation adds to a run's record ---------------------------------

def _after_run(measure_memory: bool) -> runner.AfterRun:
    """The fields the ablation's summary needs beyond the sweep's: sigma_max at the kept
    checkpoints (for tasks that do not log it) and the compiled memory of the step."""
    def after(cfg, workdir: str, record: dict) -> dict:
        extra: dict[str, Any] = {}
        if not _logs_sigma_max(workdir):
            extra["sigma_max_history"] = _sigma_max_history(cfg, workdir)
        if measure_memory:
            extra["memory"] = _task_memory(cfg)
        return extra
    return after


def run_one(config, run: Run, root: str, measure_memory: bool = False) -> dict[str, Any]:
    """Runs (or resumes) one run; returns its status record (a final one is not rerun)."""
    return runner.run_one(run, run_config(config, run), root,
                          after_run=_after_run(measure_memory))


def _logs_sigma_max(workdir: str) -> bool:
    from rnnvision.sweep.io import read_jsonl

    return any("recurrent_sigma_max" in r for r in read_jsonl(os.path.join(workdir, "metrics.jsonl")))


def _sigma_max_history(cfg, workdir: str) -> list[list[float]]:
    """[[step, sigma_max]] at init and at the kept checkpoints, for tasks that do not log
    `recurrent_sigma_max` themselves (e.g. row_mnist); [] if the cell has no W_h."""
    from rnnvision.metrics.gradients import recurrent_matrix, recurrent_sigma_max

    try:
        points = grad_bias.checkpoint_params(cfg, workdir)
    except Exception as e:  # noqa: BLE001 -- a diagnostic; never fail the sweep on it
        logging.warning("sigma_max history of %s failed: %s", workdir, e)
        return []
    return [[step, float(recurrent_sigma_max(params["cell"]))] for step, params in points
            if isinstance(params, dict) and "cell" in params
            and recurrent_matrix(params["cell"]) is not None]


def _task_memory(cfg) -> dict[str, int]:
    """Compiled memory of the gradient of the run's loss (one device's batch)."""
    import jax

    from rnnvision.tasks import Capability
    from rnnvision.train import build_task

    task = build_task(cfg)
    params = task.init_params(jax.random.key(0))
    batch_size = cfg.train.batch_size // jax.device_count()
    batch = task.train_batch(0, slice(0, batch_size))
    stream = task.init_stream(batch_size) if task.has(Capability.STREAMING) else None
    try:
        return memory.task_step_memory(task, params, batch, stream)
    except Exception as e:  # noqa: BLE001 -- memory is a diagnostic; never fail the sweep on it
        logging.warning("memory analysis failed for %s: %s", cfg.task, e)
        return {"peak_bytes": -1}


def run_shard(config, root: str, log: Callable[[str], None] = logging.info) -> list[dict[str, Any]]:
    """Runs this shard's runs in order (the sweep's runner); returns their status records.
    The compiled memory is measured on the first run of each setting in the shard."""
    runs = expand(config)
    mine = shard(runs, config.sweep.shard)
    first = {}
    for run in mine:
        first.setdefault(run.setting.name, run)
    hook = lambda run: _after_run(config.sweep.measure_memory and first[run.setting.name] == run)
    return runner.run_shard(runs, lambda run: run_config(config, run), root,
                            shard=config.sweep.shard, log=log, after_run=hook)


# -- the command ---------------------------------------------------------------------------------

def validate(config) -> None:
    """Checks the sweep fields before any compute (ConfigError names the field)."""
    if config.sweep.stage not in STAGES:
        raise ConfigError("sweep.stage", config.sweep.stage, f"one of {STAGES}")
    parse_shard(config.sweep.shard, "sweep.shard")
    for name in grid.study_names(config):
        study = config.studies[name]
        if not (isinstance(study.seeds, int) and study.seeds >= 1):
            raise ConfigError(f"studies.{name}.seeds", study.seeds, "an integer >= 1")
        try:
            summary.parse_target(study.target)
        except ValueError:
            raise ConfigError(f"studies.{name}.target", study.target,
                              "'' or '<metric>>=<value>' / '<metric><=<value>'") from None
    settings(config)  # parses every study's truncations and clips


def use_compilation_cache(directory: str) -> None:
    runner.use_compilation_cache(directory)


def main(config, root: str, log: Callable[[str], None] = logging.info) -> list[dict[str, Any]]:
    """The whole command: this shard's runs, then (unsharded, or stage "report") the
    analyses, then figures and summary from whatever exists. Returns the summary rows."""
    validate(config)
    # A study's run config, grid or seeds that changed since its runs is refused.
    main_metric = config.studies[grid.study_names(config)[0]].metric
    manifest.check_and_write(root, grid.manifest_entries(config), main_metric,
                             safe=manifest.SAFE_FIELDS)
    if config.sweep.compilation_cache:
        use_compilation_cache(os.path.join(root, "jax_cache"))
    _, num_shards = parse_shard(config.sweep.shard, "sweep.shard")
    t0 = time.time()
    if config.sweep.stage in ("all", "runs"):
        held = [r for r in run_shard(config, root, log) if r.get("status") == "held"]
        if held:
            log(f"{len(held)} sub-run(s) skipped: held by other processes; re-run this "
                "command once they have finished to include them")
    if config.sweep.stage == "report" or (config.sweep.stage == "all" and num_shards == 1):
        grad_bias_source(config, root)
        grad_bias.analyze(config, root)
        log(f"gradient-bias analysis done ({time.time() - t0:.0f} s so far)")
        memory.analyze(config, root)
        log(f"memory analysis done ({time.time() - t0:.0f} s so far)")
    figures.write_all(config, root)
    rows = summary.write(config, root)
    log(f"sweep shard {config.sweep.shard}: {time.time() - t0:.0f} s; "
        f"summary in {os.path.join(root, 'summary.md')}")
    return rows


def grad_bias_source(config, root: str) -> None:
    """Runs (or finds done) the gradient-bias analysis's source run."""
    run = grid.grad_bias_run(config)
    if run is not None:
        run_one(config, run, root)
