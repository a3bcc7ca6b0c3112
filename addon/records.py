"""What one cache entry holds (SPEC §4), and its msgpack form.

Builtins only, in one fixed shape with a schema version, so that the store can
be read by any later version or by `python -m lmdb dump` plus msgpack. Pure:
no mitmproxy, no LMDB.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgpack

SCHEMA = 1

#: Response headers that describe one connection or one encoding, not the answer.
UNSTORED_RESPONSE_HEADERS = frozenset(
    {
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
    #: For a streamed (SSE) response, the chunks as they arrived; the body is their join.
    chunks: list[bytes] | None = None

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
    """Names in lower case (as HTTP/2 requires), without per-connection headers."""
    return [(k.lower(), v) for k, v in headers if k.lower() not in UNSTORED_RESPONSE_HEADERS]


def pack(entry: Entry) -> bytes:
    req, resp = entry.request, entry.response
    return msgpack.packb(
        {
            "schema": SCHEMA,
            "key": entry.key,
            "recorded_at": entry.recorded_at,
            "request": {
                "method": req.method,
                "url": req.url,
                "headers": [list(h) for h in req.headers],
                "body": req.body,
            },
            "response": {
                "status": resp.status,
                "reason": resp.reason,
                "headers": [list(h) for h in resp.headers],
                "body": resp.body if resp.chunks is None else b"",
                "chunks": resp.chunks,
            },
            "meta": entry.meta,
        },
        use_bin_type=True,
    )


def unpack(data: bytes) -> Entry:
    """Decode one stored value; anything unexpected is a CorruptEntry, never another error."""
    try:
        raw = msgpack.unpackb(data)
        if not isinstance(raw, dict):
            raise CorruptEntry(f"not an entry: a msgpack {type(raw).__name__}")
        if raw.get("schema") != SCHEMA:
            raise CorruptEntry(f"unknown entry schema {raw.get('schema')!r}")
        req, resp = raw["request"], raw["response"]
        return Entry(
            key=str(raw["key"]),
            recorded_at=float(raw["recorded_at"]),
            request=StoredRequest(
                method=req["method"],
                url=req["url"],
                headers=[(bytes(k), bytes(v)) for k, v in req["headers"]],
                body=bytes(req["body"]),
            ),
            response=StoredResponse(
                status=int(resp["status"]),
                reason=str(resp["reason"]),
                headers=[(bytes(k), bytes(v)) for k, v in resp["headers"]],
                body=bytes(resp["body"]),
                chunks=None if resp["chunks"] is None else [bytes(c) for c in resp["chunks"]],
            ),
            meta=dict(raw.get("meta") or {}),
        )
    except CorruptEntry:
        raise
    except (ValueError, TypeError, KeyError, msgpack.UnpackException) as e:
        raise CorruptEntry(f"undecodable entry: {type(e).__name__}") from None
