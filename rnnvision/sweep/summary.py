r"""summary.csv and summary.md: one row per grid point, rebuilt from whatever runs exist.

Row of a group (a grid point's seeds, or a single run):

    <grid field> ...         the point's values (one column per grid field)
    point                    its name (the sub-directory under DIR/runs/)
    n_seeds                  runs that finished ("done"): the statistics are over these
    runs, diverged, failed, incomplete   how many runs exist, and how many of them
                             diverged (NaN/Inf), failed (bad config or an error) or have
                             not finished (running, killed, or never started)
    <key>_mean, <key>_std, <key>_min, <key>_max
                             for every number <key> in the finished runs' results.json
                             (the main metric first): mean and population standard
                             deviation over seeds (numpy's np.std, ddof=0), min and max;
                             a run without <key> is left out of its statistics, and a
                             non-finite value makes them non-finite
    num_params               parameters of the model
    wall_seconds_mean        wall time of a run's loop.run (compilation, training, final
                             evaluation), mean over the finished runs
    steps_per_second_mean    training steps per second after compilation (from the
                             steps_per_second column of metrics.jsonl), mean

summary.md has the same rows: grid values, n_seeds, num_params, timing and the main
metric as "mean ± std" in the first table, every other results key in further tables of
the same rows, and the reasons of the runs that failed or diverged.
"""

from __future__ import annotations

import csv
import io
import math
import os
from typing import Any, Sequence

import numpy as np

from rnnvision.sweep.collect import Group, RunData
from rnnvision.sweep.io import write_text

STATS = ("mean", "std", "min", "max")
MD_KEYS_PER_TABLE = 6


def statistics(values: Sequence[float]) -> dict[str, float]:
    """mean, population std (ddof=0), min, max of `values` (nan for none)."""
    if not len(values):
        return {s: math.nan for s in STATS}
    a = np.asarray(values, np.float64)
    return {"mean": float(np.mean(a)), "std": float(np.std(a)), "min": float(np.min(a)),
            "max": float(np.max(a))}


def result_keys(runs: Sequence[RunData], main_metric: str) -> list[str]:
    """Every results key of the runs, the main metric first, then alphabetically."""
    keys = sorted({k for run in runs for k in run.results})
    return ([main_metric] if main_metric in keys else []) + [k for k in keys if k != main_metric]


def _mean_finite(values: Sequence[float]) -> float:
    values = [v for v in values if math.isfinite(v)]
    return float(np.mean(values)) if values else math.nan


def aggregate(group: Group, main_metric: str, keys: Sequence[str] | None = None,
              fields: Sequence[str] | None = None) -> dict[str, Any]:
    """The summary row of one group (see the module docstring); `fields`: the grid-value
    columns (default: the group's own), `keys`: the results keys (default: its own)."""
    done = [r for r in group.runs if r.status == "done"]
    fields = list(group.values) if fields is None else fields
    row: dict[str, Any] = {f: group.values.get(f, "") for f in fields}
    row.update(point=group.label, n_seeds=len(done), runs=len(group.runs),
               diverged=sum(r.status == "diverged" for r in group.runs),
               failed=sum(r.status in ("bad_config", "error") for r in group.runs),
               incomplete=sum(r.status == "incomplete" for r in group.runs))
    for key in (keys if keys is not None else result_keys(done, main_metric)):
        stats = statistics([r.results[key] for r in done if key in r.results])
        row.update({f"{key}_{s}": v for s, v in stats.items()})
    row["num_params"] = _mean_finite([r.num_params for r in group.runs])
    row["wall_seconds_mean"] = _mean_finite([r.wall_seconds for r in done])
    row["steps_per_second_mean"] = _mean_finite([r.steps_per_second for r in done])
    return row


def rows_for(groups: Sequence[Group], main_metric: str) -> list[dict[str, Any]]:
    """One row per group, every row with the same grid fields and results keys (the unions)."""
    keys = result_keys([r for g in groups for r in g.runs if r.status == "done"], main_metric)
    fields = list(dict.fromkeys(f for g in groups for f in g.values))
    return [aggregate(g, main_metric, keys, fields) for g in groups]


