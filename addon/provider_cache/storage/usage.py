"""Which recordings the tests still use: a run counter and, per key, the last run that hit it.

Kept in its own small LMDB environment (`<cache_dir>/usage/`) rather than in the
recordings: the recordings file is committed to version control, and it must
change only when recordings change, not every time a test suite replays it.
Hits are collected in memory on the hot path and written in one batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import msgpack

from provider_cache.storage.cachedir import USAGE_DIR
from provider_cache.storage.store import Store

RUN_COUNTER = b"~run"
MAP_SIZE = 64 << 20


@dataclass(frozen=True)
class LastHit:
    run: int
    at: float


class Usage:
    def __init__(self, cache_dir: Path, *, readonly: bool = False):
        # Losing the last second of usage in a crash is harmless: skip the fsync per batch.
        self.store = Store(
            Path(cache_dir) / USAGE_DIR, readonly=readonly, map_size=MAP_SIZE, durable=False
        )

    @classmethod
    def open_if_present(cls, cache_dir: Path) -> Usage | None:
        """For read-only tools: a store that was never replayed has no usage yet."""
        if not (Path(cache_dir) / USAGE_DIR / "data.mdb").exists():
            return None
        return cls(cache_dir, readonly=True)

    def close(self) -> None:
        self.store.close()

    def begin_run(self) -> int:
        return self.store.increment(RUN_COUNTER)

    def current_run(self) -> int:
        return int(self.store.get(RUN_COUNTER) or b"0")

    def mark_hits(self, hits: dict[str, float], run: int) -> None:
        self.store.put_many([(key.encode(), msgpack.packb([run, at])) for key, at in hits.items()])

    def last_hit(self, key: str) -> LastHit | None:
        raw = self.store.get(key.encode())
        if raw is None:
            return None
        run, at = msgpack.unpackb(raw)
        return LastHit(run=run, at=at)

    def all_hits(self) -> dict[str, LastHit]:
        return {
            k.decode(): LastHit(*msgpack.unpackb(v))
            for k, v in self.store.items()
            if k != RUN_COUNTER
        }

    def forget(self, key: str) -> None:
        self.store.delete(key.encode())
