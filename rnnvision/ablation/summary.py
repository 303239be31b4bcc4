r"""summary.csv and summary.md: one row per setting, rebuilt from whatever runs exist.

Per setting (over its seeds): final evaluation loss and the study's metric (mean and
standard deviation over the runs that finished), steps to reach the study's target
(checked on the logged training rows), wall time per step (excluding compilation),
compiled peak memory of the gradient step, fraction of steps clipped, median gradient
norm, final largest singular value of the recurrent kernel, and how many runs
finished, diverged (non-finite loss or gradient), failed or are incomplete. Each row
also holds the sweep summary's columns (rnnvision/sweep/summary.py: the grid values,
n_seeds, every results number's mean/std/min/max, parameters, timing); the
statistics over seeds are the sweep's (population std, ddof=0).
"""

from __future__ import annotations

import csv
import math
import os
import re
from typing import Any, Sequence

import numpy as np

from rnnvision.ablation import grid
from rnnvision.sweep import collect as sweep_collect
from rnnvision.sweep import summary as sweep_summary
from rnnvision.sweep.io import write_text

_TARGET = re.compile(r"^\s*([\w/]+)\s*(>=|<=)\s*([-+0-9.eE]+)\s*$")


def write_csv(path: str, rows: Sequence[dict]) -> None:
    """Rows (dicts) as CSV with the union of their keys as columns, in first-seen order."""
    write_text(path, sweep_summary.csv_text(rows))


def read_csv(path: str) -> list[dict[str, str]]:
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def parse_target(text: str) -> tuple[str, str, float] | None:
    """"accuracy>=0.99" -> ("accuracy", ">=", 0.99); "" -> None."""
    if not text:
        return None
    match = _TARGET.match(text)
    if not match:
        raise ValueError(f"target {text!r} must look like 'accuracy>=0.99' or 'loss<=0.1'")
    return match.group(1), match.group(2), float(match.group(3))


