"""The ablation's grid: studies x truncation k x clipping x seeds, as normal run configs.

A setting is (study, k, clip); its name is `<study>-k<k|full>-<method>[_<threshold>]`,
e.g. `copy-k8-global_norm_1`; a run is a setting and a seed, in DIR/runs/<setting>/seed<i>.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import ml_collections

from rnnvision.config_checks import ConfigError
from rnnvision.train import config as config_lib

STATUS_FILE = "ablation.json"


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


@dataclasses.dataclass(frozen=True)
class Run:
    setting: Setting
    seed: int

    def workdir(self, root: str) -> str:
        return os.path.join(root, "runs", self.setting.name, f"seed{self.seed}")


# -- grid -------------------------------------------------------------------------------

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


def parse_shard(text: str) -> tuple[int, int]:
    """"i/n" -> (i, n) with 0 <= i < n."""
    try:
        i, n = (int(v) for v in str(text).split("/"))
    except ValueError:
        i, n = -1, 0
    if not 0 <= i < n:
        raise ConfigError("sweep.shard", text, "'i/n' with 0 <= i < n, e.g. 0/4")
    return i, n


def settings(config) -> list[Setting]:
    """Every setting of every study, in config order (study, then k, then clip)."""
    out = []
    for study in config.sweep.studies.split(","):
        study = study.strip()
        if study not in config.studies:
            raise ConfigError("sweep.studies", config.sweep.studies,
                                         f"names from config.studies: {sorted(config.studies)}")
        s = config.studies[study]
        for k in parse_truncations(s.truncations):
            for method, threshold in parse_clips(s.clips):
                out.append(Setting(study, k, method, threshold))
    return out


def expand(config) -> list[Run]:
    """All sub-runs: settings x seeds (seed index 0..study.seeds-1)."""
    runs = []
    for setting in settings(config):
        runs.extend(Run(setting, seed) for seed in range(config.studies[setting.study].seeds))
    return runs


def shard(runs: list[Run], spec: str) -> list[Run]:
    i, n = parse_shard(spec)
    return runs[i::n]


def run_config(config, run: Run) -> ml_collections.ConfigDict:
    """The rnnvision run config of one sub-run: the study's `run` with k, clip and seed set."""
    base = config.studies[run.setting.study].run
    c = ml_collections.ConfigDict(base.to_dict())
    c.seed = base.seed + run.seed
    c.train.truncation = run.setting.truncation
    c.optim.clip.method = run.setting.clip_method
    if run.setting.clip_method != "none":
        c.optim.clip.threshold = run.setting.clip_threshold
    if config.studies[run.setting.study].get("equal_data", False):
        # Streaming tasks: train.num_steps counts sequence batches; every k sees as many
        # frames (an update per k1 frames: T / k1 updates per sequence batch).
        k1 = c.model.get("k1", 0) or run.setting.truncation or c.data.num_frames
        factor = max(1, c.data.num_frames // k1)
        c.train.num_steps *= factor
        c.train.log_every *= factor
        c.train.checkpoint_every *= factor
    c.lock()
    return c


def read_status(workdir: str) -> dict[str, Any]:
    path = os.path.join(workdir, STATUS_FILE)
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def grad_bias_run(config) -> Run | None:
    """The sub-run whose checkpoints the gradient-bias analysis reads (config.grad_bias)."""
    gb = config.grad_bias
    if not gb.study:
        return None
    method, threshold = parse_clips(gb.clip or config.studies[gb.study].clips)[0]
    return Run(Setting(gb.study, parse_truncations(gb.truncation)[0], method, threshold), gb.seed)

