"""The LMDB store: map growth, atomic counters, background scans (real LMDB on disk)."""

from __future__ import annotations

from pathlib import Path

import pytest

from provider_cache.storage.store import Store, StoreError


def test_map_grows_when_full(tmp_path: Path):
    with Store(tmp_path / "s", map_size=64 * 1024) as store:
        items = [(b"%06d" % i, b"x" * 4000) for i in range(200)]  # ~800 KB into a 64 KB map
        for key, value in items:
            store.put(key, value)
        assert len(store) == 200
        assert store.env.info()["map_size"] > 64 * 1024
        assert store.get(b"000199") == b"x" * 4000


def test_increment_is_a_counter(tmp_path: Path):
    with Store(tmp_path / "s") as store:
        assert [store.increment(b"run") for _ in range(3)] == [1, 2, 3]


def test_scan_sees_every_item_in_batches_and_stops_when_asked(tmp_path: Path):
    with Store(tmp_path / "s") as store:
        store.put_many([(b"%04d" % i, b"v") for i in range(1000)])
        assert [k for k, _ in store.scan(stop=lambda: False, batch=7)] == [
            b"%04d" % i for i in range(1000)
        ]
        seen = []
        for key, _ in store.scan(stop=lambda: len(seen) >= 10, batch=5):
            seen.append(key)
        assert len(seen) == 10


def test_readonly_store_of_a_missing_directory_is_a_clear_error(tmp_path: Path):
    with pytest.raises(StoreError, match="cannot open cache store"):
        Store(tmp_path / "absent", readonly=True)


def test_delete(tmp_path: Path):
    with Store(tmp_path / "s") as store:
        store.put(b"k", b"v")
        assert store.delete(b"k") is True and store.delete(b"k") is False
        assert store.get(b"k") is None


def test_reads_on_one_thread_while_another_writes_and_grows_the_map(tmp_path: Path):
    """The proxy reads on its event loop while its writer thread records (and grows the map)."""
    import threading

    with Store(tmp_path / "s", map_size=64 * 1024) as store:
        store.put(b"first", b"value")
        writer = threading.Thread(
            target=lambda: [store.put(b"%06d" % i, b"x" * 4000) for i in range(300)]
        )
        writer.start()
        reads = 0
        while writer.is_alive() or reads < 100:
            assert store.get(b"first") == b"value"
            reads += 1
        writer.join()
        assert len(store) == 301 and store.env.info()["map_size"] > 64 * 1024
