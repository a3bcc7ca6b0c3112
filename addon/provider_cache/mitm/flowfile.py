"""Cache entries as mitmproxy flows: for browsing a store in mitmweb, and for `.mitm` files.

`entry_to_flow` is faithful to what the store holds (the request as sent, secrets
already redacted; the response as it is replayed), so a flow file written here opens
in `mitmweb --rfile` and can even be served by mitmproxy's own server replay. Flow ids
derive from the key: loading the same store twice shows each entry once, and an
exported file is stable across exports.

A WebSocket session (core/wsrecords.py) is one flow per take: the handshake, the 101 and
the take's messages as `flow.websocket`, each at its recorded offset, so mitmweb lists
them with their directions as it lists a live session's.

The marker and comment wording lives here too, shared by live flows (addon/webui.py)
and stored ones, so that one filter expression (`~comment "cache miss"`) finds both.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

from mitmproxy import connection, http, io
from mitmproxy.websocket import WebSocketData, WebSocketMessage
from wsproto.frame_protocol import Opcode

from provider_cache.core import wsrecords
from provider_cache.core.names import FLOW_METADATA_KEY
from provider_cache.core.records import CorruptEntry, Entry
from provider_cache.core.timefmt import stamp_utc

#: mitmproxy marker names (emoji shortcodes, see mitmproxy/utils/emoji.py). None of them is in
#: mitmweb's own "Mark" menu (the coloured circles), so a user's mark stays distinguishable.
MARKERS = {
    "hit": ":white_check_mark:",
    "miss": ":x:",
    "stored": ":floppy_disk:",
    "endpoint": ":bar_chart:",
}
#: Response and request bodies exported as they are; mitmproxy infers nothing from this.
HTTP_VERSION = b"HTTP/1.1"
DEFAULT_PORTS = {"http": 80, "https": 443}
_FLOW_ID_NAMESPACE = uuid.UUID("6f1c5a52-8d5e-4f0e-9a53-5b1f3c0de001")


#: UTC, to the second: the same text on every machine, so comments diff cleanly.
when = stamp_utc


def comment(result: str, key: str, detail: str) -> str:
    """`cache hit · recorded 2025-01-02 03:04:05 UTC · key 2dc6…`: result first, key last."""
    return f"cache {result} · {detail} · key {key}"


def flow_id(key: str, part: str = "flow") -> str:
    """A fixed id per key (and per part: flow, client, server) so that exports are stable."""
    return str(uuid.uuid5(_FLOW_ID_NAMESPACE, f"{part}:{key}"))


def entry_to_flows(entry: Entry) -> list[http.HTTPFlow]:
    """One stored entry as the flows mitmweb shows: one, or one per take of a session (a
    session that cannot be read shows as its handshake, the 101, and its bytes joined)."""
    if not wsrecords.is_session(entry):
        return [entry_to_flow(entry)]
    try:
        session = wsrecords.session_of(entry)
    except CorruptEntry:
        return [entry_to_flow(entry)]
    return [_take_flow(entry, take, n, len(session.takes)) for n, take in enumerate(session.takes)]


def entry_to_flow(entry: Entry) -> http.HTTPFlow:
    """One stored entry as a finished, non-live HTTP flow."""
    flow = _flow(entry, "")
    flow.response = _response(entry)
    metadata: dict = {"result": "stored", "key": entry.key, "recorded_at": entry.recorded_at}
    if entry.meta:
        metadata["meta"] = entry.meta
    flow.metadata[FLOW_METADATA_KEY] = metadata
    flow.marked = MARKERS["stored"]
    flow.comment = comment("entry", entry.key, f"recorded {when(entry.recorded_at)}")
    return flow


def _flow(entry: Entry, part: str) -> http.HTTPFlow:
    """The entry's flow with its request; `part` tells a session's later takes apart."""
    request = _request(entry)
    client = connection.Client(
        peername=("", 0), sockname=("", 0), timestamp_start=entry.recorded_at
    )
    server = connection.Server(address=(request.host, request.port))
    client.id = flow_id(entry.key, f"client{part}")
    server.id = flow_id(entry.key, f"server{part}")
    flow = http.HTTPFlow(client, server)
    flow.id = flow_id(entry.key, f"flow{part}")
    flow.timestamp_created = entry.recorded_at
    flow.request = request
    return flow


def _take_flow(entry: Entry, take: wsrecords.Take, n: int, of: int) -> http.HTTPFlow:
    """Take `n` (0-based) of a session: the handshake, the 101 as stored, the messages at
    their offsets from the recording, and how it was closed."""
    flow = _flow(entry, f":take{n}" if n else "")
    stored, start = entry.response, entry.recorded_at
    flow.response = http.Response(
        http_version=HTTP_VERSION,
        status_code=stored.status,
        reason=stored.reason.encode("latin-1", "replace"),
        headers=tuple(stored.headers),
        content=b"",
        trailers=None,
        timestamp_start=start,
        timestamp_end=start,
    )
    messages = [
        WebSocketMessage(
            Opcode.TEXT if m.text else Opcode.BINARY, m.from_client, m.content, start + m.offset
        )
        for m in take.messages
    ]
    end = messages[-1].timestamp if messages else start
    flow.websocket = WebSocketData(
        messages=messages,
        closed_by_client=take.closed_by_client,
        close_code=take.close_code,
        close_reason=take.close_reason,
        timestamp_end=end,
    )
    flow.metadata[FLOW_METADATA_KEY] = {
        "result": "stored",
        "key": entry.key,
        "recorded_at": entry.recorded_at,
        "websocket": True,
        "take": n + 1,
    }
    flow.marked = MARKERS["stored"]
    flow.comment = comment("entry", entry.key, f"recorded {when(start)}{take_note(take, n, of)}")
    return flow


def take_note(take: wsrecords.Take, n: int, of: int) -> str:
    """` · websocket take 2 of 3, 6 messages` (just `websocket` for a session of one take)."""
    which = f" take {n + 1} of {of}" if of > 1 else ""
    return f" · websocket{which}, {len(take.messages)} messages"


def write_flows(entries: Iterable[Entry], path: Path) -> int:
    """Write entries as a mitmproxy flow file (`mitmweb --rfile PATH`); returns the count of
    entries (a session writes a flow per take)."""
    count = 0
    with Path(path).open("wb") as fo:
        writer = io.FlowWriter(fo)
        for entry in entries:
            for flow in entry_to_flows(entry):
                writer.add(flow)
            count += 1
    return count


def _request(entry: Entry) -> http.Request:
    """The stored request, body bytes untouched (still in any content-encoding it was sent in)."""
    stored = entry.request
    parts = urlsplit(stored.url)
    scheme = parts.scheme or "https"
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return http.Request(
        host=parts.hostname or "",
        port=parts.port or DEFAULT_PORTS.get(scheme, 443),
        method=stored.method.encode(),
        scheme=scheme.encode(),
        authority=b"",
        path=path.encode("utf-8", "surrogateescape"),
        http_version=HTTP_VERSION,
        headers=tuple(stored.headers),
        content=stored.body,
        trailers=None,
        timestamp_start=entry.recorded_at,
        timestamp_end=entry.recorded_at,
    )


def _response(entry: Entry) -> http.Response:
    """The response as the cache replays it: decoded body (chunks joined), its length added."""
    stored = entry.response
    body = stored.content
    headers = (*stored.headers, (b"content-length", str(len(body)).encode()))
    return http.Response(
        http_version=HTTP_VERSION,
        status_code=stored.status,
        reason=stored.reason.encode("latin-1", "replace"),
        headers=headers,
        content=body,
        trailers=None,
        timestamp_start=entry.recorded_at,
        timestamp_end=entry.recorded_at,
    )
