r"""Running a sweep's runs: each a normal `rnnvision.train.loop.run` in its own workdir.

Every run's workdir gets `sweep_run.json`, its status record:

    {"status": "running" | "done" | "diverged" | "bad_config" | "error",
     "reason": why it did not finish (the error message), "point": ..., "values": {...},
     "seed": seed index, "config_seed": config.seed, "shard": "i/n",
     "start_step": the checkpoint step this attempt resumed from, "attempts": n,
     "wall_seconds": wall time of loop.run summed over the attempts that returned or
                     raised (a process killed outright loses its attempt's time),
     "num_params": parameters of the model, ...extra fields of an `after_run` hook}

A run is skipped when its record is final: "done", "diverged" (the trainer's
NonFiniteError: a NaN/Inf loss, gradient or update) or "bad_config" (a ConfigError for
this grid point: rerunning would fail the same way). "error" (any other exception,
logged with its traceback) and "running" (the process was killed) run again, resuming
from the run's latest checkpoint. Each run holds its workdir's lock
(`rnnvision.train.lock`) from reading its status record to writing it, so two shards (or
two launches of one sweep) never run the same run: a run held by another process is
skipped with status "held" (not written: the record is the holder's) and a log line
naming the holder; re-running the sweep later picks it up. A SIGTERM/SIGINT stops the sweep after the current
run saved a checkpoint (the trainer's Interrupted); a failed checkpoint save (e.g. a
full disk) and a run workdir holding another config also stop it.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any, Callable, Sequence

import jax
import numpy as np
from absl import logging

from rnnvision.config_checks import ConfigError
from rnnvision.sweep.grid import Run, parse_shard
from rnnvision.sweep.io import read_json, write_json
from rnnvision.train import build_task, loop
from rnnvision.train.checkpoint import CheckpointSaveError
from rnnvision.train.interrupt import Interrupted
from rnnvision.train.lock import WorkdirBusyError, WorkdirLock
from rnnvision.train.workdir import ConfigMismatchError

STATUS_FILE = "sweep_run.json"
FINAL = ("done", "diverged", "bad_config")
FAILED = ("bad_config", "error")
# after_run(config, workdir, record) -> extra fields for the status record
AfterRun = Callable[[Any, str, dict], dict]
Log = Callable[[str], None]


def read_status(workdir: str) -> dict[str, Any]:
    return read_json(os.path.join(workdir, STATUS_FILE))


def checkpoint_step(workdir: str) -> int:
    """The step a (re)started run resumes from: its newest checkpoint directory (0: none)."""
    directory = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(directory):
        return 0
    steps = [int(d) for d in os.listdir(directory) if d.isdigit()]
    return max(steps, default=0)


def parameter_count(config) -> int:
    """Parameters of the config's model, from the shapes of `init_params` (nothing computed)."""
    task = build_task(config)
    shapes = jax.eval_shape(task.init_params, jax.random.key(0))
    return int(sum(np.prod(leaf.shape, dtype=np.int64) for leaf in jax.tree.leaves(shapes)))


def _count(config) -> int | None:
    """parameter_count, or None (with a warning) when it fails: a statistic, never a reason
    to stop the sweep."""
    try:
        return parameter_count(config)
    except Exception as e:  # noqa: BLE001
        logging.warning("counting the parameters of %s failed: %s", config.task, e)
        return None


def _train(config, workdir: str, lock: WorkdirLock) -> dict[str, Any]:
    """loop.run, its outcome as status fields; re-raises what must stop the sweep."""
    try:
        results = loop.run(config, workdir, lock=lock)
        return {"status": "done", "final_step": int(results.get("step", config.train.num_steps))}
    except loop.NonFiniteError as e:
        return {"status": "diverged", "reason": str(e), "diverged_step": e.step,
                "quantity": e.quantity}
    except ConfigError as e:
        return {"status": "bad_config", "reason": str(e), "field": e.field}
    except (Interrupted, CheckpointSaveError, ConfigMismatchError):
        raise
    except Exception as e:  # noqa: BLE001 -- one grid point's failure must not end the sweep
        logging.exception("run %s failed", workdir)
        return {"status": "error", "reason": f"{type(e).__name__}: {e}"}


def run_one(run: Run, config, root: str, *, shard: str = "0/1",
            after_run: AfterRun | None = None, num_params: int | None = None) -> dict[str, Any]:
    """Runs (or resumes, or skips when final) one run; returns its status record
    (status "held", not written, when another process holds the run's workdir)."""
    workdir = run.workdir(root)
    os.makedirs(workdir, exist_ok=True)
    try:
        with WorkdirLock(workdir) as lock:
            return _run_one_held(run, config, workdir, lock, shard, after_run, num_params)
    except WorkdirBusyError as e:
        return {"point": run.point.name, "values": dict(run.point.values), "seed": run.seed,
                "status": "held", "reason": str(e), "wall_seconds": 0.0}


