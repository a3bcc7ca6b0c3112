"""Translation between mitmproxy's HTTP objects and the pure key/record types."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass

from mitmproxy import http
from mitmproxy.net import encoding

from provider_cache.core import redact
from provider_cache.core.bodies import DECODE_LIMIT, decode_content
from provider_cache.core.keys import KeyRules, RequestParts
from provider_cache.core.names import CACHE_HEADER
from provider_cache.core.records import Entry, StoredRequest, StoredResponse, storable_headers

#: Not 408/409/429 (the SDKs retry those) and not 5xx: a miss must fail fast and clearly.
MISS_STATUS = 404


def query_of(request: http.Request) -> str:
    """The raw query string: mitmproxy's `query` view would re-encode it."""
    return request.path.partition("?")[2]


def request_parts(request: http.Request) -> RequestParts:
    return RequestParts(
        method=request.method,
        scheme=request.scheme,
        host=request.host,
        port=request.port,
        path=request.path.partition("?")[0],
        query=query_of(request),
        headers=tuple(request.headers.items(multi=True)),
        body=request.raw_content or b"",
    )


def fingerprint(request: http.Request, rules: KeyRules) -> tuple:
    """Everything the key is computed from, as mitmproxy holds it: under the same rules,
    equal fingerprints have equal keys. For remembering keys (addon/recent.py).

    `request_parts` and then `keys.key_for` are pure functions of these fields, and
    `keys.normalize` drops the headers the rules ignore, so they are left out here too; the
    body counts by its SHA-256, as the key itself counts by one. No decoding, no parsing.
    """
    data = request.data
    headers = tuple(pair for pair in data.headers.fields if not rules.is_ignored_field(pair[0]))
    body = hashlib.sha256(data.content or b"").digest()
    return (data.method, data.scheme, data.host, data.port, data.path, headers, body)


def redacted_url(request: http.Request, rules: KeyRules, secrets: list[bytes] | None = None) -> str:
    """The URL as stored, logged and named by a miss: secret query values redacted, and any
    secret of the request's headers or query found elsewhere in it (its path) scrubbed."""
    if secrets is None:
        secrets = redact.secret_values(list(request.headers.fields), query_of(request), rules)
    # `url`, not `pretty_url`: the host the request went to, as the key has it (and without
    # parsing the Host header, a good part of a recording's cost).
    return redact.redact_url(request.url, rules, secrets)


def stored_request(
    request: http.Request,
    rules: KeyRules,
    secrets: list[bytes],
    fields: redact.Fields | None = None,
) -> StoredRequest:
    """The request as sent, every secret redacted; `fields`: its body's secret fields
    (redact.body_secret_fields)."""
    headers = list(request.headers.fields)
    body = _redacted_body(request, headers, fields or {})
    return StoredRequest(
        method=request.method,
        url=redacted_url(request, rules, secrets),
        headers=redact.scrub_headers(redact.redact_headers(headers, rules), secrets),
        body=redact.scrub(body, secrets),
    )


def content_type_of(headers: redact.Headers) -> redact.Headers:
    """The content-type header alone, as sent: the headers of a decoded body."""
    return [(name, value) for name, value in headers if name.lower() == b"content-type"]


#: Content codings by the name mitmproxy's encoder knows them (x-gzip is gzip's alias).
_ENCODER_NAMES = {"x-gzip": "gzip"}


def _redacted_body(request: http.Request, headers: redact.Headers, fields: redact.Fields) -> bytes:
    """The body with its secret `fields` redacted. A content-encoded one is decoded,
    redacted and encoded again as its headers say: scrub cannot find a secret in
    compressed bytes, which would store it (compressed) otherwise."""
    raw = request.raw_content or b""
    codings = [c.strip().lower() for c in request.headers.get("content-encoding", "").split(",")]
    codings = [c for c in codings if c and c != "identity"]
    if not fields or not codings:
        return redact.redact_body_fields(raw, headers, fields)
    decoded = decode_content(raw, ",".join(codings))  # body_secret_fields decoded it too
    if decoded is None:
        return raw
    body = redact.redact_body_fields(decoded, content_type_of(headers), fields)
    if body == decoded:
        return raw
    for coding in codings:  # applied in the order listed (RFC 9110 §8.4)
        body = encoding.encode(body, _ENCODER_NAMES.get(coding, coding))
    return body


