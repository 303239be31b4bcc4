"""Checkpoints under WORKDIR/checkpoints (orbax), each with a checksum, verified when read.

Saving step N (`Checkpointer.save`):
  1. WORKDIR/checksums/N.json is written (atomically): for every array of the state its
     path, shape, dtype and the sha256 of its bytes, sealed by a digest of the record
     itself. It is computed from the arrays being saved and written before orbax starts,
     so no kill can leave a committed checkpoint without a checksum; a record whose
     checkpoint never committed is ignored (and removed by rotation).
  2. Orbax writes the checkpoint into a temporary directory and renames it to `N` when
     complete: a run killed mid-write leaves nothing `latest_step` would pick.
  3. The checkpoint is read back and its arrays compared with the record.
  4. Now that the save is complete and verified, the sha256 of each of its files is
     added to the record.
  5. Only then are the checkpoints older than the newest `keep` deleted.
  A failure in 1-3 is a `CheckpointSaveError` (an OSError) naming the step and the last
  verified checkpoint, which is intact.

Rotation is ours, not orbax's `max_to_keep`: orbax deletes the old steps as soon as the
new one is committed, before anything has read it back, so a checkpoint written wrongly
could push out the last good one. Here a checkpoint is deleted only after a newer one
has been read back and matched its checksum: the newest verified checkpoint is never
deleted.

Restoring (`restore_latest`): the newest checkpoint is tried first. It verifies when its
record reads and matches its digest, its files match their sha256 (checked before orbax
reads them: a damaged file is named as such), orbax reads it, and the arrays read hash
to the record. One that fails is reported in one line (the step and what failed), moved
to WORKDIR/rejected_checkpoints/<N>-<time>/ (never deleted; with a reason.txt) and the
next older one is used. If none verifies, all are left in place and the run stops with
`NoVerifiedCheckpointError` (exit 2, and so does every re-run) unless the caller asks to
start over from step 0 (then they are moved aside first). Before any of this, the arrays
the config builds (paths, shapes, dtypes) are compared with those of the newest
readable checkpoint: a difference is a `CheckpointMismatchError` naming them, so a
changed config stops the run with nothing moved or written.

A checkpoint without a record (written before checksums existed) cannot be verified: it
is restored if orbax can read it, with a warning, when no checkpoint of the directory
has a record; otherwise it counts as failing verification.
"""

from __future__ import annotations

import datetime
import errno
import glob
import hashlib
import json
import os
import shutil
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from rnnvision.train.workdir import gather
from rnnvision.train.writer import write_json

CHECKSUM_DIR = "checksums"
REJECTED_DIR = "rejected_checkpoints"
_MAX_LISTED = 4  # arrays named in a one-line message before "and N more"


def _is_disk_full(error: BaseException) -> bool:
    """ENOSPC, as an OSError or as TensorStore's message (a ValueError from orbax)."""
    text = str(error)
    return (getattr(error, "errno", None) == errno.ENOSPC or "No space left on device" in text
            or "os_error_code='28'" in text)


def _first_line(error: BaseException, limit: int = 200) -> str:
    text = " ".join(str(error).split()) or "(no message)"
    text = text if len(text) <= limit else text[:limit] + "..."
    return f"{type(error).__name__}: {text}"


def _listed(items: list[str]) -> str:
    more = len(items) - _MAX_LISTED
    return "; ".join(items[:_MAX_LISTED]) + (f"; and {more} more" if more > 0 else "")


class CheckpointSaveError(OSError):
    """Saving a checkpoint failed; the previous verified checkpoint is untouched."""

    def __init__(self, step: int, directory: str, intact: int | None, cause: BaseException | str):
        if isinstance(cause, str):
            what = cause
        elif _is_disk_full(cause):
            what = "the disk is full (no space left on device)"
        else:
            what = _first_line(cause)
        kept = (f"the checkpoint of step {intact} is intact: free space (or fix the cause) and "
                "re-run the same command to resume from it" if intact is not None
                else "no earlier checkpoint exists: a re-run starts from step 0")
        full = not isinstance(cause, str) and _is_disk_full(cause)
        super().__init__(errno.ENOSPC if full else errno.EIO,
                         f"saving the checkpoint of step {step} to {directory} failed: {what}; "
                         f"the partial checkpoint was removed and {kept}")
        self.step, self.intact = step, intact


