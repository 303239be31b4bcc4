r"""The ablation's figures, in DIR/figures/, from whatever runs and analyses exist.

  curves_<study>.png       training loss (and the study's metric) vs step: a panel per
                           clipping setting, a line per truncation k (mean over seeds)
  final_vs_k_<study>.png   final evaluation metric vs k (mean ± std over seeds), a line
                           per clipping setting; x marks settings with diverged runs
  grad_norms_<study>.png   distribution of the logged gradient norms per setting
  sigma_max_<study>.png    largest singular value of the recurrent kernel over training
  grad_bias.png            cosine / relative error of truncated vs full gradient vs k, and
                           the full gradient's share by time lag
  memory.png               compiled peak memory of a training step vs sequence length
"""

from __future__ import annotations

import math
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from rnnvision.ablation import grid, summary  # noqa: E402
from rnnvision.sweep.collect import seed_dirs  # noqa: E402
from rnnvision.sweep.figures import save  # noqa: E402


def _k_order(label: str) -> float:
    return math.inf if label == "full" else float(label)


def _by_k(settings) -> list:
    return sorted(settings, key=lambda s: _k_order(s.k_label))


def _curve(run: dict, key: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of a logged training quantity of one run (non-finite values dropped)."""
    points = [(r["step"], summary._number(r.get(key))) for r in run["rows"]]
    points = [(t, v) for t, v in points if math.isfinite(v)]
    return (np.array([p[0] for p in points]), np.array([p[1] for p in points])) if points else (
        np.array([]), np.array([]))


def _plot_runs(ax, runs: list[dict], key: str, color, label: str) -> bool:
    """One thin line per seed and a thick mean over the seeds that logged each step
    (no mean where a seed diverged: its curve stops early and would skew it)."""
    curves = [c for c in (_curve(run, key) for run in runs) if len(c[0])]
    if not curves:
        return False
    diverged = any(run["status"] == "diverged" for run in runs)
    for i, (steps, values) in enumerate(curves):
        ax.plot(steps, values, color=color, lw=1.0 if diverged else 0.7,
                alpha=0.8 if diverged else 0.35, label=label if diverged and i == 0 else None)
    if diverged:
        return True
    steps = sorted(set().union(*(set(c[0].tolist()) for c in curves)))
    mean = [np.mean([v[list(t_).index(t)] for t_, v in curves if t in t_]) for t in steps]
    ax.plot(steps, mean, color=color, lw=1.8, label=label)
    return True


def _study_runs(config, root: str, study: str) -> dict:
    """{setting: [collected runs]} for the study's settings that have run directories."""
    out = {}
    for setting in grid.settings(config):
        if setting.study != study:
            continue
        runs = [summary.collect_run(d)
                for d in seed_dirs(os.path.join(root, "runs", setting.name))]
        if runs:
            out[setting] = runs
    return out


def learning_curves(study: str, runs: dict, metric: str, path: str) -> str:
    clips = list(dict.fromkeys(s.clip_label for s in runs))
    keys = ["loss"] + ([metric] if metric != "loss" else [])
    fig, axes = plt.subplots(len(keys), len(clips), figsize=(4.2 * len(clips), 3.2 * len(keys)),
                             squeeze=False)
    ks = sorted({s.k_label for s in runs}, key=_k_order)
    colors = {k: plt.cm.viridis(i / max(len(ks) - 1, 1)) for i, k in enumerate(ks)}
    for j, clip in enumerate(clips):
        for setting in _by_k(s for s in runs if s.clip_label == clip):
            diverged = sum(r["status"] == "diverged" for r in runs[setting])
            label = f"k={setting.k_label}" + (f" ({diverged} diverged)" if diverged else "")
            for i, key in enumerate(keys):
                _plot_runs(axes[i, j], runs[setting], key, colors[setting.k_label], label)
        for i, key in enumerate(keys):
            axes[i, j].set_title(f"{study}: {key} (clip {clip})", fontsize=9)
            axes[i, j].set_xlabel("step")
            axes[i, j].grid(alpha=0.3)
            if key == "loss":
                axes[i, j].set_yscale("log")
        axes[0, j].legend(fontsize=7)
    return save(fig, path)


def final_vs_k(study: str, runs: dict, metric: str, path: str) -> str:
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ks = sorted({s.k_label for s in runs}, key=_k_order)
    pos = {k: i for i, k in enumerate(ks)}
    for clip in dict.fromkeys(s.clip_label for s in runs):
        xs, means, stds, bad = [], [], [], []
        for setting in _by_k(s for s in runs if s.clip_label == clip):
            values = [summary._number(r["results"].get(metric)) for r in runs[setting]
                      if r["status"] == "done"]
            values = [v for v in values if math.isfinite(v)]
            if any(r["status"] == "diverged" for r in runs[setting]):
                bad.append(pos[setting.k_label])
            if values:
                xs.append(pos[setting.k_label])
                means.append(np.mean(values))
                stds.append(np.std(values))
        color = None
        if xs:
            color = ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3,
                                label=f"clip {clip}")[0].get_color()
        if bad:  # at the bottom of the axes, whatever the metric's scale
            ax.plot(bad, [0.04] * len(bad), "x", color=color, ms=10, mew=2,
                    transform=ax.get_xaxis_transform(), label=f"diverged (clip {clip})")
    ax.set_xticks(range(len(ks)), ks)
    ax.set_xlabel("truncation k")
    ax.set_ylabel(f"final eval {metric}")
    ax.set_title(f"{study}: final {metric} vs k", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save(fig, path)


def grad_norms(study: str, runs: dict, path: str) -> str:
    settings = sorted(runs, key=lambda s: (s.clip_label, _k_order(s.k_label)))
    data, labels = [], []
    for s in settings:
        values = np.array([v for r in runs[s] for v in r["grad_norms"]], float)
        values = values[np.isfinite(values) & (values > 0)]
        data.append(np.log10(values) if len(values) else np.array([np.nan]))
        diverged = sum(r["status"] == "diverged" for r in runs[s])
        labels.append(f"k={s.k_label}\n{s.clip_label}" + (f"\n{diverged} div." if diverged else ""))
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(settings)), 3.8))
    ax.boxplot([d[np.isfinite(d)] if np.isfinite(d).any() else [0.0] for d in data],
               tick_labels=labels, showfliers=True)
    ax.set_ylabel("log10 gradient norm (logged, before clipping)")
    ax.set_title(f"{study}: gradient-norm distribution per setting", fontsize=10)
    ax.tick_params(axis="x", labelsize=7)
    ax.grid(alpha=0.3)
    return save(fig, path)


