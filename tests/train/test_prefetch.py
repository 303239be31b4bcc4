"""The prefetch thread: the same batches in the same order whatever the timing, errors
raised at their step, and a thread that always stops."""

from __future__ import annotations

import random
import threading
import time

import numpy as np
import pytest

from rnnvision.train.prefetch import Prefetcher


def _batch(step: int) -> np.ndarray:
    return np.random.default_rng([7, step]).normal(size=(4, 3))


def _prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "prefetch" and t.is_alive()]


@pytest.mark.parametrize("size", [1, 3])
def test_batches_are_those_of_their_step_whatever_the_timing(size):
    delays = random.Random(0)

    def load(step):
        time.sleep(delays.uniform(0, 0.003))  # a producer sometimes slower, sometimes faster
        return _batch(step)

    seen = []
    with Prefetcher(load, range(5, 25), size=size) as batches:
        for step, batch in batches:
            time.sleep(delays.uniform(0, 0.003))
            seen.append(step)
            np.testing.assert_array_equal(batch, _batch(step))
    assert seen == list(range(5, 25))
    assert not _prefetch_threads()


def test_an_error_in_load_is_raised_at_its_step_after_the_earlier_ones():
    def load(step):
        if step == 4:
            raise ValueError("corrupted file for step 4")
        return step

    seen = []
    with pytest.raises(ValueError, match="step 4"):
        with Prefetcher(load, range(1, 10)) as batches:
            for step, _ in batches:
                seen.append(step)
    assert seen == [1, 2, 3]
    assert not _prefetch_threads()


def test_leaving_early_stops_a_producer_waiting_for_room():
    loaded = []

    def load(step):
        loaded.append(step)
        return step

    with Prefetcher(load, range(1, 10**6), size=2) as batches:
        assert next(batches) == (1, 1)
        time.sleep(0.05)  # the producer fills the queue and waits for room
    assert not _prefetch_threads()
    assert len(loaded) <= 4  # 1 taken, 2 queued, 1 built while waiting: never far ahead


def test_an_exception_in_the_consumer_stops_the_thread():
    with pytest.raises(KeyboardInterrupt):
        with Prefetcher(lambda step: step, range(1, 10**6)) as batches:
            for step, _ in batches:
                if step == 3:
                    raise KeyboardInterrupt  # e.g. a second Ctrl-C
    assert not _prefetch_threads()


def test_a_load_that_never_returns_does_not_block_the_exit():
    release = threading.Event()
    prefetcher = Prefetcher(lambda step: release.wait(), range(1, 3)).__enter__()
    t0 = time.monotonic()
    prefetcher.close(timeout=0.2)
    assert time.monotonic() - t0 < 5  # close() gave up waiting; the thread is a daemon,
    assert prefetcher._thread.daemon  # so it cannot keep the interpreter alive either
    release.set()  # once its load returns, the thread sees the stop flag and ends
    prefetcher._thread.join(5)
    assert not prefetcher._thread.is_alive()
