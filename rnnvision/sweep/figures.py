r"""The figures of a sweep or a comparison, from whatever runs exist.

  curves.png       training loss vs step (and the main metric of the periodic
                   evaluations, when runs logged at least two): a line per group, the
                   mean over its seeds, with a band of ± one standard deviation over the
                   seeds logged at each step (diverged runs stop early and leave it)
  final_<metric>.png  the main metric of the final evaluation per group: a bar at the mean
                      over the finished seeds, an error bar of ± one standard deviation,
                      and a dot per seed
"""

from __future__ import annotations

import math
import os
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from rnnvision.sweep.collect import Group  # noqa: E402
from rnnvision.sweep.io import number, write_atomically  # noqa: E402


def save(fig, path: str) -> str:
    """Saves and closes `fig` (atomically: shards may draw the same figure at once)."""
    fig.tight_layout()
    write_atomically(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return path


def run_curve(rows: list[dict], key: str) -> dict[int, float]:
    """{step: value} of a logged quantity (non-finite values dropped)."""
    out = {}
    for r in rows:
        value = number(r.get(key))
        if value is not None and math.isfinite(value):
            out[int(r["step"])] = value
    return out


def band(curves: Sequence[dict[int, float]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(steps, mean, std) over the curves that have each step."""
    steps = np.array(sorted(set().union(*curves)), dtype=np.int64)
    per_step = [[c[s] for c in curves if s in c] for s in steps]
    return (steps, np.array([np.mean(v) for v in per_step]),
            np.array([np.std(v) for v in per_step]))


def _colors(n: int):
    cmap = plt.cm.tab10 if n <= 10 else plt.cm.tab20
    return [cmap(i % cmap.N) for i in range(n)]


def _panels(groups: Sequence[Group], main_metric: str) -> list[tuple[str, str, str]]:
    """(title, key, which rows) of each panel: training loss, and the evaluated main metric
    when some run logged it at two or more steps."""
    panels = [("training loss", "loss", "train")]
    key = f"eval/{main_metric}"
    if any(len(run_curve(r.eval_rows, key)) >= 2 for g in groups for r in g.runs):
        panels.append((f"evaluation {main_metric}", key, "eval"))
    return panels


def curves(groups: Sequence[Group], main_metric: str, path: str) -> str | None:
    panels = _panels(groups, main_metric)
    fig, axes = plt.subplots(1, len(panels), figsize=(5.6 * len(panels), 3.9), squeeze=False)
    drawn = False
    for ax, (title, key, which) in zip(axes[0], panels):
        low, high = math.inf, 0.0
        for group, color in zip(groups, _colors(len(groups))):
            runs = [run_curve(r.train_rows if which == "train" else r.eval_rows, key)
                    for r in group.runs]
            runs = [c for c in runs if c]
            if not runs:
                continue
            steps, mean, std = band(runs)
            ax.plot(steps, mean, color=color, lw=1.6, label=f"{group.label} ({len(runs)})")
            ax.fill_between(steps, mean - std, mean + std, color=color, alpha=0.2, lw=0)
            low, high = min(low, float(np.min(mean - std))), max(high, float(np.max(mean + std)))
            drawn = True
        if key == "loss" and drawn and low > 0 and high > 10 * low:  # a decade or more
            ax.set_yscale("log")
        ax.set_title(f"{title}: mean ± std over seeds", fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    if not drawn:
        plt.close(fig)
        return None
    axes[0, 0].legend(fontsize=6)
    return save(fig, path)


def metric_bars(groups: Sequence[Group], main_metric: str, path: str) -> str | None:
    values = [[r.results[main_metric] for r in g.runs
               if r.status == "done" and main_metric in r.results] for g in groups]
    if not any(values):
        return None
    fig, ax = plt.subplots(figsize=(max(4.5, 0.9 * len(groups) + 1.5), 4.0))
    x = np.arange(len(groups))
    means = [np.mean(v) if v else np.nan for v in values]
    stds = [np.std(v) if v else np.nan for v in values]
    ax.bar(x, means, yerr=stds, capsize=4, color=_colors(len(groups)), alpha=0.75)
    for i, v in enumerate(values):
        ax.plot([i] * len(v), v, "k.", ms=5)
    ax.set_xticks(x, [g.label.replace(",", ",\n") for g in groups], fontsize=7)
    ax.set_ylabel(f"final {main_metric}")
    ax.set_title(f"{main_metric}: mean ± std over seeds (dots: seeds)", fontsize=9)
    ax.grid(alpha=0.3, axis="y")
    return save(fig, path)


def write_all(groups: Sequence[Group], main_metric: str, outdir: str) -> list[str]:
    """Every figure the existing runs allow, in `outdir`; returns their paths."""
    os.makedirs(outdir, exist_ok=True)
    safe_name = main_metric.replace("/", "_")
    paths = [curves(groups, main_metric, os.path.join(outdir, "curves.png")),
             metric_bars(groups, main_metric, os.path.join(outdir, f"final_{safe_name}.png"))]
    return [p for p in paths if p]
