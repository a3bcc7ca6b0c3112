"""Proxies that overlap in time are one run.

A CI job may start several proxies on one cache directory (shards, a proxy per test
worker). They are one run of the suite: their stats are summed, and for `prune` they are
one run, not three. A later proxy, started when none of them is alive any more, begins a
new run.

Each member holds a shared `flock` on `live.lock` for its lifetime; the kernel drops it
when the process ends, however it ends, so a crashed member leaves nothing to clean up.
Joining is serialised by an exclusive `flock` on `join.lock`: the joiner that finds
`live.lock` free is the first of a new run, and whatever it does to begin the run (clear
the last run's files, count a new run) is done before anyone else can join.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LIVE_LOCK = "live.lock"
JOIN_LOCK = "join.lock"


class SharedRun:
    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.live_fd: int | None = None

    @contextmanager
    def joining(self) -> Iterator[bool]:
        """Join the run; yields True when this process begins a new one.

        The body runs under the join lock: no other process joins or reads the run's
        shared state until it is done. Raises OSError when the directory is unusable.
        """
        if self.live_fd is not None:
            raise RuntimeError("already a member of the run")
        self.directory.mkdir(parents=True, exist_ok=True)
        with self.exclusively():
            live = os.open(self.directory / LIVE_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                try:
                    fcntl.flock(live, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    first = True
                except BlockingIOError:
                    first = False
                # Downgrading is not atomic, but no one can join while we hold the join lock.
                fcntl.flock(live, fcntl.LOCK_SH)
            except BaseException:
                os.close(live)
                raise
            self.live_fd = live
            yield first

    @contextmanager
    def exclusively(self) -> Iterator[None]:
        """Hold the join lock: for a member's read-modify-write of the run's shared files."""
        fd = os.open(self.directory / JOIN_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing drops the lock

    def leave(self) -> None:
        if self.live_fd is not None:
            os.close(self.live_fd)
            self.live_fd = None
