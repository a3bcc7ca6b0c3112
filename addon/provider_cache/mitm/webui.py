"""What mitmweb shows of the cache (SPEC §8): flow markers and comments, and commands.

Two small addons:

* FlowMarkers marks provider flows ✅ hit / ❌ miss and comments them with when the
  entry was recorded and its key; the endpoint's own flows get 📊; passthrough
  flows are left alone. An answer that is an error on purpose (SPEC §4: recorded
  under cache_record_errors, or an error status imported) gets ⚠ instead, and its
  comment says `error: REASON` (hits, recordings and the entries `cache.load` shows).
  A replayed WebSocket session whose client said something else is ❌ `diverged at client
  message N` (0-based, as the close reason has it). Under cache_sequence the comment names
  the slot: `slot 2 of 5f3e…` (the key of the request, so `~comment 5f3e` filters a whole
  sequence), `slot 3 again` past the end.
  ProviderCache calls it with each flow it has decided on
  (`flow.metadata["provider_cache"]` is then set).
* CacheCommands adds `cache.forget`, `cache.rerecord`, `cache.stats` and
  `cache.load` to mitmproxy's command bar (`cache.load` shows a stored WebSocket session
  as a flow per take, its messages listed with their directions).

mitmweb's command bar has no notion of the flow selected in the browser (`@focus`
is empty there), and every provider flow carries a marker (`@marked` is all of them),
so the commands are meant for filter expressions: `cache.forget "~comment 2dc6f02a"`
forgets the entry with that key, `cache.forget "~marker red"` those the user marked 🔴.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from mitmproxy import command, ctx, exceptions, hooks, http
from mitmproxy.flow import Flow
from mitmproxy.log import ALERT

from provider_cache.core import errormark, records, report, slots, wsrecords
from provider_cache.core.names import FLOW_METADATA_KEY
from provider_cache.mitm.flowfile import MARKERS, comment, entry_to_flow, entry_to_flows, when
from provider_cache.mitm.hooks import ProviderCache
from provider_cache.storage.store import Store

logger = logging.getLogger(__name__)

#: mitmweb's flow list shows this column only when asked; the comment carries the key.
COMMENT_COLUMN = "comment"
#: An answer that is an error on purpose (not in mitmweb's own "Mark" menu either).
ERROR_MARKER = ":warning:"


def cache_meta(flow: Flow) -> dict | None:
    meta = flow.metadata.get(FLOW_METADATA_KEY)
    return meta if isinstance(meta, dict) and isinstance(meta.get("key"), str) else None


def annotate(flow: Flow, note: str) -> None:
    """Append a note (`forgotten`, …) to a cache comment, once."""
    if flow.comment and not flow.comment.endswith(f" · {note}"):
        flow.comment = f"{flow.comment} · {note}"


class FlowMarkers:
    """Marker and comment on every live provider flow, from the cache's metadata.

    The cache tells this addon about each flow (it is one of the cache's `watchers`)
    instead of the addon hooking every flow itself.
    """

    def __init__(self, cache: ProviderCache) -> None:
        cache.watchers.append(self)

    def running(self) -> None:
        """Show mitmweb's comment column unless the user chose the columns themselves."""
        if not hasattr(ctx.options, "web_columns"):
            return
        columns = list(ctx.options.web_columns)
        if COMMENT_COLUMN not in columns and columns == ctx.options.default("web_columns"):
            ctx.options.update(web_columns=[*columns, COMMENT_COLUMN])

    @staticmethod
    def endpoint(flow: http.HTTPFlow) -> None:
        flow.marked = MARKERS["endpoint"]
        flow.comment = "provider-cache endpoint · not counted"

    def decided(self, flow: http.HTTPFlow) -> None:
        """A provider request was answered from the store, as a miss, or forwarded."""
        meta = cache_meta(flow)
        if meta is None:
            return
        key, place = meta["key"], slot_note(meta)
        diverged = meta.get("diverged_at")
        if isinstance(diverged, int):  # a replayed WebSocket session (mitm/websockets.py)
            self._mark(flow, "miss", f"diverged at client message {diverged}", key)
        elif meta.get("result") == "hit":
            error = _error(flow, meta)
            self._mark(flow, "hit", f"recorded {when(meta['recorded_at'])}{place}", key, error)
        elif flow.response is not None:
            self._mark(flow, "miss", f"no recording (replay mode){place}", key)
        else:
            self._mark(flow, "miss", f"forwarded{place}", key)

    def settled(self, flow: http.HTTPFlow) -> None:
        """A forwarded miss is over: say whether the cache recorded its answer."""
        meta = cache_meta(flow)
        if meta is None:
            return
        recorded_at = meta.get("recorded_at")  # set by ProviderCache once the answer is stored
        place = slot_note(meta)
        if recorded_at is None:
            self._mark(flow, "miss", f"forwarded · not recorded{place}", meta["key"])
            return
        detail = f"forwarded · recorded {when(recorded_at)}{place}"
        self._mark(flow, "miss", detail, meta["key"], _error(flow, meta))

    @staticmethod
    def _mark(
        flow: http.HTTPFlow, result: str, detail: str, key: str, error: str | None = None
    ) -> None:
        flow.marked = MARKERS[result] if error is None else ERROR_MARKER
        flow.comment = comment(
            result, key, detail if error is None else f"{detail} · error: {error}"
        )


#: How much of a sequence's key its slots' comments show.
SHOWN_KEY = 12


def slot_note(meta: dict) -> str:
    """` · slot 2 of 5f3e…` for a flow under cache_sequence (mitm/hooks.py marks it);
    ` · slot 3 again (request 4)` past the end; nothing otherwise."""
    n, of = meta.get("slot"), meta.get("slot_of")
    if not isinstance(n, int) or not isinstance(of, str):
        return ""
    again = meta.get("again")
    repeat = f" again (request {again})" if isinstance(again, int) else ""
    return f" · slot {n}{repeat} of {of[:SHOWN_KEY]}"


def _error(flow: http.HTTPFlow, meta: dict) -> str | None:
    """Why the entry behind this flow is an error: the cache's note (`error` in the flow's
    metadata), or the status of the answer it served or stored (None while a paced hit's
    answer is still to come)."""
    status = flow.response.status_code if flow.response is not None else None
    return errormark.error_of(meta, status)


class CacheCommands:
    """Commands that act on the cache entries behind flows, for mitmweb's command bar."""

    def __init__(self, cache: ProviderCache) -> None:
        self.cache = cache

    @command.command("cache.forget")
    def forget(self, flows: Sequence[Flow]) -> str:
        """Delete the cache entries of these flows: their next request is a miss."""
        store = self._store()
        keys = keys_of(flows)
        forgotten = {key for key in keys if store.delete(key.encode())}
        self._annotate(flows, forgotten, "forgotten")
        message = f"provider-cache: forgot {len(forgotten)} of {len(keys)} entries"
        return self._report(message, keys, forgotten)

    @command.command("cache.rerecord")
    def rerecord(self, flows: Sequence[Flow]) -> str:
        """Forward the next request of each flow's key upstream and record the answer again."""
        self._store()
        settings = self.cache.settings
        assert settings is not None  # _store() raised otherwise
        keys = keys_of(flows)
        self.cache.rerecord_keys.update(keys)
        self._annotate(flows, set(keys), "re-record on next request")
        message = f"provider-cache: {len(keys)} entries will be re-recorded on their next request"
        if keys and settings.mode == "replay":
            message += " (but cache_mode=replay never forwards: they will be misses)"
        return self._report(message, keys, set(keys))

    @command.command("cache.stats")
    def stats(self) -> str:
        """This run's counters, as the stats file has them; the details go to the event log."""
        merged = report.merge([self.cache.snapshot()])
        _, verdict = report.gate(merged, None)
        logger.log(ALERT, report.render_text(merged, verdict))
        return (
            f"mode {merged['mode']}: {merged['hits']} hits, {merged['misses']} misses "
            f"({report.percent(merged['hit_rate'])}), {merged['recorded']} recorded, "
            f"{merged['passthrough']} passthrough, {merged['errors']} errors"
        )

    @command.command("cache.load")
    def load_store(self) -> str:  # not `load`: mitmproxy calls an addon's load(loader) hook
        """Show every recorded entry as a flow (marked 💾), next to the live traffic."""
        store = self._store()
        view = ctx.master.addons.get("view")
        if view is None:
            raise exceptions.CommandError("cache.load needs a flow view: use mitmweb or mitmproxy")
        flows, unreadable = load_entries(store)
        new = [f for f in flows if view.get_by_id(f.id) is None]
        view.add(new)
        loaded, shown = _entries(new), _entries(flows) - _entries(new)
        message = f"provider-cache: loaded {loaded} entries from {store.path}"
        if shown:
            message += f" ({shown} already shown)"
        if unreadable:
            message += f"; {unreadable} unreadable entries skipped"
        logger.log(ALERT, message)
        return message

    def _store(self) -> Store:
        if self.cache.store is None or self.cache.settings is None:
            raise exceptions.CommandError("provider-cache has no store open (see its start-up log)")
        return self.cache.store

    @staticmethod
    def _annotate(flows: Sequence[Flow], keys: set[str], note: str) -> None:
        touched = [f for f in flows if (meta := cache_meta(f)) and meta["key"] in keys]
        for flow in touched:
            annotate(flow, note)
        if touched:
            ctx.master.addons.trigger(hooks.UpdateHook(touched))

    @staticmethod
    def _report(message: str, keys: list[str], done: set[str]) -> str:
        if not keys:
            message += " (none of the selected flows is a cached provider flow)"
        logger.log(ALERT, message)
        for key in sorted(done):
            logger.info("provider-cache: %s", key)
        return message


def keys_of(flows: Sequence[Flow]) -> list[str]:
    """The distinct cache keys behind these flows, in order; other flows are ignored."""
    keys = [meta["key"] for f in flows if (meta := cache_meta(f)) is not None]
    return list(dict.fromkeys(keys))


def _entries(flows: Sequence[http.HTTPFlow]) -> int:
    """How many entries these flows show (a WebSocket session shows a flow per take)."""
    return len({meta["key"] for f in flows if (meta := cache_meta(f)) is not None})


def load_entries(store: Store) -> tuple[list[http.HTTPFlow], int]:
    """Every readable entry as a flow, and how many could not be read."""
    flows, unreadable = [], 0
    for key, value in store.items():
        try:
            entry = records.unpack(value)
        except records.CorruptEntry as e:
            unreadable += 1
            name = key.decode(errors="replace")
            logger.warning("unreadable cache entry %s (%s): not loaded", name, e)
            continue
        if wsrecords.is_session(entry):
            flows.extend(entry_to_flows(entry))  # a flow per take, commented as such
        else:
            flows.append(_entry_flow(entry))
    return flows, unreadable


def _entry_flow(entry: records.Entry) -> http.HTTPFlow:
    """An HTTP entry's flow, its comment naming its slot and why it is an error, if it is."""
    flow = entry_to_flow(entry)
    of, n = slots.position(entry)
    place = f" · slot {n} of {of[:SHOWN_KEY]}" if n > 1 else ""
    error = errormark.error_of(entry.meta, entry.response.status)
    if error is not None:
        flow.marked = ERROR_MARKER
        place += f" · error: {error}"
    if place:
        flow.comment = comment("entry", entry.key, f"recorded {when(entry.recorded_at)}{place}")
    return flow