def _number(value) -> float:
    """A logged value or a CSV cell as a float (nan when it is none)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


# -- one run ------------------------------------------------------------------------------

def steps_to_target(rows: list[dict], target) -> float:
    """First logged step whose value meets the target (nan if never)."""
    if target is None:
        return math.nan
    key, op, value = target
    for r in rows:
        v = _number(r.get(key))
        if math.isfinite(v) and (v >= value if op == ">=" else v <= value):
            return float(r["step"])
    return math.nan


def collect_run(workdir: str, target=None) -> dict[str, Any]:
    """What the summary and figures need from one run directory (read by the sweep's
    collect.read_run), with the sigma_max history merged into the training rows."""
    run = sweep_collect.read_run(workdir)
    rows, results, record = list(run.train_rows), dict(run.results), run.record
    history = record.get("sigma_max_history") or []
    if history and not any("recurrent_sigma_max" in r for r in rows):
        # a task that does not log it: the sweep measured it at the checkpoints
        rows += [{"step": step, "recurrent_sigma_max": value} for step, value in history]
        rows.sort(key=lambda r: r["step"])
        results = dict(results, recurrent_sigma_max=history[-1][1]) if results else results
    finite = [r for r in rows if math.isfinite(_number(r.get("loss")))]
    sigma = _number(results.get("recurrent_sigma_max",
                                finite[-1].get("recurrent_sigma_max") if finite else None))
    return {
        "status": run.status, "results": results, "rows": rows, "run": run,
        "steps_to_target": steps_to_target(rows, target),
        "seconds_per_step": sweep_collect.seconds_per_step(rows, record.get("start_step", 0)),
        "clipped": float(np.mean([_number(r.get("clipped")) for r in finite])) if finite else math.nan,
        "grad_norms": [_number(r.get("grad_norm")) for r in rows],
        "sigma_max": sigma,
        "peak_bytes": _number(record.get("memory", {}).get("peak_bytes")),
        "diverged_step": record.get("diverged_step"),
        "wall_seconds": _number(record.get("wall_seconds")),
    }


# -- settings -------------------------------------------------------------------------------

def _median(values) -> float:
    values = [v for v in values if math.isfinite(v)]
    return float(np.median(values)) if values else math.nan


def _mean_finite(values) -> float:
    values = [v for v in values if math.isfinite(v)]
    return float(np.mean(values)) if values else math.nan


def _row(setting, study, runs: list[dict]) -> dict[str, Any]:
    """The ablation's columns of one setting, then the sweep summary's."""
    done = [r for r in runs if r["status"] == "done"]
    metric = study.metric
    loss = sweep_summary.statistics([r["results"]["loss"] for r in done if "loss" in r["results"]])
    met = sweep_summary.statistics([r["results"][metric] for r in done if metric in r["results"]])
    reached = [r["steps_to_target"] for r in done if math.isfinite(r["steps_to_target"])]
    peaks = [r["peak_bytes"] for r in runs if r["peak_bytes"] > 0]
    row = {
        "study": setting.study, "setting": setting.name, "task": study.run.task,
        "cell": study.run.model.cell, "k": setting.k_label, "clip": setting.clip_label,
        "seeds": len(runs), "done": len(done),
        "diverged": sum(r["status"] == "diverged" for r in runs),
        "failed": sum(r["status"] in ("bad_config", "error") for r in runs),
        "incomplete": sum(r["status"] == "incomplete" for r in runs),
        "final_loss_mean": loss["mean"], "final_loss_std": loss["std"],
        "metric": metric, "final_metric_mean": met["mean"], "final_metric_std": met["std"],
        "target": study.target, "reached_target": len(reached),
        "steps_to_target_mean": float(np.mean(reached)) if reached else math.nan,
        "ms_per_step": 1e3 * _median([r["seconds_per_step"] for r in runs]),
        "peak_mib": (max(peaks) / 2**20) if peaks else math.nan,
        "clipped_fraction": _mean_finite([r["clipped"] for r in runs]),
        "grad_norm_median": _median([v for r in runs for v in r["grad_norms"]]),
        "sigma_max_final": _mean_finite([r["sigma_max"] for r in done]),
        "wall_seconds_mean": _mean_finite([r["wall_seconds"] for r in runs]),
    }
    group = sweep_collect.Group(setting.name, dict(setting.values), [r["run"] for r in runs])
    common = sweep_summary.aggregate(group, metric)
    return {**row, **{k: v for k, v in common.items() if k not in row}}


def collect(config, root: str) -> list[dict[str, Any]]:
    """One row per setting of the config's grid that has at least one run directory."""
    out = []
    for setting in grid.settings(config):
        study = config.studies[setting.study]
        target = parse_target(study.target)
        runs = [collect_run(d, target) for d in
                sweep_collect.seed_dirs(os.path.join(root, "runs", setting.name))]
        if runs:
            out.append(_row(setting, study, runs))
    return out


# -- writing -----------------------------------------------------------------------------------

def _fmt(value, digits: int = 3) -> str:
    if isinstance(value, str):
        return value
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}g}"


def _pm(mean, std) -> str:
    return "-" if not math.isfinite(mean) else f"{mean:.3g} ± {std:.2g}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def settings_markdown(rows: list[dict]) -> str:
    parts = []
    for study in dict.fromkeys(r["study"] for r in rows):
        sub = [r for r in rows if r["study"] == study]
        metric, target = sub[0]["metric"], sub[0]["target"] or "-"
        header = ["setting", "k", "clip", f"final {metric}", "final loss",
                  f"steps to {target}", "ms/step", "peak MiB", "clipped", "σ_max(W_h)",
                  "diverged", "runs"]
        table = [[r["setting"], r["k"], r["clip"],
                  _pm(r["final_metric_mean"], r["final_metric_std"]),
                  _pm(r["final_loss_mean"], r["final_loss_std"]),
                  f"{_fmt(r['steps_to_target_mean'])} ({r['reached_target']}/{r['done']})",
                  r["ms_per_step"], r["peak_mib"], r["clipped_fraction"], r["sigma_max_final"],
                  f"{r['diverged']}/{r['seeds']}",
                  f"{r['done']} done" + (f", {r['failed']} failed" if r["failed"] else "")
                  + (f", {r['incomplete']} running" if r["incomplete"] else "")]
                 for r in sub]
        parts.append(f"### Study `{study}` (task {sub[0]['task']}, cell {sub[0]['cell']})\n\n"
                     + markdown_table(header, table))
    return "\n\n".join(parts)


