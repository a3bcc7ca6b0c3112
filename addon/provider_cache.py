"""The mitmproxy hooks: look up, serve, forward, record (SPEC §2).

Each hook opens with guard clauses and hands the work to the pure modules
(keys, records, stats) and to the store. Per-flow state that cannot be
serialised (the stream recorder) stays in this addon, keyed by flow id; only
plain values go into `flow.metadata`, which mitmweb shows and flow files keep.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from collections.abc import Awaitable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Protocol

from mitmproxy import ctx, exceptions, http

from addon import diagnose, endpoint, flows, keys, records, settings
from addon.cachefiles import CacheFiles
from addon.recent import KEY_SLOTS, LRU, RecentEntries
from addon.stats import Stats, parse_retry_after
from addon.store import Store, StoreError
from addon.streaming import StreamRecorder, is_event_stream

logger = logging.getLogger(__name__)

META = "provider_cache"
STATS_INTERVAL = 1.0


@dataclass
class Pending:
    """A forwarded provider request whose answer may be recorded."""

    key: str
    host: str
    storable: bool
    recorder: StreamRecorder | None = None


class Watcher(Protocol):
    """Told what the cache made of each live flow: mitmweb's markers (addon/webui.py).

    Called by the cache rather than hooked into every flow: two hook calls fewer on
    every hit, about 2% of its CPU (scripts/bench.py).
    """

    def endpoint(self, flow: http.HTTPFlow) -> None: ...  # a request for the endpoint
    def decided(self, flow: http.HTTPFlow) -> None: ...  # answered, or forwarded
    def settled(self, flow: http.HTTPFlow) -> None: ...  # a forwarded flow is over


class ProviderCache:
    def __init__(self) -> None:
        self.settings: settings.Settings | None = None
        self.files: CacheFiles | None = None
        self.stats = Stats(mode="record", window_size=settings.DEFAULT_WINDOW)
        self.started_at = time.time()
        self.pending: dict[str, Pending] = {}
        #: Keys whose next request is forwarded and re-recorded even if stored (mitmweb command).
        self.rerecord_keys: set[str] = set()
        self.flusher: asyncio.Task | None = None
        self.diagnoser = ThreadPoolExecutor(max_workers=1, thread_name_prefix="provider-cache")
        #: Misses waiting for their closest recording, by key; one pass over the store serves
        #: all that queued up meanwhile (a new run's first misses come in a burst).
        self.undiagnosed: dict[str, dict] = {}
        self.undiagnosed_lock = threading.Lock()
        #: Recorded answers are written here, one at a time, so that the event loop goes on
        #: serving other flows while LMDB commits (an fsync) instead of waiting for it.
        self.writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="provider-cache-write")
        self.recent_keys: LRU[str] = LRU(KEY_SLOTS)
        self.watchers: list[Watcher] = []
        self.recent_entries: RecentEntries[flows.Replay] = RecentEntries()

    # -- lifecycle -------------------------------------------------------------

    def load(self, loader) -> None:
        settings.declare(loader)

    def configure(self, updated: set[str]) -> None:
        if not any(name.startswith("cache_") for name in updated):
            return
        try:
            new = settings.parse(ctx.options)
            if self.files is None or (new.cache_dir, new.stats_file) != (
                self.files.cache_dir,
                self.files.stats_file,
            ):
                self._open_files(new)
        except (ValueError, StoreError) as e:
            if self.settings is None:
                # At start-up: one clear line; mitmproxy then exits because an error was logged
                # (raising here would print a traceback through its script loader).
                logger.error("provider-cache: %s", e)
                return
            raise exceptions.OptionsError(str(e)) from None
        if self.settings is None or (new.mode, new.window_size) != (
            self.settings.mode,
            self.settings.window_size,
        ):
            self.stats = Stats(
                mode=new.mode, window_size=new.window_size, started_at=self.started_at
            )
        if self.settings is None or new.rules != self.settings.rules:
            self.recent_keys = LRU(KEY_SLOTS)  # keys remembered under the old rules
        self.settings = new

    @property
    def store(self) -> Store | None:
        return self.files.store if self.files else None

    def _open_files(self, new: settings.Settings) -> None:
        files = CacheFiles(new.cache_dir, new.stats_file, new.map_size)
        if self.files is not None:
            self.writer.submit(lambda: None).result()  # writes queued for the old store are done
            files.run = self.files.run
            self.files.close()
        self.files = files

    def running(self) -> None:
        # Replay must not need the network: only connect upstream when a request is forwarded.
        if ctx.options.connection_strategy != "lazy":
            ctx.options.update(connection_strategy="lazy")
        if self.files is not None and self.flusher is None:
            self.files.begin_run()
            self.flusher = asyncio.create_task(self._flush_periodically())

    def done(self) -> None:
        if self.flusher is not None:
            self.flusher.cancel()
            self.flusher = None
        if self.files is None:
            return
        self.files.closing = True
        # No transaction may outlive the store; queued recordings are still written.
        self.diagnoser.shutdown(wait=True, cancel_futures=True)
        self.writer.shutdown(wait=True)
        try:
            self.files.write_stats(self.snapshot())
        except OSError as e:  # logging is already shut down here
            print(f"provider-cache: cannot write stats file: {e.strerror}", file=sys.stderr)
        self.files.close()
        self.files = None

    async def _flush_periodically(self) -> None:
        """About once a second: record which entries were hit, rewrite the stats if they changed."""
        written = None
        while True:
            files = self.files
            files.flush_usage()
            counters = self.stats.counters()
            if counters != written:
                try:
                    await asyncio.to_thread(files.write_stats, self.snapshot())
                    written = counters
                except OSError as e:
                    logger.warning("cannot write stats file: %s", e.strerror)
            await asyncio.sleep(STATS_INTERVAL)

    def snapshot(self) -> dict:
        return self.stats.snapshot()

    # -- hooks -----------------------------------------------------------------

    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live or self.settings is None:
            return
        cfg = self.settings
        host = flow.request.host
        if not cfg.is_provider(host):
            if endpoint.is_endpoint(flow.request):  # not counted: the endpoint answers it
                for watcher in self.watchers:
                    watcher.endpoint(flow)
            else:
                self.stats.pass_through()
            return
        storable = len(flow.request.raw_content or b"") <= cfg.max_body_size
        if not storable:
            logger.warning("%s request body over cache_max_body_size: not cached", host)
        key, normalized = self._key(flow.request, storable)
        lookup = storable and cfg.mode != "refresh" and key not in self.rerecord_keys
        replay = self._lookup(key, host) if lookup else None
        if replay is not None and self._servable(replay.entry):
            self._serve(flow, replay, host)
        else:
            if normalized is None:  # the key was remembered; a miss shows the normalised form
                normalized = keys.normalize(self._parts(flow.request, storable), cfg.rules)
            if cfg.mode == "replay":
                self._answer_miss(flow, key, host, normalized)
            else:
                self._forward(flow, Pending(key, host, storable), normalized)
        for watcher in self.watchers:
            watcher.decided(flow)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        pending = self.pending.get(flow.id)
        if pending is None or flow.response is None or flow.is_replay == "response":
            return
        flow.response.headers[flows.CACHE_HEADER] = "miss"
        if is_event_stream(flow.response.headers.get("content-type", "")):
            pending.recorder = StreamRecorder(self.settings.max_body_size)
            flow.response.stream = pending.recorder

    # `response` and `error` are plain functions, as a hit needs nothing from them (a
    # coroutine function would cost every flow a coroutine). For an answer worth recording
    # they hand mitmproxy the store write to await: the flow goes on (and the client gets
    # the answer's end) once it is durable, and the event loop serves other flows meanwhile.

    def response(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        pending = self.pending.pop(flow.id, None)
        if pending is None:
            return None
        if flow.response.status_code in (429, 503):
            value = flow.response.headers.get("retry-after", "")
            self.stats.rate_limit(parse_retry_after(value, time.time()) if value else None)
        return self._finish(flow, pending, self._recordable(flow, pending, False))

    def error(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        pending = self.pending.pop(flow.id, None)
        if pending is None:
            return None
        # A broken exchange counts as an error, unless a stream's answer was already complete.
        entry = None
        if pending.recorder is not None:
            entry = self._recordable(flow, pending, connection_closed_early=True)
        if entry is None:
            self.stats.error(pending.host)
        return self._finish(flow, pending, entry)

    # -- helpers ---------------------------------------------------------------

    def _key(self, request: http.Request, storable: bool) -> tuple[str, dict | None]:
        """The request's key, remembered for when the same request comes again, and its
        normalised form if it had to be computed."""
        if not storable:
            return keys.key_for(self._parts(request, storable), self.settings.rules)
        fingerprint = flows.fingerprint(request, self.settings.rules)
        key = self.recent_keys.get(fingerprint)
        if key is not None:
            return key, None
        key, normalized = keys.key_for(self._parts(request, storable), self.settings.rules)
        self.recent_keys.put(fingerprint, key)
        return key, normalized

    @staticmethod
    def _parts(request: http.Request, storable: bool) -> keys.RequestParts:
        parts = flows.request_parts(request)
        return parts if storable else replace(parts, body=b"<over cache_max_body_size>")

    def _lookup(self, key: str, host: str) -> flows.Replay | None:
        data = self.store.get(key.encode())
        if data is None:
            return None
        try:
            return self.recent_entries.decoded(key, data, _replay_of)
        except records.CorruptEntry as e:
            logger.warning("unreadable cache entry %s (%s): treated as a miss", key, e)
            self.stats.error(host)
            return None

    def _servable(self, entry: records.Entry) -> bool:
        """In read-old-write-new, entries written by this run are not served again."""
        return self.settings.mode != "read-old-write-new" or entry.recorded_at < self.started_at

    def _serve(self, flow: http.HTTPFlow, replay: flows.Replay, host: str) -> None:
        entry = replay.entry
        flow.response = flows.replay_response(replay, flow.request.http_version)
        flow.is_replay = "response"
        flow.metadata[META] = {"result": "hit", "key": entry.key, "recorded_at": entry.recorded_at}
        self.files.note_hit(entry.key, flow.request.timestamp_start)
        self.stats.hit(host)

    def _answer_miss(self, flow: http.HTTPFlow, key: str, host: str, normalized: dict) -> None:
        url = flows.redacted_url(flow.request, self.settings.rules)
        logger.warning("cache miss in replay mode: %s %s (key %s)", flow.request.method, url, key)
        flow.response = flows.miss_response(
            flow.request.method, url, key, flow.request.http_version
        )
        flow.metadata[META] = {"result": "miss", "key": key}
        if self.stats.miss(host, flow.request.method, url, key, normalized):
            self._diagnose_later(key, normalized)

    def _diagnose_later(self, key: str, normalized: dict) -> None:
        """Find the closest recorded request off the event loop: a scan can take a while."""
        with self.undiagnosed_lock:
            first = not self.undiagnosed
            self.undiagnosed[key] = normalized
        if first:
            self.diagnoser.submit(self._diagnose, self.files)

    def _diagnose(self, files: CacheFiles) -> None:
        with self.undiagnosed_lock:
            batch, self.undiagnosed = self.undiagnosed, {}
        if not batch:
            return
        candidates = (
            (entry.key, entry.request)
            for entry in records.unpack_valid(files.store.scan(stop=lambda: files.closing))
        )
        for key, closest in diagnose.closest_each(batch, candidates, self.settings.rules).items():
            if missed := self.stats.missed.get(key):
                missed.closest = closest

    def _forward(self, flow: http.HTTPFlow, pending: Pending, normalized: dict) -> None:
        # Not logged: in record mode every new request is forwarded, mitmdump prints each flow
        # anyway, and a log record costs every addon a hook call (a quarter of a recording's
        # work on the event loop). The stats keep the list of misses with their keys.
        url = flows.redacted_url(flow.request, self.settings.rules)
        flow.metadata[META] = {"result": "miss", "key": pending.key}
        self.pending[flow.id] = pending
        if self.stats.miss(pending.host, flow.request.method, url, pending.key, normalized):
            self._diagnose_later(pending.key, normalized)

    def _recordable(
        self, flow: http.HTTPFlow, pending: Pending, connection_closed_early: bool
    ) -> records.Entry | None:
        """The entry to store if the answer is complete, 2xx and within limits."""
        response = flow.response
        if response is None or not pending.storable or not 200 <= response.status_code < 300:
            return None
        recorder = pending.recorder
        if recorder is not None and not recorder.complete(connection_closed_early):
            logger.info("stream for key %s ended early: not recorded", pending.key)
            return None
        if recorder is None and len(response.raw_content or b"") > self.settings.max_body_size:
            logger.warning("%s response over cache_max_body_size: not recorded", pending.host)
            return None
        chunks = recorder.chunks if recorder is not None else None
        entry = flows.make_entry(flow, pending.key, self.settings.rules, chunks)
        if entry is None:
            logger.warning("response for key %s has an undecodable body: not recorded", pending.key)
            self.stats.error(pending.host)
            return None
        entry.meta["recorded_run"] = self.files.run
        return entry

    def _finish(
        self, flow: http.HTTPFlow, pending: Pending, entry: records.Entry | None
    ) -> Awaitable[None] | None:
        """The write of a recordable answer, for mitmproxy to await; else the flow is over."""
        if entry is not None:
            return self._write(flow, pending, entry)
        self._settled(flow)
        return None

    async def _write(self, flow: http.HTTPFlow, pending: Pending, entry: records.Entry) -> None:
        """Store the entry on the writer thread; count it once it is durable."""
        put = self.store.put
        try:
            await asyncio.wrap_future(
                self.writer.submit(put, pending.key.encode(), records.pack(entry))
            )
        except StoreError as e:
            logger.error("could not record key %s: %s", pending.key, e)
            self.stats.error(pending.host)
        else:
            flow.metadata[META]["recorded_at"] = entry.recorded_at  # for mitmweb's comment
            self.stats.record(pending.host)
            self.rerecord_keys.discard(pending.key)
        self._settled(flow)

    def _settled(self, flow: http.HTTPFlow) -> None:
        for watcher in self.watchers:
            watcher.settled(flow)


def _replay_of(data: bytes) -> flows.Replay:
    return flows.Replay.of(records.unpack(data))
