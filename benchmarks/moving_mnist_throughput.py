r"""Training throughput of the Moving MNIST ConvLSTM: ours against flax.linen.ConvLSTMCell.

    python -m benchmarks.moving_mnist_throughput [--variant=real] [--batch=16] [--repeats=5]
        [--set model.patch=4 ...]

Both sides do the same work, in the same process, timed alternately: one optimizer
step (forward, backward, Adam update; jit-compiled, compilation excluded) of a
stacked ConvLSTM next-frame predictor with the sizes of `configs/moving_mnist.py`
(patch-reshape 64x64x1 -> 16x16x16, the config's layers / channels / kernel, a 1x1
convolution readout, sigmoid, MSE over the T-1 next-frame predictions) on one batch
of generated Moving MNIST sequences, teacher-forced (flax's `nn.RNN` cannot feed
predictions back).

  ours       rnnvision.models.video.VideoPredictor, teacher forcing
  flax       nn.RNN(nn.ConvLSTMCell) layers, same sizes and data
  ours (config mode)  our step in the config's objective.sampling mode (scheduled
             sampling by default: a lax.scan feeding predictions back), for reference

Prints one line per side (sequences / second, median over repeats) and the ratio
ours / flax, then how fast the on-the-fly generator makes training batches
(`MovingMnistTask.train_batch`, one process, numpy) against the fastest training
step: the generator must be the faster, or training would wait on data. Writes
the same as JSON with --out.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks.cli import ArgumentParser, UsageError, apply_sets, run
from configs import moving_mnist as mm_config
from rnnvision.models.video import patchify, unpatchify
from rnnvision.train import build_task


class FlaxConvLSTMPredictor(nn.Module):
    """The same predictor with flax.linen: stacked nn.RNN(ConvLSTMCell), 1x1 conv readout."""

    features: int
    num_layers: int
    kernel_size: int
    patch: int

    @nn.compact
    def __call__(self, frames):  # (B, T, H, W, 1) -> logits of frames 1..T-1
        x = patchify(frames[:, :-1], self.patch)
        for _ in range(self.num_layers):
            x = nn.RNN(nn.ConvLSTMCell(self.features, (self.kernel_size,) * 2))(x)
        logits = nn.Conv(self.patch * self.patch, (1, 1))(x)
        return unpatchify(logits, self.patch, 1)


def _train_step(loss_fn, params, tx):
    """A jitted (params, opt_state, batch, rng) -> (params, opt_state, loss)."""
    @jax.jit
    def step(params, opt_state, batch, rng):
        loss, grads = jax.value_and_grad(loss_fn)(params, batch, rng)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss
    return step, tx.init(params)


def _mse(logits, frames):
    return jnp.mean(jnp.square(jax.nn.sigmoid(logits) - frames[:, 1:]))


def build_steps(task, batch):
    """{name: (step, params, opt_state)} for ours (teacher forcing and config mode) and flax."""
    config = task.config
    tx = optax.adam(1e-3)
    params = task.init_params(jax.random.key(0))
    n = config.data.num_context

    def ours_teacher(params, batch, rng):
        return _mse(task.model.rollout(params, batch["frames"], n, batch["true_prob"], rng,
                                       teacher_forcing=True), batch["frames"])

    def ours_config(params, batch, rng):
        return task.loss(params, batch, rng)[0]

    kernel = int(dict(kv.split("=") for kv in config.model.cell_options.split(","))["kernel_size"])
    flax_model = FlaxConvLSTMPredictor(config.model.hidden_size, config.model.num_layers, kernel,
                                       config.model.patch)
    flax_params = flax_model.init(jax.random.key(0), batch["frames"][:1])

    def flax_loss(params, batch, rng):
        return _mse(flax_model.apply(params, batch["frames"]), batch["frames"])

    steps = {}
    for name, fn, p in [("ours", ours_teacher, params), ("flax", flax_loss, flax_params),
                        (f"ours ({config.objective.sampling})", ours_config, params)]:
        step, opt_state = _train_step(fn, p, tx)
        steps[name] = (step, p, opt_state)
    return steps


def _config(args):
    """configs/moving_mnist.py with --variant, --batch and --set applied; a UsageError (one
    line) naming the argument when one cannot be used."""
    for name, value in (("--batch", args.batch), ("--repeats", args.repeats)):
        if value < 1:
            raise UsageError(f"{name}={value}: must be an integer >= 1")
    if args.out and not os.path.isdir(os.path.dirname(os.path.abspath(args.out))):
        raise UsageError(f"--out={args.out!r}: its directory does not exist")
    try:
        config = mm_config.get_config(args.variant or None)
    except ValueError as e:  # e.g. an unknown variant
        raise UsageError(f"--variant={args.variant!r}: {e}") from None
    config.unlock()
    config.train.batch_size = args.batch
    apply_sets(config, args.set, "configs/moving_mnist.py")
    return config


def main(argv=None) -> dict:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", default="", help="configs/moving_mnist.py variant(s)")
    parser.add_argument("--batch", type=int, default=16, help="sequences per step")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per side")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="config override, e.g. --set model.patch=4 (repeatable)")
    parser.add_argument("--out", default="", help="also write the results as JSON here")
    args = parser.parse_args(argv)
    config = _config(args)
    task = build_task(config)
    batch = jax.tree.map(jnp.asarray, task.train_batch(0, slice(None)))
    steps = build_steps(task, batch)
    state, compile_s = {}, {}
    for name, (step, params, opt_state) in steps.items():  # compile and warm up
        t0 = time.perf_counter()
        state[name] = step(params, opt_state, batch, jax.random.key(0))
        jax.block_until_ready(state[name])
        compile_s[name] = time.perf_counter() - t0
    times = {name: [] for name in steps}
    for r in range(args.repeats):  # alternate, so load changes hit every side alike
        for name, (step, _, _) in steps.items():
            params, opt_state, _ = state[name]
            t0 = time.perf_counter()
            state[name] = step(params, opt_state, batch, jax.random.key(r + 1))
            jax.block_until_ready(state[name])
            times[name].append(time.perf_counter() - t0)
    gen = []
    for r in range(max(args.repeats, 5)):  # fresh stream indices: nothing is cached
        t0 = time.perf_counter()
        task.train_batch(1000 + r, slice(None))
        gen.append(time.perf_counter() - t0)
    m = config.model
    results = {"device": str(jax.devices()[0].device_kind), "batch": args.batch,
               "num_frames": config.data.num_frames, "layers": m.num_layers, "features": m.hidden_size,
               "cell_options": m.cell_options, "patch": m.patch, "repeats": args.repeats,
               "sequences_per_second": {k: args.batch / statistics.median(v) for k, v in times.items()},
               "compile_seconds": compile_s}
    sps = results["sequences_per_second"]
    results["ratio_ours_to_flax"] = sps["ours"] / sps["flax"]
    results["generator_sequences_per_second"] = args.batch / statistics.median(gen)
    for name, value in sps.items():
        print(f"{name:>24s}: {value:8.2f} sequences/s  (median of {args.repeats} steps, "
              f"compile {compile_s[name]:.0f} s)")
    print(f"{'ours / flax':>24s}: {results['ratio_ours_to_flax']:.2f}x  ({results['device']}, "
          f"batch {args.batch}, {m.num_layers}x{m.hidden_size} channels, {m.cell_options})")
    gen_sps = results["generator_sequences_per_second"]
    print(f"{'data generator':>24s}: {gen_sps:8.2f} sequences/s  ({gen_sps / max(sps.values()):.1f}x "
          f"the fastest training step's consumption)")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    run(main, sys.argv[1:])
