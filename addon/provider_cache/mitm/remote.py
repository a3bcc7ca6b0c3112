"""The remote tier in the proxy (SPEC §11): the start-up probe, read-through on a local miss,
and the upload of what this proxy records (mitm/uploads.py).

Nothing here is on the hit path: a local hit never reaches this module. Every remote call
runs on a thread and the event loop waits for it with a hard deadline, so a remote that is
down, slow or hanging costs a request at most LOOKUP_TIMEOUT, and the proxy serves on from
its local store. A remote object is used only once remoteobject.unwrap has checked it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from provider_cache.core import records, remoteobject
from provider_cache.core.remoteobject import CorruptObject, RemoteLocation
from provider_cache.core.stats import RemoteCounts
from provider_cache.mitm import options
from provider_cache.mitm.uploads import Uploader
from provider_cache.storage.remote import PROBE_TIMEOUT, ProbeResult, RemoteError, RemoteStore

logger = logging.getLogger(__name__)

#: Seconds for a connect, and for each read, of one attempt of a remote call.
CALL_TIMEOUT = 1.0
#: The longest a request waits for the remote on a local miss, whatever the remote does.
LOOKUP_TIMEOUT = 2.0
LOOKUP_THREADS = 4
#: Keys the remote lacked (or failed on) remembered per run, so they are not asked again.
ASKED_LIMIT = 100_000
#: Failed lookups in a row after which the remote is not asked for PAUSE seconds.
FAILURES_TO_PAUSE = 3
PAUSE = 30.0
#: The longest the endpoint's first answer waits for the start-up probe (see ready()).
READY_TIMEOUT = PROBE_TIMEOUT + 2.0


@dataclass(frozen=True)
class Found:
    """A checked remote object: the packed entry (stored locally as it is) and its entry."""

    packed: bytes
    entry: records.Entry


class DaemonThreads:
    """A few daemon threads that run calls: unlike a ThreadPoolExecutor's, which the
    interpreter joins at exit, a call stuck on a hanging remote never holds up shutdown."""

    def __init__(self, count: int, name: str) -> None:
        self.calls: queue.SimpleQueue[tuple[Future, Callable[[], Any]] | None] = queue.SimpleQueue()
        self.count = count
        for n in range(count):
            threading.Thread(target=self._run, daemon=True, name=f"{name}-{n}").start()

    def submit(self, call: Callable[[], Any]) -> Future:
        future: Future = Future()
        self.calls.put((future, call))
        return future

    def _run(self) -> None:
        while (item := self.calls.get()) is not None:
            future, call = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(call())
            except Exception as e:  # handed to the waiting request, which decides
                future.set_exception(e)

    def shutdown(self) -> None:
        for _ in range(self.count):
            self.calls.put(None)


def open_tier(location: RemoteLocation, write_mode: str) -> RemoteTier:
    """The tier of `location`; ValueError (a start-up stop) when boto3 is not installed.

    An unusable AWS configuration is a remote that is not available, said at start-up.
    boto3's own log records are kept to warnings: mitmproxy logs everything at DEBUG, and
    botocore's debug records hold request headers and signatures."""
    for name in ("boto3", "botocore", "urllib3"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        store: RemoteStore | None = RemoteStore(location, timeout=CALL_TIMEOUT)
        unusable = None
    except RemoteError as e:
        if e.code == "boto3":
            raise ValueError(str(e)) from None
        store, unusable = None, str(e)
    return RemoteTier(location, write_mode, store, unusable)


class RemoteTier:
    """One proxy's remote tier: its probe, its lookups and its uploads, and their counts."""

    def __init__(
        self,
        location: RemoteLocation,
        write_mode: str,
        store: RemoteStore | None,
        unusable: str | None = None,
    ) -> None:
        self.location, self.write_mode = location, write_mode
        self.store, self.unusable = store, unusable
        self.counts = RemoteCounts(str(location))
        lock = threading.Lock()
        self.uploader = Uploader(store, self.counts, lock) if store is not None else None
        self.lookups = DaemonThreads(LOOKUP_THREADS, "provider-cache-remote")
        #: None until the probe answers; then whether lookups go to the remote at all.
        self.readable: bool | None = None
        #: How the start-up line describes the tier.
        self.state = "not probed yet"
        self.decided = asyncio.Event()
        self.asked: set[str] = set()
        self.failures_in_a_row = 0
        self.paused_until = 0.0

    # -- the start-up probe ----------------------------------------------------

    async def start(self, at_startup: bool) -> None:
        """Probe the remote off the event loop (bounded by PROBE_TIMEOUT) and decide reads
        and writes. With cache_remote_write=true and writes refused, stop at start-up."""
        try:
            self._decide(await self._probe(), at_startup)
        finally:
            self.decided.set()

    async def ready(self) -> None:
        """Until the probe has answered: ready means the start-up line is said (and that a
        proxy that must stop has stopped), so the endpoint's first answer waits for it."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.decided.wait(), READY_TIMEOUT)

    async def _probe(self) -> ProbeResult:
        store = self.store
        if store is None:
            return ProbeResult(False, False, self.unusable)
        write = self.write_mode != "false"
        return await asyncio.wrap_future(self.lookups.submit(lambda: store.probe(write=write)))

    def _decide(self, found: ProbeResult, at_startup: bool) -> None:
        self.readable = found.readable
        writes = bool(found.writable) and self.write_mode != "false"
        if self.write_mode == "true" and not writes:
            self._refuse(f"cache_remote_write=true, but {found.reason}", at_startup)
        elif not found.readable:
            self.counts.errors += 1
            self.state = "unavailable: local tier only"
            logger.warning(
                "provider-cache: %s; the local cache serves on without the remote tier",
                found.reason,
            )
        elif self.write_mode == "false":
            self.state = "read-only: cache_remote_write=false"
        elif not writes:
            self.state = "read-only: writes refused"
            logger.warning(
                "provider-cache: %s; entries recorded here stay local (cache_remote_write=auto)",
                found.reason,
            )
        else:
            self.state = "read-write"
        if self.uploader is None:
            return
        if writes:
            self.uploader.start()
        else:
            self.uploader.discard()

    def _refuse(self, line: str, at_startup: bool) -> None:
        if at_startup:
            options.stop_at_startup(line)
        logger.error("provider-cache: %s; nothing recorded here is uploaded", line)
        self.state = "writes refused"

    def describe(self) -> str:
        return f"{self.location} ({self.state})"

    # -- read-through ----------------------------------------------------------

    async def fetch(self, key: str) -> Found | None:
        """The checked object of `key`, or None: not there, failed, or not asked (asked
        before in this run, the remote unavailable or paused). Never longer than
        LOOKUP_TIMEOUT."""
        if key in self.asked:
            return None
        store = self.store
        if store is None or self.readable is False or time.monotonic() < self.paused_until:
            self.counts.skipped += 1
            return None
        try:
            found = await asyncio.wait_for(
                asyncio.wrap_future(self.lookups.submit(lambda: _get(store, key))),
                LOOKUP_TIMEOUT,
            )
        except TimeoutError:
            self._failed(
                key, f"remote {self.location}: get {key}: no answer within {LOOKUP_TIMEOUT:g} s"
            )
            return None
        except RemoteError as e:
            self._failed(key, str(e))
            return None
        except CorruptObject as e:
            self.counts.errors += 1
            self._remember(key)
            logger.warning(
                "provider-cache: remote object of key %s is unusable (%s): a local miss", key, e
            )
            return None
        self.failures_in_a_row = 0
        if found is None:
            self.counts.misses += 1
            self._remember(key)
        return found

    def _failed(self, key: str, line: str) -> None:
        """A lookup that failed: an error, and after a few in a row a pause of the remote."""
        self.counts.errors += 1
        self._remember(key)
        self.failures_in_a_row += 1
        if self.failures_in_a_row < FAILURES_TO_PAUSE:
            logger.warning("provider-cache: %s: a local miss", line)
            return
        self.failures_in_a_row = 0
        self.paused_until = time.monotonic() + PAUSE
        logger.warning(
            "provider-cache: %s: %d remote lookups failed in a row, the remote is not asked "
            "for %g s",
            line,
            FAILURES_TO_PAUSE,
            PAUSE,
        )

    def _remember(self, key: str) -> None:
        if len(self.asked) < ASKED_LIMIT:
            self.asked.add(key)

    # -- uploads and shutdown --------------------------------------------------

    def upload(self, key: str, packed: bytes) -> None:
        """An entry this proxy recorded, durable locally: uploaded in the background."""
        if self.uploader is not None and self.write_mode != "false":
            self.uploader.put(key, packed)

    def close(self, say: Callable[[str], None]) -> None:
        """At shutdown: the uploads get a bounded wait; what is left is said and counted."""
        if self.uploader is not None:
            self.uploader.flush()
        counts = self.counts
        if counts.failed:
            say(
                f"provider-cache: {counts.failed} recorded "
                f"{'entry' if counts.failed == 1 else 'entries'} not uploaded to "
                f"{self.location} (kept in the local cache; `provider-cache recordings push` "
                f"uploads them): {_listed(counts.failed_keys, counts.failed)}"
            )
        if counts.conflicts:
            say(
                f"provider-cache: {counts.conflicts} recorded "
                f"{'entry' if counts.conflicts == 1 else 'entries'} already in {self.location} "
                f"with another answer, not replaced: "
                f"{_listed(counts.conflict_keys, counts.conflicts)}"
            )
        self.lookups.shutdown()
        if self.store is not None:
            self.store.close()


def _get(store: RemoteStore, key: str) -> Found | None:
    """On a lookup thread: fetch and check the object (a digest over the whole entry)."""
    data = store.get(key)
    if data is None:
        return None
    packed = remoteobject.unwrap(data, key)
    return Found(packed, records.unpack(packed))


#: Keys a shutdown line names; the stats file lists more.
SHOWN_KEYS = 5


def _listed(keys: list[str], total: int) -> str:
    shown = ", ".join(keys[:SHOWN_KEYS])
    more = total - min(len(keys), SHOWN_KEYS)
    return shown + (f" (+{more} more, listed in the stats file)" if more > 0 else "")
