"""EpochSampler: exact epoch coverage, determinism, resumption by step number alone."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnvision.data.sampler import EpochSampler


@pytest.mark.parametrize("drop_remainder", [True, False])
def test_each_example_once_per_epoch_when_batch_divides(drop_remainder):
    sampler = EpochSampler(60, batch_size=12, seed=3, drop_remainder=drop_remainder)
    assert sampler.num_batches_per_epoch == 5
    for epoch in range(3):
        steps = range(epoch * 5, epoch * 5 + 5)
        seen = np.concatenate([sampler.indices(s) for s in steps])
        np.testing.assert_array_equal(np.sort(seen), np.arange(60))
        assert {sampler.epoch(s) for s in steps} == {epoch}


def test_drop_remainder_skips_a_different_tail_each_epoch():
    sampler = EpochSampler(10, batch_size=3, seed=0, drop_remainder=True)
    assert sampler.num_batches_per_epoch == 3
    dropped = []
    for epoch in range(4):
        seen = np.concatenate([sampler.indices(epoch * 3 + k) for k in range(3)])
        assert len(np.unique(seen)) == 9  # No repeats within an epoch.
        np.testing.assert_array_equal(seen, sampler.permutation(epoch)[:9])
        dropped.append(int(np.setdiff1d(np.arange(10), seen)[0]))
    assert len(set(dropped)) > 1


def test_stream_mode_straddles_epochs_without_repeats_or_drops():
    sampler = EpochSampler(10, batch_size=3, seed=5, drop_remainder=False)
    assert sampler.num_batches_per_epoch == 4
    stream = np.concatenate([sampler.indices(s) for s in range(10)])  # 30 = 3 epochs.
    for epoch, block in enumerate(stream.reshape(3, 10)):
        np.testing.assert_array_equal(block, sampler.permutation(epoch))
    assert [sampler.epoch(s) for s in range(5)] == [0, 0, 0, 0, 1]  # Step 3 straddles.


def test_epochs_are_reshuffled_and_seeds_differ():
    a = EpochSampler(100, 10, seed=0)
    assert not np.array_equal(a.permutation(0), a.permutation(1))
    b = EpochSampler(100, 10, seed=1)
    assert not np.array_equal(a.indices(0), b.indices(0))
    np.testing.assert_array_equal(a.indices(7), EpochSampler(100, 10, seed=0).indices(7))


@settings(max_examples=40, deadline=None)
@given(num_examples=st.integers(1, 50), batch_size=st.integers(1, 50),
       seed=st.integers(0, 2**31), drop_remainder=st.booleans(),
       steps=st.lists(st.integers(0, 200), min_size=1, max_size=12))
def test_indices_depend_on_the_step_alone(num_examples, batch_size, seed,
                                           drop_remainder, steps):
    batch_size = min(batch_size, num_examples)
    args = (num_examples, batch_size, seed, drop_remainder)
    used = EpochSampler(*args)
    for step in steps:  # Any call history, e.g. a run that resumed, jumped or re-read.
        got = used.indices(step)
        fresh = EpochSampler(*args).indices(step)
        np.testing.assert_array_equal(got, fresh)
        assert got.shape == (batch_size,) and got.dtype == np.int64
        assert got.min() >= 0 and got.max() < num_examples


def test_resume_gives_the_uninterrupted_batches():
    uninterrupted = EpochSampler(50, 8, seed=9, drop_remainder=False)
    full = [uninterrupted.indices(s) for s in range(20)]
    resumed = EpochSampler(50, 8, seed=9, drop_remainder=False)  # A new process.
    for s in range(13, 20):
        np.testing.assert_array_equal(resumed.indices(s), full[s])


def test_returned_indices_do_not_alias_the_cache():
    sampler = EpochSampler(20, 5, seed=0)
    first = sampler.indices(0)
    first[:] = -1
    assert sampler.indices(0).min() >= 0


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_examples=10, batch_size=11, seed=0), "batch_size=11 is larger than num_examples=10"),
    (dict(num_examples=10, batch_size=0, seed=0), "batch_size=0"),
    (dict(num_examples=0, batch_size=1, seed=0), "num_examples=0"),
    (dict(num_examples=10, batch_size=2, seed=-1), "seed=-1"),
])
def test_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EpochSampler(**kwargs)


def test_rejects_negative_step():
    with pytest.raises(ValueError, match="step=-1"):
        EpochSampler(10, 2, seed=0).indices(-1)
