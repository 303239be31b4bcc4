"""The ablation's studies as sweep grids: truncation k x clipping x seeds of normal runs.

Each study is a grid of `rnnvision.sweep` over two axes of its run config,
`train.truncation` (0 = full BPTT) and `optim.clip.method:optim.clip.threshold` set
together, with `study.seeds` seeds. A setting is one grid point; its name is
`<study>-k<k|full>-<method>[_<threshold>]`, e.g. `copy-k8-global_norm_1`; a run is a
setting and a seed index, in DIR/runs/<setting>/seed<i>, whose config is the study's
`run` with the setting's values and `seed = run.seed + i` (sweep.grid.run_config).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections

from rnnvision.config_checks import ConfigError
from rnnvision.sweep import grid as sweep_grid
from rnnvision.sweep import manifest, runner
from rnnvision.train import config as config_lib

STATUS_FILE = runner.STATUS_FILE
read_status = runner.read_status
TRUNCATION = "train.truncation"
CLIP_FIELDS = ("optim.clip.method", "optim.clip.threshold")


@dataclasses.dataclass(frozen=True)
class Setting:
    """One point of a study's grid (all seeds of it share the setting)."""

    study: str
    truncation: int          # 0 = full BPTT
    clip_method: str         # one of rnnvision.train.config.CLIP_METHODS
    clip_threshold: float

    @property
    def k_label(self) -> str:
        return "full" if self.truncation == 0 else str(self.truncation)

    @property
    def clip_label(self) -> str:
        return "none" if self.clip_method == "none" else f"{self.clip_method}_{self.clip_threshold:g}"

    @property
    def name(self) -> str:
        return f"{self.study}-k{self.k_label}-{self.clip_label}"

    @property
    def values(self) -> tuple[tuple[str, Any], ...]:
        """The config fields this grid point sets (no threshold when not clipping)."""
        clip = ((CLIP_FIELDS[0], self.clip_method),) if self.clip_method == "none" else tuple(
            zip(CLIP_FIELDS, (self.clip_method, self.clip_threshold)))
        return ((TRUNCATION, self.truncation),) + clip


@dataclasses.dataclass(frozen=True)
class Run(sweep_grid.Run):
    """A sweep run whose point is a Setting."""

    @property
    def setting(self) -> Setting:
        return self.point


# -- parsing the study fields --------------------------------------------------------------

def parse_truncations(text: str) -> list[int]:
    """"1,2,8,full" -> [1, 2, 8, 0] (0 = full BPTT)."""
    out = []
    for item in filter(None, (s.strip() for s in str(text).split(","))):
        value = 0 if item in ("full", "0") else int(item) if item.isdigit() else None
        if value is None:
            raise ConfigError("truncations", text, "comma-separated integers >= 1 or 'full'")
        out.append(value)
    if not out:
        raise ConfigError("truncations", text, "at least one truncation")
    return out


def parse_clips(text: str) -> list[tuple[str, float]]:
    """"none,global_norm:1,value:0.1" -> [("none", 0.0), ("global_norm", 1.0), ("value", 0.1)]."""
    out = []
    for item in filter(None, (s.strip() for s in str(text).split(","))):
        method, _, threshold = item.partition(":")
        if method not in config_lib.CLIP_METHODS:
            raise ConfigError("clips", text, f"methods from {config_lib.CLIP_METHODS}")
        if method == "none":
            out.append(("none", 0.0))
            continue
        try:
            value = float(threshold)
        except ValueError:
            value = -1.0
        if not value > 0:
            raise ConfigError("clips", text, f"'{method}:<threshold > 0>'")
        out.append((method, value))
    if not out:
        raise ConfigError("clips", text, "at least one clipping setting")
    return out


# -- the grid ---------------------------------------------------------------------------------

def study_names(config) -> list[str]:
    names = [s.strip() for s in config.sweep.studies.split(",")]
    for name in names:
        if name not in config.studies:
            raise ConfigError("sweep.studies", config.sweep.studies,
                              f"names from config.studies: {sorted(config.studies)}")
    return names


def study_axes(study) -> list[sweep_grid.Axis]:
    """The study's two sweep axes: truncation k, and (clip method, threshold) together."""
    ks = tuple((k,) for k in parse_truncations(study.truncations))
    return [sweep_grid.Axis((TRUNCATION,), ks),
            sweep_grid.Axis(CLIP_FIELDS, tuple(parse_clips(study.clips)))]


def study_settings(config, name: str) -> list[Setting]:
    """The study's grid points (k, then clip), as Settings."""
    return [Setting(name, k, method, threshold)
            for (_, k), (_, method), (_, threshold)
            in sweep_grid.product(study_axes(config.studies[name]))]


def settings(config) -> list[Setting]:
    """Every setting of every selected study, in config order (study, then k, then clip)."""
    return [s for name in study_names(config) for s in study_settings(config, name)]


def expand(config) -> list[Run]:
    """All runs: settings x seeds (seed index 0..study.seeds-1)."""
    return [Run(run.point, run.seed) for name in study_names(config)
            for run in sweep_grid.expand(study_settings(config, name), config.studies[name].seeds)]


def parse_shard(text: str, field: str = "sweep.shard") -> tuple[int, int]:
    """"i/n" -> (i, n) with 0 <= i < n (ConfigError naming `sweep.shard` otherwise)."""
    return sweep_grid.parse_shard(text, field)


def shard(runs: list[Run], spec: str) -> list[Run]:
    return sweep_grid.shard(runs, spec, field="sweep.shard")


def run_config(config, run: Run) -> ml_collections.ConfigDict:
    """The rnnvision run config of one run: the study's `run` with k, clip and seed set."""
    study = config.studies[run.setting.study]
    c = sweep_grid.run_config(study.run, run.setting.values, run.seed)
    if study.get("equal_data", False):
        # Streaming tasks: train.num_steps counts sequence batches; every k sees as many
        # frames (an update per k1 frames: T / k1 updates per sequence batch).
        k1 = c.model.get("k1", 0) or run.setting.truncation or c.data.num_frames
        factor = max(1, c.data.num_frames // k1)
        c.train.num_steps *= factor
        c.train.log_every *= factor
        c.train.checkpoint_every *= factor
    return c


def manifest_entries(config) -> dict[str, dict]:
    """DIR/sweep.json's record of each selected study's grid (checked on every re-run):
    its axes, seeds, settings and run config, and whether steps scale with k."""
    out = {}
    for name in study_names(config):
        study = config.studies[name]
        out[name] = manifest.grid_entry(study_axes(study), study.seeds, (),
                                        study_settings(config, name), study.run.to_dict())
        out[name]["equal_data"] = bool(study.get("equal_data", False))
    return out


def grad_bias_run(config) -> Run | None:
    """The run whose checkpoints the gradient-bias analysis reads (config.grad_bias)."""
    gb = config.grad_bias
    if not gb.study:
        return None
    method, threshold = parse_clips(gb.clip or config.studies[gb.study].clips)[0]
    return Run(Setting(gb.study, parse_truncations(gb.truncation)[0], method, threshold), gb.seed)