# -- formats ----------------------------------------------------------------------------------

def csv_text(rows: Sequence[dict]) -> str:
    """Rows (dicts) as CSV with the union of their keys as columns, in first-seen order."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def fmt(value: Any, digits: int = 4) -> str:
    if isinstance(value, str):
        return value
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-" if value is None or math.isnan(value) else str(value)
    if isinstance(value, (bool, int)):
        return str(value)
    return f"{value:.{digits}g}"


def mean_std(row: dict, key: str) -> str:
    mean, std = row.get(f"{key}_mean", math.nan), row.get(f"{key}_std", math.nan)
    if isinstance(mean, float) and math.isnan(mean):
        return "-"
    return f"{fmt(mean)} ± {fmt(std, 2)}"


def markdown_table(header: Sequence[str], table: Sequence[Sequence]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in table]
    return "\n".join(lines)


def _grid_fields(rows: Sequence[dict]) -> list[str]:
    """The grid-value columns: the keys before "point"."""
    keys = list(rows[0])
    return keys[:keys.index("point")]


def markdown(rows: Sequence[dict], main_metric: str, keys: Sequence[str],
             failures: Sequence[tuple[str, str, str]] = (), label_column: bool = False) -> str:
    """The tables of summary.md (see the module docstring); failures: (run, status, reason);
    label_column: a first column with each row's label (`point`), not only its values."""
    if not rows:
        return "(no runs yet)\n"
    fields = _grid_fields(rows)
    fields = ["point"] + fields if label_column or not fields else fields
    counts = lambda r: f"{r['n_seeds']}/{r['runs']}" + "".join(
        f", {r[k]} {k}" for k in ("diverged", "failed", "incomplete") if r[k])
    header = fields + ["n_seeds", f"{main_metric} (mean ± std)", "params", "s / run", "steps/s"]
    params = lambda r: int(r["num_params"]) if math.isfinite(r["num_params"]) else "-"
    first = [[r.get(f, "") for f in fields] + [counts(r), mean_std(r, main_metric), params(r),
              r["wall_seconds_mean"], r["steps_per_second_mean"]] for r in rows]
    parts = [markdown_table(header, first)]
    others = [k for k in keys if k != main_metric]
    for i in range(0, len(others), MD_KEYS_PER_TABLE):
        chunk = others[i:i + MD_KEYS_PER_TABLE]
        table = [[r.get(f, "") for f in fields] + [mean_std(r, k) for k in chunk] for r in rows]
        parts.append(markdown_table(fields + [f"{k} (mean ± std)" for k in chunk], table))
    if failures:
        parts.append("Runs that did not finish:\n\n" + "\n".join(
            f"- `{run}`: {status}: {reason}" for run, status, reason in failures))
    return "\n\n".join(parts) + "\n"


def failures_of(groups: Sequence[Group], root: str) -> list[tuple[str, str, str]]:
    """(run directory relative to `root`, status, first line of the reason) of the runs that
    diverged or failed."""
    return [(os.path.relpath(r.workdir, root), r.status, (r.reason.splitlines() or [""])[0])
            for g in groups for r in g.runs if r.status in ("diverged", "bad_config", "error")]


def write(root: str, groups: Sequence[Group], main_metric: str, title: str,
          stem: str = "summary", figures: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Writes <root>/<stem>.csv and <stem>.md; returns the rows."""
    rows = rows_for(groups, main_metric)
    keys = result_keys([r for g in groups for r in g.runs if r.status == "done"], main_metric)
    write_text(os.path.join(root, f"{stem}.csv"), csv_text(rows))
    text = f"# {title}\n\nMain metric: `{main_metric}`; std over seeds is the population " \
           "standard deviation (ddof=0).\n\n" + markdown(rows, main_metric, keys,
                                                         failures_of(groups, root))
    if figures:
        text += "\n## Figures\n\n" + "\n".join(
            f"- [{os.path.relpath(f, root)}]({os.path.relpath(f, root)})" for f in figures) + "\n"
    write_text(os.path.join(root, f"{stem}.md"), text)
    return rows
