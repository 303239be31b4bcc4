r"""What summaries and comparisons read from run directories, and nothing else.

A run directory is any workdir of `rnnvision.train.loop.run`: config.json,
metrics.jsonl, results.json, and (when a sweep ran it) sweep_run.json. A group is the
runs of one grid point (its seeds), or a single run on its own.

    read_run(workdir) -> RunData      status, results (numbers), logged rows, timing
    groups(directory) -> [Group]      a sweep DIR: one group per DIR/runs/<point>/
                                      (in the order of DIR/sweep.json); a single-run
                                      workdir: one group of one run
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from typing import Any

from rnnvision.sweep import manifest
from rnnvision.sweep.io import number, read_json, read_jsonl
from rnnvision.sweep.runner import STATUS_FILE

_SEED_DIR = re.compile(r"^seed(\d+)$")


@dataclasses.dataclass
class RunData:
    """One run directory as the summaries see it.

    status: "done" | "diverged" | "bad_config" | "error" | "incomplete" (no final record
    and no results.json, e.g. still running or killed); results: the numbers of
    results.json; train_rows / eval_rows: metrics.jsonl rows with "loss" / with "eval/..."
    keys; steps_per_second: training speed after compilation (nan if unknown).
    """

    workdir: str
    status: str
    reason: str
    results: dict[str, float]
    train_rows: list[dict]
    eval_rows: list[dict]
    record: dict[str, Any]
    config: dict[str, Any]
    wall_seconds: float
    steps_per_second: float
    num_params: float


@dataclasses.dataclass
class Group:
    """label: how tables and figures name it; values: its grid values {field: value}."""

    label: str
    values: dict[str, Any]
    runs: list[RunData]


def seconds_per_step(rows: list[dict], start_step: int = 0) -> float:
    """Training time per step after the first logged row (so compilation is excluded).

    A row's `steps_per_second` is the mean since the (last) start of the process at
    `start_step`, so elapsed_i = (step_i - start_step) / sps_i; with one row only, its
    mean (compilation included) is all there is.
    """
    rows = [r for r in rows if r["step"] > start_step
            and (number(r.get("steps_per_second")) or 0.0) > 0]
    if len(rows) < 2:
        return 1.0 / rows[0]["steps_per_second"] if rows else math.nan
    elapsed = [(r["step"] - start_step) / r["steps_per_second"] for r in rows]
    return (elapsed[-1] - elapsed[0]) / (rows[-1]["step"] - rows[0]["step"])


def _status(record: dict, results: dict) -> str:
    status = record.get("status")
    if status in ("done", "diverged", "bad_config", "error"):
        return status
    return "done" if results and not record else "incomplete"


def read_run(workdir: str) -> RunData:
    record = read_json(os.path.join(workdir, STATUS_FILE))
    raw = read_json(os.path.join(workdir, "results.json"))
    rows = read_jsonl(os.path.join(workdir, "metrics.jsonl"))
    status = _status(record, raw)
    results = {k: v for k, v in ((k, number(v)) for k, v in raw.items()) if v is not None}
    train_rows = [r for r in rows if "loss" in r]
    sps = 1.0 / seconds_per_step(train_rows, record.get("start_step", 0))
    return RunData(
        workdir=workdir, status=status, reason=record.get("reason", ""),
        results=results if status == "done" else {}, train_rows=train_rows,
        eval_rows=[r for r in rows if any(k.startswith("eval/") for k in r)],
        record=record, config=read_json(os.path.join(workdir, "config.json")),
        wall_seconds=float(record.get("wall_seconds", math.nan)),
        steps_per_second=sps if math.isfinite(sps) else math.nan,
        num_params=float(record.get("num_params") or math.nan))


def seed_dirs(point_dir: str) -> list[str]:
    """The seed<i> sub-directories of a grid point's directory, by seed index."""
    if not os.path.isdir(point_dir):
        return []
    found = [(int(m.group(1)), d) for d in os.listdir(point_dir) if (m := _SEED_DIR.match(d))]
    return [os.path.join(point_dir, d) for _, d in sorted(found)]


def _recorded_points(directory: str) -> list[dict]:
    """The points of DIR/sweep.json, grid by grid, in order."""
    grids = manifest.read(directory).get("grids", {})
    return [p for grid in grids.values() for p in grid.get("points", [])]


def is_sweep(directory: str) -> bool:
    return os.path.isdir(os.path.join(directory, "runs"))


def groups(directory: str, prefix: str = "") -> list[Group]:
    """The groups of a sweep DIR (points that have at least one run) or a single run."""
    if not is_sweep(directory):
        run = read_run(directory)
        label = prefix or os.path.basename(os.path.normpath(directory))
        return [Group(label, {}, [run])] if run.config or run.results else []
    recorded = {p["name"]: p["values"] for p in _recorded_points(directory)}
    on_disk = sorted(os.listdir(os.path.join(directory, "runs")))
    names = [n for n in recorded if n in on_disk] + [n for n in on_disk if n not in recorded]
    out = []
    for name in names:
        runs = [read_run(d) for d in seed_dirs(os.path.join(directory, "runs", name))]
        if runs:
            values = recorded.get(name) or runs[0].record.get("values", {})
            out.append(Group(f"{prefix}{name}", dict(values), runs))
    return out
