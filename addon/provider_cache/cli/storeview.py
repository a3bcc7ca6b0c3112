"""What the recordings commands share: the store opened as they need it, its entries decoded
(a corrupt one kept as such, never skipped silently), keys found by prefix, and the
columns they print."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from provider_cache.cli.args import BELOW_THRESHOLD, OK, Fail
from provider_cache.core import records, slots, timefmt
from provider_cache.core.records import Entry
from provider_cache.storage import cachedir
from provider_cache.storage.store import Store, StoreError
from provider_cache.storage.usage import Usage, note_arrivals

MIN_PREFIX = 6


#: LMDB's limit on a key (its compiled-in MDB_MAXKEYSIZE); an empty key is refused too.
MAX_KEY_BYTES = 511


#: What import and merge say they did not do.
PAST = {"import": "imported", "merge": "merged"}


def has_store(cache_dir: Path) -> bool:
    return (cache_dir / cachedir.DATA_FILE).exists()


def require_store(cache_dir: Path) -> None:
    if not has_store(cache_dir):
        raise Fail(f"no recordings store in {cache_dir}")


def open_store(cache_dir: Path, *, readonly: bool, create: bool = False) -> Store:
    """The store of `cache_dir`; only with `create` (import, merge) may it be a new one, so
    that a mistyped --cache-dir never leaves an empty store behind."""
    if not create:
        require_store(cache_dir)
    try:
        return Store(cache_dir, readonly=readonly)
    except StoreError as e:
        raise Fail(str(e)) from None


def shown_key(raw: bytes) -> str:
    """A stored key as text: ours are hex, a foreign one may be any bytes."""
    return raw.decode("utf-8", "backslashreplace")


@dataclass(frozen=True)
class Stored:
    """One stored value: its entry, or why it is corrupt."""

    raw_key: bytes
    entry: Entry | None
    problem: str = ""

    @property
    def key(self) -> str:
        return shown_key(self.raw_key)


def decode(raw_key: bytes, value: bytes) -> Stored:
    try:
        entry = records.unpack(value)
    except records.CorruptEntry as e:
        return Stored(raw_key, None, str(e))
    if entry.key.encode("utf-8", "surrogatepass") != raw_key:
        return Stored(raw_key, None, f"holds the entry of another key {entry.key}")
    return Stored(raw_key, entry)


def scan(store: Store) -> list[Stored]:
    return [decode(k, v) for k, v in store.items()]


def entries(rows: list[Stored]) -> list[Entry]:
    return [row.entry for row in rows if row.entry is not None]


def in_sequence_order(rows: list[Stored]) -> list[Stored]:
    """Key order, but for a sequence's slots (core/slots.py), which follow its first."""

    def place(row: Stored) -> tuple[str, int]:
        return slots.position(row.entry) if row.entry is not None else (row.key, 0)

    return sorted(rows, key=place)


def slot_counts(rows: list[Stored]) -> dict[str, int]:
    """The highest slot stored of each key that has more than one (its sequence's length)."""
    found = slots.sequences(entries(rows))
    return {key: max(group) for key, group in found.items() if max(group) > 1}


def skipped_corrupt(action: str, rows: list[Stored], where: Path) -> int:
    """Copying actions copy what decodes; a skipped entry is said on stderr and exits 1."""
    skipped = len(rows) - len(entries(rows))
    if not skipped:
        return OK
    noun = "entry" if skipped == 1 else "entries"
    print(
        f"{action}: skipped {skipped} corrupt {noun} of {len(rows)} in {where}"
        " (`recordings verify` names them)",
        file=sys.stderr,
    )
    return BELOW_THRESHOLD


def find_key(store: Store, prefix: str) -> bytes:
    """The one stored key starting with `prefix`, compared as bytes (argv bytes that are not
    UTF-8 arrive as surrogates and are given back as the bytes they were)."""
    if len(prefix) < MIN_PREFIX:
        raise Fail(f"key prefix {prefix!r} is too short: give at least {MIN_PREFIX} characters")
    wanted = os.fsencode(prefix)
    found = [k for k, _ in store.items() if k.startswith(wanted)]
    if not found:
        raise Fail(f"no entry with key {prefix}")
    if len(found) > 1:
        keys = ", ".join(shown_key(k)[:16] for k in found)
        raise Fail(f"key prefix {prefix} is ambiguous: {keys}")
    return found[0]


def when(timestamp: float | None) -> str:
    return "-" if timestamp is None else timefmt.stamp(timestamp)


def size(n: int) -> str:
    for unit in ("B", "K", "M"):
        if n < 1024:
            return f"{n}{unit}"
        n //= 1024
    return f"{n}G"


def forget_usage(cache_dir: Path, keys: list[str]) -> None:
    if Usage.open_if_present(cache_dir) is None:
        return
    usage = Usage(cache_dir)
    try:
        for key in keys:
            usage.forget(key)
    finally:
        usage.close()


def writing[T](path: Path, write: Callable[[], T]) -> T:
    try:
        return write()
    except OSError as e:
        raise Fail(f"cannot write {path}: {e.strerror or e}") from None


def stamp_arrivals(cache_dir: Path, keys: list[bytes]) -> None:
    """Entries merged, imported or pulled arrived now: no run before this may make them
    unused. Only bookkeeping: a failure is a warning, the entries stay."""
    try:
        note_arrivals(cache_dir, keys)
    except StoreError as e:
        print(
            f"warning: {e}: `prune --unused-runs` may count runs from before these entries arrived",
            file=sys.stderr,
        )
