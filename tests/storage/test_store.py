"""The LMDB store: map growth, atomic counters, background scans (real LMDB on disk)."""

from __future__ import annotations

import os
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


def test_a_truncated_data_file_is_refused_at_open_not_a_sigbus_later(tmp_path: Path):
    with Store(tmp_path) as store:
        store.put_many([(f"k{i}".encode(), b"v" * 3000) for i in range(50)])
    data = tmp_path / "data.mdb"
    size = data.stat().st_size
    os.truncate(data, 8192)
    for readonly in (False, True):
        with pytest.raises(StoreError, match=r"data.mdb is truncated: 8192 bytes where LMDB needs"):
            Store(tmp_path, readonly=readonly)
    assert size > 8192


def test_a_damaged_page_is_a_store_error_on_read(tmp_path: Path):
    """MDB_CORRUPTED and friends surface as StoreError, the one error the hooks expect."""
    with Store(tmp_path) as store:
        store.put(b"key", b"value")
    data = tmp_path / "data.mdb"
    with data.open("r+b") as f:
        f.seek(2 * 4096)  # every page after the two meta pages
        f.write(b"\0" * (data.stat().st_size - 2 * 4096))
    with Store(tmp_path) as store, pytest.raises(StoreError, match="cannot read cache store"):
        store.get(b"key")


def test_one_answer_far_larger_than_the_map_is_stored(tmp_path: Path):
    """Growth jumps to fit the write: a 64 KiB map and a 20 MiB answer (8 doublings fell short)."""
    big = os.urandom(20 << 20)
    with Store(tmp_path, map_size=64 << 10) as store:
        store.put(b"big", big)
        assert store.get(b"big") == big


def test_a_read_only_store_refuses_writes_with_its_reason(tmp_path: Path):
    Store(tmp_path).close()
    store = Store(tmp_path, readonly=True, readonly_because="No space left on device")
    with store, pytest.raises(StoreError, match=r"cannot write cache store .*: No space left on"):
        store.put(b"k", b"v")


def test_a_map_grown_again_before_the_retry_is_adopted_again(tmp_path: Path):
    """Processes growing one map in turn: an operation may see MDB_MAP_RESIZED twice in a row
    . Each time it adopts the size and retries."""
    import lmdb

    store = Store(tmp_path)
    resizes = iter([True, True, True, False])

    def op() -> str:
        if next(resizes):
            raise lmdb.MapResizedError("Database contents grew beyond environment mapsize")
        return "done"

    assert store._retry_resized(op) == "done"
    store.close()
