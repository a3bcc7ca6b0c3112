"""One stats file for every proxy of a run, however many share the cache directory.

Each proxy writes its own counters to a part file in `<stats file>.d/` and then rewrites
the stats file as the sum of the run's parts, under the run's join lock, so that the last
writer's file holds everyone's latest counts and the gate reads the whole run. Proxies
that overlap in time are one run (storage/sharedrun.py); the first proxy of a new run
removes the previous run's parts, so a stale part is never summed. A part of a member
that crashed stays in its run's sum: those lookups happened.

A proxy alone writes its own snapshot unchanged, as the stats file always was.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

from provider_cache.core import report
from provider_cache.core.stats import SCHEMA
from provider_cache.storage import atomic
from provider_cache.storage.sharedrun import SharedRun

#: The parts of `stats.json` live in `stats.json.d/`.
PARTS_SUFFIX = ".d"
PART_GLOB = "part-*.json"


def parts_dir(stats_file: Path) -> Path:
    return stats_file.with_name(stats_file.name + PARTS_SUFFIX)


class SharedStats:
    def __init__(self, stats_file: Path):
        self.stats_file = stats_file
        self.run = SharedRun(parts_dir(stats_file))
        self.part = self.run.directory / f"part-{os.getpid()}-{uuid.uuid4().hex[:8]}.json"
        self.joined = False

    def join(self) -> None:
        """Join the run of the proxies alive now, or begin one. Raises OSError."""
        with self.run.joining() as first:
            if first:
                for stale in self.run.directory.glob(PART_GLOB):
                    stale.unlink(missing_ok=True)
        self.joined = True

    def write(self, snapshot: dict) -> None:
        """Write this proxy's counters and the run's sum. Raises OSError."""
        if not self.joined:
            self.join()
        with self.run.exclusively():
            atomic.write_atomically(self.part, snapshot)
            others = [doc for path in self._parts() if path != self.part and (doc := _read(path))]
            atomic.write_atomically(self.stats_file, summed([snapshot, *others]))

    def _parts(self) -> list[Path]:
        return sorted(self.run.directory.glob(PART_GLOB))

    def close(self) -> None:
        self.run.leave()
        self.joined = False


def _read(path: Path) -> dict | None:
    """A part, or None if it is unreadable (written by something else): never summed blindly."""
    try:
        return report.validate(json.loads(path.read_text()), str(path))
    except (OSError, ValueError, RecursionError):
        return None


def summed(docs: list[dict]) -> dict:
    """One document: a single part as it is; several summed, with the run's time span."""
    if len(docs) == 1:
        return docs[0]
    merged = report.merge(docs)
    return {
        "schema": SCHEMA,
        "started_at": min(d.get("started_at", 0) for d in docs),
        "updated_at": max(d.get("updated_at", 0) for d in docs),
        **merged,
    }
