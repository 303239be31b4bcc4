"""Reading the files of run directories, and writing files that other processes may read.

Several shards of one sweep may write DIR/summary.* and DIR/figures/* at the same time:
every write goes to a temporary file named after the process and is renamed into
place, so a reader sees a whole old file or a whole new one, never a mixture.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Callable, Mapping

from rnnvision.train.writer import read_jsonl  # noqa: F401 -- the trainer's reader, re-exported


def temporary_path(path: str) -> str:
    return f"{path}.{os.getpid()}.tmp"


def write_atomically(path: str, write: Callable[[str], None]) -> str:
    """write(tmp_path), then renames tmp_path to `path`; returns `path`."""
    tmp = temporary_path(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def write_text(path: str, text: str) -> str:
    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text)
    return write_atomically(path, write)


def write_json(path: str, obj: Mapping[str, Any]) -> str:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: str) -> dict[str, Any]:
    """The JSON object in `path`; {} when it does not exist or is not whole."""
    try:
        with open(path) as f:
            return json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def number(value: Any) -> float | None:
    """A results.json value as a float: ints and floats, and the strings "nan", "inf",
    "-inf" the trainer writes for non-finite numbers; None for anything else (bools,
    other strings, lists)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            parsed = float(value)
        except ValueError:
            return None
        return parsed if not math.isfinite(parsed) else None
    return None
