"""What the trainer needs from an experiment: the `Task` interface.

A task owns its model, loss, data and evaluation, and knows nothing of
devices: the trainer jits/pmaps its pure functions and hands it an `apply`
function that runs a pure function data-parallel and returns numpy.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import ml_collections
import numpy as np

# apply(fn, params, batch) -> fn(params, batch) as numpy, run on the local devices.
Apply = Callable[[Callable, Any, dict], Any]


class Task:
    """Base class; subclasses implement the methods that raise NotImplementedError.

    Construction validates the task's own config fields (raising
    `rnnvision.train.config.ConfigError`) and loads the data.
    """

    # Config fields (dotted prefixes) that may change between a run and its resumption.
    resume_safe_fields: tuple[str, ...] = ()

    def __init__(self, config: ml_collections.ConfigDict):
        self.config = config

    def attach_workdir(self, workdir: str, is_main: bool) -> None:
        """Called once before training with the run directory (e.g. to save or load a
        vocabulary there); `is_main` is True on the process that writes files."""

    def init_params(self, rng: jax.Array) -> Any:
        raise NotImplementedError

    def init_stream(self, batch_size: int) -> Any:
        """Streaming tasks (TBPTT over long sequences) return the initial state carried
        across optimizer steps for a per-device batch of `batch_size`; others None.

        A streaming task's `loss` takes it as a 4th argument and returns
        `(loss, (metrics, new_stream))`; the trainer keeps it in `TrainState.stream`,
        one per device, and checkpoints it, so a resumed run continues the stream.
        """
        return None

    def loss(self, params: Any, batch: dict, rng: jax.Array) -> tuple[jax.Array, dict]:
        """Pure: (mean loss over the (per-device) batch, dict of scalar metrics)."""
        raise NotImplementedError

    def train_batch(self, step: int, rows: slice) -> dict[str, np.ndarray]:
        """Rows `rows` of the global training batch number `step` (deterministic)."""
        raise NotImplementedError

    def evaluate(self, params: Any, apply: Apply) -> dict[str, float]:
        """Final/periodic evaluation: a flat {name: number} dict."""
        raise NotImplementedError

    def figures(self, params: Any, apply: Apply, outdir: str,
                history: list[Mapping[str, Any]]) -> list[str]:
        """Writes figures into `outdir`; returns their paths. Default: none."""
        return []
