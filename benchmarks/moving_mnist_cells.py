r"""Training-step cost of the Moving-MNIST predictors: ConvLSTM, PredRNN, PredRNN++.

    python -m benchmarks.moving_mnist_cells [--variant=real] [--models=conv_lstm,predrnn,predrnn_pp]
        [--set FIELD=VALUE ...] [--repeats=10] [--out=FILE.json]

Each model is `configs/moving_mnist.py` with its variant (none for the ConvLSTM,
`predrnn`, `predrnn_pp`, `predrnn_v2`) plus --variant, i.e. the CPU sizes by default,
and the --set overrides (e.g. `--set train.batch_size=8`) applied to every model.
Each model's step is the trainer's own compiled step (`benchmarks.trainer_efficiency.
PureStep`: the config's loss in its sampling mode, backward, clipping, optimizer; state
donated; compilation and 20 warm-up steps excluded) on ready batches, timed alternately in
one process, so that a change of load hits every model alike: the ratios are what to
read on a shared machine. Prints the median step time of each model, its sequences per
second and its ratio to the first; an equal wall-clock budget of N ConvLSTM steps is
N / ratio steps of a model.
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import jax

from benchmarks.cli import ArgumentParser, UsageError, apply_sets, run
from benchmarks.trainer_efficiency import PureStep
from configs import moving_mnist as mm_config

MODEL_VARIANTS = {"conv_lstm": "", "predrnn": "predrnn", "predrnn_pp": "predrnn_pp",
                  "predrnn_v2": "predrnn_v2"}


def main(argv=None) -> dict:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", default="real", help="variant(s) added to every model's")
    parser.add_argument("--models", default="conv_lstm,predrnn,predrnn_pp",
                        help=f"comma-separated, from {sorted(MODEL_VARIANTS)}; the first is the reference")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="config override for every model, e.g. --set train.batch_size=8")
    parser.add_argument("--repeats", type=int, default=10, help="timed steps per model")
    parser.add_argument("--out", default="", help="also write the results as JSON here")
    args = parser.parse_args(argv)
    models = [m for m in args.models.split(",") if m]
    unknown = [m for m in models if m not in MODEL_VARIANTS]
    if unknown or not models:
        raise UsageError(f"--models={args.models!r}: choose from {sorted(MODEL_VARIANTS)}")
    if args.repeats < 1:
        raise UsageError(f"--repeats={args.repeats}: give at least 1")
    pure, compile_s, params_n, batch = {}, {}, {}, {}
    for name in models:
        variants = ",".join(v for v in (MODEL_VARIANTS[name], args.variant) if v)
        try:
            config = mm_config.get_config(variants or None)
        except ValueError as e:  # an unknown variant
            raise UsageError(f"--variant={args.variant!r}: {e}") from None
        apply_sets(config, args.set, "configs/moving_mnist.py")
        batch[name] = config.train.batch_size
        t0 = time.perf_counter()
        pure[name] = PureStep(config)  # compiles and runs 20 warm-up steps
        compile_s[name] = time.perf_counter() - t0
        params_n[name] = sum(x.size for x in jax.tree.leaves(pure[name].state.params))
    times = {name: [] for name in models}
    for _ in range(args.repeats):  # alternate, so load changes hit every model alike
        for name in models:
            times[name].append(pure[name].time(1))
    median = {name: statistics.median(t) for name, t in times.items()}
    seq_per_s = {name: batch[name] / median[name] for name in models}
    results = {"device": str(jax.devices()[0].device_kind), "variant": args.variant,
               "sets": list(args.set), "repeats": args.repeats, "step_seconds": median,
               "sequences_per_second": seq_per_s, "parameters": params_n,
               "ratio_to_first": {n: median[n] / median[models[0]] for n in models},
               "compile_and_warmup_seconds": compile_s}
    for name in models:
        print(f"{name:>12s}: {median[name] * 1e3:8.1f} ms/step  {seq_per_s[name]:6.1f} seq/s  "
              f"{results['ratio_to_first'][name]:.2f}x "
              f"{models[0]}  ({params_n[name]:,} parameters, compile + warm-up {compile_s[name]:.0f} s)")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    run(main, sys.argv[1:])