class CheckpointInvalidError(ValueError):
    """One checkpoint failed verification (unreadable, or not what was saved)."""

    def __init__(self, step: int, directory: str, reason: str):
        super().__init__(f"the checkpoint of step {step} in {directory} failed verification: "
                         f"{reason}")
        self.step, self.reason = step, reason


class NoVerifiedCheckpointError(RuntimeError):
    """Checkpoints exist, but none verifies; they are left in place."""

    def __init__(self, directory: str, steps: list[int]):
        where = os.path.join(os.path.dirname(directory), REJECTED_DIR)
        super().__init__(
            f"no checkpoint in {directory} verifies (steps {', '.join(map(str, steps))}: see "
            "above); they were left in place: pass --config.train.restart_if_corrupt=True to "
            f"move them to {where} and start over from step 0")
        self.steps = steps


class CheckpointMismatchError(ValueError):
    """The state the config builds has other arrays than the workdir's checkpoint."""

    def __init__(self, step: int, directory: str, differences: list[str]):
        super().__init__(
            f"the config's parameters differ from the checkpoint of step {step} in {directory} "
            f"({_listed(differences)}); it cannot be resumed with this config: use a new "
            "--workdir, or the config the run was started with")
        self.step, self.differences = step, differences


# -- checksums ------------------------------------------------------------------------------

def _by_path(tree: Any) -> dict[str, Any]:
    """{"params/cell/w_x": leaf, ...}: every leaf of a tree, by its path."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {jax.tree_util.keystr(path, simple=True, separator="/"): x for path, x in flat}


def _shapes(tree: Any) -> dict[str, tuple]:
    """{path: (shape, dtype name)} of a tree of arrays or of orbax's array metadata."""
    return {name: (tuple(np.shape(x) if not hasattr(x, "shape") else x.shape),
                   str(np.dtype(x.dtype) if hasattr(x, "dtype") else np.asarray(x).dtype))
            for name, x in _by_path(tree).items()}


def _sha256(array: np.ndarray) -> str:
    data = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
    return hashlib.sha256(memoryview(data)).hexdigest()


def _leaf_records(state: Any) -> dict[str, dict]:
    arrays = {name: np.asarray(x) for name, x in _by_path(state).items()}
    return {name: {"shape": list(x.shape), "dtype": str(x.dtype), "sha256": _sha256(x)}
            for name, x in arrays.items()}


def _digest(record: dict) -> str:
    """sha256 of the record without its digest: a damaged record is never trusted."""
    body = {k: v for k, v in record.items() if k != "digest"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _sealed(record: dict) -> dict:
    return {**record, "digest": _digest(record)}


def checksum_record(step: int, state: Any) -> dict:
    """The record saved next to checkpoint `step` of the host state `state` (its arrays)."""
    return _sealed({"step": int(step), "algorithm": "sha256", "leaves": _leaf_records(state)})


def _file_hashes(directory: str) -> dict[str, str]:
    """{path relative to `directory`: sha256} of every file under it."""
    out = {}
    for root, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, directory)] = hashlib.file_digest(f, "sha256").hexdigest()
    return out


def _params_first(name: str) -> tuple[bool, str]:
    """Sort key: parameters before optimizer state and counters."""
    return (not name.startswith("params/"), name)


def _structure(leaves: dict[str, tuple]) -> dict[str, str]:
    return {name: f"{tuple(shape)} {dtype}" for name, (shape, dtype) in leaves.items()}


