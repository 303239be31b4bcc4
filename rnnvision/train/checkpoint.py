"""Checkpoints under WORKDIR/checkpoints with orbax's CheckpointManager.

Orbax writes each step to a temporary directory and renames it when complete,
so a run killed mid-write leaves no checkpoint that `latest_step` would pick.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp


class Checkpointer:
    """Saves and restores a TrainState pytree (held on the host as numpy)."""

    def __init__(self, workdir: str, keep: int):
        self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                               cleanup_tmp_directories=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: Any) -> None:
        """Saves `state` at `step` and waits until it is complete on disk."""
        host_state = jax.tree.map(np.asarray, jax.device_get(state))
        self.manager.save(step, args=ocp.args.StandardSave(host_state), force=True)
        self.manager.wait_until_finished()

    def restore(self, step: int, like: Any) -> Any:
        """Restores the checkpoint at `step` into the structure of `like`."""
        target = jax.tree.map(lambda x: np.zeros(np.shape(x), np.asarray(x).dtype), like)
        return self.manager.restore(step, args=ocp.args.StandardRestore(target))

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
