"""The files behind one cache directory, opened together and closed together.

The recordings store, the usage log (which run last hit each entry) and the
stats file. Hits are collected in memory and written to the usage log in
batches, so the hit path never writes to disk.
"""

from __future__ import annotations

from pathlib import Path

from provider_cache.storage import atomic as statsfile
from provider_cache.storage import cachedir
from provider_cache.storage.store import Store
from provider_cache.storage.usage import Usage


class CacheFiles:
    def __init__(self, cache_dir: Path, stats_file: Path, map_size: int):
        self.cache_dir = cache_dir
        self.stats_file = stats_file
        self.store = Store(cache_dir, map_size=map_size)
        try:
            self.usage = Usage(cache_dir)
        except BaseException:
            self.store.close()
            raise
        cachedir.ensure_gitignore(cache_dir)
        self.run = 0
        self.unwritten_hits: dict[str, float] = {}
        #: Set when closing, so background readers stop scanning.
        self.closing = False

    def serves(self, cache_dir: Path, stats_file: Path) -> bool:
        """Whether these are the files of that cache directory and stats file."""
        return (cache_dir, stats_file) == (self.cache_dir, self.stats_file)

    def begin_run(self) -> int:
        self.run = self.usage.begin_run()
        return self.run

    def note_hit(self, key: str, at: float) -> None:
        self.unwritten_hits[key] = at

    def flush_usage(self) -> None:
        if self.unwritten_hits and self.run:
            batch, self.unwritten_hits = self.unwritten_hits, {}
            self.usage.mark_hits(batch, self.run)

    def write_stats(self, snapshot: dict) -> None:
        statsfile.write_atomically(self.stats_file, snapshot)

    def close(self) -> None:
        self.flush_usage()
        self.usage.close()
        self.store.close()
