"""A progress bar for long runs: steps/s, ETA and the current loss."""

from __future__ import annotations

import sys
import time

from tqdm import tqdm


class Progress:
    """tqdm over optimizer steps; refreshes at most every 10 s when stderr is not a terminal."""

    def __init__(self, total: int, start: int, enabled: bool):
        self.total, self.start = total, start
        self.enabled = enabled
        self._t0 = time.perf_counter()
        self._step = start
        self._bar = None

    def __enter__(self):
        if self.enabled:
            interactive = sys.stderr.isatty()
            self._bar = tqdm(total=self.total, initial=self.start, unit="step", dynamic_ncols=True,
                             mininterval=0.5 if interactive else 10.0, file=sys.stderr)
        return self

    def update(self, step: int, loss: float) -> None:
        if self._bar is not None:
            self._bar.update(step - self._step)
            self._bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
        self._step = step

    def steps_per_second(self) -> float:
        elapsed = time.perf_counter() - self._t0
        return (self._step - self.start) / elapsed if elapsed > 0 else 0.0

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.close()
        return False
