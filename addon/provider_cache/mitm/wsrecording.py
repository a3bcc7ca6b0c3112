"""What a forwarded WebSocket session leaves in the store (SPEC §4, §13): its take, with
every secret redacted, and the entry that holds it; or why it is not stored.

A session is stored only when it closed normally (core/wsrecords.py NORMAL_CLOSES): one the
upstream cut (no close frame) is `cut_short`, one closed with an error code `stream_error`,
one whose messages are over cache_max_body_size together `too_large`.
"""

from __future__ import annotations

import time
from dataclasses import replace

from mitmproxy import http

from provider_cache.core import records, redact, wsrecords
from provider_cache.core.keys import KeyRules
from provider_cache.core.rejections import CUT_SHORT, STREAM_ERROR, TOO_LARGE
from provider_cache.mitm import flows

#: A client message's JSON is read as a request body is (its secret fields).
JSON_HEADERS = [(b"content-type", b"application/json")]
#: Close codes of a session cut, not closed: no close frame at all.
CUT_CODES = frozenset({None, 1006})


def handshake_secrets(request: http.Request, rules: KeyRules) -> list[bytes]:
    """The handshake's secrets (headers, query, secret subprotocols) in every echoed form."""
    secrets = redact.secret_values(list(request.headers.fields), flows.query_of(request), rules)
    protocols = request.headers.get(wsrecords.SUBPROTOCOL_HEADER, "")
    extra = wsrecords.subprotocol_secrets(protocols, rules.is_secret) if protocols else []
    if not extra:
        return secrets
    found = {form for value in extra for form in redact.secret_forms(value.encode())}
    return _longest_first(set(secrets) | found)


def take_of(flow: http.HTTPFlow, secrets: list[bytes], rules: KeyRules) -> wsrecords.Take:
    """The conversation as stored: secret JSON fields of client messages and every echo of
    a secret redacted, offsets from the 101's arrival."""
    ws, response = flow.websocket, flow.response
    assert ws is not None and response is not None
    start = response.timestamp_start or flow.request.timestamp_start
    found: dict[str, list[str]] = {}
    contents = []
    for message in ws.messages:
        content = message.content
        if message.from_client and message.is_text:
            fields = redact.body_secret_fields(content, JSON_HEADERS, rules)
            content = redact.redact_body_fields(content, JSON_HEADERS, fields)
            for name, values in fields.items():
                found.setdefault(name, []).extend(values)
        contents.append(content)
    if found:
        secrets = _longest_first(set(secrets) | set(redact.secret_values([], "", rules, found)))
    messages = tuple(
        wsrecords.Message(
            m.from_client, m.is_text, max(0.0, m.timestamp - start), redact.scrub(c, secrets)
        )
        for m, c in zip(ws.messages, contents, strict=True)
    )
    return wsrecords.Take(messages, ws.close_code, ws.close_reason or "", bool(ws.closed_by_client))


def rejection(flow: http.HTTPFlow, take: wsrecords.Take, max_size: int) -> str | None:
    """Why the session is not stored (core/rejections.py), or None."""
    assert flow.websocket is not None
    code = flow.websocket.close_code
    if code not in wsrecords.NORMAL_CLOSES:
        return CUT_SHORT if code in CUT_CODES else STREAM_ERROR
    if sum(len(m.content) for m in take.messages) > max_size:
        return TOO_LARGE
    return None


def entry_of(
    flow: http.HTTPFlow,
    key: str,
    session: wsrecords.Session,
    secrets: list[bytes],
    rules: KeyRules,
    run: int | None,
) -> records.Entry:
    """The entry: the handshake as stored, the 101 without per-connection headers, and the
    session's messages as its chunks; `run`: the proxy run that recorded it (None: imported)."""
    assert flow.response is not None
    stored = flows.stored_response(flow.response, secrets, None, rules)
    assert stored is not None  # a 101 has no body to decode
    headers = [h for h in stored.headers if h[0] not in wsrecords.UNSTORED_RESPONSE_HEADERS]
    chunks, offsets, meta = wsrecords.pack_session(session)
    return records.Entry(
        key=key,
        recorded_at=time.time(),
        request=flows.stored_request(flow.request, rules, secrets),
        response=replace(stored, headers=headers, chunks=chunks, offsets=offsets),
        meta={wsrecords.META_KEY: meta}
        if run is None
        else {wsrecords.META_KEY: meta, "recorded_run": run},
    )


def _longest_first(secrets: set[bytes]) -> list[bytes]:
    """As redact.secret_values orders them: a secret inside another is scrubbed after it."""
    return sorted(secrets, key=len, reverse=True)