def stored_response(
    response: http.Response,
    secrets: list[bytes],
    chunks: list[bytes] | None,
    rules: KeyRules,
    limit: int = DECODE_LIMIT,
    offsets: list[float] | None = None,
) -> StoredResponse | None:
    """The response decoded from its content-encoding; None if it cannot be decoded.

    `offsets`: each chunk's arrival (core/streaming.py). Raises TooLarge if it decodes to
    more than `limit` bytes (a compression bomb stops there).
    """
    encoding = response.headers.get("content-encoding", "")
    raw = b"".join(chunks) if chunks is not None else (response.raw_content or b"")
    body = decode_content(raw, encoding, limit)
    if body is None:
        return None
    scrubbed = redact.scrub(body, secrets)
    encoded = encoding.strip().lower() not in ("", "identity")
    if chunks is not None and (encoded or scrubbed != body):
        # Boundaries of compressed chunks mean nothing once decoded, nor do those of a body
        # a secret was scrubbed from: one chunk, due when the whole answer had arrived.
        chunks = [scrubbed]
        offsets = (offsets[-1:] or [0.0]) if offsets is not None else None
    return StoredResponse(
        status=response.status_code,
        reason=response.data.reason.decode("latin-1"),
        headers=redact.scrub_headers(
            redact.redact_account_headers(storable_headers(list(response.headers.fields)), rules),
            secrets,
        ),
        body=b"" if chunks is not None else scrubbed,
        chunks=chunks,
        offsets=offsets if chunks is not None else None,
    )


def make_entry(
    flow: http.HTTPFlow,
    key: str,
    rules: KeyRules,
    chunks: list[bytes] | None,
    limit: int = DECODE_LIMIT,
    offsets: list[float] | None = None,
) -> Entry | None:
    assert flow.response
    request = flow.request
    headers = list(request.headers.fields)
    fields = redact.body_secret_fields(request.raw_content or b"", headers, rules)
    secrets = redact.secret_values(headers, query_of(request), rules, fields)
    response = stored_response(flow.response, secrets, chunks, rules, limit, offsets)
    if response is None:
        return None
    return Entry(
        key=key,
        recorded_at=time.time(),
        request=stored_request(request, rules, secrets, fields),
        response=response,
    )


@dataclass(frozen=True)
class Replay:
    """What a hit on an entry sends: worked out once per entry (see addon/recent.py)."""

    entry: Entry
    status: int
    reason: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes

    @classmethod
    def of(cls, entry: Entry) -> Replay:
        body = entry.response.content
        headers = (
            *entry.response.headers,
            (b"content-length", str(len(body)).encode()),
            (CACHE_HEADER.encode(), b"hit"),
        )
        reason = entry.response.reason.encode("latin-1")
        return cls(entry, entry.response.status, reason, headers, body)


def replay_response(replay: Replay, http_version: str) -> http.Response:
    """The stored answer, with a body that goes out byte for byte as recorded."""
    now = time.time()
    version = http_version.encode()
    return http.Response(
        version, replay.status, replay.reason, replay.headers, replay.body, None, now, now
    )


def failure_response(http_version: str) -> http.Response:
    """The replay-mode answer when the cache itself failed on a request: local, like a miss."""
    message = (
        "provider-cache could not look this request up (an internal error, in its log) and "
        "cache_mode=replay forbids contacting the provider."
    )
    body = json.dumps({"error": {"type": "provider_cache_error", "message": message}}).encode()
    response = http.Response.make(
        MISS_STATUS, body, {"content-type": "application/json", CACHE_HEADER: "miss"}
    )
    response.http_version = http_version
    return response


def miss_response(
    method: str, url: str, key: str, http_version: str, place: str = ""
) -> http.Response:
    """The replay-mode answer to a request that was never recorded (SPEC §2); `place`: which
    answer of a sequence it was (`, answer 4 of key …`, cache_sequence)."""
    message = (
        f"provider-cache: no recording for {method} {url} (key {key}{place}) and "
        "cache_mode=replay forbids contacting the provider; record it with cache_mode=record."
    )
    body = json.dumps(
        {"error": {"type": "provider_cache_miss", "message": message, "key": key}}
    ).encode()
    response = http.Response.make(
        MISS_STATUS,
        body,
        {"content-type": "application/json", CACHE_HEADER: "miss"},
    )
    response.http_version = http_version
    return response
