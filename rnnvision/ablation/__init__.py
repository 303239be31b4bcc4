"""The truncated-BPTT and gradient-clipping ablation.

    python -m experiments.tbptt_ablation --config=configs/tbptt_ablation.py --workdir=DIR

  sweep.py      the grid (studies x truncation k x clipping x seeds), sharding, sub-runs
  grad_bias.py  truncated vs full-BPTT gradients: cosine, relative error, contribution by lag
  memory.py     compiled peak memory of a training step: full / truncated / streaming / remat
  summary.py    summary.csv and summary.md rebuilt from whatever sub-workdirs exist
  figures.py    learning curves, final metric vs k, gradient norms, sigma_max, bias, memory
"""
