"""SIGTERM/SIGINT turn into a request to checkpoint and stop at the next step boundary."""

from __future__ import annotations

import signal
import threading


class Interrupted(Exception):
    """The run stopped early on a signal, after saving a checkpoint."""

    def __init__(self, signum: int, step: int):
        super().__init__(f"stopped by {signal.Signals(signum).name} after step {step}; "
                         "a checkpoint was saved: re-run the same command to resume")
        self.signum, self.step = signum, step


class StopOnSignal:
    """Context manager: while active, SIGTERM/SIGINT set `.signum` instead of killing.

    A second signal of the same kind falls through to the previous handler, so
    a user can still force-quit with a second Ctrl-C.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.signum: int | None = None
        self._previous = {}

    def _handle(self, signum, frame):
        if self.signum is not None:
            previous = self._previous.get(signum)
            if callable(previous):
                previous(signum, frame)
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc):
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        return False
