"""`run(config, workdir)`: the generic training loop every experiment uses.

    train -> (periodic eval, checkpoints, metrics) -> final eval -> results.json, figures

Re-running with the same workdir resumes from the newest checkpoint that verifies
(`rnnvision.train.checkpoint`); at the final step it only evaluates. One run at a time
holds a workdir (`rnnvision.train.lock`). The loop knows nothing of any particular task.
"""

from __future__ import annotations

import importlib
import math
import os
import time
from typing import Any

import jax
import numpy as np
from absl import logging

from rnnvision import tasks
from rnnvision.config_checks import ConfigError
from rnnvision.tasks import Capability, Task
from rnnvision.train import checkpoint, config as config_lib, optim, parallel, state as state_lib
from rnnvision.train import workdir as workdir_lib
from rnnvision.train.interrupt import Interrupted, StopOnSignal
from rnnvision.train.lock import WorkdirLock
from rnnvision.train.progress import Progress
from rnnvision.train.step import make_train_step
from rnnvision.train.writer import MetricWriter, read_jsonl, write_json


class NonFiniteError(FloatingPointError):
    """A loss, gradient or update became NaN/Inf (and train.nonfinite is "stop")."""

    def __init__(self, step: int, quantity: str, value: float, last_checkpoint: int | None):
        kept = (f"The last checkpoint (step {last_checkpoint}) is intact" if last_checkpoint
                else "No checkpoint was saved")
        super().__init__(f"step {step}: non-finite {quantity} ({value}); stopping. {kept}. "
                         "Lower optim.learning_rate, clip gradients (optim.clip.method), or "
                         "skip such updates with --config.train.nonfinite=skip.")
        self.step, self.quantity = step, quantity


def import_extra_modules(names: str) -> None:
    """Imports the comma-separated modules of config.extra_imports (e.g. custom cells)."""
    for name in filter(None, (n.strip() for n in names.split(","))):
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise ConfigError("extra_imports", name, f"an importable module ({e})") from None


def build_task(config) -> Task:
    """The task named by config.task, its models running with the TimeLoop of config.train."""
    return tasks.build(config, config_lib.time_loop(config))


def run(config, workdir: str, lock: WorkdirLock | None = None) -> dict[str, Any]:
    """Trains (or resumes) and evaluates; returns the final results dict."""
    return train_and_evaluate(config, workdir, lock)[1]


def train_and_evaluate(config, workdir: str, lock: WorkdirLock | None = None
                       ) -> tuple[state_lib.TrainState, dict[str, Any]]:
    """`run`, also returning the final TrainState (on the host).

    The workdir is held (`rnnvision.train.lock`) for the whole run, from before the
    task loads its data, so a second run on it is refused at once; `lock`: one the
    caller already holds on `workdir` (the sweep's), used instead of taking it again.
    """
    import_extra_modules(config.extra_imports)
    parallel.initialize_distributed(config.distributed)
    dp = parallel.DataParallel()
    config_lib.validate(config, dp.num_global)
    is_main = dp.process_index == 0
    with workdir_lib.hold(workdir, is_main, dp.process_count, held=lock):
        task = build_task(config)
        return _resume_and_run(config, workdir, task, dp, is_main)


def _resume_and_run(config, workdir: str, task: Task, dp: parallel.DataParallel, is_main: bool):
    """Checks the workdir against the config, restores the newest verified checkpoint,
    trains and evaluates. config.json is written only once every check has passed."""
    workdir_lib.check_config(workdir, config.to_dict(), config.train.force_resume,
                             safe=workdir_lib.RESUME_SAFE + tuple(task.resume_safe_fields))
    task.attach_workdir(workdir, is_main)
    tx = optim.make_optimizer(config.optim, config.train.num_steps)
    rng = jax.random.key(config.seed)
    stream = initial_stream(task, dp, config.train.batch_size)
    train_state = state_lib.create(task.init_params(jax.random.fold_in(rng, 0)), tx, stream)
    ckpt = checkpoint.Checkpointer(workdir, config.train.keep_checkpoints, write=is_main,
                                   process_count=dp.process_count)
    try:
        start, train_state = ckpt.restore_latest(train_state, config.train.restart_if_corrupt)
        if start:
            logging.warning("resuming from the checkpoint at step %d in %s", start, ckpt.directory)
        if is_main:
            workdir_lib.write_config(workdir, config.to_dict())
        writer = MetricWriter(workdir, resume_step=start, enabled=is_main)
        apply = dp.make_apply()
        try:
            trained = start < config.train.num_steps
            if trained:
                train_state = _train(config, task, dp, tx, rng, train_state, start, ckpt, writer,
                                     apply)
            # A re-run of a finished workdir only evaluates: results.json and figures are
            # rewritten, and metrics.jsonl gets the final eval row only if it lacks it (the
            # run that saved the last checkpoint was killed before writing it).
            final_writer = writer if trained or not _has_eval_row(writer.rows, start) else None
            results = _final_eval(task, train_state, apply, workdir, final_writer, is_main)
        finally:
            writer.close()
    finally:
        ckpt.close()
    return train_state, results


