"""The one module that owns LMDB: a small byte-level map from key to packed entry.

One environment per `cache_dir`; several processes may open it at once (LMDB's
lock file coordinates them). Writes are single transactions, so a crash never
leaves a partial entry. The map grows when full, and a process whose map another
process grew adopts the new size.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol, TypeVar

import lmdb

from provider_cache.storage.cachedir import DATA_FILE

logger = logging.getLogger(__name__)

DEFAULT_MAP_SIZE = 1 << 30  # 1 GiB of address space, not of disk: LMDB files are sparse.
MAX_GROWTHS = 8
#: Times in a row one operation adopts a map another process grew, before it gives up.
MAX_ADOPTIONS = 8
#: Below this much free space the store is not opened for writing (see Store.__init__).
MIN_FREE_BYTES = 1 << 20

T = TypeVar("T")


class Txn(Protocol):
    """What a `Store.write` callback may do in its transaction, for modules that must not
    import LMDB (tests/core/test_layers.py): read, write and delete keys."""

    def get(self, key: bytes) -> bytes | memoryview | None: ...
    def put(self, key: bytes, value: bytes) -> bool: ...
    def delete(self, key: bytes) -> bool: ...


class StoreError(Exception):
    """The store could not be opened or written; the message names the reason, never a secret."""


class StoreFull(StoreError):
    """The file system holding the store has no space left to open it for writing."""


class Store:
    def __init__(
        self,
        path: Path,
        *,
        readonly: bool = False,
        map_size: int = DEFAULT_MAP_SIZE,
        durable: bool = True,
        readonly_because: str = "opened read-only",
    ):
        self.path = Path(path)
        self.readonly = readonly
        #: What a write to a read-only store fails with.
        self.readonly_because = readonly_because
        # LMDB maps its lock file and writes it through memory: on a full disk a page it
        # cannot allocate is a SIGBUS, not an error. So: no writes below a margin, and a
        # read-only open there does without the lock file.
        full = _free_bytes(self.path) < MIN_FREE_BYTES
        if full and not readonly:
            raise StoreFull(f"cannot open cache store {self.path}: No space left on device")
        try:
            if not readonly:
                self.path.mkdir(parents=True, exist_ok=True)
            self.env = self._open(map_size, durable, lock=not full)
        except (OSError, lmdb.Error) as e:
            if not readonly:
                raise StoreError(f"cannot open cache store {self.path}: {_reason(e)}") from None
            try:  # a store we may not lock (another user's files): read it unlocked
                self.env = self._open(map_size, durable, lock=False)
            except (OSError, lmdb.Error):
                raise StoreError(f"cannot open cache store {self.path}: {_reason(e)}") from None
        self._refuse_truncated()
        #: Held by readers while they have a transaction open: a map resize needs no
        #: transaction active in this process, and writes may run on another thread.
        #: Reentrant, so a reader may look a key up while it walks the store.
        self.resize_lock = threading.RLock()
        #: Held for a whole write, growth included, so no thread starts a write meanwhile.
        self.write_lock = threading.Lock()

    def _open(self, map_size: int, durable: bool, *, lock: bool) -> lmdb.Environment:
        return lmdb.open(
            str(self.path),
            map_size=map_size,
            readonly=self.readonly,
            lock=lock,
            max_readers=256,
            max_spare_txns=4,
            subdir=True,
            create=not self.readonly,
            sync=durable,
        )

    def _refuse_truncated(self) -> None:
        """A data file shorter than LMDB's own idea of it would kill the process with SIGBUS
        on the first read of a missing page: check at open, and say so in one line."""
        data = self.path / DATA_FILE
        needed = (self.env.info()["last_pgno"] + 1) * self.env.stat()["psize"]
        size = data.stat().st_size if data.exists() else 0
        if size < needed:
            self.env.close()
            raise StoreError(
                f"{data} is truncated: {size} bytes where LMDB needs {needed}; "
                "restore it (from version control, or a copy)"
            )

    def close(self) -> None:
        self.env.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get(self, key: bytes) -> bytes | None:
        """One read transaction; the hot path of every cache hit.

        A damaged store raises StoreError naming LMDB's reason (MDB_CORRUPTED, …), never
        another exception: the hooks turn it into a miss and an error, and replay fails
        closed instead of letting mitmproxy forward the request.
        """
        try:
            with self.resize_lock:
                return self._retry_resized(lambda: self._get(key))
        except lmdb.Error as e:
            raise StoreError(f"cannot read cache store {self.path}: {_reason(e)}") from None

    def _get(self, key: bytes) -> bytes | None:
        with self.env.begin(buffers=False) as txn:
            return txn.get(key)

    def put(self, key: bytes, value: bytes) -> None:
        self.put_many([(key, value)])

    def put_many(self, items: list[tuple[bytes, bytes]]) -> None:
        """Write all items in one transaction."""

        def put_all(txn: lmdb.Transaction) -> None:
            for key, value in items:
                txn.put(key, value)

        self.write(put_all, need=sum(len(k) + len(v) for k, v in items))

    def delete(self, key: bytes) -> bool:
        return self.write(lambda txn: txn.delete(key))

    def increment(self, key: bytes) -> int:
        """Add one to a decimal counter, atomically across processes; returns the new value."""

        def bump(txn: lmdb.Transaction) -> int:
            value = int(txn.get(key) or b"0") + 1
            txn.put(key, str(value).encode())
            return value

        return self.write(bump)

    def write(self, work: Callable[[lmdb.Transaction], T], need: int = 0) -> T:
        """Run `work` in one write transaction, growing the map as often as needed (by at
        least twice the `need` bytes it writes, so one large answer fits at once).

        Any failure of LMDB (a full disk: MDB_TXN_COMMIT, EIO; a read-only file) is a
        StoreError naming the reason; nothing already stored is touched.
        """
        if self.readonly:
            raise StoreError(f"cannot write cache store {self.path}: {self.readonly_because}")
        with self.write_lock:
            for _ in range(MAX_GROWTHS):
                try:
                    return self._retry_resized(lambda: self._in_write_txn(work))
                except lmdb.MapFullError:
                    self._grow(need)
                except lmdb.Error as e:
                    raise StoreError(
                        f"cannot write cache store {self.path}: {_reason(e)}"
                    ) from None
        raise StoreError(f"cache store {self.path} is full after {MAX_GROWTHS} growths")

    def _in_write_txn(self, work: Callable[[lmdb.Transaction], T]) -> T:
        with self.env.begin(write=True) as txn:
            return work(txn)

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        """Every (key, value), in key order, from one consistent snapshot (no write may
        happen in this thread meanwhile: a growth would wait for the walk to end). A damaged
        store is a StoreError, as for `get`."""
        try:
            with self.resize_lock, self.env.begin(buffers=False) as txn:
                yield from txn.cursor()
        except lmdb.Error as e:
            raise StoreError(f"cannot read cache store {self.path}: {_reason(e)}") from None

    def each_key(self) -> Iterator[bytes]:
        """Every key, in key order, from one snapshot, without reading the values."""
        try:
            with self.resize_lock, self.env.begin(buffers=False) as txn:
                yield from txn.cursor().iternext(keys=True, values=False)
        except lmdb.Error as e:
            raise StoreError(f"cannot read cache store {self.path}: {_reason(e)}") from None

    def scan(self, stop: Callable[[], bool], batch: int = 256) -> Iterator[tuple[bytes, bytes]]:
        """Every (key, value) for a background thread: short transactions, abandoned on `stop()`.

        Gives up quietly if another process resizes the map meanwhile.
        """
        after = b""
        while not stop():
            with self.resize_lock:
                try:
                    with self.env.begin(buffers=False) as txn:
                        cursor = txn.cursor()
                        found = cursor.set_range(after) if after else cursor.first()
                        rows: list[tuple[bytes, bytes]] = []
                        while found and len(rows) < batch:
                            if cursor.key() != after:
                                rows.append((cursor.key(), cursor.value()))
                            found = cursor.next()
                except lmdb.MapResizedError:
                    return
            yield from rows
            if not found:
                return
            after = rows[-1][0] if rows else after

    def __len__(self) -> int:
        return self.env.stat()["entries"]

    def _grow(self, need: int) -> None:
        current = self.env.info()["map_size"]
        size = max(current * 2, current + 2 * need)
        logger.info("cache store %s is full; growing its map to %d MiB", self.path, size >> 20)
        with self.resize_lock:
            self.env.set_mapsize(size)

    def _retry_resized(self, op: Callable[[], T]) -> T:
        """Another process grew the map: adopt its size and try again. Bounded: processes
        growing one map in turn may grow it again between our adoption and our retry."""
        for _ in range(MAX_ADOPTIONS):
            try:
                return op()
            except lmdb.MapResizedError:
                with self.resize_lock:
                    self.env.set_mapsize(0)
        return op()


def _free_bytes(path: Path) -> int:
    """Space left for an unprivileged writer on the file system that holds `path`."""
    for candidate in (path, *path.parents):
        try:
            fs = os.statvfs(candidate)
        except OSError:
            continue
        return fs.f_bavail * fs.f_frsize
    return 0


def _reason(e: Exception) -> str:
    return str(e).split(":")[-1].strip() or type(e).__name__
