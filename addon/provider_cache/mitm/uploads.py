"""The upload of what this proxy records to the remote tier (SPEC §11), in the background.

A bounded queue and a few threads: the hooks hand an entry over once it is durable locally
and go on. Writes are write-once (storage/remote.py put_once): an object already there is
never replaced, so parallel shards and pull requests cannot overwrite each other. Retries
with backoff are for transient failures only (5xx, throttling, timeouts); at shutdown the
queue gets a bounded wait, and what is left is counted and listed, never lost: it stays in
the local store, for `provider-cache recordings push` later.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

from provider_cache.core import records, remoteobject
from provider_cache.core.stats import RemoteCounts
from provider_cache.storage.remote import RemoteError, RemoteStore

logger = logging.getLogger(__name__)

UPLOAD_THREADS = 2
#: Bytes of entries waiting at most; an entry past it is not uploaded (counted as failed).
QUEUE_BYTES = 256 << 20
#: Tries of one upload, the first included, and the pause before the second (then doubled).
ATTEMPTS = 5
FIRST_PAUSE = 0.5
#: How long shutdown waits for the queue to drain.
FLUSH_TIMEOUT = 10.0

UPLOADED, CONFLICT = "uploaded", "conflict"


class Uploader:
    """Uploads entries on its threads once start() is called (after the start-up probe found
    that writes are allowed); entries handed over before that wait, and discard() drops them.

    Counts go to the tier's RemoteCounts under `lock`; every entry handed over is counted
    exactly once: uploaded, conflict or failed.
    """

    def __init__(self, store: RemoteStore, counts: RemoteCounts, lock: threading.Lock) -> None:
        self.store, self.counts = store, counts
        self.changed = threading.Condition(lock)
        self.waiting: deque[tuple[str, bytes]] = deque()
        self.waiting_bytes = 0
        self.in_flight: list[str] = []
        #: waiting (for the probe) → running → closing; or discarded.
        self.state = "waiting"
        #: Set at the flush deadline: workers stop, and their backoff pauses end.
        self.halt = threading.Event()
        self.queue_full_said = False

    def put(self, key: str, packed: bytes) -> None:
        with self.changed:
            if self.state in ("discarded", "closing"):
                return
            if self.waiting_bytes + len(packed) > QUEUE_BYTES:
                self._failed(key, "the upload queue is full")
                return
            self.waiting.append((key, packed))
            self.waiting_bytes += len(packed)
            self.counts.pending += 1
            self.changed.notify()

    def start(self) -> None:
        with self.changed:
            if self.state != "waiting":
                return
            self.state = "running"
        for n in range(UPLOAD_THREADS):
            name = f"provider-cache-upload-{n}"
            threading.Thread(target=self._work, daemon=True, name=name).start()

    def discard(self) -> None:
        """Writes are not allowed: nothing is uploaded, nothing counted."""
        with self.changed:
            self.state = "discarded"
            self.waiting.clear()
            self.waiting_bytes = 0
            self.counts.pending = 0

    def flush(self, timeout: float = FLUSH_TIMEOUT) -> None:
        """Wait up to `timeout` for the queue to drain; what is left counts as failed."""
        deadline = time.monotonic() + timeout
        with self.changed:
            started = self.state == "running"
            if self.state != "discarded":
                self.state = "closing"
            self.changed.notify_all()
            while started and (self.waiting or self.in_flight):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.changed.wait(left)
            self.halt.set()
            for key in [*self.in_flight, *(key for key, _ in self.waiting)]:
                self._failed(key, "not uploaded by shutdown", say=False)
            self.waiting.clear()
            self.in_flight.clear()
            self.counts.pending = 0

    def _work(self) -> None:
        while True:
            with self.changed:
                while not self.waiting and self.state == "running":
                    self.changed.wait()
                if self.halt.is_set() or not self.waiting:
                    return
                key, packed = self.waiting.popleft()
                self.waiting_bytes -= len(packed)
                self.in_flight.append(key)
            outcome = self._upload(key, packed)
            with self.changed:
                if self.halt.is_set():  # flush counted it already
                    return
                self.in_flight.remove(key)
                self.counts.pending -= 1
                self._count(key, outcome)
                self.changed.notify_all()

    def _upload(self, key: str, packed: bytes) -> str:
        """UPLOADED, CONFLICT, or the reason it failed (one line)."""
        data = remoteobject.wrap(key, packed)
        pause = FIRST_PAUSE
        for attempt in range(1, ATTEMPTS + 1):
            try:
                if self.store.put_once(key, data):
                    return UPLOADED
                return self._already_there(key, packed)
            except RemoteError as e:
                if not e.transient or attempt == ATTEMPTS or self.halt.wait(pause):
                    return str(e)
                pause *= 2
        raise AssertionError("unreachable: the last attempt returns")

    def _already_there(self, key: str, packed: bytes) -> str:
        """The key has an object: ours (a retry, or a push), the same answer, or another one.

        Recorded answers carry their own time and run, so objects are compared by what a hit
        would serve: status and body."""
        try:
            theirs = self.store.get(key)
            if theirs is None:
                return CONFLICT  # there a moment ago: someone is removing it, leave it to them
            theirs_entry = records.unpack(remoteobject.unwrap(theirs, key))
        except RemoteError:
            return UPLOADED  # it is there; what it holds cannot be read now
        except remoteobject.CorruptObject:
            return CONFLICT
        return UPLOADED if same_answer(theirs_entry, records.unpack(packed)) else CONFLICT

    def _count(self, key: str, outcome: str) -> None:
        """Under the lock: one entry's outcome."""
        if outcome == UPLOADED:
            self.counts.uploaded += 1
        elif outcome == CONFLICT:
            self.counts.conflicts += 1
            self.counts.list_key("conflict_keys", key)
            logger.info(
                "provider-cache: key %s is in the remote with another answer: kept there", key
            )
        else:
            self._failed(key, outcome)

    def _failed(self, key: str, reason: str, say: bool = True) -> None:
        """Under the lock: an upload given up; the entry stays in the local store."""
        self.counts.failed += 1
        self.counts.list_key("failed_keys", key)
        if reason == "the upload queue is full":
            say, self.queue_full_said = not self.queue_full_said, True
        if say:
            logger.warning("provider-cache: upload of %s failed: %s; it stays local", key, reason)


def same_answer(a: records.Entry, b: records.Entry) -> bool:
    return a.response.status == b.response.status and a.response.content == b.response.content
