r"""The sweep: studies x truncation k x clipping x seeds, each a normal rnnvision run.

    DIR/runs/<setting>/seed<i>/     a normal workdir (config.json, checkpoints/, metrics.jsonl,
                                    results.json, figures/) + ablation.json (status, timing, memory)
    DIR/summary.csv, DIR/summary.md one row per setting, rebuilt from whatever sub-workdirs exist
    DIR/grad_bias/, DIR/memory.csv  the analyses;  DIR/figures/  the figures

A setting is (study, k, clip); its name is `<study>-k<k|full>-<method>[_<threshold>]`,
e.g. `copy-k8-global_norm_1`. Each sub-run resumes on its own, so re-running the
sweep command continues an interrupted sweep; finished and diverged runs are
skipped. A run whose loss or gradient becomes NaN/Inf (the trainer's
NonFiniteError) is recorded as diverged, not raised.

Sharding: `sweep.shard = "i/n"` runs the sub-runs j with j % n == i of the
expanded list; the shards together run every sub-run exactly once. With n > 1 the
analyses (gradient bias, memory) run only with `sweep.stage = "report"`, once all
shards are done; the summary is rebuilt by every shard from what exists.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Callable

import ml_collections
from absl import logging

from rnnvision.train import config as config_lib
from rnnvision.train import loop
from rnnvision.train.writer import write_json

STAGES = ("all", "runs", "report")
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
            raise config_lib.ConfigError("truncations", text, "comma-separated integers >= 1 or 'full'")
        out.append(value)
    if not out:
        raise config_lib.ConfigError("truncations", text, "at least one truncation")
    return out


def parse_clips(text: str) -> list[tuple[str, float]]:
    """"none,global_norm:1,value:0.1" -> [("none", 0.0), ("global_norm", 1.0), ("value", 0.1)]."""
    out = []
    for item in filter(None, (s.strip() for s in str(text).split(","))):
        method, _, threshold = item.partition(":")
        if method not in config_lib.CLIP_METHODS:
            raise config_lib.ConfigError("clips", text, f"methods from {config_lib.CLIP_METHODS}")
        if method == "none":
            out.append(("none", 0.0))
            continue
        try:
            value = float(threshold)
        except ValueError:
            value = -1.0
        if not value > 0:
            raise config_lib.ConfigError("clips", text, f"'{method}:<threshold > 0>'")
        out.append((method, value))
    if not out:
        raise config_lib.ConfigError("clips", text, "at least one clipping setting")
    return out


def parse_shard(text: str) -> tuple[int, int]:
    """"i/n" -> (i, n) with 0 <= i < n."""
    try:
        i, n = (int(v) for v in str(text).split("/"))
    except ValueError:
        i, n = -1, 0
    if not 0 <= i < n:
        raise config_lib.ConfigError("sweep.shard", text, "'i/n' with 0 <= i < n, e.g. 0/4")
    return i, n


def settings(config) -> list[Setting]:
    """Every setting of every study, in config order (study, then k, then clip)."""
    out = []
    for study in config.sweep.studies.split(","):
        study = study.strip()
        if study not in config.studies:
            raise config_lib.ConfigError("sweep.studies", config.sweep.studies,
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


# -- running ----------------------------------------------------------------------------

def read_status(workdir: str) -> dict[str, Any]:
    path = os.path.join(workdir, STATUS_FILE)
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def _checkpoint_step(workdir: str) -> int:
    """The step a (re-)started sub-run resumes from: its latest checkpoint (0 if none)."""
    directory = os.path.join(workdir, "checkpoints")
    steps = [int(d) for d in os.listdir(directory) if d.isdigit()] if os.path.isdir(directory) else []
    return max(steps, default=0)


def run_one(config, run: Run, root: str, measure_memory: bool = False) -> dict[str, Any]:
    """Runs (or resumes) one sub-run; returns and writes its status record.

    A finished or diverged sub-run is not run again. NonFiniteError -> status "diverged".
    """
    workdir = run.workdir(root)
    status = read_status(workdir)
    if status.get("status") in ("done", "diverged"):
        return status
    cfg = run_config(config, run)
    os.makedirs(workdir, exist_ok=True)
    record = {"setting": run.setting.name, "study": run.setting.study, "seed": run.seed,
              "truncation": run.setting.truncation, "clip_method": run.setting.clip_method,
              "clip_threshold": run.setting.clip_threshold, "start_step": _checkpoint_step(workdir)}
    t0 = time.time()
    try:
        results = loop.run(cfg, workdir)
        record.update(status="done", final_step=int(results.get("step", cfg.train.num_steps)))
    except loop.NonFiniteError as e:
        record.update(status="diverged", diverged_step=e.step, quantity=e.quantity, message=str(e))
    record["wall_seconds"] = time.time() - t0
    if not _logs_sigma_max(workdir):
        record["sigma_max_history"] = _sigma_max_history(cfg, workdir)
    if measure_memory:
        record["memory"] = _task_memory(cfg)
    write_json(os.path.join(workdir, STATUS_FILE), record)
    return record


def _logs_sigma_max(workdir: str) -> bool:
    from rnnvision.train.writer import read_jsonl

    return any("recurrent_sigma_max" in r for r in read_jsonl(os.path.join(workdir, "metrics.jsonl")))


def _sigma_max_history(cfg, workdir: str) -> list[list[float]]:
    """[[step, sigma_max]] at init and at the kept checkpoints, for tasks that do not log
    `recurrent_sigma_max` themselves (e.g. row_mnist); [] if the cell has no W_h."""
    from rnnvision.ablation.grad_bias import checkpoint_params
    from rnnvision.tasks.probes import recurrent_matrix, sigma_max

    try:
        points = checkpoint_params(cfg, workdir)
    except Exception as e:  # noqa: BLE001 -- a diagnostic; never fail the sweep on it
        logging.warning("sigma_max history of %s failed: %s", workdir, e)
        return []
    return [[step, float(sigma_max(params["cell"]))] for step, params in points
            if isinstance(params, dict) and "cell" in params
            and recurrent_matrix(params["cell"]) is not None]


def _task_memory(cfg) -> dict[str, int]:
    """Compiled memory of the gradient of the sub-run's loss (one device's batch)."""
    import jax

    from rnnvision import tasks
    from rnnvision.ablation import memory

    task = tasks.build(cfg)
    params = task.init_params(jax.random.key(0))
    batch_size = cfg.train.batch_size // jax.device_count()
    batch = task.train_batch(0, slice(0, batch_size))
    stream = task.init_stream(batch_size)
    try:
        return memory.task_step_memory(task, params, batch, stream)
    except Exception as e:  # noqa: BLE001 -- memory is a diagnostic; never fail the sweep on it
        logging.warning("memory analysis failed for %s: %s", cfg.task, e)
        return {"peak_bytes": -1}


def run_shard(config, root: str, log: Callable[[str], None] = logging.info) -> list[dict[str, Any]]:
    """Runs this shard's sub-runs in order; returns their status records."""
    runs = shard(expand(config), config.sweep.shard)
    measured: set[str] = set()
    records = []
    for j, run in enumerate(runs):
        first_of_setting = run.setting.name not in measured and config.sweep.measure_memory
        measured.add(run.setting.name)
        record = run_one(config, run, root, measure_memory=first_of_setting)
        log(f"[{j + 1}/{len(runs)}] {run.setting.name} seed {run.seed}: {record['status']}"
            f" ({record.get('wall_seconds', 0.0):.0f} s)")
        records.append(record)
    return records


