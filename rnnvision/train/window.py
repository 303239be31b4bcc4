"""Per-step metrics kept on the device between read-backs, and the summary rows made of them.

Reading metrics back after every step makes the host wait for the device each step.
Instead the compiled step writes its metrics (scalars) into row (step - 1) % size of a
buffer on the device,

    buffer (size, K) float32, column k = metric names[k] (sorted),

and the trainer reads the buffer back only every `train.log_every` steps (and before a
checkpoint, an evaluation or a stop), with size = log_every, so no row is overwritten
before it is read. `per_step` turns the rows of the steps since the last read-back into
the per-step dicts a host loop would have seen, so the summary rows of metrics.jsonl
(`summarize`) and the non-finite checks are the same as with a read-back every step.
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np


def empty(num_metrics: int, size: int) -> np.ndarray:
    """The host buffer to place on the devices before the first step: (size, K) zeros."""
    return np.zeros((size, num_metrics), np.float32)


def recorder(names: list[str], size: int):
    """`record(buffer, step, metrics) -> buffer`, jit-able: metrics of 1-based `step` into
    row (step - 1) % size."""

    def record(buffer: jax.Array, step: jax.Array, metrics: Mapping[str, jax.Array]):
        row = jnp.stack([jnp.asarray(metrics[k], jnp.float32).reshape(()) for k in names])
        return jax.lax.dynamic_update_index_in_dim(buffer, row, (step - 1) % size, 0)

    return record


def per_step(rows: np.ndarray, names: list[str], steps: range) -> list[dict[str, float]]:
    """The metrics {name: float} of each step of `steps` (at most `size` consecutive steps)
    from a host copy of the buffer."""
    size = len(rows)
    if len(steps) > size:
        raise ValueError(f"{len(steps)} steps since the last read-back; the buffer holds {size}")
    return [dict(zip(names, map(float, rows[(s - 1) % size]))) for s in steps]


def summarize(window: list[dict], steps_per_second: float) -> dict:
    """Means over the logging window; `clipped` becomes the fraction of steps clipped,
    `skipped` the number of updates skipped as non-finite."""
    out = {k: float(np.mean([m[k] for m in window])) for k in window[0]}
    out["skipped"] = float(sum(1 - m["finite"] for m in window))
    out.pop("finite")
    out["steps_per_second"] = steps_per_second
    return out
