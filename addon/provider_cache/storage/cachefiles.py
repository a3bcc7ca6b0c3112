"""The files behind one cache directory, opened together and closed together.

The recordings store, the usage log (which run last hit each entry) and the
stats file. Hits are collected in memory and written to the usage log in
batches, so the hit path never writes to disk.

Only the recordings are essential. The usage log is bookkeeping: if it cannot be
opened or written (a corrupt `usage/`, a full disk, a read-only checkout) the cache
goes on without it and says so once. A replay may read a store it cannot write.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from provider_cache.storage import cachedir
from provider_cache.storage.sharedrun import SharedRun
from provider_cache.storage.sharedstats import SharedStats
from provider_cache.storage.store import Store, StoreError, StoreFull
from provider_cache.storage.usage import Usage

logger = logging.getLogger(__name__)


class CacheFiles:
    def __init__(
        self, cache_dir: Path, stats_file: Path, map_size: int, *, read_only_ok: bool = False
    ):
        self.cache_dir = cache_dir
        self.stats_file = stats_file
        self.store = self._open_store(map_size, read_only_ok)
        self.writable = not self.store.readonly
        self.usage = self._open_usage() if self.writable else None
        if self.writable:
            try:
                cachedir.ensure_gitignore(cache_dir)
            except OSError as e:
                logger.warning("provider-cache: cannot write %s/.gitignore: %s", cache_dir, e)
        self.shared_stats = SharedStats(stats_file)
        # Joined now, not at the first write: a run is whoever is alive. If this fails, the
        # stats file cannot be written either, and the flusher says so, with its path.
        with contextlib.suppress(OSError):
            self.shared_stats.join()
        self.run = 0
        #: Membership of the run, held from begin_run to close: overlapping proxies are one.
        self.shared_run: SharedRun | None = None
        self.unwritten_hits: dict[str, float] = {}
        #: Keys this proxy used in this run, gathered as the hits are flushed (off the hit path).
        self.used: set[str] = set()
        #: Set when closing, so background readers stop scanning.
        self.closing = False

    def _open_store(self, map_size: int, read_only_ok: bool) -> Store:
        """The store, or, when it cannot be written, the store read-only: on a full disk
        in any mode (hits are served, answers are not recorded and count as errors), and
        for a replay for any reason (a read-only checkout, another user's files)."""
        try:
            return Store(self.cache_dir, map_size=map_size)
        except StoreError as e:
            if not (read_only_ok or isinstance(e, StoreFull)):
                raise
            because = str(e).rpartition(": ")[2]
            try:
                store = Store(self.cache_dir, readonly=True, readonly_because=because)
            except StoreError:
                raise e from None
            logger.warning(
                "provider-cache: %s; serving from it read-only: answers are not recorded and "
                "which entries were hit is not kept there",
                e,
            )
            return store

    def _open_usage(self) -> Usage | None:
        try:
            return Usage(self.cache_dir)
        except StoreError as e:
            logger.warning("provider-cache: %s; going on without the usage log", e)
            return None

    def serves(self, cache_dir: Path, stats_file: Path) -> bool:
        """Whether these are the files of that cache directory and stats file."""
        return (cache_dir, stats_file) == (self.cache_dir, self.stats_file)

    def begin_run(self) -> int:
        """Join the run of the proxies alive on this cache directory, or begin a new one."""
        if self.usage is None or self.shared_run is not None:
            return self.run
        shared = SharedRun(self.cache_dir / cachedir.USAGE_DIR)
        try:
            with shared.joining() as first:
                self.run = self.usage.begin_run() if first else self.usage.join_run()
        except (StoreError, OSError) as e:
            shared.leave()
            self._lose_usage(e)
            return self.run
        self.shared_run = shared
        return self.run

    def _end_run(self, lookups: int | None) -> None:
        """Tell the ledger how this member ended (see close), then leave the run."""
        if self.usage is not None and self.run:
            try:
                self.usage.end_member(self.run, os.getpid(), lookups)
            except StoreError as e:
                self._lose_usage(e)
        if self.shared_run is not None:
            self.shared_run.leave()
            self.shared_run = None

    def note_hit(self, key: str, at: float) -> None:
        self.unwritten_hits[key] = at

    def flush_usage(self) -> None:
        if self.usage is None:
            self.unwritten_hits.clear()
            return
        if not self.unwritten_hits or not self.run:
            return
        batch, self.unwritten_hits = self.unwritten_hits, {}
        self.used.update(batch)
        if self.usage is not None:
            try:
                self.usage.mark_hits(batch, self.run)
            except StoreError as e:
                self._lose_usage(e)

    def _lose_usage(self, error: StoreError | OSError) -> None:
        logger.warning("provider-cache: %s; going on without the usage log", error)
        if self.usage is not None:
            self.usage.close()
            self.usage = None

    def unused(self, limit: int) -> dict:
        """The entries no request of this run used (SPEC §5): their number and the first
        `limit` keys. What other proxies of the run used counts as used too (the usage log);
        an entry that arrived during the run (merge, import) is not counted. Read at the end
        of a run: it walks the store's keys."""
        used = self.used | self.unwritten_hits.keys()
        late: set[str] = set()
        if self.usage is not None and self.run:
            for key, usage in self.usage.all_keys().items():
                if usage.hit is not None and usage.hit.run == self.run:
                    used.add(key)
                if usage.arrived_after is not None and usage.arrived_after >= self.run:
                    late.add(key)
        count, keys = 0, list[str]()
        for raw in self.store.each_key():
            key = raw.decode("utf-8", "surrogateescape")
            if key in used or key in late:
                continue
            count += 1
            if len(keys) < limit:
                keys.append(key)
        return {"count": count, "keys": keys}

    def write_stats(self, snapshot: dict) -> None:
        """This proxy's counters, and the stats file as the sum of every proxy of the run."""
        self.shared_stats.write(snapshot)

    def close(self, lookups: int | None = None) -> None:
        """`lookups`: this proxy's, when it ends cleanly (its done() ran and it was not cut
        short); None otherwise, and then its run does not count for prune."""
        self.flush_usage()
        self._end_run(lookups)
        if self.usage is not None:
            self.usage.close()
        self.shared_stats.close()
        self.store.close()
