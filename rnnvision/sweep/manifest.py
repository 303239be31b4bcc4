"""DIR/sweep.json: what a sweep directory holds, checked whenever the sweep runs again.

    {"kind": "rnnvision sweep", "main_metric": "accuracy",
     "grids": {"<grid name>": {"axes": [...], "seeds": 3, "seed_fields": [...],
                               "points": [{"name": ..., "values": {...}}],
                               "base_config": {...}}}}

One sweep command has one grid (named "sweep"); the truncated-BPTT ablation has one
per study. Running again with a grid already recorded under the same name but with
other axes, seeds, seed fields or base config raises `SweepMismatchError`, naming
each difference (field: old -> new), because the existing runs would be mixed with
runs of another experiment. A new grid name is added (an ablation study run later in
the same DIR). Fields in `safe` (presentation only, e.g. the progress bar) may differ.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping, Sequence

from rnnvision.sweep.io import write_json
from rnnvision.train.workdir import ConfigMismatchError

FILE = "sweep.json"
KIND = "rnnvision sweep"
# Fields of a base config that change neither the runs nor their results.
SAFE_FIELDS = ("train.progress", "distributed.", "eval.main_metric")  # change no run


class SweepMismatchError(ConfigMismatchError):
    """The sweep directory holds a sweep with another grid or base config (a
    ConfigMismatchError: the command line reports it like a single run's, exit code 2)."""


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}."""
    if isinstance(tree, Mapping):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree}


def differences(old: Mapping, new: Mapping, safe: Sequence[str] = ()) -> list[str]:
    """Lines "  field: old -> new" for the leaves that differ, outside `safe` prefixes."""
    a, b = flatten(old), flatten(new)
    lines = []
    for field in sorted(set(a) | set(b)):
        if any(field == s or (s.endswith(".") and field.startswith(s)) for s in safe):
            continue
        if a.get(field, "<absent>") != b.get(field, "<absent>"):
            lines.append(f"  {field}: {a.get(field, '<absent>')!r} -> {b.get(field, '<absent>')!r}")
    return lines


def axis_spec(axis: Mapping) -> str:
    """A recorded axis as its --grid flag: "a.b=1,2" or "a.b:c.d=1:x,2:y"."""
    values = ",".join(":".join(str(v) for v in value) for value in axis["values"])
    return f"--grid={':'.join(axis['fields'])}={values}"


def comparable(entry: Mapping) -> dict[str, Any]:
    """A grid record as compared on re-runs: axes as --grid flags, points left out (they
    follow from the axes), everything else as recorded."""
    out = {k: v for k, v in entry.items() if k not in ("axes", "points")}
    out["grid"] = " ".join(axis_spec(a) for a in entry.get("axes", []))
    return out


def read(root: str) -> dict[str, Any]:
    path = os.path.join(root, FILE)
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def grid_entry(axes: Sequence, seeds: int, seed_fields: Sequence[str], grid_points: Sequence,
               base_config: Mapping) -> dict[str, Any]:
    """The record of one grid (axes as Axis.to_json(), points with `.name` and `.values`)."""
    return {"axes": [a.to_json() for a in axes], "seeds": seeds,
            "seed_fields": list(seed_fields),
            "points": [{"name": p.name, "values": dict(p.values)} for p in grid_points],
            "base_config": dict(base_config)}


def check_and_write(root: str, grids: Mapping[str, Mapping], main_metric: str,
                    safe: Sequence[str] = SAFE_FIELDS) -> None:
    """Refuses a recorded grid that differs (SweepMismatchError naming every difference);
    otherwise records the grids (added to those already there) in DIR/sweep.json."""
    grids = json.loads(json.dumps(grids))  # as it will read back (tuples become lists)
    old = read(root)
    if old and old.get("kind") != KIND:
        raise SweepMismatchError(f"{os.path.join(root, FILE)} is not a sweep record")
    recorded = old.get("grids", {})
    problems = []
    for name, entry in grids.items():
        if name in recorded:
            safe_here = tuple(f"base_config.{s}" for s in safe)
            lines = differences(comparable(recorded[name]), comparable(entry), safe_here)
            if lines:
                problems.append(f"grid {name!r}:\n" + "\n".join(lines))
    if problems:
        raise SweepMismatchError(
            f"{root} holds a sweep with another grid or base config; running would mix the "
            "two sweeps' runs.\n" + "\n".join(problems) + "\nUse a new --workdir.")
    os.makedirs(root, exist_ok=True)
    write_json(os.path.join(root, FILE),
               {"kind": KIND, "main_metric": main_metric, "grids": {**recorded, **grids}})
