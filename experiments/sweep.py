r"""A sweep of any experiment: every grid point x seed a normal run, summarised over seeds.

    python -m experiments.sweep --config=configs/row_mnist.py:smoke --workdir=/tmp/sweep \
        --grid=model.cell=lstm,gru --grid=optim.learning_rate=0.001,0.003 --seeds=3 \
        [--shard=i/n] [--seed_fields=data.train_sequence_seed] [--metric=accuracy] \
        [--config.a.b=value ...]

Each run lives in DIR/runs/<point>/seed<i> (e.g. runs/model.cell=gru,optim.learning_rate=0.003/
seed1) and is a normal run of the experiment; its config is the base config with the
point's values, `seed` = base seed + i and each --seed_fields field offset by i.
Re-running the command continues (finished runs are skipped); a run that diverges or
whose config is refused is recorded with its reason and the sweep goes on. n processes
with --shard=0/n .. n-1/n run every run exactly once; each rebuilds DIR/summary.csv,
DIR/summary.md and DIR/figures/ from what exists when its runs end (--only_summary
rebuilds them without running anything). Exit codes as every experiment (2: a bad
config, grid or workdir, before anything runs; 128+signal: stopped, re-run to continue).
"""

import sys

from absl import flags

from rnnvision import sweep
from rnnvision.sweep import plan
from rnnvision.train import cli, workdir as workdir_lib

_GRID = flags.DEFINE_multi_string("grid", [], "field=v1,v2,... (or f1:f2=a1:a2,b1:b2,...): "
                                  "one axis of the grid; repeat for more axes.")
_SEEDS = flags.DEFINE_integer("seeds", 1, "Runs per grid point, seed indices 0 .. seeds-1.")
_SHARD = flags.DEFINE_string("shard", "0/1", "i/n: run the runs j with j % n == i.")
_SEED_FIELDS = flags.DEFINE_list("seed_fields", [], "Integer config fields offset by the seed "
                                 "index too (e.g. a task's own data-order seed).")
_METRIC = flags.DEFINE_string("metric", "", "The main metric (default: the config's "
                              "eval.main_metric, else loss).")
_ONLY_SUMMARY = flags.DEFINE_bool("only_summary", False, "Rebuild the summary and figures "
                                  "from the runs that exist; run nothing.")
_CACHE = flags.DEFINE_bool("compilation_cache", True, "JAX's persistent compilation cache "
                           "in DIR/jax_cache.")


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _sweep(config, workdir: str) -> str:
    workdir_lib.create(workdir)  # a file or an unwritable path: one line, exit 2
    definition = sweep.Sweep.parse(config, _GRID.value, _SEEDS.value, _SEED_FIELDS.value,
                                   _METRIC.value)
    rows = sweep.run(definition, workdir, shard=_SHARD.value, log=_log,
                     compilation_cache=_CACHE.value, only_summary=_ONLY_SUMMARY.value)
    return plan.outcome_line(rows, workdir)


def _accepts(config) -> str | None:
    if config is not None and config.get("task"):
        return None
    return ("experiments.sweep needs the config of one experiment (with `task`, e.g. "
            "configs/row_mnist.py); the truncated-BPTT ablation runs with "
            "`python -m experiments.tbptt_ablation`")


if __name__ == "__main__":
    cli.run_command(_sweep, _accepts)
