r"""How much of the trainer's time is the compiled step: efficiency = pure / marginal.

    python -m benchmarks.trainer_efficiency [--config=smoke|default] [--runs=2]
        [--steps=N] [--set train.parallel=pmap ...] [--out=FILE.json]

Both sides run in one process, interleaved window by window, so that load from other
processes on the machine hits both alike:

  trainer   `rnnvision.train.loop.train_and_evaluate` on the config, a whole run in a
            fresh workdir. Every `train.log_every` (100) steps it writes a summary row
            once the window's last step has finished; the time between two rows (minus
            the burst below, plus the row's own writing) is the trainer's time for
            those steps: its marginal step time, start-up, compilation, the first
            `--skip` windows and the final checkpoint and evaluation left out.
  pure      at each row, a burst of the same number of steps of the compiled training
            step alone (`make_train_step`, jit, state donated) dispatched back to back
            on batches already on the device, waited for once at the end.

efficiency = pure / trainer per window; the median over the windows of `--runs` runs is
the figure, with its quartiles and range as the spread.

Configs (`configs/row_mnist.py`):
  smoke     the `smoke` variant's model and batch (LSTM 16, batch 16, T=28: a step
            of ~0.3 ms on 2 idle CPU cores) with the default config's logging cadence
            (log_every 100) and one checkpoint at the end; 3000 steps.
  default   the default config (LSTM 128, batch 128, log_every 100), evaluation
            and checkpoints only at the end; 1000 steps.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import statistics
import tempfile
import time

import jax

from configs import row_mnist
from rnnvision.config_checks import set_field
from rnnvision.train import build_task, loop, optim, state as state_lib
from rnnvision.train.step import make_train_step
from rnnvision.train.writer import MetricWriter

CONFIGS = {"smoke": ("smoke", 3000), "default": (None, 1000)}  # variant, steps
LOG_EVERY = 100


def make_config(name: str, steps: int, overrides: list[str]):
    variant, _ = CONFIGS[name]
    config = row_mnist.get_config(variant)
    config.unlock()
    config.train.num_steps = steps
    config.train.log_every = LOG_EVERY
    config.train.eval_every = 0
    config.train.checkpoint_every = steps
    config.train.progress = False
    for item in overrides:
        key, value = item.split("=", 1)
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            pass
        set_field(config, key, value)
    return config


class PureStep:
    """The trainer's compiled step on one device, on ready batches (built once)."""

    def __init__(self, config, num_batches: int = 8):
        task = build_task(config)
        tx = optim.make_optimizer(config.optim, config.train.num_steps)
        step = make_train_step(task.loss, tx, optim.make_clipper(config.optim.clip))
        self.step = jax.jit(step, donate_argnums=(0,))
        params = task.init_params(jax.random.key(config.seed))
        self.state = state_lib.create(params, tx)
        rows = slice(0, config.train.batch_size)
        self.batches = [jax.device_put(task.train_batch(i, rows)) for i in range(num_batches)]
        self.rng = jax.random.key(1)
        self.time(20)  # compile and warm up

    def time(self, steps: int) -> float:
        """Seconds per step, `steps` steps dispatched back to back."""
        state = self.state
        t0 = time.perf_counter()
        for i in range(steps):
            state, metrics = self.step(state, self.batches[i % len(self.batches)], self.rng)
        jax.block_until_ready((state, metrics))
        elapsed = time.perf_counter() - t0
        self.state = state
        return elapsed / steps


class _InterleavedWriter(MetricWriter):
    """The trainer's MetricWriter, timing the windows between summary rows and running a
    pure-step burst after each (its time is taken out of the trainer's)."""

    pure: PureStep
    log: list

    def write(self, step, metrics):
        t0 = time.perf_counter()
        super().write(step, metrics)
        if "steps_per_second" not in metrics:
            return
        t1 = time.perf_counter()
        pure = self.pure.time(LOG_EVERY)
        self.log.append({"step": step, "row_start": t0, "row_write": t1 - t0,
                         "burst_end": time.perf_counter(), "pure": pure})


def interleaved_run(config, pure: PureStep) -> list[dict]:
    """One trainer run with pure bursts between its windows: [{step, pure, trainer}] in
    seconds per step, for every window after the first."""
    log: list = []
    writer_cls = type("Writer", (_InterleavedWriter,), {"pure": pure, "log": log})
    original, loop.MetricWriter = loop.MetricWriter, writer_cls
    try:
        with tempfile.TemporaryDirectory() as workdir:
            loop.train_and_evaluate(config, workdir)
    finally:
        loop.MetricWriter = original
    windows = []
    for prev, cur in zip(log, log[1:]):
        steps = cur["step"] - prev["step"]
        trainer = (cur["row_start"] - prev["burst_end"] + prev["row_write"]) / steps
        windows.append({"step": cur["step"], "pure": cur["pure"], "trainer": trainer})
    return windows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), default="smoke")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--steps", type=int, default=0, help="trainer steps (0: the config's)")
    parser.add_argument("--skip", type=int, default=2, help="warm-up windows left out")
    parser.add_argument("--set", action="append", default=[], help="field=value")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    steps = args.steps or CONFIGS[args.config][1]
    config = make_config(args.config, steps, args.set)
    pure = PureStep(config)
    windows = []
    for r in range(args.runs):
        run = interleaved_run(config, pure)[args.skip:]
        eff = [w["pure"] / w["trainer"] for w in run]
        print(f"run {r}: {len(run)} windows, efficiency median {statistics.median(eff):.3f} "
              f"(min {min(eff):.3f}, max {max(eff):.3f})", flush=True)
        windows += run
    eff = sorted(w["pure"] / w["trainer"] for w in windows)
    q1, median, q3 = statistics.quantiles(eff, n=4)
    summary = {"config": args.config, "steps": steps, "overrides": args.set,
               "efficiency_median": median, "efficiency_quartiles": [q1, q3],
               "efficiency_range": [eff[0], eff[-1]], "windows": len(eff),
               "pure_ms_median": 1e3 * statistics.median(w["pure"] for w in windows),
               "trainer_ms_median": 1e3 * statistics.median(w["trainer"] for w in windows),
               "load_average": os.getloadavg()}
    print(f"{args.config}: efficiency median {median:.3f} (quartiles {q1:.3f}-{q3:.3f}, range "
          f"{eff[0]:.3f}-{eff[-1]:.3f}; {len(eff)} windows of {LOG_EVERY} steps); pure "
          f"{summary['pure_ms_median']:.3f} ms, trainer {summary['trainer_ms_median']:.3f} ms "
          f"per step (medians); load average {summary['load_average'][0]:.1f}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({**summary, "windows_detail": windows}, f, indent=2)


if __name__ == "__main__":
    main()
