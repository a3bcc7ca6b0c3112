"""Server-sent events (`text/event-stream`): their framing and each provider's dialect (SPEC §4).

The stream is parsed into events as it passes (lines, `event:` and `data:` fields, a blank
line ending each event), never searched for substrings: an answer whose *text* says
`data: [DONE]` is not a terminal event.

Each dialect names its terminal events; which dialect a stream speaks is told by the path
it answers (`/chat/completions` → OpenAI chat, `/responses`, `/messages`, …). A stream of a
known dialect is complete when its last event is a terminal one — also when the client
hung up right after it (the openai SDK closes the connection as soon as it reads
`data: [DONE]`). Gemini (`alt=sse`) has no terminal event: its stream must end properly
with a last event that carries a `finishReason`. A stream on an unknown path is complete
when it ended properly or its last event is any dialect's terminal one. An `event: error`
or `event: response.failed` anywhere means the answer failed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from provider_cache.core.rejections import CUT_SHORT, INCOMPLETE, STREAM_ERROR

DONE = b"[DONE]"
#: Events after which a provider sends nothing more of substance, as they look on the wire.
TERMINAL_EVENTS: tuple[bytes, ...] = (
    b"data: [DONE]",  # OpenAI and every OpenAI-compatible provider
    b"event: message_stop",  # Anthropic Messages
    b"event: response.completed",  # OpenAI Responses
    b"event: response.incomplete",  # (cut by max_output_tokens: a successful answer)
    b"event: message-end",  # Cohere v2
)
#: Events that say the answer failed, wherever in the stream they come.
FAILURE_EVENTS: tuple[bytes, ...] = (b"event: error", b"event: response.failed")

_FAILURE_NAMES = frozenset(e.removeprefix(b"event: ") for e in FAILURE_EVENTS)


@dataclass(frozen=True)
class Dialect:
    """How one provider's stream ends."""

    name: str
    #: Path endings (without the query) that speak it.
    paths: tuple[str, ...]
    #: Event names whose arrival, as the last event, ends the answer.
    terminal_names: frozenset[bytes] = frozenset()
    #: Whether a last event whose data is `[DONE]` ends it.
    done_data: bool = False
    #: Gemini: the stream ends properly and its last event carries a finishReason.
    finish_reason: bool = False
    #: Whether a stream that ended properly is complete without a terminal event.
    ended_suffices: bool = False

    def is_terminal(self, name: bytes, data: list[bytes]) -> bool:
        if name in self.terminal_names or (self.done_data and data == [DONE]):
            return True
        return self.finish_reason and _carries_finish_reason(data)


DIALECTS: tuple[Dialect, ...] = (
    Dialect("openai-chat", ("/completions",), done_data=True),
    Dialect(
        "openai-responses",
        ("/responses",),
        frozenset({b"response.completed", b"response.incomplete"}),
    ),
    Dialect("anthropic", ("/messages",), frozenset({b"message_stop"})),
    Dialect("cohere", ("/v2/chat",), frozenset({b"message-end"})),
    Dialect("gemini", (":streamGenerateContent",), finish_reason=True),
)
#: A path of no known dialect: any terminal event, or a proper end.
GENERIC = Dialect(
    "generic",
    (),
    frozenset(e.removeprefix(b"event: ") for e in TERMINAL_EVENTS[1:]),
    done_data=True,
    ended_suffices=True,
)


def dialect_for(path: str) -> Dialect:
    """The dialect of the answer to a request for `path` (query ignored)."""
    bare = path.partition("?")[0]
    return next((d for d in DIALECTS if bare.endswith(d.paths)), GENERIC)


def _carries_finish_reason(data: list[bytes]) -> bool:
    """A Gemini chunk (`{"candidates": [{"finishReason": "STOP", …}]}`) that ends the answer."""
    try:
        chunk = json.loads(b"\n".join(data))
    except ValueError:
        return False
    candidates = chunk.get("candidates") if isinstance(chunk, dict) else None
    return isinstance(candidates, list) and any(
        isinstance(c, dict) and c.get("finishReason") for c in candidates
    )


class EventParser:
    """SSE framing, fed in pieces: the last event, and whether one failed."""

    def __init__(self) -> None:
        self.partial = b""
        self.name = b""
        self.data: list[bytes] = []
        #: The last complete event: its name and data lines.
        self.last: tuple[bytes, list[bytes]] | None = None
        self.failed = False

    def feed(self, chunk: bytes) -> None:
        lines = (self.partial + chunk).split(b"\n")
        self.partial = lines.pop()
        for line in lines:
            self._line(line.removesuffix(b"\r"))

    def end(self) -> None:
        """The stream ended: a last line without its newline, and an event without its
        blank line, still count. Calling it again changes nothing."""
        if self.partial:
            self._line(self.partial.removesuffix(b"\r"))
            self.partial = b""
        self._dispatch()

    @property
    def mid_event(self) -> bool:
        """Whether bytes of an event that has not ended are held."""
        return bool(self.partial or self.name or self.data)

    def _line(self, line: bytes) -> None:
        if not line:
            self._dispatch()
        elif not line.startswith(b":"):  # a comment otherwise (keep-alive pings)
            field, _, value = line.partition(b":")
            value = value.removeprefix(b" ")
            if field == b"event":
                self.name = value
            elif field == b"data":
                self.data.append(value)

    def _dispatch(self) -> None:
        if not self.name and not self.data:
            return
        if self.name in _FAILURE_NAMES:
            self.failed = True
        self.last = (self.name, self.data)
        self.name, self.data = b"", []


class SSEChecker:
    """The completeness rule of one dialect, fed the stream's decoded bytes."""

    def __init__(self, dialect: Dialect = GENERIC) -> None:
        self.dialect = dialect
        self.events = EventParser()

    def feed(self, chunk: bytes) -> None:
        self.events.feed(chunk)

    def verdict(self, ended: bool) -> str | None:
        """None when complete; else why not. `ended`: the stream ended properly."""
        events = self.events
        if ended:
            events.end()
        if events.failed:
            return STREAM_ERROR
        if ended and self.dialect.ended_suffices:
            return None
        if not ended and events.mid_event:
            return CUT_SHORT  # even after a terminal event: the stored bytes end mid-event
        if self._last_is_terminal() and (ended or not self.dialect.finish_reason):
            return None
        return INCOMPLETE if ended else CUT_SHORT

    def _last_is_terminal(self) -> bool:
        last = self.events.last
        return last is not None and self.dialect.is_terminal(*last)
