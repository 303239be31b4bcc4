"""The run directory: created and locked once, config.json checked on resume, then written.

    hold(workdir, ...)   creates WORKDIR (and figures/), takes its lock (process 0) for the
                         whole run; every process agrees before going on
    check_config(...)    refuses a config.json of another run (ConfigMismatchError)
    write_config(...)    writes config.json, only after every check has passed

A workdir that cannot be used (a regular file, no write permission, a read-only file
system) is a `WorkdirError` naming it and what to do: one line, exit code 2 in the CLI.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
from typing import Any, Iterator

import numpy as np

from rnnvision.train.config import base_config
from rnnvision.train.lock import WorkdirBusyError, WorkdirLock
from rnnvision.train.writer import write_json

# Fields that may differ between a run and its resumption: they change neither
# the model, nor the data, nor the optimisation up to the steps already taken.
RESUME_SAFE = ("train.num_steps", "train.log_every", "train.eval_every", "train.checkpoint_every",
               "train.keep_checkpoints", "train.progress", "train.force_resume", "train.nonfinite",
               "train.restart_if_corrupt",
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
    """The workdir holds a run whose model, data or optimisation fields differ."""


class WorkdirError(RuntimeError):
    """The workdir cannot be created or written (a file, no permission, read-only, ...)."""


def _workdir_error(workdir: str, error: OSError) -> WorkdirError:
    if isinstance(error, FileExistsError) or (os.path.exists(workdir)
                                             and not os.path.isdir(workdir)):
        what = "is a regular file, not a directory: give a directory path (created if missing)"
    elif isinstance(error, NotADirectoryError):
        what = ("has a parent that is a regular file, not a directory: give a path under a "
                "directory")
    elif isinstance(error, PermissionError) or error.errno in (errno.EACCES, errno.EPERM):
        what = ("is not writable (permission denied): choose a directory you can write to, "
                "or fix its permissions")
    else:
        what = f"cannot be used ({error.strerror or error}): choose another directory"
    return WorkdirError(f"--workdir={workdir} {what}")


def create(workdir: str) -> None:
    """Creates WORKDIR and WORKDIR/figures; a WorkdirError (one line) if it cannot."""
    try:
        os.makedirs(os.path.join(workdir, "figures"), exist_ok=True)
    except OSError as e:
        raise _workdir_error(workdir, e) from e


def gather(value: int, process_count: int) -> list[int]:
    """`value` of every process, in process order (a collective: all processes call it)."""
    if process_count == 1:
        return [value]
    from jax.experimental import multihost_utils

    return [int(v) for v in np.asarray(multihost_utils.process_allgather(np.int32(value)))]


@contextlib.contextmanager
def hold(workdir: str, is_main: bool, process_count: int,
         held: WorkdirLock | None = None) -> Iterator[None]:
    """Creates the workdir and, on the process that writes (`is_main`), holds its lock.

    `held`: a lock of `workdir` the caller already holds (the sweep holds each sub-run's
    lock around its bookkeeping); it is used, not taken again, and not released here.
    With several processes, all agree before going on: if one fails, every one raises
    (the failing one its own error), so none is left waiting in a collective.
    """
    lock, error = None, None
    try:
        create(workdir)
        if is_main and held is None:
            lock = WorkdirLock(workdir).acquire()
        elif is_main and not (held.held and os.path.samefile(held.workdir, workdir)):
            raise ValueError(f"the lock passed for {workdir} is not held on it")
    except OSError as e:
        error = _workdir_error(workdir, e)
    except (WorkdirError, WorkdirBusyError) as e:
        error = e
    failed = [i for i, code in enumerate(gather(int(error is not None), process_count)) if code]
    if error is not None:
        raise error
    if failed:
        raise WorkdirError(f"--workdir={workdir}: process {failed[0]} could not take the "
                           "workdir (see its message)")
    try:
        yield
    finally:
        if lock is not None:
            lock.release()


def check_config(workdir: str, config_dict: dict, force: bool,
                 safe: tuple[str, ...] = RESUME_SAFE) -> None:
    """Refuses (ConfigMismatchError, one line) a workdir whose config.json is of another run.

    Fields in `safe` may differ; with `force` nothing is refused here (the checkpoint's
    parameter shapes are still checked before resuming).
    """
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path) or force:
        return
    try:
        with open(path) as f:
            old = json.load(f)
    except (OSError, ValueError) as e:
        raise ConfigMismatchError(
            f"{path} cannot be read ({e}); the workdir's run is unknown: use a new --workdir, "
            "or pass --config.train.force_resume=True to resume anyway") from None
    diffs = config_differences(old, config_dict, safe)
    if diffs:
        raise ConfigMismatchError(
            f"{workdir} holds a run with a different config ("
            + "; ".join(d.strip() for d in diffs)
            + "); resuming would mix two runs: use a new --workdir, or pass "
            "--config.train.force_resume=True to resume anyway")


def write_config(workdir: str, config_dict: dict) -> None:
    write_json(os.path.join(workdir, "config.json"), config_dict)
