"""What a repeated request can skip: computing its key again, and decoding its entry again.

A test suite often sends the same request more than once in a run (a shared fixture,
parametrised tests, retries), and a hit should then cost no more than mitmproxy answering
from memory. Both memos are exact, never a second source of truth:

* a key is remembered under `flows.fingerprint` of the request, which holds everything
  the key is computed from, so computing it again could only give the same key;
* a decoded entry is reused only while the store still holds the very bytes it was
  decoded from: every hit still reads the store, so an entry that another process
  rewrote or deleted is never served from here.

Both are bounded, least recently used first out. Pure: no mitmproxy, no LMDB.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

KEY_SLOTS = 4096
ENTRY_BYTES = 16 << 20  # decoded entries, counted by their stored size
LARGEST_ENTRY = 1 << 20  # a larger entry is decoded every time rather than crowd out others


class LRU[V]:
    """At most `capacity` units of values (each costs `cost(value)`), least recently used out."""

    def __init__(self, capacity: int, cost: Callable[[V], int] = lambda _: 1):
        self.capacity = capacity
        self.cost = cost
        self.used = 0
        self.items: dict[Hashable, V] = {}

    def get(self, name: Hashable) -> V | None:
        value = self.items.pop(name, None)
        if value is not None:
            self.items[name] = value  # now the most recently used
        return value

    def put(self, name: Hashable, value: V) -> None:
        old = self.items.pop(name, None)
        if old is not None:
            self.used -= self.cost(old)
        size = self.cost(value)
        if size > self.capacity:
            return
        while self.items and self.used + size > self.capacity:
            self.used -= self.cost(self.items.pop(next(iter(self.items))))
        self.items[name] = value
        self.used += size

    def __len__(self) -> int:
        return len(self.items)


class RecentEntries[V]:
    """Entries decoded from stored bytes, reused while the store holds the same bytes."""

    def __init__(self, capacity: int = ENTRY_BYTES, largest: int = LARGEST_ENTRY):
        self.largest = largest
        self.lru: LRU[tuple[bytes, V]] = LRU(capacity, cost=lambda item: len(item[0]))

    def decoded(self, key: str, data: bytes, decode: Callable[[bytes], V]) -> V:
        """`decode(data)`, or what it gave for these exact bytes before; its errors propagate."""
        known = self.lru.get(key)
        if known is not None and known[0] == data:
            return known[1]
        value = decode(data)
        if len(data) <= self.largest:
            self.lru.put(key, (data, value))
        return value
