r"""Existing workdirs side by side: single runs and sweep directories, one table and figures.

    rows = compare(["runs/row_mnist", "sweeps/cells"], out="cmp")

Every grid point of a sweep directory, and every single-run workdir, becomes one row
of the same table as a sweep's summary (rnnvision/sweep/summary.py: n_seeds, every
results number's mean/std/min/max, parameters, timing), labelled "<directory>" or
"<directory>: <point>". The grid-value columns are the config fields whose values
differ between the rows (at most `MAX_FIELDS`; beyond that, the sweeps' own grid
fields), read from each row's first run's config.json, so the table says what differs.
With `out`: out/compare.csv, out/compare.md and out/figures/ (as a sweep's).
"""

from __future__ import annotations

import os
from typing import Any, Sequence

from rnnvision.sweep import collect, figures, manifest, summary
from rnnvision.sweep.io import write_text
from rnnvision.sweep.manifest import flatten

MAX_FIELDS = 8
# Config fields that never explain a difference in results.
IGNORED = ("seed", "train.progress", "train.force_resume", "eval.main_metric", "distributed.")


def _ignored(field: str) -> bool:
    return any(field == s or (s.endswith(".") and field.startswith(s)) for s in IGNORED)


def differing_fields(groups: Sequence[collect.Group]) -> list[str]:
    """Config fields whose value differs between the groups' first runs."""
    configs = [flatten(g.runs[0].config) for g in groups if g.runs]
    fields = list(dict.fromkeys(f for c in configs for f in c))
    out = [f for f in fields if not _ignored(f)
           and len({repr(c.get(f, "<absent>")) for c in configs}) > 1]
    if len(out) > MAX_FIELDS:  # e.g. two experiments: keep the sweeps' own grid fields
        grid_fields = list(dict.fromkeys(f for g in groups for f in g.values))
        out = [f for f in ("task", *grid_fields) if f in out][:MAX_FIELDS]
    return out


def gather(directories: Sequence[str]) -> list[collect.Group]:
    """The groups of every directory, their values the differing config fields."""
    found = []
    for directory in directories:
        prefix = "" if len(directories) == 1 else f"{os.path.normpath(directory)}: "
        sub = collect.groups(directory, prefix=prefix)
        if not collect.is_sweep(directory) and sub:
            sub[0].label = os.path.normpath(directory)
        if not sub:
            raise FileNotFoundError(f"{directory} holds no run (config.json / results.json) "
                                    "and no sweep (runs/)")
        found += sub
    fields = differing_fields(found)
    for g in found:
        config = flatten(g.runs[0].config) if g.runs else {}
        g.values = {f: config.get(f, "") for f in fields}
    return found


def main_metric_for(directories: Sequence[str], groups: Sequence[collect.Group]) -> str:
    """The first sweep's recorded main metric, else the first run config's eval.main_metric."""
    for directory in directories:
        metric = manifest.read(directory).get("main_metric")
        if metric:
            return metric
    for g in groups:
        for run in g.runs:
            metric = run.config.get("eval", {}).get("main_metric")
            if metric:
                return metric
    return "loss"


def compare(directories: Sequence[str], out: str | None = None,
            metric: str = "") -> tuple[list[dict[str, Any]], str]:
    """(rows, markdown) of the comparison; with `out`, also its files and figures."""
    groups = gather(directories)
    metric = metric or main_metric_for(directories, groups)
    rows = summary.rows_for(groups, metric)
    keys = summary.result_keys([r for g in groups for r in g.runs if r.status == "done"], metric)
    text = (f"# Comparison\n\n{', '.join(directories)}\n\nMain metric: `{metric}`; std over "
            "seeds is the population standard deviation (ddof=0).\n\n"
            + summary.markdown(rows, metric, keys, summary.failures_of(groups, os.getcwd()),
                               label_column=True))
    if out:
        os.makedirs(out, exist_ok=True)
        paths = figures.write_all(groups, metric, os.path.join(out, "figures"))
        write_text(os.path.join(out, "compare.csv"), summary.csv_text(rows))
        text += "\n## Figures\n\n" + "\n".join(f"- [{os.path.relpath(p, out)}]"
                                                f"({os.path.relpath(p, out)})" for p in paths)
        write_text(os.path.join(out, "compare.md"), text + "\n")
    return rows, text
