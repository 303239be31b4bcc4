"""Batches prepared ahead of use by a background thread, so the device never waits for them.

    with Prefetcher(load, range(start + 1, num_steps + 1), size=2) as batches:
        for step, batch in batches:     # batch = load(step), computed up to `size` steps ahead
            ...

`load(step)` builds the batch of a step and puts it on the devices; it runs in the
thread, in step order, one step at a time. What a step gets is `load(step)` whatever
the timing, so runs stay deterministic and resume with the same batches. An exception
in `load` is raised in the consumer when it reaches that step (the steps before it are
delivered first). Leaving the `with` block (at the end, on an error, on Ctrl-C) stops
the thread: it checks a stop flag whenever it waits for room in the queue, and it is a
daemon thread, so a `load` that never returns cannot keep the interpreter from exiting.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any, Callable, Iterable, Iterator

_POLL_SECONDS = 0.1  # how often a blocked side re-checks the other's state


class _End:
    """Queued after the last batch."""


class _Failure:
    """Queued in place of the batch whose `load` raised."""

    def __init__(self, error: BaseException):
        self.error = error


class Prefetcher:
    """Iterates (step, load(step)) over `steps`, `size` steps computed ahead in a thread."""

    def __init__(self, load: Callable[[int], Any], steps: Iterable[int], size: int = 2,
                 name: str = "prefetch"):
        if size < 1:
            raise ValueError(f"prefetch size must be >= 1; got {size}")
        self._load, self._steps = load, steps
        self._queue: queue.Queue = queue.Queue(maxsize=size)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, name=name, daemon=True)
        self._finished = False

    def __enter__(self) -> "Prefetcher":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False

    def __iter__(self) -> Iterator[tuple[int, Any]]:
        return self

    def __next__(self) -> tuple[int, Any]:
        if self._finished:
            raise StopIteration
        item = self._get()
        if isinstance(item, _End):
            self._finished = True
            raise StopIteration
        if isinstance(item, _Failure):
            self._finished = True
            raise item.error
        return item

    def _get(self):
        while True:
            try:
                return self._queue.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    raise RuntimeError("the prefetch thread ended without a batch") from None

    def _offer(self, item) -> bool:
        """Puts `item` in the queue, waiting for room; False when asked to stop meanwhile."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        try:
            for step in self._steps:
                if self._stop.is_set() or not self._offer((step, self._load(step))):
                    return
                # Hand the GIL over: the put may have woken the consumer, which would
                # otherwise wait up to sys.getswitchinterval() (5 ms) while this thread
                # builds the next batch in Python.
                time.sleep(0)
            self._offer(_End())
        except BaseException as e:  # noqa: BLE001 -- handed to the consumer, raised there
            self._offer(_Failure(e))

    def close(self, timeout: float = 10.0) -> None:
        """Stops the thread and drops the batches it prepared (idempotent)."""
        self._stop.set()
        while True:  # make room, so a thread blocked in put() sees the flag at once
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        self._finished = True
