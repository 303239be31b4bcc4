r"""The sweep: studies x truncation k x clipping x seeds, each a normal rnnvision run.

    DIR/runs/<setting>/seed<i>/     a normal workdir (config.json, checkpoints/, metrics.jsonl,
                                    results.json, figures/) + ablation.json (status, timing, memory)
    DIR/summary.csv, DIR/summary.md one row per setting, rebuilt from whatever sub-workdirs exist
    DIR/grad_bias/, DIR/memory.csv  the analyses;  DIR/figures/  the figures

A setting is (study, k, clip); its name is `<study>-k<k|full>-<method>[_<threshold>]`,
e.g. `copy-k8-global_norm_1`. Each sub-run resumes on its own, so re-running the
sweep command continues an interrupted sweep; finished and diverged runs are
skipped. A run whose loss or gradient becomes NaN/Inf (the trainer's
NonFiniteError) is recorded as diverged, not raised.

Each sub-run holds its workdir's lock (`rnnvision.train.lock`) from reading its status to
writing it, so two shards (or two launches of one) never run the same sub-run: a sub-run
held by another process is skipped with status "held" and a log line naming the holder;
re-running the sweep later picks it up.

Sharding: `sweep.shard = "i/n"` runs the sub-runs j with j % n == i of the
expanded list; the shards together run every sub-run exactly once. With n > 1 the
analyses (gradient bias, memory) run only with `sweep.stage = "report"`, once all
shards are done; the summary is rebuilt by every shard from what exists.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable

from absl import logging

from rnnvision.ablation import figures, grad_bias, grid, memory, summary
from rnnvision.ablation.grid import (STATUS_FILE, Run, Setting, expand, parse_clips, parse_shard,
                                     parse_truncations, read_status, run_config, settings, shard)
from rnnvision.config_checks import ConfigError
from rnnvision.train import loop, workdir as workdir_lib
from rnnvision.train.lock import WorkdirBusyError, WorkdirLock
from rnnvision.train.writer import write_json

STAGES = ("all", "runs", "report")


# -- running ----------------------------------------------------------------------------

def _checkpoint_step(workdir: str) -> int:
    """The step a (re-)started sub-run resumes from: its latest checkpoint (0 if none)."""
    directory = os.path.join(workdir, "checkpoints")
    steps = [int(d) for d in os.listdir(directory) if d.isdigit()] if os.path.isdir(directory) else []
    return max(steps, default=0)


def run_one(config, run: Run, root: str, measure_memory: bool = False) -> dict[str, Any]:
    """Runs (or resumes) one sub-run; returns and writes its status record.

    A finished or diverged sub-run is not run again. NonFiniteError -> status "diverged";
    a sub-run another process holds -> status "held" (not written: it is not ours).
    """
    workdir = run.workdir(root)
    workdir_lib.create(workdir)
    try:
        with WorkdirLock(workdir) as lock:
            return _run_one_held(config, run, workdir, lock, measure_memory)
    except WorkdirBusyError as e:
        return {"setting": run.setting.name, "seed": run.seed, "status": "held",
                "message": str(e)}


def _run_one_held(config, run: Run, workdir: str, lock: WorkdirLock,
                  measure_memory: bool) -> dict[str, Any]:
    status = read_status(workdir)
    if status.get("status") in ("done", "diverged"):
        return status
    cfg = run_config(config, run)
    record = {"setting": run.setting.name, "study": run.setting.study, "seed": run.seed,
              "truncation": run.setting.truncation, "clip_method": run.setting.clip_method,
              "clip_threshold": run.setting.clip_threshold, "start_step": _checkpoint_step(workdir)}
    t0 = time.time()
    try:
        results = loop.run(cfg, workdir, lock=lock)
        record.update(status="done", final_step=int(results.get("step", cfg.train.num_steps)))
    except loop.NonFiniteError as e:
        record.update(status="diverged", diverged_step=e.step, quantity=e.quantity, message=str(e))
    record["wall_seconds"] = time.time() - t0
    if not _logs_sigma_max(workdir):
        record["sigma_max_history"] = _sigma_max_history(cfg, workdir)
    if measure_memory:
        record["memory"] = _task_memory(cfg)
    write_json(os.path.join(workdir, STATUS_FILE), record)
    return record


def _logs_sigma_max(workdir: str) -> bool:
    from rnnvision.train.writer import read_jsonl

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
    """Compiled memory of the gradient of the sub-run's loss (one device's batch)."""
    import jax

    from rnnvision.tasks import Capability

    task = loop.build_task(cfg)
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
    """Runs this shard's sub-runs in order; returns their status records."""
    runs = shard(expand(config), config.sweep.shard)
    measured: set[str] = set()
    records = []
    for j, run in enumerate(runs):
        first_of_setting = run.setting.name not in measured and config.sweep.measure_memory
        measured.add(run.setting.name)
        record = run_one(config, run, root, measure_memory=first_of_setting)
        outcome = (f"skipped, {record['message']}" if record["status"] == "held" else
                   f"{record['status']} ({record.get('wall_seconds', 0.0):.0f} s)")
        log(f"[{j + 1}/{len(runs)}] {run.setting.name} seed {run.seed}: {outcome}")
        records.append(record)
    return records


def validate(config) -> None:
    """Checks the sweep fields before any compute (ConfigError names the field)."""
    if config.sweep.stage not in STAGES:
        raise ConfigError("sweep.stage", config.sweep.stage, f"one of {STAGES}")
    parse_shard(config.sweep.shard)
    for name in dict.fromkeys(s.study for s in settings(config)):
        study = config.studies[name]
        if not (isinstance(study.seeds, int) and study.seeds >= 1):
            raise ConfigError(f"studies.{name}.seeds", study.seeds, "an integer >= 1")
        try:
            summary.parse_target(study.target)
        except ValueError:
            raise ConfigError(f"studies.{name}.target", study.target,
                                         "'' or '<metric>>=<value>' / '<metric><=<value>'") from None


def use_compilation_cache(directory: str) -> None:
    """JAX's persistent compilation cache in `directory`, unless one is set already.

    Sub-runs of one setting (seeds) compile identical programs, and every sub-run
    compiles the same evaluation and initialisation programs: the cache turns those
    recompilations (most of a short CPU run's time) into disk reads.
    """
    import jax

    if jax.config.jax_compilation_cache_dir:
        return
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)


def main(config, root: str, log: Callable[[str], None] = logging.info) -> list[dict[str, Any]]:
    """The whole command: this shard's runs, then (unsharded, or stage "report") the
    analyses, then figures and summary from whatever exists. Returns the summary rows."""
    validate(config)
    os.makedirs(root, exist_ok=True)
    if config.sweep.compilation_cache:
        use_compilation_cache(os.path.join(root, "jax_cache"))
    write_json(os.path.join(root, "sweep_config.json"), config.to_dict())
    _, num_shards = parse_shard(config.sweep.shard)
    t0 = time.time()
    if config.sweep.stage in ("all", "runs"):
        held = [r for r in run_shard(config, root, log) if r["status"] == "held"]
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
