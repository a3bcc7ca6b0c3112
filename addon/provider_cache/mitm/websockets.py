"""WebSocket sessions to provider hosts, recorded and replayed (SPEC §13, issue 17).

    request        a provider's handshake: look its session up → replay it (mitm/wsplayer.py),
                   or answer the miss (replay mode), or forward it to be recorded
    responseheaders  the 101 is in: a replayed flow gets its own target back
    websocket_end  replayed: a hit unless it diverged; forwarded: stored if it closed normally
    response, error  a handshake that was not upgraded, a session that broke

Keyed by the handshake under the §3 rules (core/wsrecords.py), stored as an entry of the
same store through the cache's writer (what is stored: mitm/wsrecording.py) and uploaded
as any entry is; a session the local store lacks is asked of the remote tier, as an HTTP
miss is (mitm/remote.py), and kept locally. Counted once per session in the cache's
stats: a miss when forwarded or when it diverged (with the divergence as its closest
recording's difference), else a hit when it ends. In record mode a session that diverged
is recorded as a new take when the client connects again. Non-provider WebSockets are
tunnelled by mitm/tunnels.py or passed by here untouched.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from dataclasses import dataclass

from mitmproxy import ctx, hooks, http

from provider_cache.core import records, wsmatch, wsrecords
from provider_cache.core.names import CACHE_HEADER, FLOW_METADATA_KEY
from provider_cache.core.rejections import ERROR_STATUS
from provider_cache.mitm import flows, options, remote, wsrecording
from provider_cache.mitm.hooks import ProviderCache
from provider_cache.mitm.recording import Pending
from provider_cache.mitm.wsplayer import Plan, Player
from provider_cache.storage.cachefiles import CacheFiles
from provider_cache.storage.store import StoreError

logger = logging.getLogger(__name__)

#: Response headers of a recorded 101 that the player's own handshake sets.
HANDSHAKE_HEADERS = frozenset({b"sec-websocket-protocol", b"content-length"})


@dataclass
class Live:
    """A provider session under way: replayed (`plan`) or forwarded to be recorded."""

    key: str
    host: str
    url: str
    normalized: dict
    secrets: list[bytes]
    plan: Plan | None = None
    #: The stored session a forwarded one adds a take to (record mode).
    existing: wsrecords.Session | None = None


class WebSocketCache:
    def __init__(self, cache: ProviderCache) -> None:
        self.cache = cache
        self.player = Player()
        self.sessions: dict[str, Live] = {}
        #: Flows this addon answers, which ProviderCache leaves alone (mitm/hooks.py).
        self.claimed: set[str] = cache.claimed

    def done(self) -> None:
        self.player.close()

    # -- the handshake ---------------------------------------------------------------

    def request(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        if flow.request.method != "GET" or flow.response or flow.error or not flow.live:
            return None  # the method first: the hit path pays one comparison
        if flow.request.headers.get("upgrade", "").lower() != "websocket":
            return None
        cfg, files = self.cache.settings, self.cache.files
        if cfg is None or files is None or self.cache.live_test:
            return None
        if not cfg.is_provider(flow.request.host):
            return None
        return self._handshake(flow, cfg, files)

    def _handshake(
        self, flow: http.HTTPFlow, cfg: options.Settings, files: CacheFiles
    ) -> Awaitable[None] | None:
        request, rules = flow.request, cfg.rules
        key, normalized = wsrecords.session_key(flows.request_parts(request), rules)
        secrets = wsrecording.handshake_secrets(request, rules)
        live = Live(
            key, request.host, flows.redacted_url(request, rules, secrets), normalized, secrets
        )
        lookup = cfg.mode != "refresh"
        entry = self._lookup(files, key, live.host) if lookup else None
        self.claimed.add(flow.id)
        if entry is None and lookup and self.cache.remote is not None:
            return self._read_through(self.cache.remote, flow, cfg, files, live)
        return self._decide(flow, cfg, files, live, entry)

    def _decide(
        self,
        flow: http.HTTPFlow,
        cfg: options.Settings,
        files: CacheFiles,
        live: Live,
        entry: tuple[records.Entry, wsrecords.Session] | None,
    ) -> Awaitable[None] | None:
        """Replay the stored session, or the mode's miss: answered (replay) or forwarded."""
        if entry is not None and self._servable(cfg, entry[0]):
            return self._replay(flow, cfg, files, live, *entry)
        key, request = live.key, flow.request
        if cfg.mode == "replay":
            self.claimed.discard(flow.id)  # answered: nothing more to claim
            flow.response = flows.miss_response("GET", live.url, key, request.http_version)
            logger.warning("WebSocket cache miss in replay mode: %s (key %s)", live.url, key)
        else:
            live.existing = entry[1] if entry is not None and cfg.mode == "record" else None
            self.sessions[flow.id] = live
            flow.metadata[FLOW_METADATA_KEY] = {"result": "miss", "key": key, "websocket": True}
        self._count_miss(live, diagnose=True)
        self._decided(flow)
        return None

    async def _read_through(
        self,
        tier: remote.RemoteTier,
        flow: http.HTTPFlow,
        cfg: options.Settings,
        files: CacheFiles,
        live: Live,
    ) -> None:
        """A session the local store lacks, from the remote tier (bounded as an HTTP
        lookup is): kept locally, then replayed as a local one is; else the mode's miss.
        In replay mode it fails closed: whatever goes wrong, the provider is not asked."""
        try:
            found = await tier.fetch(live.key)
            entry = _session_of(found, live) if found is not None else None
            if found is not None and entry is not None and self._servable(cfg, entry[0]):
                await self._keep_locally(files, live, found.packed)
                self.cache.stats.from_remote()
            else:
                entry = None
            started = self._decide(flow, cfg, files, live, entry)
            if entry is not None:
                flow.metadata[FLOW_METADATA_KEY]["tier"] = "remote"
            if started is not None:
                await started
        except BaseException:
            if cfg.mode == "replay" and flow.response is None:
                self._unavailable(flow, live)
            raise

    async def _keep_locally(self, files: CacheFiles, live: Live, packed: bytes) -> None:
        """The remote's session, as it is, in the local store (through the cache's writer):
        the next handshake is a local hit. A store that refuses it still lets this one play."""
        if not files.writable:
            return
        try:
            await self.cache.writer.put(files, live.key, packed)
        except StoreError as e:
            logger.error("could not store WebSocket key %s from the remote: %s", live.key, e)
            self.cache.stats.error(live.host)

    def _lookup(
        self, files: CacheFiles, key: str, host: str
    ) -> tuple[records.Entry, wsrecords.Session] | None:
        try:
            data = files.store.get(key.encode())
            if data is None:
                return None
            entry = records.unpack(data)
            return entry, wsrecords.session_of(entry)
        except StoreError as e:
            logger.error("provider-cache: %s: WebSocket key %s treated as a miss", e, key)
        except records.CorruptEntry as e:
            logger.warning("unreadable WebSocket session %s (%s): treated as a miss", key, e)
        self.cache.stats.error(host)
        return None

    def _servable(self, cfg: options.Settings, entry: records.Entry) -> bool:
        """Not one to record again (it diverged, or mitmweb's cache.rerecord); in
        read-old-write-new, not one recorded by this run."""
        if entry.key in self.cache.rerecord_keys:
            return False
        return cfg.mode != "read-old-write-new" or entry.recorded_at < self.cache.started_at

    def _replay(
        self,
        flow: http.HTTPFlow,
        cfg: options.Settings,
        files: CacheFiles,
        live: Live,
        entry: records.Entry,
        session: wsrecords.Session,
    ) -> Awaitable[None] | None:
        data = flow.request.data
        conversation = wsmatch.Conversation(session, wsmatch.Canon(cfg.rules, live.secrets))
        headers = entry.response.headers
        live.plan = Plan(
            conversation=conversation,
            factor=cfg.replay_timing,
            subprotocol=_header(headers, b"sec-websocket-protocol"),
            headers=[h for h in headers if h[0] not in HANDSHAKE_HEADERS]
            + [(CACHE_HEADER.encode(), b"hit")],
            target=(data.scheme, data.host, data.port, data.path),
            on_diverged=lambda divergence: self._diverged(flow, live, divergence),
        )
        self.sessions[flow.id] = live
        flow.metadata[FLOW_METADATA_KEY] = {
            "result": "hit",
            "key": live.key,
            "recorded_at": entry.recorded_at,
            "websocket": True,
        }
        files.note_hit(live.key, flow.request.timestamp_start)
        self._decided(flow)
        if self.player.server is not None:
            self.player.point(flow.id, data, live.plan)
            return None
        return self._start_then_point(flow, live, live.plan)

    async def _start_then_point(self, flow: http.HTTPFlow, live: Live, plan: Plan) -> None:
        """Never leaves a replayed handshake with neither an answer nor the player as its
        target: it must not go on to the provider."""
        try:
            await self.player.start()
        except OSError as e:
            logger.error("provider-cache: WebSocket replay unavailable: %s", e)
            self._unavailable(flow, live)
            return
        self.player.point(flow.id, flow.request.data, plan)

    def _unavailable(self, flow: http.HTTPFlow, live: Live) -> None:
        """The handshake answered with the cache's own failure (the local 404 of a miss)."""
        self.sessions.pop(flow.id, None)
        self.player.plans.pop(flow.id, None)
        self.claimed.discard(flow.id)
        flow.response = flows.failure_response(flow.request.http_version)
        self.cache.stats.failed_lookup(live.host)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        live = self.sessions.get(flow.id)
        if live is None or flow.response is None:
            return
        if live.plan is not None:
            self.player.restore(flow.request.data, live.plan)
            flow.is_replay = "response"
        else:
            flow.response.headers[CACHE_HEADER] = "miss"

    def response(self, flow: http.HTTPFlow) -> None:
        """A handshake answered without an upgrade (a 401, a 404 of the player's)."""
        if flow.websocket is not None or flow.id not in self.sessions:
            return
        live = self._end(flow)
        if live.plan is not None:
            self.player.plans.pop(flow.id, None)
            self.cache.stats.failed_lookup(live.host)
        else:
            self.cache.stats.reject(live.host, ERROR_STATUS)
            self._settled(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        if flow.id not in self.sessions:
            return
        live = self._end(flow)
        self.player.plans.pop(flow.id, None)
        self.cache.stats.error(live.host)
        if live.plan is None:
            self._settled(flow)

    # -- the session's end -------------------------------------------------------------

    def websocket_end(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        if flow.id not in self.sessions:
            return None
        live = self._end(flow)
        if live.plan is not None:
            self.player.plans.pop(flow.id, None)
            if live.plan.diverged is None:
                self.cache.stats.hit(live.host)
            return None
        return self._recorded(flow, live)

    def _recorded(self, flow: http.HTTPFlow, live: Live) -> Awaitable[None] | None:
        """The forwarded session, stored if it closed normally and fits; else the reason."""
        cfg, files = self.cache.settings, self.cache.files
        if cfg is None or files is None:  # shutting down
            return None
        take = wsrecording.take_of(flow, live.secrets, cfg.rules)
        rejected = wsrecording.rejection(flow, take, cfg.max_body_size)
        if rejected is not None:
            logger.warning("WebSocket session %s not recorded (%s)", live.key, rejected)
            self.cache.stats.reject(live.host, rejected)
            self._settled(flow)
            return None
        session = live.existing.with_take(take) if live.existing else wsrecords.Session((take,))
        entry = wsrecording.entry_of(flow, live.key, session, live.secrets, cfg.rules, files.run)
        # Stored as an answer is: counted and uploaded also if the proxy stops meanwhile.
        return self.cache.recording.record_entry(flow, Pending(live.key, live.host, True), entry)

    # -- counting --------------------------------------------------------------------

    def _diverged(self, flow: http.HTTPFlow, live: Live, divergence: wsmatch.Divergence) -> None:
        """A replayed session is a miss after all: listed with what differs."""
        meta = flow.metadata.get(FLOW_METADATA_KEY)
        if isinstance(meta, dict):
            meta["result"], meta["diverged_at"] = "miss", divergence.index
        self._decided(flow)  # marked again: mitmweb shows where it diverged
        ctx.master.addons.trigger(hooks.UpdateHook([flow]))
        cfg = self.cache.settings
        if cfg is not None and cfg.mode != "replay":
            self.cache.rerecord_keys.add(live.key)  # the client's next try is recorded
        logger.warning(
            "WebSocket session %s diverged (key %s): %s",
            live.url,
            live.key,
            "; ".join(divergence.differences),
        )
        self._count_miss(live, diagnose=False)
        missed = self.cache.stats.missed.get(live.key)
        if missed is not None:
            missed.closest = {"key": live.key, "differences": divergence.differences, "more": 0}

    def _count_miss(self, live: Live, *, diagnose: bool) -> None:
        cache = self.cache
        listed = cache.stats.miss(live.host, "GET", live.url, live.key, live.normalized)
        if listed and diagnose and cache.files is not None and cache.settings is not None:
            cache.diagnoser.later(
                live.key, live.normalized, cache.files, cache.stats, cache.settings.rules
            )

    def _end(self, flow: http.HTTPFlow) -> Live:
        self.claimed.discard(flow.id)
        return self.sessions.pop(flow.id)

    def _decided(self, flow: http.HTTPFlow) -> None:
        for watcher in self.cache.watchers:
            watcher.decided(flow)

    def _settled(self, flow: http.HTTPFlow) -> None:
        for watcher in self.cache.watchers:
            watcher.settled(flow)


def _session_of(found: remote.Found, live: Live) -> tuple[records.Entry, wsrecords.Session] | None:
    """The remote object's session; None (and a warning) if it holds none this version reads."""
    try:
        return found.entry, wsrecords.session_of(found.entry)
    except records.CorruptEntry as e:
        logger.warning("remote WebSocket session %s is unusable (%s): a miss", live.key, e)
        return None


def _header(headers: records.Headers, name: bytes) -> str | None:
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return None
