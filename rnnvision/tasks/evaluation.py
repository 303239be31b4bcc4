"""Evaluation in chunks: the one helper every task's `evaluate` and `figures` use.

Evaluation sets are larger than one device batch, so a pure function is applied
chunk by chunk (`apply` runs it data-parallel and returns numpy):

    logits = map_in_chunks(apply, predict, params, {"x": xs}, size=500)      # concatenated
    means = weighted_means([(len(chunk), metrics_of_chunk), ...])

With `pad=True` every chunk has exactly `size` rows (the last one padded by repeating
its last row, the padding dropped from the outputs), so ONE compiled program serves
every chunk and every evaluation set of that size.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, Mapping

import jax
import numpy as np

from rnnvision.tasks.base import Apply


def chunk_slices(total: int, size: int) -> Iterator[slice]:
    """slice(0, size), slice(size, 2 * size), ... covering range(total)."""
    if size < 1:
        raise ValueError(f"chunk size must be >= 1; got {size}")
    for start in range(0, total, size):
        yield slice(start, min(start + size, total))


def _pad_rows(x: np.ndarray, size: int) -> np.ndarray:
    return np.concatenate([x, np.repeat(x[-1:], size - len(x), 0)]) if len(x) < size else x


def map_in_chunks(apply: Apply, fn: Callable, params: Any, batch: Mapping[str, np.ndarray],
                  size: int, *, pad: bool = False) -> Any:
    """fn(params, rows of `batch`) over chunks of `size` rows; outputs concatenated on axis 0.

    batch: arrays sharing their first dim N. Returns fn's output pytree with every
    leaf's first dim N (chunks in order).
    """
    total = len(next(iter(batch.values())))
    outs = []
    for rows in chunk_slices(total, size):
        chunk = {k: np.asarray(v[rows]) for k, v in batch.items()}
        n = len(next(iter(chunk.values())))
        if pad:
            chunk = {k: _pad_rows(v, size) for k, v in chunk.items()}
        outs.append(jax.tree.map(lambda y: np.asarray(y)[:n], apply(fn, params, chunk)))
    return jax.tree.map(lambda *parts: np.concatenate(parts), *outs)


def weighted_means(parts: Iterable[tuple[int, Mapping[str, float]]]) -> dict[str, float]:
    """Means over examples of per-chunk means: parts are (chunk size, {name: mean})."""
    sums: dict[str, float] = {}
    total = 0
    for n, metrics in parts:
        for k, v in metrics.items():
            sums[k] = sums.get(k, 0.0) + float(np.mean(v)) * n
        total += n
    if total == 0:
        raise ValueError("weighted_means of no examples")
    return {k: v / total for k, v in sums.items()}