def structure_differences(stored: dict[str, tuple], wanted: dict[str, tuple]) -> list[str]:
    """'path: checkpoint S D, config S D' for every array whose shape or dtype differ,
    parameters first; arrays only one side has are named as such."""
    a, b = _structure(stored), _structure(wanted)
    out = []
    for name in sorted(set(a) | set(b), key=_params_first):
        if a.get(name) != b.get(name):
            out.append(f"{name}: checkpoint {a.get(name, 'absent')}, config "
                       f"{b.get(name, 'absent')}")
    return out


# -- the checkpointer -----------------------------------------------------------------------

class Checkpointer:
    """Saves and restores a TrainState pytree (held on the host as numpy), verified.

    write: this process writes records and moves/deletes files (process 0); the others
    only take part in orbax's collective save/delete and read.
    """

    def __init__(self, workdir: str, keep: int, write: bool = True, process_count: int = 1):
        self.workdir = os.path.abspath(workdir)
        self.directory = os.path.join(self.workdir, "checkpoints")
        self.keep, self.write, self.process_count = keep, write, process_count
        options = ocp.CheckpointManagerOptions(max_to_keep=None, create=True,
                                               cleanup_tmp_directories=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options,
                                             item_handlers=ocp.StandardCheckpointHandler())
        self._verified = None  # the newest checkpoint known to verify

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def _record_path(self, step: int) -> str:
        return os.path.join(self.workdir, CHECKSUM_DIR, f"{step}.json")

    def _read_record(self, step: int) -> dict | None:
        """The checksum record of `step`; None if there is none; CheckpointInvalidError if
        it cannot be read or its digest is wrong."""
        path = self._record_path(step)
        if not os.path.exists(path):
            return None
        try:
            with open(path) as f:
                record = json.load(f)
            ok = record["step"] == step and record["digest"] == _digest(record)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CheckpointInvalidError(step, self.directory,
                                         f"its checksum record {path} cannot be read "
                                         f"({_first_line(e)})") from None
        if not ok:
            raise CheckpointInvalidError(step, self.directory,
                                         f"its checksum record {path} is damaged")
        return record

    # -- saving -------------------------------------------------------------------------------
    def save(self, step: int, state: Any) -> None:
        """Saves `state` at `step`, reads it back, then rotates (module docstring).

        Raises CheckpointSaveError (an OSError) if any of it fails, after removing the
        partial checkpoint (orbax's temporary directory) to free its space.
        """
        host_state = jax.tree.map(np.asarray, jax.device_get(state))
        record = checksum_record(step, host_state)
        try:
            if self.write:
                os.makedirs(os.path.dirname(self._record_path(step)), exist_ok=True)
                write_json(self._record_path(step), record)
            self.manager.save(step, args=ocp.args.StandardSave(host_state), force=True)
            self.manager.wait_until_finished()
        except Exception as e:  # noqa: BLE001 -- orbax/TensorStore raise ValueError, OSError, ...
            self._remove_partial(step)
            raise CheckpointSaveError(step, self.directory, self._verified, e) from e
        self._read_back(step, host_state, record)
        if self.write:
            self._add_file_hashes(step, record)
        self._verified = step
        self._rotate()

    def _add_file_hashes(self, step: int, record: dict) -> None:
        """Adds the sha256 of the (complete, verified) checkpoint's files to its record; if
        that fails the record keeps only the arrays' checksums, which still verify it."""
        try:
            files = _file_hashes(os.path.join(self.directory, str(step)))
            write_json(self._record_path(step), _sealed({**record, "files": files}))
        except OSError as e:
            logging.warning("the checkpoint of step %d is saved and verified, but its files' "
                            "checksums could not be recorded (%s)", step, _first_line(e))

    def _remove_partial(self, step: int) -> None:
        partial = os.path.join(self.directory, f"{step}{ocp.utils.TMP_DIR_SUFFIX}*")
        for path in glob.glob(partial):
            shutil.rmtree(path, ignore_errors=True)
        if self.write and os.path.exists(self._record_path(step)):
            os.remove(self._record_path(step))

    def _read_back(self, step: int, like: Any, record: dict) -> None:
        """Reads the new checkpoint back; if it is not what was saved, moves it aside."""
        try:
            self._read_and_compare(step, like, record)
            failed = 0
        except CheckpointInvalidError as e:
            failed, reason = 1, e.reason
        if any(gather(failed, self.process_count)):
            if failed and self.write:
                self._move_aside(step, reason)
            gather(0, self.process_count)  # moved before anyone reloads
            self.manager.reload()
            raise CheckpointSaveError(step, self.directory, self._verified,
                                      f"it does not read back as saved "
                                      f"({reason if failed else 'on another process'})")

    def _rotate(self) -> None:
        """Deletes the checkpoints older than the newest `keep` (all processes, in step)."""
        steps = sorted(self.manager.all_steps())
        for step in steps[:-self.keep]:
            self.manager.delete(step)
        if not self.write:
            return
        kept = set(self.manager.all_steps())
        for path in glob.glob(os.path.join(self.workdir, CHECKSUM_DIR, "*.json")):
            name = os.path.basename(path)[:-len(".json")]
            if name.isdigit() and int(name) not in kept and int(name) < max(kept):
                os.remove(path)

    # -- restoring ----------------------------------------------------------------------------
    def _check_files(self, step: int, files: dict[str, str]) -> None:
        """Each file the record lists must be there with its sha256 (checked before orbax
        reads anything, so a damaged file is reported as such)."""
        directory = os.path.join(self.directory, str(step))
        for name, expected in sorted(files.items()):
            path = os.path.join(directory, name)
            if not os.path.isfile(path):
                raise CheckpointInvalidError(step, self.directory, f"its file {name} is missing")
            with open(path, "rb") as f:
                if hashlib.file_digest(f, "sha256").hexdigest() != expected:
                    raise CheckpointInvalidError(
                        step, self.directory,
                        f"its file {name} differs from what was saved (sha256 mismatch)")

    def _check_before_reading(self, step: int, legacy: bool) -> dict | None:
        """The record of `step` after checking it and the files it lists (no orbax call);
        None for a checkpoint without one in a `legacy` directory. Raises
        CheckpointInvalidError."""
        record = self._read_record(step)
        if record is None and not legacy:
            raise CheckpointInvalidError(step, self.directory, "it has no checksum record")
        if record is not None and "files" in record:
            self._check_files(step, record["files"])
        return record

    def _read_and_compare(self, step: int, like: Any, record: dict | None) -> Any:
        """Reads checkpoint `step` with orbax (with several processes, all must call it)
        into the structure of `like` and compares its arrays with `record` (None:
        unverified). Raises CheckpointInvalidError."""
        target = jax.tree.map(lambda x: np.zeros(np.shape(x), np.asarray(x).dtype), like)
        try:
            state = self.manager.restore(step, args=ocp.args.StandardRestore(target))
        except Exception as e:  # noqa: BLE001 -- orbax/TensorStore/json raise many kinds
            raise CheckpointInvalidError(step, self.directory,
                                         f"orbax cannot read it ({_first_line(e)})") from None
        if record is not None:
            read = _leaf_records(state)
            bad = sorted((n for n in set(read) | set(record["leaves"])
                          if read.get(n) != record["leaves"].get(n)), key=_params_first)
            if bad:
                raise CheckpointInvalidError(
                    step, self.directory, "checksum mismatch in " + _listed(bad)
                    + " (the data differ from what was saved)")
        return state

    def restore(self, step: int, like: Any) -> Any:
        """Restores checkpoint `step` into the structure of `like`, verified against its
        record when it has one. Raises CheckpointInvalidError."""
        record = self._check_before_reading(step, legacy=True)
        return self._read_and_compare(step, like, record)

    def _stored_structure(self, step: int) -> dict[str, tuple] | None:
        """{path: (shape, dtype)} of checkpoint `step` (from its record, else from orbax's
        metadata); None if neither can be read."""
        try:
            record = self._read_record(step)
            if record is not None:
                return {n: (tuple(r["shape"]), r["dtype"]) for n, r in record["leaves"].items()}
            return _shapes(self.manager.item_metadata(step).tree)
        except Exception:  # noqa: BLE001 -- unreadable: verification will report it
            return None

    def check_structure(self, like: Any) -> None:
        """Raises CheckpointMismatchError when the newest readable checkpoint's arrays
        differ in path, shape or dtype from those of `like` (nothing is moved or written)."""
        wanted = _shapes(like)
        for step in sorted(self.manager.all_steps(), reverse=True):
            stored = self._stored_structure(step)
            if stored is None:
                continue
            differences = structure_differences(stored, wanted)
            if differences:
                raise CheckpointMismatchError(step, self.directory, differences)
            return

    def _move_aside(self, step: int, reason: str) -> str:
        """Moves checkpoint `step` (and its record) to WORKDIR/rejected_checkpoints/."""
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S")
        base = dest = os.path.join(self.workdir, REJECTED_DIR, f"{step}-{stamp}")
        n = 0
        while os.path.exists(dest):
            n += 1
            dest = f"{base}-{n}"
        os.makedirs(dest)
        source = os.path.join(self.directory, str(step))
        if os.path.exists(source):
            shutil.move(source, os.path.join(dest, "checkpoint"))
        if os.path.exists(self._record_path(step)):
            shutil.move(self._record_path(step), os.path.join(dest, "checksum.json"))
        with open(os.path.join(dest, "reason.txt"), "w") as f:
            f.write(f"step {step}: {reason}\n")
        return dest

    def _failed_anywhere(self, error: CheckpointInvalidError | None, step: int
                         ) -> CheckpointInvalidError | None:
        """This process's failure, or one standing for another process's (all agree)."""
        codes = gather(int(error is not None), self.process_count)
        if error is None and any(codes):
            error = CheckpointInvalidError(step, self.directory,
                                           "it failed verification on another process")
        return error

    def _verify_newest(self, like: Any) -> tuple[int, Any, dict[int, CheckpointInvalidError]]:
        """(step, state, failures): the newest checkpoint that verifies (step 0 and `like`
        if none does) and the failures of the newer ones. With several processes, all
        take the same steps in lockstep (orbax's reads are collective) and agree on each."""
        steps = sorted(self.manager.all_steps(), reverse=True)
        legacy = not any(os.path.exists(self._record_path(s)) for s in steps)
        failures: dict[int, CheckpointInvalidError] = {}
        for step in steps:
            record, error, state = None, None, like
            try:
                record = self._check_before_reading(step, legacy)
            except CheckpointInvalidError as e:
                error = e
            if not (error := self._failed_anywhere(error, step)):
                try:
                    state = self._read_and_compare(step, like, record)
                except CheckpointInvalidError as e:
                    error = e
                error = self._failed_anywhere(error, step)
            if error:
                failures[step] = error
                continue
            if record is None:
                logging.warning("the checkpoint of step %d in %s has no checksum record (written "
                                "before checksums existed): restored unverified", step,
                                self.directory)
            return step, state, failures
        return 0, like, failures

    def restore_latest(self, like: Any, start_over: bool = False) -> tuple[int, Any]:
        """(step, state) of the newest checkpoint that verifies, the newer ones moved aside
        (module docstring); (0, like) when there is none: then NoVerifiedCheckpointError,
        all left in place (so every re-run refuses too), unless `start_over` (all moved
        aside). Process 0 moves; every process reads and verifies."""
        self.check_structure(like)
        step, state, failures = self._verify_newest(like)
        if failures and not step and not start_over:
            for error in failures.values():
                logging.warning("%s", error)
            raise NoVerifiedCheckpointError(self.directory, sorted(failures, reverse=True))
        for failed, error in failures.items():
            if self.write:
                dest = self._move_aside(failed, error.reason)
                logging.warning("%s; moved to %s (kept, not deleted)", error, dest)
        if failures:
            gather(0, self.process_count)  # moved before anyone reloads
            self.manager.reload()
        if failures and not step:
            logging.warning("no checkpoint verifies: starting over from step 0 "
                            "(train.restart_if_corrupt=True)")
        if step:
            self._verified = step
        return step, state

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
