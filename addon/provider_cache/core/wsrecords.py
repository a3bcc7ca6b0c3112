"""A recorded WebSocket session (SPEC §13, issue 17), and how it is keyed and stored.

A session is stored as an ordinary entry (core/records.py): its request is the handshake
(redacted as any request is), its response the 101 (without the per-connection
`sec-websocket-accept`), and `meta["websocket"]` holds the conversation. So `ls`, `show`,
`export`, prune, the remote tier and the miss diagnosis read sessions as they read any
entry, and an older version sees a 101 it never serves (its key is one no HTTP request has).

One entry holds one or more *takes*: conversations recorded under the same handshake
(a test suite that opens the same Realtime URL and says different things). Each take is
its messages in order, both directions, text or binary, with their offsets in seconds from
the handshake's answer, and how it was closed. The messages' bytes are the response's
`chunks` and their offsets its `offsets` (records schema 2), so that `show` and `export`
print them as they print a stream; `meta` keeps only JSON's types. Pure: no mitmproxy, no
LMDB.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from provider_cache.core import keys
from provider_cache.core.records import CorruptEntry, Entry

#: Where an entry keeps its session; the entry is a session exactly when this is present.
META_KEY = "websocket"
#: The session's own shape inside the entry (the entry keeps records.SCHEMA).
SCHEMA = 1
#: In the normalised handshake (and so in the key): an HTTP request never has it, so a
#: session and an HTTP entry never share a key.
KIND_FIELD = "kind"
KIND = "websocket"
#: Handshake headers made up per connection or negotiated by the transport: never keyed.
#: (`sec-websocket-key` is a random nonce; its answer `sec-websocket-accept` is not stored.)
UNKEYED_HEADERS = frozenset({"sec-websocket-key", "sec-websocket-extensions"})
UNSTORED_RESPONSE_HEADERS = frozenset({b"sec-websocket-accept", b"sec-websocket-extensions"})
#: Close codes of a session that ended as its parties meant it to: only such are stored.
NORMAL_CLOSES = frozenset({1000, 1005})
#: Takes one entry keeps at most; recording another drops the oldest.
MAX_TAKES = 8
SUBPROTOCOL_HEADER = "sec-websocket-protocol"

DIRECTIONS = ("client", "server")
KINDS = ("text", "binary")


@dataclass(frozen=True)
class Message:
    from_client: bool
    text: bool
    #: Seconds from the handshake's answer.
    offset: float
    content: bytes


@dataclass(frozen=True)
class Take:
    messages: tuple[Message, ...]
    close_code: int | None
    close_reason: str
    closed_by_client: bool


@dataclass(frozen=True)
class Session:
    takes: tuple[Take, ...]

    def with_take(self, take: Take) -> Session:
        """This session and one more take (the oldest dropped past MAX_TAKES)."""
        return Session((*self.takes, take)[-MAX_TAKES:])


# -- the key -------------------------------------------------------------------------


def subprotocol_secrets(value: str, is_secret: Any) -> list[str]:
    """Credentials carried as subprotocols (a browser cannot set headers):
    `openai-insecure-api-key.sk-…` — a name that `is_secret` takes for a secret's, a dot,
    the value."""
    found = []
    for token in value.split(","):
        name, dot, secret = token.strip().partition(".")
        if dot and secret and is_secret(name.lower()):
            found.append(secret)
    return found


def redact_subprotocols(value: str, is_secret: Any) -> str:
    tokens = []
    for token in value.split(","):
        name, dot, secret = token.strip().partition(".")
        secret_one = dot and secret and is_secret(name.lower())
        tokens.append(f"{name}.{keys.REDACTED}" if secret_one else token.strip())
    return ", ".join(tokens)


def handshake_parts(parts: keys.RequestParts, rules: keys.KeyRules) -> keys.RequestParts:
    """The handshake as keyed: without its per-connection headers, secret subprotocols
    redacted."""
    headers = []
    for name, value in parts.headers:
        lname = name.lower()
        if lname in UNKEYED_HEADERS:
            continue
        if lname == SUBPROTOCOL_HEADER:
            value = redact_subprotocols(value, rules.is_secret)
        headers.append((name, value))
    return replace(parts, headers=tuple(headers))


def session_key(parts: keys.RequestParts, rules: keys.KeyRules) -> tuple[str, dict]:
    """The key of the session a handshake opens, and its normalised form (SPEC §3)."""
    normalized = keys.normalize(handshake_parts(parts, rules), rules)
    normalized[KIND_FIELD] = KIND
    return keys.cache_key(normalized), normalized


# -- packing ---------------------------------------------------------------------------


def is_session(entry: Entry) -> bool:
    return META_KEY in entry.meta


def pack_session(session: Session) -> tuple[list[bytes], list[float], dict]:
    """(chunks, offsets, meta): the messages' contents and offsets, every take's in turn, go
    into the response's chunks and offsets (bytes, shown and exported as a stream's are);
    `meta["websocket"]` says which take, direction and kind each one is, in JSON's types."""
    chunks = [m.content for take in session.takes for m in take.messages]
    offsets = [m.offset for take in session.takes for m in take.messages]
    meta = {
        "schema": SCHEMA,
        "takes": [
            {
                "messages": [
                    [
                        DIRECTIONS[0] if m.from_client else DIRECTIONS[1],
                        KINDS[0] if m.text else KINDS[1],
                    ]
                    for m in take.messages
                ],
                "close": [take.close_code, take.close_reason, take.closed_by_client],
            }
            for take in session.takes
        ],
    }
    return chunks, offsets, meta