def sigma_max(study: str, runs: dict, path: str) -> str | None:
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    drawn = False
    settings = sorted(runs, key=lambda s: (s.clip_label, _k_order(s.k_label)))
    for i, s in enumerate(settings):
        color = plt.cm.tab10(i % 10)
        drawn |= _plot_runs(ax, runs[s], "recurrent_sigma_max", color, f"k={s.k_label}, {s.clip_label}")
    if not drawn:
        plt.close(fig)
        return None
    ax.axhline(1.0, color="k", lw=0.8, ls="--")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("σ_max of W_h's gate blocks")
    ax.set_title(f"{study}: largest singular value of the recurrent kernel\n"
                 "(> 1: gradients tend to explode, < 1: to vanish)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    return save(fig, path)


def grad_bias_figure(root: str, path: str) -> str | None:
    rows = summary.read_csv(os.path.join(root, "grad_bias", "grad_bias.csv"))
    lags = summary.read_csv(os.path.join(root, "grad_bias", "lags.csv"))
    if not rows:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    steps = list(dict.fromkeys(r["step"] for r in rows))
    colors = {s: plt.cm.plasma(i / max(len(steps) - 1, 1) * 0.85) for i, s in enumerate(steps)}
    num = lambda r, key: summary._number(r.get(key))
    for step in steps:
        sub = [r for r in rows if r["step"] == step]
        k = [int(r["k"]) for r in sub]
        lag_rows = [r for r in lags if r["step"] == step and int(r["lag"]) > 0]
        if lag_rows:  # the sliding window for every k = 1 .. T (line), unroll's windows (markers)
            ks = [int(r["lag"]) for r in lag_rows] + [len(lag_rows) + 1]
            axes[0].plot(ks, [num(r, "cosine_sliding") for r in lag_rows] + [1.0],
                         color=colors[step], lw=1.2, label=f"step {step}: sliding window")
            axes[1].plot(ks, [num(r, "beyond") for r in lag_rows] + [0.0], color=colors[step],
                         lw=1.2, label=f"step {step}: sliding window")
        axes[0].plot(k, [num(r, "cosine") for r in sub], "o", color=colors[step], ms=5,
                     mfc="none", label=f"step {step}: unroll(truncation=k)")
        axes[1].plot(k, [num(r, "relative_error") for r in sub], "o", color=colors[step], ms=5,
                     mfc="none")
        all_lags = [r for r in lags if r["step"] == step]
        if all_lags:
            axes[2].semilogy([int(r["lag"]) for r in all_lags],
                             [max(num(r, "norm_share"), 1e-12) for r in all_lags],
                             color=colors[step], label=f"step {step}")
    axes[0].set_title("cosine(truncated gradient, full gradient)", fontsize=10)
    axes[1].set_title("||g_k - g|| / ||g||  (sliding: share from lags ≥ k)", fontsize=10)
    axes[2].set_title("||g_lag|| / ||g||: the full gradient by time lag", fontsize=10)
    for ax in axes[:2]:
        ax.set_xlabel("truncation k (steps)")
    axes[2].set_xlabel("lag (steps)")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=6)
    axes[2].legend(fontsize=6)
    return save(fig, path)


