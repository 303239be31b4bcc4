"""The truncated-BPTT and gradient-clipping ablation, built on rnnvision.sweep.

    python -m experiments.tbptt_ablation --config=configs/tbptt_ablation.py --workdir=DIR

  grid.py       each study a sweep grid: truncation k x (clip method, threshold) x seeds
  sweep.py      the command: the studies' runs (rnnvision.sweep's runner), then the analyses
  grad_bias.py  truncated vs full-BPTT gradients: cosine, relative error, contribution by lag
  memory.py     compiled peak memory of a training step: full / truncated / streaming / remat
  summary.py    summary.csv and summary.md rebuilt from whatever runs exist
  figures.py    learning curves, final metric vs k, gradient norms, sigma_max, bias, memory
"""
