"""Sequence slots (SPEC §3): the n-th identical request of a run gets the n-th recorded answer.

Slot 1 of a key is the entry stored under the key, as without slots: a store recorded
without cache_sequence replays with it, and the reverse. Slot n ≥ 2 is an ordinary entry
(same schema) stored under `slot_key(key, n)`, a SHA-256 in hex like every key, so the
remote tier, push, pull and manifests carry slots unchanged; its `meta` names its place
(`slot`, `slot_of`). An older version sees such an entry as one no request keys to.

A sequence is counted per (test, key) when a test runner names the tests, else per key for
the run. Past the last recorded slot (a request after one that was served, whose own slot is
not stored) the option says: serve the last one again (`last`) or the mode's miss (`miss`).
Pure: no mitmproxy, no LMDB.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, replace

from provider_cache.core.recent import LRU
from provider_cache.core.records import Entry

#: cache_sequence_past_end: serve the last recorded answer again, or the mode's miss.
PAST_END_LAST = "last"
PAST_END_CHOICES = (PAST_END_LAST, "miss")
#: Sequences followed at once; the least recently used one past this starts again at 1.
SEQUENCES = 1 << 16
#: The meta fields of a slot entry (n ≥ 2).
SLOT, SLOT_OF = "slot", "slot_of"


def slot_key(key: str, n: int) -> str:
    """Where slot n of `key` is stored: the key itself for slot 1."""
    if n == 1:
        return key
    return hashlib.sha256(f"{key}#{n}".encode()).hexdigest()


def slot_meta(key: str, n: int) -> dict:
    """The meta fields that place an entry as slot n of `key` (none for slot 1)."""
    return {SLOT: n, SLOT_OF: key} if n > 1 else {}


def position(entry: Entry) -> tuple[str, int]:
    """(key of the request, slot) of a stored entry. Its meta is believed only when the
    entry's key is that slot's key: anything else is an entry of its own, slot 1."""
    n, of = entry.meta.get(SLOT), entry.meta.get(SLOT_OF)
    if type(n) is int and n > 1 and isinstance(of, str) and slot_key(of, n) == entry.key:
        return of, n
    return entry.key, 1


def as_slot(entry: Entry, key: str, n: int) -> Entry:
    """The entry moved to slot n of `key` (merge appends answers this way)."""
    meta = {k: v for k, v in entry.meta.items() if k not in (SLOT, SLOT_OF)}
    return replace(entry, key=slot_key(key, n), meta=meta | slot_meta(key, n))


def sequences(entries: Iterable[Entry]) -> dict[str, dict[int, Entry]]:
    """The entries by the key of their request, then by slot."""
    found: dict[str, dict[int, Entry]] = {}
    for entry in entries:
        key, n = position(entry)
        found.setdefault(key, {})[n] = entry
    return found


def same_answer(a: Entry, b: Entry) -> bool:
    """Two recordings say the same when status and body do (headers carry dates and ids)."""
    return a.response.status == b.response.status and a.response.content == b.response.content


class Sequence:
    """One (test, key)'s requests so far, and the slot served to the last one (if it was)."""

    __slots__ = ("count", "served")

    def __init__(self) -> None:
        self.count = 0
        self.served: int | None = None


@dataclass(frozen=True, slots=True)
class Slot:
    """A request's place in its sequence."""

    of: str  # the request's key
    n: int  # its place, from 1
    key: str  # where slot n is stored
    previous: int | None  # the slot served to the sequence's previous request, if it was
    sequence: Sequence

    def served(self, n: int) -> None:
        """This request was answered from slot n (its own, or the last again)."""
        self.sequence.served = n


class Sequences:
    """The place of each request in its (test, key) sequence during a run."""

    def __init__(self, capacity: int = SEQUENCES) -> None:
        self.lru: LRU[Sequence] = LRU(capacity)

    def advance(self, test: str | None, key: str) -> Slot:
        name = (test, key)
        sequence = self.lru.get(name)
        if sequence is None:
            sequence = Sequence()
            self.lru.put(name, sequence)
        sequence.count += 1
        previous, sequence.served = sequence.served, None
        n = sequence.count
        return Slot(key, n, slot_key(key, n), previous, sequence)


def parse_past_end(value: str) -> str:
    """cache_sequence_past_end's value; ValueError naming the valid ones."""
    if value not in PAST_END_CHOICES:
        raise ValueError(
            f"cache_sequence_past_end must be one of {', '.join(PAST_END_CHOICES)}; got {value!r}"
        )
    return value