def memory_figure(root: str, path: str) -> str | None:
    rows = summary.read_csv(os.path.join(root, "memory.csv"))
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    styles = {"full": "o-", "truncated": "s--", "stream": "^-", "remat": "d-"}
    for mode in dict.fromkeys(r["mode"] for r in rows):
        sub = [r for r in rows if r["mode"] == mode]
        label = {"truncated": f"truncated in-graph (k={sub[0]['truncation']})",
                 "stream": f"streaming window (k={sub[0]['truncation']})"}.get(mode, mode)
        ax.loglog([int(r["length"]) for r in sub], [float(r["peak_mib"]) for r in sub],
                  styles.get(mode, "o-"), base=2, label=label)
    ax.set_xlabel("sequence length T")
    ax.set_ylabel("peak memory of a training step (MiB)")
    ax.set_title("compiled memory: full BPTT vs truncation vs remat", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    return save(fig, path)


def write_all(config, root: str) -> list[str]:
    """Every figure that the existing data allow; returns their paths."""
    outdir = os.path.join(root, "figures")
    os.makedirs(outdir, exist_ok=True)
    paths = []
    for study in (s.strip() for s in config.sweep.studies.split(",")):
        runs = _study_runs(config, root, study)
        if not runs:
            continue
        metric = config.studies[study].metric
        paths += [learning_curves(study, runs, metric, os.path.join(outdir, f"curves_{study}.png")),
                  final_vs_k(study, runs, metric, os.path.join(outdir, f"final_vs_k_{study}.png")),
                  grad_norms(study, runs, os.path.join(outdir, f"grad_norms_{study}.png")),
                  sigma_max(study, runs, os.path.join(outdir, f"sigma_max_{study}.png"))]
    paths += [grad_bias_figure(root, os.path.join(outdir, "grad_bias.png")),
              memory_figure(root, os.path.join(outdir, "memory.png"))]
    return [p for p in paths if p]
