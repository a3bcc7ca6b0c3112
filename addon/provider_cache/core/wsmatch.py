"""Replaying a recorded WebSocket conversation (SPEC §13): which server messages a client
message releases, and where a conversation that differs diverged.

A client message matches the recorded one at its index when their canonical forms have
the same SHA-256 digest: JSON canonicalised as a request body is for the key (sorted keys,
secret fields by presence, the user's cache_ignore_json and cache_normalize rules), other
text by the cache_normalize patterns, binary frames (audio) as they are; every form with the
session's secrets scrubbed. Recorded server messages are released only once the client
message they followed has arrived and matched, so a client never sees an answer before it
asked. Among several takes of one handshake, the conversation follows every take that
agrees with what the client said and what was released so far. Pure: no mitmproxy.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from provider_cache.core import bodies, diagnose, redact
from provider_cache.core.keys import KeyRules
from provider_cache.core.wsrecords import Message, Session

#: The close code of a conversation that diverged (4000-4999: for applications; 4404
#: echoes the HTTP miss's 404).
DIVERGED_CODE = 4404
#: RFC 6455: a close frame's reason is at most 123 bytes.
MAX_REASON = 123


class Canon:
    """Canonical forms of messages under one set of key rules and one session's secrets."""

    def __init__(self, rules: KeyRules, secrets: list[bytes]) -> None:
        self.rules = rules
        self.secrets = secrets

    def form(self, text: bool, content: bytes) -> tuple[str, bytes]:
        """(kind, canonical bytes): kind is json, text or binary."""
        if not text:
            return "binary", redact.scrub(content, self.secrets)
        user = self.rules.user
        decoder = user.decoder(self.rules.json_decoder) if user else self.rules.json_decoder
        canonical = bodies.canonical_json(content, decoder)
        if canonical is not None:
            return "json", redact.scrub(canonical, self.secrets)
        raw = user.raw_body(content, {}) if user else content
        return "text", redact.scrub(raw, self.secrets)

    def digest(self, text: bool, content: bytes) -> bytes:
        kind, canonical = self.form(text, content)
        return hashlib.sha256(kind.encode() + b"\0" + canonical).digest()


@dataclass(frozen=True)
class Divergence:
    """The client's message `index` (0-based, client messages only) matched no take."""

    index: int
    differences: list[str]

    def reason(self) -> str:
        text = f"provider-cache miss: client message {self.index} differs from the recording"
        return text.encode()[:MAX_REASON].decode("utf-8", "ignore")


@dataclass
class Step:
    """What to send now: `release` (recorded server messages), each due at its offset less
    `anchor` (the offset of the client message that released them); then `close`, the
    recorded server close, if the take ends there. Or the conversation `diverged`."""

    release: list[Message] = field(default_factory=list)
    anchor: float = 0.0
    close: tuple[int, str] | None = None
    diverged: Divergence | None = None


class Conversation:
    def __init__(self, session: Session, canon: Canon) -> None:
        self.takes = session.takes
        self.canon = canon
        #: Per take, the positions of its client messages among all its messages.
        self.clients = [
            [n for n, m in enumerate(take.messages) if m.from_client] for take in self.takes
        ]
        self.alive = list(range(len(self.takes)))
        #: How many client messages matched so far: the index of the next one.
        self.index = 0
        self._digests: dict[tuple[int, int], bytes] = {}

    def opening(self) -> Step:
        """The server messages a take begins with, before any client message."""
        return self._release(self.alive, -1, 0.0)

    def client(self, text: bool, content: bytes) -> Step:
        """The client's next message: the server messages it releases, or the divergence."""
        index, got = self.index, self.canon.digest(text, content)
        matched = [t for t in self.alive if self._digest(t, index) == got]
        if not matched:
            return Step(diverged=self._divergence(index, text, content))
        self.index += 1
        take = self.takes[matched[0]]
        anchor = take.messages[self.clients[matched[0]][index]].offset
        return self._release(matched, index, anchor)

    def _release(self, matched: list[int], index: int, anchor: float) -> Step:
        """The first matching take's server messages after client message `index`; the takes
        that would have released the same stay in the conversation."""
        first = matched[0]
        release = self._following(first, index)
        sent = _contents(release)
        self.alive = [t for t in matched if _contents(self._following(t, index)) == sent]
        take = self.takes[first]
        ends = len(self.clients[first]) == index + 1
        close = None
        if ends and not take.closed_by_client and take.close_code is not None:
            close = (take.close_code, take.close_reason)
        return Step(release, anchor, close)

    def _following(self, take: int, index: int) -> list[Message]:
        """The messages of a take after its client message `index` (-1: from the start), up
        to its next client message."""
        positions = self.clients[take]
        start = positions[index] + 1 if index >= 0 else 0
        stop = positions[index + 1] if index + 1 < len(positions) else None
        return list(self.takes[take].messages[start:stop])

    def _digest(self, take: int, index: int) -> bytes | None:
        positions = self.clients[take]
        if index >= len(positions):
            return None
        found = self._digests.get((take, index))
        if found is None:
            message = self.takes[take].messages[positions[index]]
            found = self._digests[(take, index)] = self.canon.digest(message.text, message.content)
        return found

    def _divergence(self, index: int, text: bool, content: bytes) -> Divergence:
        """What differs from the closest take: the first one still in the conversation."""
        take = self.alive[0] if self.alive else 0
        positions = self.clients[take]
        label = f"client message {index}"
        if index >= len(positions):
            return Divergence(index, [f"{label}: the recording has {len(positions)} only"])
        expected = self.takes[take].messages[positions[index]]
        return Divergence(index, differences(label, self.canon, expected, text, content))


def _contents(messages: list[Message]) -> list[tuple[bool, bytes]]:
    """What a client sees of messages: not when they were recorded."""
    return [(m.text, m.content) for m in messages]


def differences(label: str, canon: Canon, expected: Message, text: bool, got: bytes) -> list[str]:
    """What changed from the recorded client message to the one sent (diagnose's words)."""
    old_kind, old = canon.form(expected.text, expected.content)
    new_kind, new = canon.form(text, got)
    if old_kind != new_kind:
        return [f"{label}: {old_kind} → {new_kind}"]
    found = diagnose.differences(_as_request(old_kind, old), _as_request(new_kind, new))
    return [f"{label}: {line.removeprefix('body ')}" for line in found] or [f"{label}: differs"]


def _as_request(kind: str, body: bytes) -> dict:
    """A message as diagnose compares normalised requests: only the body differs."""
    return {"scheme": "wss", "port": 0, "query": [], "headers": [], "body_kind": kind, "body": body}
