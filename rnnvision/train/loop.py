"""`run(config, workdir)`: the generic training loop every experiment uses.

    train -> (periodic eval, checkpoints, metrics) -> final eval -> results.json, figures

Re-running with the same workdir resumes from the newest checkpoint that verifies
(`rnnvision.train.checkpoint`); at the final step it only evaluates. One run at a time
holds a workdir (`rnnvision.train.lock`). The loop knows nothing of any particular task.
"""

from __future__ import annotations

import collections
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
from rnnvision.train import window, workdir as workdir_lib
from rnnvision.train.interrupt import Interrupted, StopOnSignal
from rnnvision.train.lock import WorkdirLock
from rnnvision.train.prefetch import Prefetcher
from rnnvision.train.profiling import StepProfiler
from rnnvision.train.progress import Progress
from rnnvision.train.step import make_train_step
from rnnvision.train.writer import MetricWriter, read_jsonl, write_json

PREFETCH_BATCHES = 2      # batches built and placed on the devices ahead of their step
MAX_STEPS_IN_FLIGHT = 4   # steps dispatched but not finished before the host waits


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
    dp = parallel.make(config.train.parallel)
    config_lib.validate(config, dp.num_global)
    is_main = dp.process_index == 0
    with workdir_lib.hold(workdir, is_main, dp.process_count, held=lock):
        task = build_task(config)
        return _resume_and_run(config, workdir, task, dp, is_main)


def _resume_and_run(config, workdir: str, task: Task, dp: parallel.DataParallel, is_main: bool):
    """Checks the workdir against the config, restores the newest verified checkpoint,
    trains and evaluates. config.json is written only once every check has passed."""
    workdir_lib.check_config(workdir, config.to_dict(), config.train.force_resume,
                             safe=workdir_lib.RESUME_SAFE + config_lib.RESUME_SAFE
                             + tuple(task.resume_safe_fields))
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
                                     apply, workdir)
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


def _train(config, task, dp, tx, rng, train_state, start, ckpt, writer, apply, workdir):
    """Steps start+1 .. num_steps. The host never waits for a step: batches are built and
    placed ahead by a thread, and metrics stay on the device until a read-back (every
    log_every steps, and before an evaluation, a checkpoint or a stop), where the
    non-finite policy is applied to every step since the previous one."""
    cfg = config.train
    rows = dp.process_rows(cfg.batch_size)

    def load(step: int) -> dict:
        with jax.profiler.TraceAnnotation("train_batch"):
            return dp.put_batch(task.train_batch(step - 1, rows))

    host = _HostWindow(cfg, writer, start)
    device = None
    with Prefetcher(load, range(start + 1, cfg.num_steps + 1), PREFETCH_BATCHES) as batches, \
            StopOnSignal() as stop, StepProfiler(cfg.profile_steps, workdir, dp.process_index,
                                                 dp.process_count) as profiler, \
            Progress(cfg.num_steps, start, cfg.progress and dp.process_index == 0) as bar:
        for step, batch in batches:
            if device is None:  # compiled for the shapes of the first batch
                device = _DeviceSteps(config, task, dp, tx, rng, train_state, batch)
            with profiler.step(step):
                device.run(batch)
            profiler.after(step, device.state)
            signum = stop.signum  # read once: a signal arriving after this is seen next step
            evaluate = cfg.eval_every and step % cfg.eval_every == 0 and step < cfg.num_steps
            save = step % cfg.checkpoint_every == 0 or step == cfg.num_steps or signum
            # The first step is read back too: the progress line after it (compilation
            # included) tells a user at once that the run is alive.
            if save or evaluate or step % cfg.log_every == 0 or step == start + 1:
                host.take(step, device.read(step), bar)
            if evaluate:
                params = dp.host_params(device.state.params)
                writer.write(step, {f"eval/{k}": v for k, v in task.evaluate(params, apply).items()})
            if save:
                ckpt.save(step, dp.host_state(device.state))
                host.last_saved = step
            if signum:
                writer.flush()
                raise Interrupted(signum, step)
    return dp.host_state(device.state)


class _DeviceSteps:
    """The compiled train step, the state on the devices and the metrics buffer.

    `run` dispatches a step without waiting for it (at most MAX_STEPS_IN_FLIGHT steps are
    queued, so the host cannot run far ahead and hold many batches); `read` waits for
    the last step and returns the metrics of the steps since the previous read.
    """

    def __init__(self, config, task, dp, tx, rng, train_state, first_batch):
        streaming = task.has(Capability.STREAMING)
        step_fn = make_train_step(task.stream_loss if streaming else task.loss, tx,
                                  optim.make_clipper(config.optim.clip),
                                  dp.step_axis(streaming), streaming=streaming)
        self.dp = dp
        self.state = dp.place_state(train_state)
        self.rng = dp.replicate(jax.random.key_data(jax.random.fold_in(rng, 1)))
        shapes = dp.metric_shapes(step_fn, streaming, self.state, first_batch, self.rng)
        self.names, self.size = sorted(shapes), config.train.log_every
        self.buffer = dp.replicate(window.empty(len(self.names), self.size))
        record = window.recorder(self.names, self.size)
        self._run = dp.compile_train_step(step_fn, streaming, record, self.state)
        self.step = self._read = int(train_state.step)
        self._in_flight: collections.deque = collections.deque()

    def run(self, batch: dict) -> None:
        self.state, self.buffer, done = self._run(self.state, self.buffer, batch, self.rng)
        self.step += 1
        self._in_flight.append(done)
        if len(self._in_flight) > MAX_STEPS_IN_FLIGHT:
            self._in_flight.popleft().block_until_ready()

    def read(self, step: int) -> list[dict[str, float]]:
        """The metrics of steps (previous read, step] (`step` is the last one run)."""
        assert step == self.step, (step, self.step)
        rows = self.dp.read(self.buffer)
        self._in_flight.clear()
        steps, self._read = range(self._read + 1, step + 1), step
        return window.per_step(rows, self.names, steps)


class _HostWindow:
    """The host side of the metrics: per-step non-finite checks and summary rows."""

    def __init__(self, cfg, writer: MetricWriter, start: int):
        self.cfg, self.writer = cfg, writer
        self.last_saved = start or None
        self._next = start + 1  # the first step not yet taken
        self._window: list[dict] = []

    def take(self, step: int, metrics: list[dict], bar: Progress) -> None:
        """Checks and collects the metrics of steps _next..step; writes a summary row at a
        logging step."""
        for s, m in zip(range(self._next, step + 1), metrics, strict=True):
            _check_finite(m, s, self.cfg.nonfinite, self.last_saved, self.writer)
            self._window.append(m)
        self._next = step + 1
        bar.update(step, metrics[-1]["loss"])
        if step % self.cfg.log_every == 0 or step == self.cfg.num_steps:
            self.writer.write(step, window.summarize(self._window, bar.steps_per_second()))
            self._window = []


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
