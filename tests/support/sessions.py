"""Stored WebSocket sessions (core/wsrecords.py) for unit tests: an entry as the proxy
stores one, takes of a short Realtime conversation (text and binary, both directions)."""

from __future__ import annotations

from provider_cache.core import wsrecords
from provider_cache.core.records import Entry, StoredRequest, StoredResponse

KEY = "2dc6f02af6f20093a80b8f297ccbaa6db84e93ceb041e1f7f9dfa50e11af385a"
RECORDED_AT = 1_732_579_200.25
ASK = b'{"type": "response.create"}'
AUDIO = bytes(range(32))


def session_entry(*takes: wsrecords.Take, key: str = KEY) -> Entry:
    """The entry of a session of these takes, as mitm/wsrecording.py stores one."""
    session = wsrecords.Session(takes)
    chunks, offsets, meta = wsrecords.pack_session(session)
    return Entry(
        key=key,
        recorded_at=RECORDED_AT,
        request=StoredRequest(
            method="GET",
            url="https://api.openai.com/v1/realtime?model=gpt-realtime",
            headers=[(b"upgrade", b"websocket"), (b"authorization", b"<redacted>")],
            body=b"",
        ),
        response=StoredResponse(
            101,
            "Switching Protocols",
            [(b"upgrade", b"websocket"), (b"connection", b"Upgrade")],
            chunks=chunks,
            offsets=offsets,
        ),
        meta={wsrecords.META_KEY: meta, "recorded_run": 3},
    )


def take(answer: bytes, code: int = 1000) -> wsrecords.Take:
    """Opening, a question, audio, then `answer`; closed by the client with `code`."""
    return wsrecords.Take(
        (
            wsrecords.Message(False, True, 0.01, b'{"type": "session.created"}'),
            wsrecords.Message(True, True, 0.1, ASK),
            wsrecords.Message(True, False, 0.15, AUDIO),
            wsrecords.Message(False, True, 0.2, answer),
        ),
        code,
        "",
        True,
    )