def initial_stream(task: Task, dp: parallel.DataParallel, global_batch_size: int):
    """A streaming task's initial state, one copy per local device (None otherwise)."""
    if not task.has(Capability.STREAMING):
        return None
    stream = task.init_stream(global_batch_size // dp.num_global)
    if dp.process_count > 1:
        raise NotImplementedError(
            "streaming tasks (state carried across steps) run on one host with any number of "
            "local devices; multi-host streaming checkpoints are not supported")
    return dp.stack_per_device(stream)


def _train(config, task, dp, tx, rng, train_state, start, ckpt, writer, apply):
    cfg = config.train
    streaming = task.has(Capability.STREAMING)
    step_fn = make_train_step(task.stream_loss if streaming else task.loss, tx,
                              optim.make_clipper(config.optim.clip), parallel.AXIS,
                              streaming=streaming)
    p_step = dp.pmap_train_step(step_fn)
    rep_state = dp.place_state(train_state)
    rep_rng = dp.replicate(jax.random.key_data(jax.random.fold_in(rng, 1)))
    rows = dp.process_rows(cfg.batch_size)
    window: list[dict] = []
    last_saved = start or None
    with StopOnSignal() as stop, Progress(cfg.num_steps, start, cfg.progress and dp.process_index == 0) as bar:
        for step in range(start + 1, cfg.num_steps + 1):
            batch = dp.shard(task.train_batch(step - 1, rows))
            rep_state, metrics = p_step(rep_state, batch, rep_rng)
            metrics = jax.tree.map(lambda m: float(np.asarray(m)[0]), metrics)
            _check_finite(metrics, step, cfg.nonfinite, last_saved, writer)
            window.append(metrics)
            bar.update(step, metrics["loss"])
            if step % cfg.log_every == 0 or step == cfg.num_steps:
                writer.write(step, _summarize(window, bar.steps_per_second()))
                window = []
            if cfg.eval_every and step % cfg.eval_every == 0 and step < cfg.num_steps:
                params = dp.unreplicate(rep_state.params)
                writer.write(step, {f"eval/{k}": v for k, v in task.evaluate(params, apply).items()})
            signum = stop.signum  # read once: a signal arriving after this is seen next step
            if step % cfg.checkpoint_every == 0 or step == cfg.num_steps or signum:
                ckpt.save(step, dp.host_state(rep_state))
                last_saved = step
            if signum:
                writer.flush()
                raise Interrupted(signum, step)
    return dp.host_state(rep_state)


def _check_finite(metrics: dict, step: int, policy: str, last_saved, writer) -> None:
    if metrics["finite"]:
        if not math.isfinite(metrics["param_norm"]):  # the step kept only finite parameters
            logging.log_every_n_seconds(
                logging.WARNING, "step %d: the parameters are finite but their global norm "
                "exceeds the float32 range (~3.4e38), so param_norm is logged as inf: the run "
                "is diverging (lower optim.learning_rate, or clip)", 60, step)
        return
    if not math.isfinite(metrics["loss"]):
        quantity, value = "loss", metrics["loss"]
    elif not math.isfinite(metrics["grad_norm"]):
        quantity, value = "gradient (global norm)", metrics["grad_norm"]
    else:  # the step also refuses a non-finite update and overflowing parameters
        quantity = "update or updated parameters (update global norm)"
        value = metrics["update_norm"]
    if policy == "skip":
        logging.warning("step %d: non-finite %s (%s); update skipped", step, quantity, value)
        return
    writer.write(step, metrics)
    writer.flush()
    raise NonFiniteError(step, quantity, value, last_saved)


def _has_eval_row(rows: list[dict], step: int) -> bool:
    return any(r.get("step") == step and any(k.startswith("eval/") for k in r) for r in rows)


def _summarize(window: list[dict], steps_per_second: float) -> dict:
    """Means over the logging window; `clipped` becomes the fraction of steps clipped."""
    out = {k: float(np.mean([m[k] for m in window])) for k in window[0]}
    out["skipped"] = float(sum(1 - m["finite"] for m in window))
    out.pop("finite")
    out["steps_per_second"] = steps_per_second
    return out


def _final_eval(task, train_state, apply, workdir, writer, is_main) -> dict:
    step = int(train_state.step)
    t0 = time.time()
    results = task.evaluate(train_state.params, apply)
    results = {**results, "step": step, "skipped_updates": int(train_state.num_skipped),
               "eval_seconds": time.time() - t0}
    if is_main:
        if writer is not None:
            writer.write(step, {f"eval/{k}": v for k, v in results.items() if k != "step"})
            writer.flush()
        write_json(os.path.join(workdir, "results.json"), results)
        history = read_jsonl(os.path.join(workdir, "metrics.jsonl"))
        figures = task.figures(train_state.params, apply, os.path.join(workdir, "figures"), history)
        logging.info("figures: %s", figures)
    return results
