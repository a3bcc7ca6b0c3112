"""Entries from a mitmproxy flow file (`mitmdump -w`, or `recordings.py export --format mitm`).

Lets a team bring recordings made with mitmproxy's own server replay into a store. A
WebSocket flow (a provider session `mitmdump -w` saw, or a take `export --format mitm`
wrote) becomes a session (SPEC §13), stored only if it closed normally, as the proxy
stores one; the takes of one handshake in a file are one session, in the file's order.
"""

from __future__ import annotations

from pathlib import Path

from mitmproxy import exceptions, http, io
from mitmproxy.flow import Flow

from provider_cache.core import keys, wsrecords
from provider_cache.core.names import FLOW_METADATA_KEY
from provider_cache.core.records import Entry
from provider_cache.core.streaming import is_event_stream
from provider_cache.mitm import flows, wsrecording

#: An imported session is not held to a proxy's cache_max_body_size: the file is the user's.
NO_SIZE_LIMIT = 2**63


class BadFlowFile(ValueError):
    """A file that is neither a text export nor a readable mitmproxy flow file."""


def entries_from_flow_file(path: Path, rules: keys.KeyRules | None = None) -> list[Entry]:
    rules = rules or keys.KeyRules()
    try:
        with path.open("rb") as f:
            loaded = list(io.FlowReader(f).stream())
    except (OSError, exceptions.FlowReadException) as e:
        raise BadFlowFile(
            f"{path}: not a text export or a readable mitmproxy flow file ({e})"
        ) from None
    found: dict[str, Entry] = {}
    for flow in loaded:
        if isinstance(flow, http.HTTPFlow) and flow.websocket is not None:
            entry = _session(flow, rules, found)
        else:
            entry = _entry(flow, rules)
        if entry is not None:
            found.pop(entry.key, None)  # the same key again: the later one, in file order
            found[entry.key] = entry
    return list(found.values())


def _session(flow: http.HTTPFlow, rules: keys.KeyRules, found: dict[str, Entry]) -> Entry | None:
    """A WebSocket flow that closed normally as a session's take, added to the session of
    the same handshake found earlier in the file, if any."""
    if flow.response is None or flow.response.status_code != 101:
        return None
    key = flow.metadata.get(FLOW_METADATA_KEY, {}).get("key")
    if not key:
        key, _ = wsrecords.session_key(flows.request_parts(flow.request), rules)
    secrets = wsrecording.handshake_secrets(flow.request, rules)
    take = wsrecording.take_of(flow, secrets, rules)
    if wsrecording.rejection(flow, take, NO_SIZE_LIMIT) is not None:
        return None
    earlier = found.get(key)
    if earlier is not None and wsrecords.is_session(earlier):
        session = wsrecords.session_of(earlier).with_take(take)
    else:
        session = wsrecords.Session((take,))
    entry = wsrecording.entry_of(flow, key, session, secrets, rules, None)
    entry.recorded_at = flow.response.timestamp_start or entry.recorded_at
    return entry


def _entry(flow: Flow, rules: keys.KeyRules) -> Entry | None:
    """Complete 2xx HTTP exchanges only, like the proxy records them."""
    if not isinstance(flow, http.HTTPFlow) or flow.response is None:
        return None
    if not 200 <= flow.response.status_code < 300:
        return None
    key = flow.metadata.get(FLOW_METADATA_KEY, {}).get("key")
    if not key:
        key, _ = keys.key_for(flows.request_parts(flow.request), rules)
    body = flow.response.raw_content or b""
    chunks = [body] if is_event_stream(flow.response.headers.get("content-type", "")) else None
    entry = flows.make_entry(flow, key, rules, chunks)
    if entry is not None and flow.response.timestamp_end:
        entry.recorded_at = flow.response.timestamp_end
    return entry
