"""The cache's work off the hit path: the store writer, the miss diagnoser, the stats flusher.

Each owns one thread or task, so that no hook waits for LMDB's fsync, a scan of the
store, or the stats file. The hooks hand work over and go on.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from provider_cache.core import diagnose, records
from provider_cache.core.keys import KeyRules
from provider_cache.core.stats import Stats
from provider_cache.storage.cachefiles import CacheFiles

logger = logging.getLogger(__name__)

#: How often the stats file is rewritten (when something was counted) and hits logged.
STATS_INTERVAL = 1.0


class Writer:
    """Recordings are written on one thread, one at a time, so that the event loop goes on
    serving other flows while LMDB commits (an fsync) instead of waiting for it."""

    def __init__(self) -> None:
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="provider-cache-write")

    async def put(self, files: CacheFiles, key: str, data: bytes) -> None:
        """Durable once this returns; raises StoreError as the store does."""
        await asyncio.wrap_future(self.pool.submit(files.store.put, key.encode(), data))

    def drain(self) -> None:
        """Wait until every write queued so far is done (before a store is swapped)."""
        self.pool.submit(lambda: None).result()

    def shutdown(self) -> None:
        """Queued recordings are still written."""
        self.pool.shutdown(wait=True)


class Diagnoser:
    """Finds the closest recorded request of each listed miss, off the event loop.

    Misses waiting for a pass queue up by key; one pass over the store serves all that
    queued up meanwhile (a new run's first misses come in a burst).
    """

    def __init__(self) -> None:
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="provider-cache")
        self.waiting: dict[str, dict] = {}
        self.lock = threading.Lock()

    def later(
        self, key: str, normalized: dict, files: CacheFiles, stats: Stats, rules: KeyRules
    ) -> None:
        with self.lock:
            first = not self.waiting
            self.waiting[key] = normalized
        if first:
            self.pool.submit(self._pass, files, stats, rules)

    def _pass(self, files: CacheFiles, stats: Stats, rules: KeyRules) -> None:
        with self.lock:
            batch, self.waiting = self.waiting, {}
        if not batch:
            return
        candidates = (
            (entry.key, entry.request)
            for entry in records.unpack_valid(files.store.scan(stop=lambda: files.closing))
        )
        for key, closest in diagnose.closest_each(batch, candidates, rules).items():
            if missed := stats.missed.get(key):
                missed.closest = closest

    def shutdown(self) -> None:
        """No scan may outlive the store: a pass under way stops at its next batch."""
        self.pool.shutdown(wait=True, cancel_futures=True)


class StatsFlusher:
    """About once a second: record which entries were hit, rewrite the stats if they changed."""

    def __init__(self, files: Callable[[], CacheFiles | None], stats: Callable[[], Stats]):
        self.files, self.stats = files, stats
        self.task: asyncio.Task | None = None
        #: Why the stats file could not be written last time (said once, not every second).
        self.failure: str | None = None

    def start(self) -> None:
        if self.task is None:
            self.task = asyncio.create_task(self._run())

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.task = None

    async def _run(self) -> None:
        written = None
        while True:
            files, stats = self.files(), self.stats()
            if files is not None:
                files.flush_usage()
                counters = stats.counters()
                if counters != written:
                    try:
                        await asyncio.to_thread(files.write_stats, stats.snapshot())
                        written, self.failure = counters, None
                    except OSError as e:
                        self.warn(files, e)
            await asyncio.sleep(STATS_INTERVAL)

    def warn(
        self, files: CacheFiles, error: OSError, say: Callable[[str], None] | None = None
    ) -> None:
        """Say why the stats file cannot be written, unless that was said last time."""
        if error.strerror != self.failure:
            message = (
                f"provider-cache: cannot write stats file {files.stats_file}: {error.strerror}"
                " (the endpoint still serves the stats)"
            )
            (say or logger.warning)(message)
        self.failure = error.strerror