def validate(config) -> None:
    """Checks the sweep fields before any compute (ConfigError names the field)."""
    if config.sweep.stage not in STAGES:
        raise config_lib.ConfigError("sweep.stage", config.sweep.stage, f"one of {STAGES}")
    parse_shard(config.sweep.shard)
    from rnnvision.ablation.summary import parse_target

    for name in dict.fromkeys(s.study for s in settings(config)):
        study = config.studies[name]
        if not (isinstance(study.seeds, int) and study.seeds >= 1):
            raise config_lib.ConfigError(f"studies.{name}.seeds", study.seeds, "an integer >= 1")
        try:
            parse_target(study.target)
        except ValueError:
            raise config_lib.ConfigError(f"studies.{name}.target", study.target,
                                         "'' or '<metric>>=<value>' / '<metric><=<value>'") from None


def use_compilation_cache(directory: str) -> None:
    """JAX's persistent compilation cache in `directory`, unless one is set already.

    Sub-runs of one setting (seeds) compile identical programs, and every sub-run
    compiles the same evaluation and initialisation programs: the cache turns those
    recompilations (most of a short CPU run's time) into disk reads.
    """
    import jax

    if jax.config.jax_compilation_cache_dir:
        return
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)


def main(config, root: str, log: Callable[[str], None] = logging.info) -> list[dict[str, Any]]:
    """The whole command: this shard's runs, then (unsharded, or stage "report") the
    analyses, then figures and summary from whatever exists. Returns the summary rows."""
    from rnnvision.ablation import figures, grad_bias, memory, summary

    validate(config)
    os.makedirs(root, exist_ok=True)
    if config.sweep.compilation_cache:
        use_compilation_cache(os.path.join(root, "jax_cache"))
    write_json(os.path.join(root, "sweep_config.json"), config.to_dict())
    _, num_shards = parse_shard(config.sweep.shard)
    t0 = time.time()
    if config.sweep.stage in ("all", "runs"):
        run_shard(config, root, log)
    if config.sweep.stage == "report" or (config.sweep.stage == "all" and num_shards == 1):
        grad_bias.analyze(config, root)
        log(f"gradient-bias analysis done ({time.time() - t0:.0f} s so far)")
        memory.analyze(config, root)
        log(f"memory analysis done ({time.time() - t0:.0f} s so far)")
    figures.write_all(config, root)
    rows = summary.write(config, root)
    log(f"sweep shard {config.sweep.shard}: {time.time() - t0:.0f} s; "
        f"summary in {os.path.join(root, 'summary.md')}")
    return rows
