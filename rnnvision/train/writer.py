"""Metrics out of a run: metrics.jsonl, TensorBoard events, results.json, config.json."""

from __future__ import annotations

import json
import math
import os
from typing import Any, Mapping

import numpy as np


def to_python(value: Any) -> Any:
    """Scalars -> float/int, NaN/Inf kept as strings JSON can hold ("nan", "inf")."""
    value = np.asarray(value).item() if np.ndim(value) == 0 else np.asarray(value).tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def write_json(path: str, obj: Mapping[str, Any]) -> None:
    """Writes JSON atomically (a reader never sees a half-written file)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
    os.replace(tmp, path)


def read_jsonl(path: str) -> list[dict]:
    """The rows of a metrics.jsonl; a torn last line (killed mid-write) is dropped."""
    rows = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    break
    return rows


class MetricWriter:
    """Appends one JSON object per logged step (with "step") and mirrors it to TensorBoard.

    On resume from `resume_step`, rows after it (logged after the checkpoint the
    run resumes from) are dropped, so the file has no duplicated steps; the kept
    rows are `self.rows`. The file is rewritten atomically: a run killed while
    resuming leaves either the old or the new file, never a truncated one.
    """

    def __init__(self, workdir: str, resume_step: int = 0, enabled: bool = True):
        self.enabled = enabled
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._tb = None
        self.rows: list[dict] = []
        if not enabled:
            return
        self.rows = [r for r in read_jsonl(self.path) if r.get("step", 0) <= resume_step]
        tmp = f"{self.path}.tmp"
        with open(tmp, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in self.rows)
        os.replace(tmp, self.path)
        from tensorboardX import SummaryWriter  # imported here: only the main process writes
        self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"), purge_step=resume_step + 1)

    def write(self, step: int, metrics: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        row = {"step": int(step), **{k: to_python(v) for k, v in metrics.items()}}
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
        for name, value in row.items():
            if name != "step" and isinstance(value, (int, float)):
                self._tb.add_scalar(name, value, step)

    def flush(self) -> None:
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