def _run_one_held(run: Run, config, workdir: str, lock: WorkdirLock, shard: str,
                  after_run: AfterRun | None, num_params: int | None) -> dict[str, Any]:
    previous = read_status(workdir)
    if previous.get("status") in FINAL:
        return previous
    record = {"point": run.point.name, "values": dict(run.point.values), "seed": run.seed,
              "config_seed": int(config.seed), "shard": shard,
              "start_step": checkpoint_step(workdir),
              "attempts": previous.get("attempts", 0) + 1}
    spent = previous.get("wall_seconds", 0.0)
    write_json(os.path.join(workdir, STATUS_FILE), {**record, "status": "running",
                                                   "wall_seconds": spent})
    t0 = time.perf_counter()
    try:
        record.update(_train(config, workdir, lock))
    except Interrupted:
        record.update(status="running", wall_seconds=spent + time.perf_counter() - t0)
        write_json(os.path.join(workdir, STATUS_FILE), record)
        raise
    record["wall_seconds"] = spent + time.perf_counter() - t0
    if record["status"] in ("done", "diverged"):
        record["num_params"] = num_params if num_params is not None else _count(config)
        if after_run is not None:
            record.update(after_run(config, workdir, record))
    write_json(os.path.join(workdir, STATUS_FILE), record)
    return record


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "unknown"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return (f"{hours} h {rest // 60} min" if hours else
            f"{rest // 60} min {rest % 60} s" if rest >= 60 else f"{rest} s")


def progress_line(all_runs: Sequence[Run], root: str, mine_done: int, mine_total: int,
                  seconds_per_run: float, last: str) -> str:
    """"sweep: 5/12 runs finished (4 done, 1 diverged); <last>; this shard 2/6, ETA 1 min 3 s"
    (runs finished over the whole sweep, read from the status records of every run; the
    ETA of this shard's remaining runs at this process's mean time per run)."""
    counts: dict[str, int] = {}
    for run in all_runs:
        status = read_status(run.workdir(root)).get("status")
        if status in FINAL or status == "error":
            counts[status] = counts.get(status, 0) + 1
    finished = sum(counts.values())
    detail = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "none yet"
    eta = seconds_per_run * (mine_total - mine_done)
    return (f"sweep: {finished}/{len(all_runs)} runs finished ({detail}); {last}; "
            f"this shard {mine_done}/{mine_total}, ETA {_duration(eta)}")


def run_shard(all_runs: Sequence[Run], config_for: Callable[[Run], Any], root: str, *,
              shard: str = "0/1", log: Log = logging.info,
              after_run: Callable[[Run], AfterRun | None] | None = None) -> list[dict]:
    """Runs this shard's part of `all_runs` in order, logging the whole sweep's progress.

    config_for(run): the run's config; after_run(run): the status hook for that run (or
    None). Runs with a final status are skipped (one line says how many). Returns the
    status records of this shard's runs.
    """
    i, n = parse_shard(shard)
    mine = list(all_runs[i::n])
    todo = [run for run in mine if read_status(run.workdir(root)).get("status") not in FINAL]
    log(f"sweep: {len(all_runs)} runs, {len(mine)} in shard {shard}: "
        f"{len(mine) - len(todo)} finished earlier (skipped), {len(todo)} to run")
    params: dict[str, int] = {}  # per grid point: computed once
    spent, held = 0.0, {}
    for j, run in enumerate(todo):
        log(f"sweep: starting {run.label} ({j + 1}/{len(todo)} of this shard's runs to go)")
        before = read_status(run.workdir(root)).get("wall_seconds", 0.0)
        record = run_one(run, config_for(run), root, shard=shard,
                         after_run=after_run(run) if after_run else None,
                         num_params=params.get(run.point.name))
        if record["status"] == "held":
            held[run.label] = record
            log(f"sweep: skipped {run.label}: {record['reason']}")
            continue
        if record.get("num_params") is not None:
            params[run.point.name] = record["num_params"]
        spent += record["wall_seconds"] - before
        outcome = record["status"] + (f" ({record['reason']})" if record.get("reason") else "")
        log(progress_line(all_runs, root, j + 1, len(todo), spent / (j + 1),
                          f"{run.label}: {outcome} in {_duration(record['wall_seconds'])}"))
    return [held.get(run.label) or read_status(run.workdir(root)) for run in mine]


def use_compilation_cache(directory: str) -> None:
    """JAX's persistent compilation cache in `directory`, unless one is set already.

    The seeds of a grid point compile identical programs, and every run compiles the
    same initialisation and evaluation programs: the cache turns those recompilations
    (most of a short CPU run's time) into disk reads. A process-wide JAX setting.
    """
    if jax.config.jax_compilation_cache_dir:
        return
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)
