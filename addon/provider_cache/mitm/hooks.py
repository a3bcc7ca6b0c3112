"""The mitmproxy hooks: the hit path (SPEC §2).

    request          look up → serve (hit), or answer the miss (replay), or forward
    responseheaders  a forwarded answer: tee its stream while the client reads it
    response, error  forwarded → record, if the answer is complete and a success

The recording path (the last two rows) is mitm/recording.py; a hit replayed with its
recorded pacing (cache_replay_timing) goes through mitm/pacedreplay.py. With a remote
tier (mitm/remote.py), a local miss asks the remote before the mode's miss, and what is
recorded is uploaded; a local hit never reaches the remote's code.

Each hook opens with guard clauses and hands the work to the pure modules (keys,
records, stats), the store, and the background machinery (mitm/background.py).
Per-flow state that cannot be serialised (the stream recorder) stays in this addon,
keyed by flow id; only plain values go into `flow.metadata`, which mitmweb shows and
flow files keep.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Awaitable
from typing import Protocol

from mitmproxy import ctx, exceptions, http
from mitmproxy.addonmanager import Loader

from provider_cache.core import records, slots
from provider_cache.core.keys import KeyRules
from provider_cache.core.names import FLOW_METADATA_KEY
from provider_cache.core.recent import RecentEntries
from provider_cache.core.stats import DEFAULT_WINDOW, Stats
from provider_cache.mitm import endpoint, flows, options, remote
from provider_cache.mitm.background import Diagnoser, StatsFlusher, Writer
from provider_cache.mitm.keying import Keyer
from provider_cache.mitm.pacedreplay import PacedReplay
from provider_cache.mitm.recording import Pending, Recording
from provider_cache.storage.cachefiles import CacheFiles
from provider_cache.storage.store import Store, StoreError

logger = logging.getLogger(__name__)

#: Request bodies larger than this are keyed on a thread, off the event loop.
KEY_OFF_LOOP_BYTES = 1 << 20
#: Keys of unused entries the final stats file lists (their number is always there).
UNUSED_LISTED = 1000


class Watcher(Protocol):
    """Told what the cache made of each live flow: mitmweb's markers (mitm/webui.py).

    Called by the cache rather than hooked into every flow: two hook calls fewer on
    every hit, about 2% of its CPU (scripts/bench.py).
    """

    def endpoint(self, flow: http.HTTPFlow) -> None: ...  # a request for the endpoint
    def decided(self, flow: http.HTTPFlow) -> None: ...  # answered, or forwarded
    def settled(self, flow: http.HTTPFlow) -> None: ...  # a forwarded flow is over


class ProviderCache:
    def __init__(self) -> None:
        self.settings: options.Settings | None = None
        self.files: CacheFiles | None = None
        self.stats = Stats(mode="record", window_size=DEFAULT_WINDOW)
        self.started_at = time.time()
        self.keyer = Keyer(KeyRules())
        self.recent_entries: RecentEntries[flows.Replay] = RecentEntries()
        self.pending: dict[str, Pending] = {}
        #: Keys whose next request is forwarded and re-recorded even if stored (mitmweb command).
        self.rerecord_keys: set[str] = set()
        self.watchers: list[Watcher] = []
        self.writer = Writer()
        self.diagnoser = Diagnoser()
        self.flusher = StatsFlusher(lambda: self.files, lambda: self.stats)
        self.remote: remote.RemoteTier | None = None
        self._remote_started: asyncio.Future | None = None
        self.recording = Recording(self)
        self.paced = PacedReplay()
        #: Configured before mitmproxy serves (not a script reload): a start-up stop is right.
        self.at_startup = False
        #: The running test is live (SPEC §12, mitm/testchannel.py): its requests pass by.
        self.live_test = False
        #: Flows of WebSocket handshakes, which mitm/websockets.py decides (SPEC §13).
        self.claimed: set[str] = set()
        #: Each request's place among identical ones, under cache_sequence (core/slots.py).
        self.sequences = slots.Sequences()

    @property
    def store(self) -> Store | None:
        return self.files.store if self.files else None

    def snapshot(self) -> dict:
        return self.stats.snapshot()

    # -- lifecycle -------------------------------------------------------------

    def load(self, loader: Loader) -> None:
        options.declare(loader)
        try:
            options.apply_deferred(loader.master.options)
        except ValueError as e:
            options.stop_at_startup(str(e))

    def configure(self, updated: set[str]) -> None:
        if not any(name.startswith("cache_") or name in options.ALSO_READ for name in updated):
            return
        try:
            new = options.parse(ctx.options)
            if self.files is None or not self.files.serves(new.cache_dir, new.stats_file):
                self._open_files(new)
            self._open_remote(new)
        except (ValueError, StoreError) as e:
            if self.settings is None:
                # Raising here would print a traceback through mitmproxy's script loader.
                if not _proxy_running():
                    options.stop_at_startup(str(e))
                logger.error("provider-cache: %s", e)  # a reload of the script
                return
            raise exceptions.OptionsError(str(e)) from None
        old = self.settings
        if old is None or (new.mode, new.window_size) != (old.mode, old.window_size):
            self.stats = Stats(
                mode=new.mode, window_size=new.window_size, started_at=self.started_at
            )
        self.stats.remote = self.remote.counts if self.remote is not None else None
        if old is None or new.rules != old.rules:
            self.keyer = Keyer(new.rules)  # keys remembered under the old rules are void
        if old is None or (new.sequence, new.mode, new.rules) != (
            old.sequence,
            old.mode,
            old.rules,
        ):
            self.sequences = slots.Sequences()  # a sequence counts from its first request
        self.settings = new

    def _open_files(self, new: options.Settings) -> None:
        files = CacheFiles(
            new.cache_dir, new.stats_file, new.map_size, read_only_ok=new.mode == "replay"
        )
        if self.files is not None:
            self.writer.drain()  # writes queued for the old store are done
            self.files.close()  # not a clean end: a run that moved on mid-way does not count
            if self.flusher.task is not None:  # running: join the new directory's run
                files.begin_run()
        self.files = files

    def _open_remote(self, new: options.Settings) -> None:
        """A new remote tier when cache_remote or cache_remote_write changed (ValueError:
        boto3 is missing); the old one's uploads are flushed first."""
        old = self.settings
        if old is not None and (new.remote, new.remote_write) == (old.remote, old.remote_write):
            return
        tier = remote.open_tier(new.remote, new.remote_write) if new.remote else None
        if self.remote is not None:
            self.remote.close(say=logger.warning)
        self.remote = tier
        if old is None:
            self.at_startup = not _proxy_running()
        elif tier is not None and self.flusher.task is not None:  # running: probe it now
            self._remote_started = asyncio.ensure_future(self._start_remote(tier))

    def running(self) -> Awaitable[None] | None:
        # Replay must not need the network: only connect upstream when a request is forwarded.
        if ctx.options.connection_strategy != "lazy":
            ctx.options.update(connection_strategy="lazy")
        if self.files is None or self.flusher.task is not None:
            return None
        self.files.begin_run()
        self.flusher.start()
        if self.remote is not None:
            # A task, not a coroutine: a script reload calls running() without awaiting it.
            self._remote_started = asyncio.ensure_future(self._start_remote(self.remote))
            return self._remote_started
        self._say_startup_line(None)
        return None

    async def _start_remote(self, tier: remote.RemoteTier) -> None:
        """The remote's probe, off the event loop; then the start-up line that names it."""
        await tier.start(at_startup=self.at_startup)
        self._say_startup_line(tier.describe())

    def _say_startup_line(self, remote_state: str | None) -> None:
        cfg, files = self._settings(), self._files()
        logger.info(options.startup_line(cfg, len(files.store), not files.writable, remote_state))

    def done(self) -> None:
        self.flusher.stop()
        self.paced.close()
        if self.files is None:
            return
        self.files.closing = True
        self.diagnoser.shutdown()
        self.writer.shutdown()
        self.recording.settle()  # writes the loop will not get back to: counted, uploaded
        if self.remote is not None:  # uploads read nothing from the store: its bytes are queued
            self.remote.close(say=lambda line: print(line, file=sys.stderr, flush=True))
            self.remote = None
        final = self.snapshot()
        try:  # the end of a clean run: what no request of the run used (SPEC §5)
            final["unused"] = self.files.unused(UNUSED_LISTED)
        except StoreError as e:
            print(f"provider-cache: unused entries not counted: {e}", file=sys.stderr)
        try:
            self.files.write_stats(final)
        except OSError as e:  # logging is already shut down here
            self.flusher.warn(self.files, e, say=lambda line: print(line, file=sys.stderr))
        self.files.close(lookups=self.stats.hits + self.stats.misses)  # a clean end of its run
        self.files = None

    # -- hooks: the hit path ---------------------------------------------------

    def request(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        cfg, files = self.settings, self.files
        if flow.response or flow.error or not flow.live or cfg is None or files is None:
            return None
        if flow.id in self.claimed:  # a WebSocket handshake: mitm/websockets.py's
            return None
        host = flow.request.host
        if not cfg.is_provider(host) or self.live_test:
            return self._not_provider(flow)
        size = len(flow.request.raw_content or b"")
        storable = size <= cfg.max_body_size
        if storable and size > KEY_OFF_LOOP_BYTES:
            return self._request_off_loop(flow, cfg, files, host)
        try:
            if not storable:
                logger.warning("%s request body over cache_max_body_size: not cached", host)
            key, normalized = self.keyer.key(flow.request, storable)
            return self._decide(flow, cfg, files, host, storable, key, normalized)
        except BaseException:
            self._fail_closed(flow, cfg, host)
            raise

    async def _request_off_loop(
        self, flow: http.HTTPFlow, cfg: options.Settings, files: CacheFiles, host: str
    ) -> None:
        """A large body is keyed on a thread: parsing 20 MB of JSON on the event loop would
        stall every other client for seconds. mitmproxy awaits this before going on."""
        try:
            fingerprint, key, normalized = await asyncio.to_thread(self.keyer.compute, flow.request)
            self.keyer.remember(fingerprint, key)
            asked = self._decide(flow, cfg, files, host, True, key, normalized)
            if asked is not None:
                await asked
        except BaseException:
            self._fail_closed(flow, cfg, host)
            raise

    def _decide(
        self,
        flow: http.HTTPFlow,
        cfg: options.Settings,
        files: CacheFiles,
        host: str,
        storable: bool,
        key: str,
        normalized: dict | None,
    ) -> Awaitable[None] | None:
        """Look up → serve; else ask the remote tier (an awaitable for mitmproxy), or answer
        the miss (replay) or forward it (to be recorded)."""
        if cfg.sequence:  # the one check the default hit path pays for slots
            return self._decide_slot(flow, cfg, files, host, storable, key, normalized)
        lookup = storable and cfg.mode != "refresh" and key not in self.rerecord_keys
        replay = self._lookup(files, key, host) if lookup else None
        paced = None
        if replay is not None and self._servable(cfg, replay.entry):
            paced = self._serve(flow, cfg, files, replay, host)
        elif replay is None and lookup and self.remote is not None:
            return self._read_through(self.remote, flow, cfg, files, host, key, normalized)
        else:
            self._miss(flow, cfg, host, storable, key, normalized)
        for watcher in self.watchers:
            watcher.decided(flow)
        return paced

    def _decide_slot(
        self,
        flow: http.HTTPFlow,
        cfg: options.Settings,
        files: CacheFiles,
        host: str,
        storable: bool,
        key: str,
        normalized: dict | None,
    ) -> Awaitable[None] | None:
        """`_decide` under cache_sequence: this request's slot of its key, looked up, else
        from the remote, else past the end (the last slot again) or the mode's miss."""
        slot = self.sequences.advance(self.stats.test, key)
        lookup = storable and cfg.mode != "refresh" and slot.key not in self.rerecord_keys
        replay = self._lookup(files, slot.key, host) if lookup else None
        if replay is not None and self._servable(cfg, replay.entry):
            paced = self._serve_slot(flow, cfg, files, replay, host, slot, slot.n)
        elif replay is None and lookup and self.remote is not None:
            return self._read_through(
                self.remote, flow, cfg, files, host, slot.key, normalized, slot
            )
        else:
            paced = self._past_end_or_miss(
                flow, cfg, files, host, storable, normalized, slot, lookup
            )
        for watcher in self.watchers:
            watcher.decided(flow)
        return paced

    def _past_end_or_miss(
        self,
        flow: http.HTTPFlow,
        cfg: options.Settings,
        files: CacheFiles,
        host: str,
        storable: bool,
        normalized: dict | None,
        slot: slots.Slot,
        lookup: bool,
    ) -> Awaitable[None] | None:
        """Past the end (the previous request was served, this slot is not stored): the
        last slot again, if the option says so; else the mode's miss for this slot."""
        last = slot.previous
        if last is not None and lookup and cfg.sequence_past_end == slots.PAST_END_LAST:
            replay = self._lookup(files, slots.slot_key(slot.of, last), host)
            if replay is not None and self._servable(cfg, replay.entry):
                return self._serve_slot(flow, cfg, files, replay, host, slot, last)
        self._miss(flow, cfg, host, storable, slot.key, normalized, slot)
        return None

    def _serve_slot(
        self,
        flow: http.HTTPFlow,
        cfg: options.Settings,
        files: CacheFiles,
        replay: flows.Replay,
        host: str,
        slot: slots.Slot,
        n: int,
    ) -> Awaitable[None] | None:
        paced = self._serve(flow, cfg, files, replay, host)
        slot.served(n)
        _mark_slot(flow, slot, n)
        return paced

    def _miss(
        self,
        flow: http.HTTPFlow,
        cfg: options.Settings,
        host: str,
        storable: bool,
        key: str,
        normalized: dict | None,
        slot: slots.Slot | None = None,
    ) -> None:
        """The mode's miss: answer it (replay), or forward it to be recorded (as its slot)."""
        if normalized is None:  # the key was remembered; a miss shows the normal form
            normalized = self.keyer.normalized(flow.request, storable)
        if cfg.mode == "replay":
            self._answer_miss(flow, key, host, normalized, slot)
        else:
            self._forward(flow, Pending(key, host, storable, slot=slot), normalized)
        if slot is not None:
            _mark_slot(flow, slot, slot.n)

    async def _read_through(
        self,
        tier: remote.RemoteTier,
        flow: http.HTTPFlow,
        cfg: options.Settings,
        files: CacheFiles,
        host: str,
        key: str,
        normalized: dict | None,
        slot: slots.Slot | None = None,
    ) -> None:
        """A local miss asks the remote (bounded); a checked object is stored locally and
        served as a local hit is. Not in refresh mode (it never looks up: it wants the
        provider's answer). In read-old-write-new, what was recorded during this run is not
        served, from either tier. A slot neither has: past the end, or the mode's miss."""
        try:
            found = await tier.fetch(key)
            if found is not None and self._servable(cfg, found.entry):
                await self._keep_locally(files, key, found.packed, host)
                paced = self._serve(flow, cfg, files, flows.Replay.of(found.entry), host)
                flow.metadata[FLOW_METADATA_KEY]["tier"] = "remote"
                self.stats.from_remote()
                if slot is not None:
                    slot.served(slot.n)
                    _mark_slot(flow, slot, slot.n)
            elif slot is not None:
                paced = self._past_end_or_miss(flow, cfg, files, host, True, normalized, slot, True)
            else:
                paced = None
                self._miss(flow, cfg, host, True, key, normalized)
            for watcher in self.watchers:
                watcher.decided(flow)
            if paced is not None:
                await paced
        except BaseException:
            self._fail_closed(flow, cfg, host)
            raise

    async def _keep_locally(self, files: CacheFiles, key: str, packed: bytes, host: str) -> None:
        """The remote's entry, as it is, in the local store: the next request is a local hit."""
        if not files.writable:
            return
        try:
            await self.writer.put(files, key, packed)
        except StoreError as e:
            logger.error("could not store key %s from the remote: %s", key, e)
            self.stats.error(host)

    def _fail_closed(self, flow: http.HTTPFlow, cfg: options.Settings, host: str) -> None:
        """Replay fails closed: mitmproxy forwards a flow whose hook raised, unless it has an
        answer. The error still propagates, so mitmproxy logs it as the bug it is."""
        if cfg.mode == "replay" and flow.response is None:
            flow.response = flows.failure_response(flow.request.http_version)
            self.stats.failed_lookup(host)

    # -- hooks: the recording path (mitm/recording.py) -------------------------------

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        pending = self.pending.get(flow.id)
        if pending is None:
            if self.paced.flows:  # a paced hit's answer, from mitm/pacedreplay.py
                self.paced.headers(flow)
            return
        if flow.response is None or flow.is_replay == "response":
            return
        self.recording.tee(flow, pending)

    # `response` and `error` are plain functions, as a hit needs nothing from them (a
    # coroutine function would cost every flow a coroutine). For an answer worth recording
    # they hand mitmproxy the store write to await: the flow goes on (and the client gets
    # the answer's end) once it is durable, and the event loop serves other flows meanwhile.

    def response(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        pending = self.pending.pop(flow.id, None)
        if pending is None or flow.response is None or self.files is None:  # None: shut down
            return None
        return self.recording.answered(flow, pending)

    def error(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        pending = self.pending.pop(flow.id, None)
        if pending is None:
            if self.paced.flows and self.paced.forget(flow):  # the loopback server failed it
                self.stats.error(flow.request.host)
            return None
        if self.files is None:  # the proxy is shutting down
            return None
        return self.recording.broke(flow, pending)

    # -- look up → serve -------------------------------------------------------

    # Methods, not properties: mitmproxy looks at every attribute of an addon for commands.

    def _settings(self) -> options.Settings:
        """The settings, once configured (no hook past `request`'s guard runs before)."""
        assert self.settings is not None
        return self.settings

    def _files(self) -> CacheFiles:
        assert self.files is not None
        return self.files

    def _not_provider(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        if endpoint.is_endpoint(flow.request):  # not counted: the endpoint answers it
            for watcher in self.watchers:
                watcher.endpoint(flow)
            if self.remote is not None and not self.remote.decided.is_set():
                return self.remote.ready()  # "ready" waits for the remote's start-up probe
        else:
            self.stats.pass_through()
        return None

    def _lookup(self, files: CacheFiles, key: str, host: str) -> flows.Replay | None:
        try:
            data = files.store.get(key.encode())
        except StoreError as e:
            logger.error("provider-cache: %s: key %s treated as a miss", e, key)
            self.stats.error(host)
            return None
        if data is None:
            return None
        try:
            return self.recent_entries.decoded(key, data, _replay_of)
        except records.CorruptEntry as e:
            logger.warning("unreadable cache entry %s (%s): treated as a miss", key, e)
            self.stats.error(host)
            return None

    def _servable(self, cfg: options.Settings, entry: records.Entry) -> bool:
        """In read-old-write-new, entries written by this run are not served again."""
        return cfg.mode != "read-old-write-new" or entry.recorded_at < self.started_at

    def _serve(
        self,
        flow: http.HTTPFlow,
        cfg: options.Settings,
        files: CacheFiles,
        replay: flows.Replay,
        host: str,
    ) -> Awaitable[None] | None:
        """Answer from the entry; a stream with offsets, under cache_replay_timing, paced
        (an awaitable for mitmproxy when the pacing server must start first)."""
        entry = replay.entry
        paced = None
        if cfg.replay_timing is not None and entry.response.offsets is not None:
            paced = self.paced.forward(flow, replay, cfg.replay_timing)
        else:
            flow.response = flows.replay_response(replay, flow.request.http_version)
        flow.is_replay = "response"
        metadata = {"result": "hit", "key": entry.key, "recorded_at": entry.recorded_at}
        error = entry.meta.get("error")
        if error:  # recorded on purpose (cache_record_errors): mitmweb marks it
            metadata["error"] = error
        flow.metadata[FLOW_METADATA_KEY] = metadata
        files.note_hit(entry.key, flow.request.timestamp_start)
        self.stats.hit(host, entry.recorded_at, entry.key)
        return paced

    # -- miss → answer it, or forward → record ---------------------------------

    def _answer_miss(
        self,
        flow: http.HTTPFlow,
        key: str,
        host: str,
        normalized: dict,
        slot: slots.Slot | None = None,
    ) -> None:
        url = flows.redacted_url(flow.request, self._settings().rules)
        place = f", answer {slot.n} of key {slot.of}" if slot is not None and slot.n > 1 else ""
        logger.warning(
            "cache miss in replay mode: %s %s (key %s%s)", flow.request.method, url, key, place
        )
        flow.response = flows.miss_response(
            flow.request.method, url, key, flow.request.http_version, place
        )
        flow.metadata[FLOW_METADATA_KEY] = {"result": "miss", "key": key}
        self._count_miss(flow, key, host, url, normalized)

    def _forward(self, flow: http.HTTPFlow, pending: Pending, normalized: dict) -> None:
        # Not logged: in record mode every new request is forwarded, mitmdump prints each flow
        # anyway, and a log record costs every addon a hook call (a quarter of a recording's
        # work on the event loop). The stats keep the list of misses with their keys.
        url = flows.redacted_url(flow.request, self._settings().rules)
        flow.metadata[FLOW_METADATA_KEY] = {"result": "miss", "key": pending.key}
        self.pending[flow.id] = pending
        self._count_miss(flow, pending.key, pending.host, url, normalized)

    def _count_miss(
        self, flow: http.HTTPFlow, key: str, host: str, url: str, normalized: dict
    ) -> None:
        """Count it; a newly listed miss gets its closest recording found in the background."""
        if self.stats.miss(host, flow.request.method, url, key, normalized):
            self.diagnoser.later(key, normalized, self._files(), self.stats, self._settings().rules)


def _proxy_running() -> bool:
    """Whether mitmproxy is up (a script reload, an options editor) or still starting."""
    return bool(getattr(ctx.master.addons.get("proxyserver"), "is_running", False))


def _mark_slot(flow: http.HTTPFlow, slot: slots.Slot, n: int) -> None:
    """The flow's slot, for mitmweb: n, of which key, and whether it is the last again."""
    marks = flow.metadata[FLOW_METADATA_KEY]
    marks |= {"slot": n, "slot_of": slot.of}
    if n != slot.n:
        marks["again"] = slot.n  # request slot.n, past the end, was served slot n


def _replay_of(data: bytes) -> flows.Replay:
    return flows.Replay.of(records.unpack(data))