def session_of(entry: Entry) -> Session:
    """The entry's session; CorruptEntry if it has none or it is not one this version reads."""
    raw = entry.meta.get(META_KEY)
    if not isinstance(raw, dict) or raw.get("schema") != SCHEMA:
        raise CorruptEntry("not a WebSocket session of a known schema")
    takes = raw.get("takes")
    if not isinstance(takes, list) or not takes:
        raise CorruptEntry("websocket: no takes")
    chunks, offsets = entry.response.chunks, entry.response.offsets
    if chunks is None or offsets is None:  # records.unpack checked one offset per chunk
        raise CorruptEntry("websocket: no messages")
    parsed = []
    start = 0
    for take in takes:
        kinds, close = _take(take)
        stop = start + len(kinds)
        if stop > len(chunks):
            raise CorruptEntry("websocket: fewer chunks than messages")
        messages = tuple(
            Message(from_client, text, offset, content)
            for (from_client, text), offset, content in zip(
                kinds, offsets[start:stop], chunks[start:stop], strict=True
            )
        )
        parsed.append(Take(messages, *close))
        start = stop
    if start != len(chunks):
        raise CorruptEntry("websocket: more chunks than messages")
    return Session(tuple(parsed))


def _take(raw: object) -> tuple[list[tuple[bool, bool]], tuple[int | None, str, bool]]:
    if not isinstance(raw, dict):
        raise CorruptEntry("websocket take: not a map")
    messages, close = raw.get("messages"), raw.get("close")
    if not isinstance(messages, list) or not isinstance(close, list) or len(close) != 3:
        raise CorruptEntry("websocket take: messages or close missing")
    code, reason, by_client = close
    if not (code is None or type(code) is int) or not isinstance(reason, str):
        raise CorruptEntry("websocket take: bad close")
    if not isinstance(by_client, bool):
        raise CorruptEntry("websocket take: bad close side")
    return [_kind(m) for m in messages], (code, reason, by_client)


def _kind(raw: object) -> tuple[bool, bool]:
    """(from_client, text) of one message."""
    if not isinstance(raw, list) or len(raw) != 2:
        raise CorruptEntry("websocket message: not a direction and a kind")
    direction, kind = raw
    if direction not in DIRECTIONS or kind not in KINDS:
        raise CorruptEntry("websocket message: bad direction or kind")
    return direction == DIRECTIONS[0], kind == KINDS[0]


def describe(session: Session) -> list[dict]:
    """Each take as `show` and mitmweb could list it: direction, kind, offset, size."""
    return [
        {
            "messages": [
                {
                    "direction": "→" if m.from_client else "←",
                    "kind": KINDS[0] if m.text else KINDS[1],
                    "offset": round(m.offset, 3),
                    "size": len(m.content),
                }
                for m in take.messages
            ],
            "close": {"code": take.close_code, "reason": take.close_reason},
        }
        for take in session.takes
    ]
