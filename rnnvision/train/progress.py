"""Progress of a long run on stderr: steps/s, ETA and the current loss.

On a terminal it is a tqdm bar, redrawn in place. In a log file (stderr not a terminal,
e.g. a batch job's output) a bar's carriage returns would make one endless line, so it
prints plain lines instead: after the first step (which includes compiling), then one
every `interval` seconds, and at the last step:

    step 120/1000 (12.0%)  3.41 steps/s  ETA 0:04:18  loss 0.2345
"""

from __future__ import annotations

import datetime
import sys
import time
from typing import Callable, TextIO

from tqdm import tqdm

LOG_INTERVAL_SECONDS = 30.0


class Progress:
    """Context manager fed `update(step, loss)` after every optimizer step.

    total: the last step; start: the step the run starts from (a resumed run); enabled:
    False prints nothing (e.g. on every process but the first); stream: where to print
    (stderr); interval: seconds between plain lines; clock: seconds (for tests).
    """

    def __init__(self, total: int, start: int, enabled: bool, stream: TextIO | None = None,
                 interval: float = LOG_INTERVAL_SECONDS,
                 clock: Callable[[], float] = time.perf_counter):
        self.total, self.start, self.enabled = total, start, enabled
        self.stream = stream if stream is not None else sys.stderr
        self.interval, self._clock = interval, clock
        self._t0 = clock()
        self._step = start
        self._bar = None
        self._first: tuple[int, float] | None = None  # (step, time) after the first step
        self._printed_at: float | None = None
        self._loss = float("nan")

    def __enter__(self):
        if self.enabled and self.stream.isatty():
            self._bar = tqdm(total=self.total, initial=self.start, unit="step",
                             dynamic_ncols=True, mininterval=0.5, file=self.stream)
        return self

    def update(self, step: int, loss: float) -> None:
        now = self._clock()
        self._step, self._loss = step, loss
        if self._bar is not None:
            self._bar.update(step - self._bar.n)
            self._bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
        elif self.enabled and (self._printed_at is None or now - self._printed_at >= self.interval
                               or step == self.total):
            self._print_line(now)
        if self._first is None:
            self._first = (step, now)

    def _rate(self, now: float) -> float:
        """Steps per second since the first step (compiling excluded), else overall."""
        if self._first is not None and now > self._first[1] and self._step > self._first[0]:
            return (self._step - self._first[0]) / (now - self._first[1])
        return (self._step - self.start) / (now - self._t0) if now > self._t0 else 0.0

    def _print_line(self, now: float) -> None:
        rate = self._rate(now)
        eta = (datetime.timedelta(seconds=round((self.total - self._step) / rate))
               if rate > 0 else "?")
        percent = 100.0 * self._step / self.total if self.total else 100.0
        print(f"step {self._step}/{self.total} ({percent:.1f}%)  {rate:.2f} steps/s  ETA {eta}"
              f"  loss {self._loss:.4f}", file=self.stream, flush=True)
        self._printed_at = now

    def steps_per_second(self) -> float:
        elapsed = self._clock() - self._t0
        return (self._step - self.start) / elapsed if elapsed > 0 else 0.0

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.close()
        return False
