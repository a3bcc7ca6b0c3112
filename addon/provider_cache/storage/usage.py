"""Which recordings the tests still use: a ledger of runs and, per key, its last hit and arrival.

Kept in its own small LMDB environment (`<cache_dir>/usage/`) rather than in the
recordings: the recordings file is committed to version control, and it must
change only when recordings change, not every time a test suite replays it.
Hits are collected in memory on the hot path and written in one batch.

`prune` may call an entry unused only on evidence, so the ledger says which runs are
evidence: a run *counts* when it made lookups and every member (proxies overlapping in
time are one run, storage/sharedrun.py) ended cleanly. A proxy killed with -9 never ends;
an interrupted `provider-cache run` marks its run interrupted. And an entry is evidence of
nothing in a run from before it arrived: merge, import and a --full rebuild stamp the keys
they bring as arriving after the current run; other entries arrived when they were recorded.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import msgpack

from provider_cache.storage.cachedir import USAGE_DIR
from provider_cache.storage.store import Store, StoreError, Txn

logger = logging.getLogger(__name__)

RUN_COUNTER = b"~run"
#: `~run/0000000042`: the ledger record of run 42 (sorted by number).
RUN_PREFIX = b"~run/"
RUN_SCHEMA = 1
#: Runs kept in the ledger; older records are dropped as new runs begin.
KEEP_RUNS = 1000
MAP_SIZE = 64 << 20


@dataclass(frozen=True)
class LastHit:
    run: int
    at: float


@dataclass(frozen=True)
class KeyUsage:
    hit: LastHit | None = None
    #: Stamped by merge, import and a --full rebuild: the last run number when the entry
    #: arrived, so it was present only in later runs. None: present since it was recorded.
    arrived_after: int | None = None


@dataclass
class RunRecord:
    """One run in the ledger: members are process ids (a pid may repeat)."""

    started_at: float
    joined: list[int] = field(default_factory=list)
    #: Members whose shutdown ran (the proxy's done()).
    ended: list[int] = field(default_factory=list)
    lookups: int = 0
    #: A member ended but was interrupted (its command was, or its parent died).
    interrupted: bool = False

    @property
    def counts(self) -> bool:
        """Evidence for prune: it looked entries up, and nothing cut it short."""
        return self.lookups > 0 and not self.interrupted and len(self.ended) == len(self.joined)

    def pack(self) -> bytes:
        fields = [self.started_at, self.joined, self.ended, self.lookups, self.interrupted]
        return msgpack.packb([RUN_SCHEMA, *fields])

    @classmethod
    def unpack(cls, data: bytes) -> RunRecord | None:
        """None for a record this code cannot read: such a run is no evidence."""
        try:
            schema, started_at, joined, ended, lookups, interrupted = msgpack.unpackb(data)
            if schema != RUN_SCHEMA:
                return None
            return cls(float(started_at), list(joined), list(ended), int(lookups), interrupted)
        except (ValueError, TypeError, msgpack.UnpackException):
            return None


@dataclass(frozen=True)
class Window:
    """The last N counted runs: an entry is unused if it was present in all and hit in none."""

    runs: list[int]
    #: When the first of them started.
    since: float

    def unused(self, recorded_at: float, usage: KeyUsage | None) -> bool:
        first = self.runs[0]
        # Any hit from the first on (in a run that counts or not) is a use.
        if usage is not None and usage.hit is not None and usage.hit.run >= first:
            return False
        if usage is not None and usage.arrived_after is not None:
            return usage.arrived_after < first
        return recorded_at <= self.since


def window(runs: dict[int, RunRecord], n: int) -> Window | None:
    """The last `n` counted runs, or None when there are fewer."""
    counted = sorted(number for number, record in runs.items() if record.counts)
    if len(counted) < n:
        return None
    last = counted[-n:]
    return Window(last, runs[last[0]].started_at)


def _run_key(number: int) -> bytes:
    return RUN_PREFIX + b"%010d" % number


def _get(txn: Txn, key: bytes) -> bytes | None:
    value = txn.get(key)
    return None if value is None else bytes(value)


def _record_in(txn: Txn, number: int) -> RunRecord | None:
    raw = _get(txn, _run_key(number)) if number > 0 else None
    return RunRecord.unpack(raw) if raw is not None else None


def _counter_in(txn: Txn) -> int:
    return int(_get(txn, RUN_COUNTER) or b"0")


def _is_ledger(key: bytes) -> bool:
    return key == RUN_COUNTER or key.startswith(RUN_PREFIX)


def _key_usage(raw: bytes) -> KeyUsage:
    """`[run, at]` (before arrivals were kept) or `[run, at, arrived_after]`; run 0: no hit.
    A value this code cannot read says nothing: no hit, no arrival."""
    try:
        run, at, *rest = msgpack.unpackb(raw)
        hit = LastHit(int(run), float(at)) if run else None
        return KeyUsage(hit, int(rest[0]) if rest and rest[0] is not None else None)
    except (ValueError, TypeError, msgpack.UnpackException):
        return KeyUsage()


def _pack_key_usage(usage: KeyUsage) -> bytes:
    hit = usage.hit or LastHit(0, 0.0)
    return msgpack.packb([hit.run, hit.at, usage.arrived_after])


class Usage:
    def __init__(self, cache_dir: Path, *, readonly: bool = False):
        # Losing the last second of usage in a crash is harmless: skip the fsync per batch.
        self.store = Store(
            Path(cache_dir) / USAGE_DIR, readonly=readonly, map_size=MAP_SIZE, durable=False
        )

    @classmethod
    def open_if_present(cls, cache_dir: Path, *, readonly: bool = True) -> Usage | None:
        """For tools: a store that was never replayed has no usage yet (and gets none)."""
        if not (Path(cache_dir) / USAGE_DIR / "data.mdb").exists():
            return None
        return cls(cache_dir, readonly=readonly)

    def close(self) -> None:
        self.store.close()

    # -- the ledger of runs ------------------------------------------------------------------

    def begin_run(self, pid: int | None = None, at: float | None = None) -> int:
        """A new run, with this process as its first member; returns its number."""
        record = RunRecord(time.time() if at is None else at, [os.getpid() if pid is None else pid])

        def begin(txn: Txn) -> int:
            number = _counter_in(txn) + 1
            txn.put(RUN_COUNTER, str(number).encode())
            txn.put(_run_key(number), record.pack())
            txn.delete(_run_key(number - KEEP_RUNS))
            return number

        return self.store.write(begin)

    def join_run(self, pid: int | None = None, at: float | None = None) -> int:
        """Join the current run (another member is alive); a ledger without one begins one."""
        member = os.getpid() if pid is None else pid

        def join(txn: Txn) -> int | None:
            number = _counter_in(txn)
            record = _record_in(txn, number)
            if record is None:
                return None
            record.joined.append(member)
            txn.put(_run_key(number), record.pack())
            return number

        number = self.store.write(join)
        return number if number is not None else self.begin_run(member, at)

    def end_member(self, run: int, pid: int, lookups: int | None) -> None:
        """A member's end: cleanly with its lookups, or (None) cut short: the run then never
        counts. A member that never gets here (killed, crashed) keeps its run from counting."""

        def end(txn: Txn) -> None:
            record = _record_in(txn, run)
            if record is None:
                return
            if lookups is None:
                record.interrupted = True
            else:
                record.ended.append(pid)
                record.lookups += lookups
            txn.put(_run_key(run), record.pack())

        self.store.write(end)

    def mark_interrupted(self, pid: int) -> int | None:
        """The latest run that `pid` was a member of will not count; returns its number."""

        def mark(txn: Txn) -> int | None:
            current = _counter_in(txn)
            for number in range(current, max(0, current - KEEP_RUNS), -1):
                record = _record_in(txn, number)
                if record is not None and pid in record.joined:
                    record.interrupted = True
                    txn.put(_run_key(number), record.pack())
                    return number
            return None

        return self.store.write(mark)

    def current_run(self) -> int:
        return int(self.store.get(RUN_COUNTER) or b"0")

    def runs(self) -> dict[int, RunRecord]:
        """The ledger; runs whose record cannot be read (or was never kept) are left out."""
        found = {}
        for key, value in self.store.items():
            if key.startswith(RUN_PREFIX):
                record = RunRecord.unpack(value)
                if record is not None:
                    found[int(key[len(RUN_PREFIX) :])] = record
        return found

    # -- per key -----------------------------------------------------------------------------

    def mark_hits(self, hits: dict[str, float], run: int) -> None:
        def mark(txn: Txn) -> None:
            for key, at in hits.items():
                raw_key = key.encode()
                old = _get(txn, raw_key)
                arrived = _key_usage(old).arrived_after if old is not None else None
                txn.put(raw_key, _pack_key_usage(KeyUsage(LastHit(run, at), arrived)))

        self.store.write(mark, need=64 * len(hits))

    def note_arrivals(self, keys: Iterable[bytes], *, only_these: bool = False) -> None:
        """These store keys arrived now (merge, import, a --full rebuild): present only in runs
        after the current one. Their old hits were of the entries they replace, and are
        dropped. `only_these`: the whole store was replaced; every other key is forgotten."""
        keys = list(keys)
        stale = [k for k, _ in self.store.items() if not _is_ledger(k)] if only_these else []

        def stamp(txn: Txn) -> None:
            after = _counter_in(txn)
            for key in stale:
                txn.delete(key)
            for key in keys:
                txn.put(key, _pack_key_usage(KeyUsage(None, after)))

        self.store.write(stamp, need=64 * len(keys))

    def last_hit(self, key: str) -> LastHit | None:
        raw = self.store.get(key.encode())
        return _key_usage(raw).hit if raw is not None else None

    def all_keys(self) -> dict[str, KeyUsage]:
        return {
            k.decode("utf-8", "surrogateescape"): _key_usage(v)
            for k, v in self.store.items()
            if not _is_ledger(k)
        }

    def all_hits(self) -> dict[str, LastHit]:
        return {key: usage.hit for key, usage in self.all_keys().items() if usage.hit is not None}

    def forget(self, key: str) -> None:
        self.store.delete(key.encode())


# -- for the commands: the usage log is bookkeeping, and only where a proxy made one ---------


def note_arrivals(cache_dir: Path, keys: Iterable[bytes], *, only_these: bool = False) -> None:
    """Stamp arriving keys, if the cache directory has a usage log (without one there are no
    runs from before they arrived, and recording times say the rest). Raises StoreError."""
    usage = Usage.open_if_present(cache_dir, readonly=False)
    if usage is None:
        return
    try:
        usage.note_arrivals(keys, only_these=only_these)
    finally:
        usage.close()


def note_store_arrived(cache_dir: Path) -> None:
    """Every entry of the store just swapped in (a --full rebuild) arrived now."""
    with Store(cache_dir, readonly=True) as store:
        keys = [key for key, _ in store.items()]
    note_arrivals(cache_dir, keys, only_these=True)


def mark_interrupted(cache_dir: Path, pid: int) -> None:
    """The run that proxy `pid` was part of was interrupted: it must not count for prune."""
    try:
        usage = Usage.open_if_present(cache_dir, readonly=False)
        if usage is None:
            return
        try:
            usage.mark_interrupted(pid)
        finally:
            usage.close()
    except StoreError as e:
        logger.warning("provider-cache: %s: the interrupted run may count for prune", e)
