"""A deterministic, diffable, lossless text form of entries, for code review and import.

One JSON document: entries sorted by key (the slots of a sequence, core/slots.py, right
after its first, in order; their `meta` says their place), fixed field order, text bodies
as lists of lines (so a changed answer is a changed line in a diff), other bodies as
base64. Header names and values map bytes to text one to one (latin-1).
Pure: no mitmproxy, no LMDB.
"""

from __future__ import annotations

import base64
import json
import re

from provider_cache.core import slots, timefmt
from provider_cache.core.records import Entry, StoredRequest, StoredResponse

FORMAT = "provider-cache-export"
VERSION = 1
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


class BadExport(ValueError):
    """Text that is not an export of a version this code can read."""


def dumps(entries: list[Entry]) -> str:
    document = {
        "format": FORMAT,
        "version": VERSION,
        "entries": [entry_to_json(e) for e in sorted(entries, key=_place)],
    }
    text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    # Undecodable bytes of a URL or method are stored as lone surrogates (records.py), which
    # no UTF-8 file can hold: written as JSON escapes, they load back as the same string.
    return _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _place(entry: Entry) -> tuple[str, int, str]:
    return (*slots.position(entry), entry.key)


def loads(text: str) -> list[Entry]:
    try:
        document = json.loads(text)
        if document.get("format") != FORMAT or document.get("version") != VERSION:
            raise BadExport(f"not a {FORMAT} version {VERSION} document")
        return [entry_from_json(e) for e in document["entries"]]
    except BadExport:
        raise
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise BadExport(f"malformed export: {type(e).__name__}: {e}") from None


def entry_to_json(entry: Entry) -> dict:
    req, resp = entry.request, entry.response
    response: dict = {
        "status": resp.status,
        "reason": resp.reason,
        "headers": _headers(resp.headers),
    }
    if resp.chunks is not None:
        response["chunks"] = [_body(c) for c in resp.chunks]
        if resp.offsets is not None:  # when each chunk came: paced replay (SPEC §4)
            response["offsets"] = resp.offsets
    else:
        response["body"] = _body(resp.body)
    return {
        "key": entry.key,
        "recorded": timefmt.iso(entry.recorded_at),
        "recorded_at": entry.recorded_at,
        "meta": entry.meta,
        "request": {
            "method": req.method,
            "url": req.url,
            "headers": _headers(req.headers),
            "body": _body(req.body),
        },
        "response": response,
    }


def entry_from_json(data: dict) -> Entry:
    req, resp = data["request"], data["response"]
    chunks = [_unbody(c) for c in resp["chunks"]] if "chunks" in resp else None
    return Entry(
        key=str(data["key"]),
        recorded_at=float(data["recorded_at"]),
        request=StoredRequest(
            method=req["method"],
            url=req["url"],
            headers=_unheaders(req["headers"]),
            body=_unbody(req["body"]),
        ),
        response=StoredResponse(
            status=int(resp["status"]),
            reason=resp["reason"],
            headers=_unheaders(resp["headers"]),
            body=b"" if chunks is not None else _unbody(resp["body"]),
            chunks=chunks,
            offsets=[float(o) for o in resp["offsets"]] if "offsets" in resp else None,
        ),
        meta=dict(data.get("meta") or {}),
    )


def _headers(headers: list[tuple[bytes, bytes]]) -> list[str]:
    """One `name: value` line per header (names never contain a colon)."""
    return [f"{k.decode('latin-1')}: {v.decode('latin-1')}" for k, v in headers]


def _unheaders(headers: list[str]) -> list[tuple[bytes, bytes]]:
    pairs = []
    for line in headers:
        name, sep, value = line.partition(": ")
        if not sep:
            raise BadExport(f"header line without ': ': {line[:40]!r}")
        pairs.append((name.encode("latin-1"), value.encode("latin-1")))
    return pairs


def _body(data: bytes) -> dict:
    try:
        return {"lines": data.decode("utf-8").splitlines(keepends=True)}
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(data).decode()}


def _unbody(body: dict) -> bytes:
    if "lines" in body:
        return "".join(body["lines"]).encode("utf-8")
    return base64.b64decode(body["base64"], validate=True)
