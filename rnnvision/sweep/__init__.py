r"""Sweeps and comparisons: many normal runs of an experiment, summarised over seeds.

    python -m experiments.sweep --config=configs/<experiment>.py[:variants] --workdir=DIR \
        --grid=model.cell=lstm,gru --grid=optim.learning_rate=0.001,0.003 --seeds=3 \
        [--shard=i/n] [--config.a.b=value ...]
    python -m experiments.compare DIR_A DIR_B ... [--out=DIR]

  grid.py      axes parsed against the config's field types, points, runs, shards
  manifest.py  DIR/sweep.json: the grid and base config, refused when they change
  runner.py    each run a `rnnvision.train.loop.run` in DIR/runs/<point>/seed<i>, with a
               status record (done / diverged / bad_config / error), progress and ETA
  collect.py   reading run directories (results.json, metrics.jsonl, status records)
  summary.py   summary.csv / summary.md: per point, mean/std/min/max of every result
  figures.py   learning curves with a band over seeds; the main metric with error bars
  plan.py      a sweep of one experiment config: Sweep, run, summarize
  compare.py   any workdirs and sweep directories side by side

The truncated-BPTT ablation (rnnvision/ablation) runs its studies on this machinery.
"""

from rnnvision.sweep.plan import Sweep, run, summarize

__all__ = ["Sweep", "run", "summarize"]
