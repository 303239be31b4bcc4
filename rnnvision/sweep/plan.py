r"""A sweep of one experiment: its definition, running it (or one shard), its summary.

    sweep = Sweep.parse(config, grid=["model.cell=lstm,gru"], seeds=3)
    rows = run(sweep, "DIR", shard="0/1")      # runs, then DIR/summary.* and DIR/figures/

DIR holds sweep.json (the grid and base config, checked on every re-run),
runs/<point>/seed<i>/ (normal workdirs, each with sweep_run.json), summary.csv,
summary.md and figures/. Any process can rebuild the summary and figures from what
exists with `summarize(DIR)`; every shard does so when its runs end.

The main metric (the summary's first column and the bar chart) is the config's
`eval.main_metric` (each experiment config names its own), else "loss".
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Sequence

from rnnvision.config_checks import ConfigError
from rnnvision.sweep import collect, figures, grid, manifest, runner, summary

GRID_NAME = "sweep"


def main_metric_of(config) -> str:
    """The config's eval.main_metric, else "loss"."""
    evaluation = config.get("eval") if hasattr(config, "get") else None
    return (evaluation.get("main_metric") if evaluation is not None else None) or "loss"


@dataclasses.dataclass(frozen=True)
class Sweep:
    """The base config, the grid's axes, seeds per point and the seed-offset fields."""

    base: Any
    axes: tuple[grid.Axis, ...]
    seeds: int
    seed_fields: tuple[str, ...] = ()
    main_metric: str = "loss"

    @classmethod
    def parse(cls, config, grid_specs: Sequence[str] = (), seeds: int = 1,
              seed_fields: Sequence[str] = (), main_metric: str = "") -> "Sweep":
        """Parses and checks everything (ConfigError naming the field) before any run."""
        if not config.get("task"):
            raise ConfigError("task", config.get("task"), "an experiment config (with `task`)")
        grid.check_seed_fields(config, seed_fields)
        axes = grid.parse_grid(grid_specs, config, reserved=("seed", *seed_fields))
        sweep = cls(config, tuple(axes), seeds, tuple(seed_fields),
                    main_metric or main_metric_of(config))
        grid.expand(sweep.points, seeds)  # checks seeds
        return sweep

    @property
    def points(self) -> list[grid.Point]:
        return grid.points(self.axes)

    @property
    def runs(self) -> list[grid.Run]:
        return grid.expand(self.points, self.seeds)

    def config_for(self, run: grid.Run):
        return grid.run_config(self.base, run.point.values, run.seed, self.seed_fields)

    def manifest_entry(self) -> dict[str, Any]:
        return manifest.grid_entry(self.axes, self.seeds, self.seed_fields, self.points,
                                   self.base.to_dict())


def summarize(root: str, main_metric: str = "", title: str = "") -> list[dict[str, Any]]:
    """DIR/summary.csv, summary.md and figures/ rebuilt from the runs that exist."""
    recorded = manifest.read(root)
    main_metric = main_metric or recorded.get("main_metric") or "loss"
    task = recorded.get("grids", {}).get(GRID_NAME, {}).get("base_config", {}).get("task")
    title = title or (f"Sweep of {task}" if task else "Sweep summary")
    groups = collect.groups(root)
    paths = figures.write_all(groups, main_metric, os.path.join(root, "figures"))
    return summary.write(root, groups, main_metric, title, figures=paths)


def run(sweep: Sweep, root: str, *, shard: str = "0/1", log: Callable[[str], None] = print,
        compilation_cache: bool = True, only_summary: bool = False) -> list[dict[str, Any]]:
    """Checks DIR against the sweep, runs this shard's runs, rebuilds the summary."""
    grid.parse_shard(shard)
    manifest.check_and_write(root, {GRID_NAME: sweep.manifest_entry()}, sweep.main_metric)
    if compilation_cache:
        runner.use_compilation_cache(os.path.join(root, "jax_cache"))
    if not only_summary:
        runner.run_shard(sweep.runs, sweep.config_for, root, shard=shard, log=log)
    return summarize(root, sweep.main_metric)


def outcome_line(rows: Sequence[dict], root: str) -> str:
    """"4 grid points, 12 runs: 11 done, 1 diverged; summary in DIR/summary.md"."""
    total = {k: sum(r[k] for r in rows) for k in ("runs", "n_seeds", "diverged", "failed",
                                                  "incomplete")}
    parts = [f"{total['n_seeds']} done"] + [f"{total[k]} {k}" for k in
                                            ("diverged", "failed", "incomplete") if total[k]]
    return (f"{len(rows)} grid points, {total['runs']} runs: {', '.join(parts)}; "
            f"summary in {os.path.join(root, 'summary.md')}")
