"""One writer per workdir: an OS-level lock held for the whole life of a run.

A run takes an exclusive `fcntl.flock` on `WORKDIR/.lock` before it reads or writes
anything else there, and keeps it until it ends. The kernel releases a flock when the
process dies (also on SIGKILL or an OOM kill), so no stale lock is ever left behind and
nothing has to be cleaned by hand. The file itself stays (deleting it would let two
processes lock two different files of the same name); it holds the holder's pid, host
and start time, which a refused run names:

    error: workdir runs/x is in use by another run (pid 4242 on host node1, started
    2026-12-01 19:40:02 UTC); wait for it to finish or stop it, or use another --workdir

On Linux, flock on NFS is forwarded to the server as a whole-file lock, so hosts that
share a workdir exclude each other too. In a multi-host run only the process that
writes (process 0) holds the lock (`rnnvision.train.workdir.hold`).
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import os
import socket
import time

LOCK_FILE = ".lock"


class WorkdirBusyError(RuntimeError):
    """Another process holds the workdir's lock."""

    def __init__(self, workdir: str, holder: dict | None):
        if holder:
            who = (f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, started "
                   f"{holder.get('started', '?')}")
        else:
            who = "holder unknown: it is starting up"
        super().__init__(f"workdir {workdir} is in use by another run ({who}); wait for it to "
                         "finish or stop it, or use another --workdir")
        self.workdir, self.holder = workdir, holder


def read_holder(workdir: str, attempts: int = 5) -> dict | None:
    """The pid/host/start time the holder wrote, or None.

    A holder writes them just after taking the lock: a reader that comes in between
    finds an empty file, so it tries again a few times (50 ms apart).
    """
    for attempt in range(attempts):
        try:
            with open(os.path.join(workdir, LOCK_FILE)) as f:
                holder = json.load(f)
            if isinstance(holder, dict):
                return holder
        except (OSError, ValueError):
            pass
        if attempt + 1 < attempts:
            time.sleep(0.05)
    return None


class WorkdirLock:
    """An exclusive, non-blocking lock on a workdir (the directory must exist).

        with WorkdirLock(workdir):   # raises WorkdirBusyError at once if held elsewhere
            ...                      # this process is the only writer

    The lock belongs to this object's open file: a second WorkdirLock on the same
    workdir is refused even in the same process (a sweep's sub-run cannot be entered
    twice).
    """

    def __init__(self, workdir: str):
        self.workdir = workdir
        self.path = os.path.join(workdir, LOCK_FILE)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> "WorkdirLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EACCES, errno.EAGAIN):
                raise WorkdirBusyError(self.workdir, read_holder(self.workdir)) from None
            raise
        self._fd = fd
        started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": started})
        os.ftruncate(fd, 0)
        os.pwrite(fd, (record + "\n").encode(), 0)
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "WorkdirLock":
        return self.acquire()

    def __exit__(self, *exc) -> bool:
        self.release()
        return False
