"""Why did a request miss? The closest recorded request and what differs (like VCR.py's report).

Pure: compares normalised requests (provider_cache.core.keys.normalize) and names the
differences a developer can act on: `body $.temperature: 0.2 → 0.7`,
`header anthropic-version: 2023-06-01 → 2024-10-22`, `query page: 1 → 2`; and the user
rules that changed the missed request (`rule applied: cache_normalize uuid replaced 2
values`), by name and count: the values they replaced are never shown.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from difflib import SequenceMatcher
from urllib.parse import urlsplit

from provider_cache.core import userrules
from provider_cache.core.keys import KeyRules, RequestParts, cache_key, normalize
from provider_cache.core.records import StoredRequest

MAX_DIFFERENCES = 8
VALUE_WIDTH = 60
#: What a recording that normalises as the missed request does differ in: its key was made
#: under other rules (an older provider-cache, other cache_ignore_headers); recording again
#: makes it hit.
SAME_REQUEST_OTHER_RULES = (
    "nothing under today's key rules: recorded under other ones; record it again"
)


def stored_parts(request: StoredRequest) -> RequestParts:
    """A stored (redacted) request as key input: secrets count by presence, so it keys the same."""
    url = urlsplit(request.url)
    default_port = 443 if url.scheme == "https" else 80
    return RequestParts(
        method=request.method,
        scheme=url.scheme,
        host=url.hostname or "",
        port=url.port or default_port,
        path=url.path or "/",
        query=url.query,
        headers=tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers),
        body=request.body,
    )


def closest(
    missed: dict, candidates: Iterable[tuple[str, StoredRequest]], rules: KeyRules
) -> dict | None:
    """The recorded request to the same method, host and path with the fewest differences."""
    return closest_each({"": missed}, candidates, rules)[""]


def closest_each(
    missed: dict[str, dict], candidates: Iterable[tuple[str, StoredRequest]], rules: KeyRules
) -> dict[str, dict | None]:
    """`closest` for several missed requests (by name) in one pass over the recordings.

    Normalising a recording is the expensive part, so each is normalised once for all the
    misses, and only if one of them went to its method, host and path.
    """
    best: dict[str, tuple[tuple[int, float], str, list[str]]] = {}
    # A miss's own recording (made since, in record mode) explains nothing.
    own_keys = {name: cache_key(m) for name, m in missed.items()}
    for key, request in candidates:
        parts = stored_parts(request)
        route = (parts.method.upper(), parts.host.lower().rstrip("."), parts.path)  # normalize's
        targets = [
            n
            for n, m in missed.items()
            if (m["method"], m["host"], m["path"]) == route and own_keys[n] != key
        ]
        if not targets:
            continue
        candidate = normalize(parts, rules)
        for name in targets:
            found = differences(candidate, missed[name])
            score = (len(found), _distance(found))
            if name not in best or score < best[name][0]:
                best[name] = (score, key, found)
    return {name: _report(best.get(name), missed[name]) for name in missed}


def _report(best: tuple[tuple[int, float], str, list[str]] | None, missed: dict) -> dict | None:
    if best is None:
        return None
    (count, _), key, found = best
    more = max(0, count - MAX_DIFFERENCES)
    rules = [f"rule applied: {line}" for line in userrules.describe(missed)]
    return {
        "key": key,
        "differences": (found[:MAX_DIFFERENCES] or [SAME_REQUEST_OTHER_RULES]) + rules,
        "more": more,
    }


def differences(recorded: dict, missed: dict) -> list[str]:
    """What changed from the recorded request to the missed one, most useful first."""
    found = []
    old_origin = f"{recorded['scheme']}:{recorded['port']}"
    new_origin = f"{missed['scheme']}:{missed['port']}"
    if old_origin != new_origin:
        found.append(f"origin {old_origin} → {new_origin}")
    found += _pairs("query", recorded["query"], missed["query"])
    found += _pairs("header", recorded["headers"], missed["headers"])
    found += _body(recorded, missed)
    return found


def _distance(found: list[str]) -> float:
    """How far apart the changed values are: ties on the count go to the most similar."""
    total = 0.0
    for line in found:
        old, _, new = line.partition(": ")[2].partition(" → ")
        total += 1 - SequenceMatcher(None, old[:VALUE_WIDTH], new[:VALUE_WIDTH]).ratio()
    return total


def _pairs(label: str, old: list, new: list) -> list[str]:
    old_map, new_map = _multimap(old), _multimap(new)
    out = []
    for name in sorted(old_map.keys() | new_map.keys()):
        before, after = old_map.get(name), new_map.get(name)
        if before != after:
            out.append(f"{label} {name}: {_show(before)} → {_show(after)}")
    return out


def _multimap(pairs: list) -> dict[str, str]:
    merged: dict[str, list[str]] = {}
    for name, value in pairs:
        merged.setdefault(name, []).append(value)
    return {k: ", ".join(v) for k, v in merged.items()}


def _body(recorded: dict, missed: dict) -> list[str]:
    if recorded["body"] == missed["body"]:
        return []
    if recorded["body_kind"] == missed["body_kind"] == "json":
        old, new = _flatten(recorded["body"]), _flatten(missed["body"])
        if old is not None and new is not None:
            return [
                f"body {path}: {_show(old.get(path))} → {_show(new.get(path))}"
                for path in sorted(old.keys() | new.keys())
                if old.get(path) != new.get(path)
            ]
    sizes = f"{len(recorded['body'])} → {len(missed['body'])} bytes"
    return [f"body ({recorded['body_kind']}, {sizes})"]


@functools.lru_cache(maxsize=512)  # a pass compares each body with many others: parse it once
def _flatten(body: bytes) -> dict[str, str] | None:
    """JSON as {"$.messages[0].content": '"hi"'}: the leaves, each as its JSON text (shared:
    not to be changed by the caller)."""
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return None
    leaves: dict[str, str] = {}
    stack = [("$", value)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, dict) and node:
            stack += [(f"{path}.{k}", v) for k, v in node.items()]
        elif isinstance(node, list) and node:
            stack += [(f"{path}[{i}]", v) for i, v in enumerate(node)]
        else:
            leaves[path] = json.dumps(node, ensure_ascii=False)
    return leaves


def _show(value: str | None) -> str:
    if value is None:
        return "(absent)"
    return value if len(value) <= VALUE_WIDTH else value[: VALUE_WIDTH - 1] + "…"
