"""The memos a repeated request uses: bounded, least recently used out, exact."""

from __future__ import annotations

import pytest

from provider_cache.core.recent import LRU, RecentEntries


def test_lru_evicts_the_least_recently_used_first():
    lru: LRU[str] = LRU(capacity=2)
    lru.put("a", "A")
    lru.put("b", "B")
    assert lru.get("a") == "A"  # now b is the oldest
    lru.put("c", "C")
    assert (lru.get("a"), lru.get("b"), lru.get("c")) == ("A", None, "C")
    assert len(lru) == 2


def test_lru_counts_cost_and_never_keeps_what_exceeds_the_capacity():
    lru: LRU[bytes] = LRU(capacity=10, cost=len)
    lru.put("a", b"12345")
    lru.put("b", b"12345")
    lru.put("c", b"123")  # 13 > 10: a goes
    assert lru.get("a") is None and lru.used == 8
    lru.put("huge", b"x" * 11)
    assert lru.get("huge") is None and lru.used == 8
    lru.put("b", b"1")  # replacing a value gives its cost back
    assert lru.used == 4


def test_entry_is_decoded_once_while_the_stored_bytes_stay_the_same():
    decoded = []

    def decode(data: bytes) -> str:
        decoded.append(data)
        return data.decode()

    recent: RecentEntries[str] = RecentEntries()
    assert recent.decoded("k", b"one", decode) == "one"
    assert recent.decoded("k", b"one", decode) == "one"
    assert decoded == [b"one"]
    # Another process rewrote the entry: the new bytes are decoded, never the old value served.
    assert recent.decoded("k", b"two", decode) == "two"
    assert decoded == [b"one", b"two"]


def test_decode_errors_propagate_and_are_not_remembered():
    def decode(data: bytes) -> str:
        raise ValueError("corrupt")

    recent: RecentEntries[str] = RecentEntries()
    for _ in range(2):
        with pytest.raises(ValueError, match="corrupt"):
            recent.decoded("k", b"bad", decode)
    assert len(recent.lru) == 0


def test_large_entries_are_not_kept():
    recent: RecentEntries[int] = RecentEntries(capacity=100, largest=10)
    recent.decoded("small", b"x" * 10, len)
    recent.decoded("large", b"x" * 11, len)
    assert list(recent.lru.items) == ["small"]
