"""The recording path (SPEC §4): a forwarded answer, teed while the client reads it, is
stored when it is complete and a success, or an error `cache_record_errors` names; every
other answer is counted under the reason it was not stored (core/rejections.py).

    tee       (responseheaders)  a streamed answer of any format: teed, checked, timed
    answered  (response)         the answer ended: decide (core/admission.py), then store
    broke     (error)            the exchange broke: a stream may still be complete

A broken exchange with no answer at all is an `errors` count only; one with an answer is
an error and, unless a stream's answer was complete, a rejection too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Protocol

from mitmproxy import http

from provider_cache.core import admission, records, slots
from provider_cache.core.bodies import TooLarge
from provider_cache.core.names import CACHE_HEADER, FLOW_METADATA_KEY
from provider_cache.core.rejections import (
    CUT_SHORT,
    ERROR_STATUS,
    EXPLAINED,
    TOO_LARGE,
    UNDECODABLE,
)
from provider_cache.core.stats import Stats, parse_retry_after
from provider_cache.core.streaming import StreamRecorder, recorder_for
from provider_cache.mitm import flows, options, remote
from provider_cache.mitm.background import Writer
from provider_cache.storage.cachefiles import CacheFiles
from provider_cache.storage.store import StoreError

logger = logging.getLogger(__name__)


@dataclass
class Pending:
    """A forwarded provider request whose answer may be recorded."""

    key: str
    host: str
    storable: bool
    recorder: StreamRecorder | None = None
    #: Under cache_sequence: the request's place, recorded as slot `slot.n` of `slot.of`.
    slot: slots.Slot | None = None


@dataclass
class Write:
    """A recording handed to the writer thread and not counted yet."""

    flow: http.HTTPFlow
    pending: Pending
    entry: records.Entry
    packed: bytes


class Settles(Protocol):
    def settled(self, flow: http.HTTPFlow) -> None: ...  # a forwarded flow is over


class Cache(Protocol):
    """What the recording path reads of the addon (mitm/hooks.py): read each time, as the
    addon replaces its settings, files, stats and remote tier when options change."""

    @property
    def settings(self) -> options.Settings | None: ...
    @property
    def files(self) -> CacheFiles | None: ...
    @property
    def stats(self) -> Stats: ...
    @property
    def writer(self) -> Writer: ...
    @property
    def remote(self) -> remote.RemoteTier | None: ...
    @property
    def rerecord_keys(self) -> set[str]: ...
    @property
    def watchers(self) -> Sequence[Settles]: ...


class Recording:
    def __init__(self, cache: Cache) -> None:
        self.cache = cache
        #: Writes under way, by flow id: counted when durable, by `_record` or `settle`.
        self.writing: dict[str, Write] = {}

    def tee(self, flow: http.HTTPFlow, pending: Pending) -> None:
        """Marks the answer a miss; a stream of any format is teed, checked as it passes."""
        assert flow.response is not None and self.cache.settings is not None
        response = flow.response
        response.headers[CACHE_HEADER] = "miss"
        headers = response.headers
        pending.recorder = recorder_for(
            headers.get("content-type", ""),
            headers.get("content-encoding", ""),
            flow.request.path,
            self.cache.settings.max_body_size,
        )
        if pending.recorder is not None:
            response.stream = pending.recorder

    # Both hand mitmproxy the store write of a recordable answer to await: the flow goes on
    # (and the client gets the answer's end) once it is durable.

    def answered(self, flow: http.HTTPFlow, pending: Pending) -> Awaitable[None] | None:
        assert flow.response is not None
        if flow.response.status_code in (429, 503):
            value = flow.response.headers.get("retry-after", "")
            self.cache.stats.rate_limit(parse_retry_after(value, time.time()) if value else None)
        return self._finish(flow, pending, self._entry(flow, pending, closed_early=False))

    def broke(self, flow: http.HTTPFlow, pending: Pending) -> Awaitable[None] | None:
        entry = self._entry(flow, pending, closed_early=True) if flow.response else None
        if entry is None:
            self.cache.stats.error(pending.host)
        return self._finish(flow, pending, entry)

    # -- decide ----------------------------------------------------------------------

    def _entry(
        self, flow: http.HTTPFlow, pending: Pending, closed_early: bool
    ) -> records.Entry | None:
        """The entry to store, or None (the reason counted and, but for a status, logged)."""
        decided = self._admission(flow, pending, closed_early)
        entry, rejected, line = None, decided.rejected, None
        if rejected is None:
            entry, rejected, line = self._make(flow, pending)
        if entry is None:
            assert rejected is not None
            self._reject(pending, rejected, line)
            return None
        if decided.error is not None:
            entry.meta["error"] = decided.error
        assert self.cache.files is not None
        entry.meta["recorded_run"] = self.cache.files.run
        if pending.slot is not None:  # slot 1 is the entry as without slots: no mark
            entry.meta |= slots.slot_meta(pending.slot.of, pending.slot.n)
        return entry

    def _admission(
        self, flow: http.HTTPFlow, pending: Pending, closed_early: bool
    ) -> admission.Admission:
        assert flow.response is not None and self.cache.settings is not None
        if not pending.storable:  # the request's body was over cache_max_body_size
            return admission.Admission(TOO_LARGE)
        recorder = pending.recorder
        if recorder is None:  # an unstreamed answer; cut if the exchange broke
            verdict = transport = CUT_SHORT if closed_early else None
        else:
            verdict = recorder.rejection(closed_early)
            transport = recorder.transport_rejection(closed_early)
        policy = self.cache.settings.record_errors
        return admission.admit(flow.response.status_code, policy, verdict, transport)

    def _make(
        self, flow: http.HTTPFlow, pending: Pending
    ) -> tuple[records.Entry | None, str | None, str | None]:
        """The entry as stored (decoded, redacted), or the reason it cannot be and its log
        line (worded as before the reasons were counted: the fault tests read them)."""
        assert flow.response is not None and self.cache.settings is not None
        cfg, recorder = self.cache.settings, pending.recorder
        if recorder is None and len(flow.response.raw_content or b"") > cfg.max_body_size:
            return _unrecorded(pending, "over cache_max_body_size", TOO_LARGE)
        chunks = recorder.chunks if recorder is not None else None
        offsets = recorder.offsets if recorder is not None else None
        try:
            entry = flows.make_entry(
                flow, pending.key, cfg.rules, chunks, cfg.max_body_size, offsets
            )
        except TooLarge:
            return _unrecorded(pending, "decodes past cache_max_body_size", TOO_LARGE)
        if entry is None:
            return _unrecorded(
                pending, f"for key {pending.key} has an undecodable body", UNDECODABLE
            )
        return entry, None, None

    def _reject(self, pending: Pending, reason: str, line: str | None = None) -> None:
        """Counted, and logged (`line`, or the reason in words). Error statuses go unlogged:
        they are common (429s), and mitmdump prints each flow anyway."""
        if line is not None:
            logger.warning("%s", line)
        elif reason != ERROR_STATUS:
            logger.warning(
                "%s answer for key %s not recorded (%s: %s)",
                pending.host,
                pending.key,
                reason,
                EXPLAINED[reason],
            )
        self.cache.stats.reject(pending.host, reason)

    # -- store -----------------------------------------------------------------------

    def _finish(
        self, flow: http.HTTPFlow, pending: Pending, entry: records.Entry | None
    ) -> Awaitable[None] | None:
        """The write of a recordable answer, for mitmproxy to await; else the flow is over."""
        if entry is not None:
            return self._record(flow, pending, entry)
        self._settled(flow)
        return None

    def record_entry(
        self, flow: http.HTTPFlow, pending: Pending, entry: records.Entry
    ) -> Awaitable[None]:
        """Another recorder's entry (a WebSocket session, mitm/websockets.py): stored,
        counted and uploaded as an answer is, also when the proxy stops meanwhile."""
        return self._record(flow, pending, entry)

    async def _record(self, flow: http.HTTPFlow, pending: Pending, entry: records.Entry) -> None:
        """Store the entry on the writer thread; count it once it is durable."""
        cache = self.cache
        files = cache.files
        assert files is not None
        write = self.writing[flow.id] = Write(flow, pending, entry, records.pack(entry))
        try:
            await cache.writer.put(files, pending.key, write.packed)
        except StoreError as e:
            if self.writing.pop(flow.id, None) is not None:
                logger.error("could not record key %s: %s", pending.key, e)
                cache.stats.error(pending.host)
        else:
            if self.writing.pop(flow.id, None) is not None:  # else: `settle` counted it
                self._recorded(write)
        self._settled(flow)

    def settle(self) -> None:
        """At shutdown, once the writer has drained: the writes whose coroutines the ending
        event loop will not resume (a stream complete as the proxy stops) are counted and
        uploaded if the store holds them, before the final stats and the remote's flush."""
        files = self.cache.files
        assert files is not None
        for write in self.writing.values():
            key = write.pending.key
            try:
                held = files.store.get(key.encode()) == write.packed
            except StoreError:
                held = False
            if held:
                self._recorded(write)
            else:
                logger.error("could not record key %s as the proxy stopped", key)
                self.cache.stats.error(write.pending.host)
        self.writing.clear()

    def _recorded(self, write: Write) -> None:
        cache, key, entry = self.cache, write.pending.key, write.entry
        assert cache.files is not None
        cache.files.note_hit(key, entry.recorded_at)  # used by this run: not "unused"
        marks = write.flow.metadata[FLOW_METADATA_KEY]
        marks["recorded_at"] = entry.recorded_at  # for mitmweb
        if entry.meta.get("error"):  # recorded on purpose: mitmweb marks it as an error
            marks["error"] = entry.meta["error"]
        cache.stats.record(write.pending.host)
        cache.rerecord_keys.discard(key)
        if cache.remote is not None:
            cache.remote.upload(key, write.packed)

    def _settled(self, flow: http.HTTPFlow) -> None:
        for watcher in self.cache.watchers:
            watcher.settled(flow)


def _unrecorded(pending: Pending, what: str, reason: str) -> tuple[None, str, str]:
    return None, reason, f"{pending.host} response {what}: not recorded ({reason})"
