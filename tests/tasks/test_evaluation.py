"""The chunked-evaluation helper every task uses."""

from __future__ import annotations

import numpy as np
import pytest

from rnnvision.tasks.evaluation import chunk_slices, map_in_chunks, weighted_means


def _recording_apply(calls):
    def apply(fn, params, batch):
        calls.append({k: v.shape for k, v in batch.items()})
        return fn(params, batch)
    return apply


@pytest.mark.parametrize("pad", [False, True])
def test_map_in_chunks_equals_one_call_on_everything(pad):
    x = np.arange(23 * 2, dtype=np.float32).reshape(23, 2)
    fn = lambda p, b: {"y": b["x"] * p, "s": b["x"].sum(-1)}  # noqa: E731
    calls = []
    out = map_in_chunks(_recording_apply(calls), fn, 3.0, {"x": x}, size=10, pad=pad)
    np.testing.assert_array_equal(out["y"], x * 3.0)
    np.testing.assert_array_equal(out["s"], x.sum(-1))
    assert [c["x"][0] for c in calls] == ([10, 10, 10] if pad else [10, 10, 3])


def test_weighted_means_weigh_chunks_by_their_size():
    assert weighted_means([(3, {"a": 1.0}), (1, {"a": 5.0})]) == {"a": 2.0}
    assert weighted_means([(2, {"a": np.array([1.0, 3.0])})]) == {"a": 2.0}
    with pytest.raises(ValueError):
        weighted_means([])
    assert [(s.start, s.stop) for s in chunk_slices(5, 2)] == [(0, 2), (2, 4), (4, 5)]
