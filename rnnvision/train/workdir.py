"""The run directory: config.json written once, and checked on resume."""

from __future__ import annotations

import json
import os
from typing import Any

from rnnvision.train.config import base_config
from rnnvision.train.writer import write_json

# Fields that may differ between a run and its resumption: they change neither
# the model, nor the data, nor the optimisation up to the steps already taken.
RESUME_SAFE = ("train.num_steps", "train.log_every", "train.eval_every", "train.checkpoint_every",
               "train.keep_checkpoints", "train.progress", "train.force_resume", "train.nonfinite",
               "eval.", "distributed.", "extra_imports")


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out = {}
        for k, v in tree.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: tree}


def config_differences(old: dict, new: dict, safe=RESUME_SAFE) -> list[str]:
    """Lines "field: old -> new" for fields outside `safe` that differ.

    A trainer field that a newer version added (absent from `old`) and that holds
    its default in `new` is no difference: a workdir written before the field
    existed ran with that default.
    """
    a, b = flatten(old), flatten(new)
    defaults = flatten(base_config().to_dict())
    lines = []
    for field in sorted(set(a) | set(b)):
        if any(field == s or (s.endswith(".") and field.startswith(s)) for s in safe):
            continue
        if field not in a and field in defaults and b.get(field) == defaults[field]:
            continue
        if a.get(field, "<absent>") != b.get(field, "<absent>"):
            lines.append(f"  {field}: {a.get(field, '<absent>')!r} -> {b.get(field, '<absent>')!r}")
    return lines


class ConfigMismatchError(RuntimeError):
    pass


def prepare(workdir: str, config_dict: dict, force: bool, write: bool,
            safe: tuple[str, ...] = RESUME_SAFE) -> None:
    """Creates the workdir, checks a previous config.json, writes the new one.

    Raises ConfigMismatchError when the workdir holds a run whose model, data or
    optimisation fields differ (unless `force`); fields in `safe` may differ.
    """
    os.makedirs(os.path.join(workdir, "figures"), exist_ok=True)
    path = os.path.join(workdir, "config.json")
    if os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
        diffs = config_differences(old, config_dict, safe)
        if diffs and not force:
            raise ConfigMismatchError(
                f"{workdir} holds a run with a different config; resuming would mix two runs.\n"
                + "\n".join(diffs)
                + "\nUse a new --workdir, or pass --config.train.force_resume=True to resume anyway.")
    if write:
        write_json(path, config_dict)
