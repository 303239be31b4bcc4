"""`train.profile_steps`: a `jax.profiler` trace of a few training steps, in the workdir.

    --config.train.profile_steps=100:105    traces steps 100 to 105 (1-based, inclusive)

The trace goes to WORKDIR/profile/plugins/profile/<time>/ (WORKDIR/profile/process_<i>/...
for process i of a multi-host run): `<host>.xplane.pb` for TensorBoard's profile tab
(`pip install tensorboard tensorboard-plugin-profile`, then
`tensorboard --logdir WORKDIR/profile`), and `perfetto_trace.json.gz`, which
https://ui.perfetto.dev opens as it is. Each step is a "train" step annotation (its
number as step_num), so the viewers show per-step times; the batches built by the
prefetch thread appear as "train_batch" on its own row. Tracing starts before the
first step is dispatched and stops after the last has finished; start-up and
compilation are outside it unless the range includes step 1.
"""

from __future__ import annotations

import contextlib
import os

import jax
from absl import logging

from rnnvision.train.config import profile_range


class StepProfiler:
    """Context manager around the training loop: `step(n)` wraps the dispatch of step n;
    `after(n, state)` stops the trace once step `last` is done."""

    def __init__(self, spec: str, workdir: str, process_index: int, process_count: int):
        self.range = profile_range(spec)
        directory = os.path.join(workdir, "profile")
        if process_count > 1:
            directory = os.path.join(directory, f"process_{process_index}")
        self.directory = directory
        self.active = False

    def __enter__(self) -> "StepProfiler":
        return self

    def step(self, n: int):
        """A context for dispatching step n: starts the trace at the first traced step."""
        if self.range is None or not self.range[0] <= n <= self.range[1]:
            return contextlib.nullcontext()
        if not self.active:
            os.makedirs(self.directory, exist_ok=True)
            jax.profiler.start_trace(self.directory, create_perfetto_trace=True)
            self.active = True
        return jax.profiler.StepTraceAnnotation("train", step_num=n)

    def after(self, n: int, state) -> None:
        if self.active and n >= self.range[1]:
            jax.block_until_ready(state)
            self._stop()

    def _stop(self) -> None:
        jax.profiler.stop_trace()
        self.active = False
        logging.warning("profile of train.profile_steps=%d:%d written to %s", *self.range,
                        self.directory)

    def __exit__(self, *exc) -> bool:
        if self.active:  # the run ended (or failed) inside the range
            self._stop()
        return False