def grad_bias_markdown(root: str) -> str:
    rows = read_csv(os.path.join(root, "grad_bias", "grad_bias.csv"))
    if not rows:
        return ""
    steps = list(dict.fromkeys(r["step"] for r in rows))
    ks = list(dict.fromkeys(r["k"] for r in rows))
    by = {(r["step"], r["k"]): r for r in rows}
    cell = lambda s, k, key: _fmt(_number(by.get((s, k), {}).get(key)))
    header = ["k"] + [f"cos @ step {s}" for s in steps] + [f"rel. err @ step {s}" for s in steps]
    table = [[k] + [cell(s, k, "cosine") for s in steps] + [cell(s, k, "relative_error") for s in steps]
             for k in ks]
    text = ("Window-aligned truncated gradient (`unroll(truncation=k)`, what training uses) "
            "vs the full-BPTT gradient on one fixed batch:\n\n" + markdown_table(header, table))
    if "beyond" in rows[0]:
        header = (["k"] + [f"cos sliding @ {s}" for s in steps]
                  + [f"share from lags ≥ k @ {s}" for s in steps])
        table = [[k] + [cell(s, k, "cosine_sliding") for s in steps]
                 + [cell(s, k, "beyond") for s in steps] for k in ks]
        text += ("\n\nSliding window (every loss term keeps exactly its last k steps: sum of the "
                 "lag contributions g_lag for lag < k), and ||sum_{lag ≥ k} g_lag|| / ||g||, "
                 "the part of the full gradient from dependencies longer than k:\n\n"
                 + markdown_table(header, table))
    return text


def memory_markdown(root: str) -> str:
    rows = read_csv(os.path.join(root, "memory.csv"))
    if not rows:
        return ""
    modes = list(dict.fromkeys(r["mode"] for r in rows))
    lengths = list(dict.fromkeys(r["length"] for r in rows))
    by = {(r["mode"], r["length"]): r for r in rows}
    header = ["T"] + [f"{m} (MiB)" for m in modes]
    table = [[t] + [_fmt(_number(by.get((m, t), {}).get("peak_mib"))) for m in modes] for t in lengths]
    k = rows[0]["truncation"]
    return (f"Compiled peak memory of one training step (k = {k} for truncated / stream):\n\n"
            + markdown_table(header, table))


def write(config, root: str) -> list[dict[str, Any]]:
    """Writes DIR/summary.csv and DIR/summary.md; returns the setting rows."""
    rows = collect(config, root)
    write_csv(os.path.join(root, "summary.csv"), rows)
    figures = sorted(os.listdir(os.path.join(root, "figures"))) if os.path.isdir(
        os.path.join(root, "figures")) else []
    sections = ["# Truncated-BPTT and gradient-clipping ablation\n",
                "## Settings\n", settings_markdown(rows) if rows else "(no runs yet)"]
    bias = grad_bias_markdown(root)
    if bias:
        sections += ["\n## Gradient bias of truncation\n", bias]
    mem = memory_markdown(root)
    if mem:
        sections += ["\n## Memory\n", mem]
    if figures:
        sections += ["\n## Figures\n", "\n".join(f"- [figures/{f}](figures/{f})" for f in figures)]
    write_text(os.path.join(root, "summary.md"), "\n".join(sections) + "\n")
    return rows
