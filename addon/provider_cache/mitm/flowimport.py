"""Entries from a mitmproxy flow file (`mitmdump -w`, or `recordings.py export --format mitm`).

Lets a team bring recordings made with mitmproxy's own server replay into a store.
"""

from __future__ import annotations

from pathlib import Path

from mitmproxy import exceptions, http, io
from mitmproxy.flow import Flow

from provider_cache.core import keys
from provider_cache.core.names import FLOW_METADATA_KEY
from provider_cache.core.records import Entry
from provider_cache.core.streaming import is_event_stream
from provider_cache.mitm import flows


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
    return [entry for flow in loaded if (entry := _entry(flow, rules)) is not None]


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
