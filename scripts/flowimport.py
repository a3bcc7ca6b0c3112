"""Entries from a mitmproxy flow file (`mitmdump -w`, or `recordings.py export --format mitm`).

Lets a team bring recordings made with mitmproxy's own server replay into a store.
"""

from __future__ import annotations

from pathlib import Path

from mitmproxy import exceptions, http, io

from addon import flows, keys
from addon.records import Entry
from addon.streaming import is_event_stream
from scripts.cli import Fail

META = "provider_cache"


def entries_from_flow_file(path: Path, rules: keys.KeyRules | None = None) -> list[Entry]:
    rules = rules or keys.KeyRules()
    try:
        with path.open("rb") as f:
            loaded = list(io.FlowReader(f).stream())
    except (OSError, exceptions.FlowReadException) as e:
        raise Fail(f"{path}: not a text export or a readable mitmproxy flow file ({e})") from None
    return [entry for flow in loaded if (entry := _entry(flow, rules)) is not None]


def _entry(flow, rules: keys.KeyRules) -> Entry | None:
    """Complete 2xx HTTP exchanges only, like the proxy records them."""
    if not isinstance(flow, http.HTTPFlow) or flow.response is None:
        return None
    if not 200 <= flow.response.status_code < 300:
        return None
    key = flow.metadata.get(META, {}).get("key")
    if not key:
        key, _ = keys.key_for(flows.request_parts(flow.request), rules)
    body = flow.response.raw_content or b""
    chunks = [body] if is_event_stream(flow.response.headers.get("content-type", "")) else None
    entry = flows.make_entry(flow, key, rules, chunks)
    if entry is not None and flow.response.timestamp_end:
        entry.recorded_at = flow.response.timestamp_end
    return entry
