"""What one cache entry holds (SPEC §4), and its msgpack form.

Builtins only, in one fixed shape with a schema version, so that the store can
be read by any later version or by `python -m lmdb dump` plus msgpack. Pure:
no mitmproxy, no LMDB.

Schemas: 1 has no chunk offsets; 2 adds `response.offsets`, each chunk's time in seconds
from the start of the answer (its headers), for paced replay. An entry is written in the
oldest schema that holds it (2 only for a stream with offsets), so a proxy of an older
version sharing the store or the remote tier still reads every other entry.
Sequence slots (core/slots.py) need no schema of their own: a later slot is an entry of
either schema whose `meta` holds `slot` and `slot_of`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import msgpack

#: The newest schema, written for entries with chunk offsets; SCHEMAS: those read.
SCHEMA = 2
SCHEMAS = (1, 2)

#: Response headers that describe one connection or one encoding, not the answer; and
#: cookies, which belong to one client (OpenAI answers carry Cloudflare's): never replayed.
UNSTORED_RESPONSE_HEADERS = frozenset(
    {
        b"set-cookie",
        b"set-cookie2",
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"content-encoding",
        b"content-length",
        b"x-provider-cache",
    }
)

Headers = list[tuple[bytes, bytes]]


class CorruptEntry(ValueError):
    """A stored value that is not an entry of a schema this version can read."""


@dataclass
class StoredRequest:
    """The request as sent, with every secret redacted: for inspection only."""

    method: str
    url: str
    headers: Headers
    body: bytes


@dataclass
class StoredResponse:
    status: int
    reason: str
    headers: Headers
    body: bytes = b""
    #: For a streamed response, the chunks as they arrived; the body is their join.
    chunks: list[bytes] | None = None
    #: Each chunk's arrival, in seconds from the answer's headers (schema 2); None for an
    #: unstreamed response or one recorded before offsets were (it replays unpaced).
    offsets: list[float] | None = None

    @property
    def content(self) -> bytes:
        return b"".join(self.chunks) if self.chunks is not None else self.body


@dataclass
class Entry:
    key: str
    recorded_at: float
    request: StoredRequest
    response: StoredResponse
    meta: dict = field(default_factory=dict)


def storable_headers(headers: Headers) -> Headers:
    """Names in lower case (as HTTP/2 requires), without per-connection headers or cookies."""
    return [(k.lower(), v) for k, v in headers if k.lower() not in UNSTORED_RESPONSE_HEADERS]


#: Strings from the wire may carry undecodable bytes as lone surrogates (mitmproxy decodes
#: with surrogateescape); they are stored and read back as such instead of failing the write.
#: Bytes that are not UTF-8 at all still make a value corrupt.
_UNICODE_ERRORS = "surrogatepass"


def pack(entry: Entry) -> bytes:
    req, resp = entry.request, entry.response
    response = {
        "status": resp.status,
        "reason": resp.reason,
        "headers": [list(h) for h in resp.headers],
        "body": resp.body if resp.chunks is None else b"",
        "chunks": resp.chunks,
    }
    paced = resp.chunks is not None and resp.offsets is not None
    if paced:
        response["offsets"] = resp.offsets
    return msgpack.packb(
        {
            "schema": SCHEMA if paced else 1,
            "key": entry.key,
            "recorded_at": entry.recorded_at,
            "request": {
                "method": req.method,
                "url": req.url,
                "headers": [list(h) for h in req.headers],
                "body": req.body,
            },
            "response": response,
            "meta": entry.meta,
        },
        use_bin_type=True,
        unicode_errors=_UNICODE_ERRORS,
    )


def unpack(data: bytes) -> Entry:
    """Decode one stored value; anything unexpected is a CorruptEntry, never another error.

    Fields are checked by type rather than converted: a conversion such as bytes(5) or
    int(inf) either raises something else or quietly turns garbage into a plausible entry.
    """
    try:
        raw = msgpack.unpackb(data, unicode_errors=_UNICODE_ERRORS)
    except (ValueError, TypeError, msgpack.UnpackException) as e:
        raise CorruptEntry(f"undecodable entry: {type(e).__name__}") from None
    if not isinstance(raw, dict):
        raise CorruptEntry(f"not an entry: a msgpack {type(raw).__name__}")
    schema = raw.get("schema")
    if type(schema) is not int or schema not in SCHEMAS:
        raise CorruptEntry(f"unknown entry schema {schema!r}")
    req, resp = _field(raw, "request", dict), _field(raw, "response", dict)
    chunks = _chunks(resp)
    return Entry(
        key=_field(raw, "key", str),
        recorded_at=float(_field(raw, "recorded_at", (float, int))),
        request=StoredRequest(
            method=_field(req, "method", str),
            url=_field(req, "url", str),
            headers=_headers(req),
            body=_field(req, "body", bytes),
        ),
        response=StoredResponse(
            status=_status(resp),
            reason=_field(resp, "reason", str),
            headers=_headers(resp),
            body=_field(resp, "body", bytes),
            chunks=chunks,
            offsets=_offsets(resp, chunks) if schema >= 2 else None,
        ),
        meta=_field(raw, "meta", dict) if "meta" in raw else {},
    )


def _field(raw: dict, name: str, kind: type | tuple[type, ...]) -> Any:
    """raw[name] if it is of the given type (bool never counts as int), else CorruptEntry."""
    value = raw.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise CorruptEntry(f"{name}: expected {kind}, got {type(value).__name__}")
    return value


def _status(resp: dict) -> int:
    """A three-digit status: anything else could not be served back."""
    status = _field(resp, "status", int)
    if not 100 <= status <= 999:
        raise CorruptEntry(f"status {status} out of range")
    return status


def _headers(raw: dict) -> Headers:
    """Header pairs of bytes; msgpack gives each pair as a two-element list."""
    headers = []
    for pair in _field(raw, "headers", list):
        if not isinstance(pair, list) or len(pair) != 2:
            raise CorruptEntry("headers: not a list of pairs")
        name, value = pair
        if not isinstance(name, bytes) or not isinstance(value, bytes):
            raise CorruptEntry("headers: not bytes")
        headers.append((name, value))
    return headers


def _chunks(resp: dict) -> list[bytes] | None:
    """None for an unstreamed response, else a list of bytes chunks."""
    if "chunks" not in resp:
        raise CorruptEntry("chunks: missing")
    chunks = resp["chunks"]
    if chunks is None:
        return None
    if not isinstance(chunks, list) or not all(isinstance(c, bytes) for c in chunks):
        raise CorruptEntry("chunks: not a list of bytes")
    return chunks


def _offsets(resp: dict, chunks: list[bytes] | None) -> list[float]:
    """One finite, non-negative number of seconds per chunk (schema 2: a stream's)."""
    offsets = _field(resp, "offsets", list)
    if chunks is None or len(offsets) != len(chunks):
        raise CorruptEntry("offsets: not one per chunk")
    if not all(
        isinstance(o, (int, float)) and not isinstance(o, bool) and 0 <= o < math.inf
        for o in offsets
    ):
        raise CorruptEntry("offsets: not finite non-negative seconds")
    return [float(o) for o in offsets]


def unpack_valid(items: Iterable[tuple[bytes, bytes]]) -> Iterator[Entry]:
    """The decodable entries among stored (key, value) pairs; the others are skipped."""
    for _, value in items:
        try:
            yield unpack(value)
        except CorruptEntry:
            continue
