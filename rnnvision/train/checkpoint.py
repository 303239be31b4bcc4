"""Checkpoints under WORKDIR/checkpoints with orbax's CheckpointManager.

Orbax writes each step to a temporary directory and renames it when complete,
so a run killed mid-write leaves no checkpoint that `latest_step` would pick
(the leftover temporary directory is removed by the next save). A save that
fails (e.g. a full disk) raises `CheckpointSaveError`, which names the step and
the last complete checkpoint; older checkpoints are only deleted after a newer
one is complete.
"""

from __future__ import annotations

import errno
import glob
import os
import shutil
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp


def _is_disk_full(error: BaseException) -> bool:
    """ENOSPC, as an OSError or as TensorStore's message (a ValueError from orbax)."""
    text = str(error)
    return (getattr(error, "errno", None) == errno.ENOSPC or "No space left on device" in text
            or "os_error_code='28'" in text)


class CheckpointSaveError(OSError):
    """Saving a checkpoint failed; the previous complete checkpoint is untouched."""

    def __init__(self, step: int, directory: str, intact: int | None, cause: BaseException):
        what = ("the disk is full (no space left on device)" if _is_disk_full(cause)
                else f"{type(cause).__name__}: {cause}")
        kept = (f"the checkpoint of step {intact} is intact: free space (or fix the cause) and "
                "re-run the same command to resume from it" if intact is not None
                else "no earlier checkpoint exists: a re-run starts from step 0")
        super().__init__(errno.ENOSPC if _is_disk_full(cause) else errno.EIO,
                         f"saving the checkpoint of step {step} to {directory} failed: {what}; "
                         f"the partial checkpoint was removed and {kept}")
        self.step, self.intact = step, intact


class Checkpointer:
    """Saves and restores a TrainState pytree (held on the host as numpy)."""

    def __init__(self, workdir: str, keep: int):
        self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                               cleanup_tmp_directories=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options)
        self._complete = self.manager.latest_step()  # the newest checkpoint known complete

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: Any) -> None:
        """Saves `state` at `step` and waits until it is complete on disk.

        Raises CheckpointSaveError (an OSError) if the save fails, after removing
        the partial checkpoint (orbax's temporary directory) to free its space.
        """
        host_state = jax.tree.map(np.asarray, jax.device_get(state))
        try:
            self.manager.save(step, args=ocp.args.StandardSave(host_state), force=True)
            self.manager.wait_until_finished()
        except Exception as e:  # noqa: BLE001 -- orbax/TensorStore raise ValueError, OSError, ...
            partial = os.path.join(self.directory, f"{step}{ocp.utils.TMP_DIR_SUFFIX}*")
            for path in glob.glob(partial):
                shutil.rmtree(path, ignore_errors=True)
            raise CheckpointSaveError(step, self.directory, self._complete, e) from e
        self._complete = step

    def restore(self, step: int, like: Any) -> Any:
        """Restores the checkpoint at `step` into the structure of `like`."""
        target = jax.tree.map(lambda x: np.zeros(np.shape(x), np.asarray(x).dtype), like)
        return self.manager.restore(step, args=ocp.args.StandardRestore(target))

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
