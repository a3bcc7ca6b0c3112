"""Recording a server-sent-event stream while it flows through to the client (SPEC §4).

mitmproxy calls the recorder with every chunk as it arrives and with b"" at the end; it
keeps a copy and returns the chunk unchanged, so the client sees each token live. The
copy is parsed into events as it passes (lines, `event:` and `data:` fields, a blank
line ending each event), never searched for substrings: an answer whose *text* says
`data: [DONE]` is not a terminal event.

A stream is complete when it ended properly (dialects without a terminal event, such as
Gemini's) or when its last event was a terminal one before the client hung up (the
openai SDK closes the connection as soon as it reads `data: [DONE]`); never when an
event said the answer failed (`event: error`, `response.failed`).
"""

from __future__ import annotations

#: Events after which a provider sends nothing more of substance, as they look on the wire.
TERMINAL_EVENTS: tuple[bytes, ...] = (
    b"data: [DONE]",  # OpenAI and every OpenAI-compatible provider
    b"event: message_stop",  # Anthropic Messages
    b"event: response.completed",  # OpenAI Responses
    b"event: response.incomplete",
    b"event: message-end",  # Cohere v2
)
#: Events that say the answer failed, wherever in the stream they come.
FAILURE_EVENTS: tuple[bytes, ...] = (b"event: error", b"event: response.failed")

_TERMINAL_NAMES = frozenset(e.removeprefix(b"event: ") for e in TERMINAL_EVENTS[1:])
_FAILURE_NAMES = frozenset(e.removeprefix(b"event: ") for e in FAILURE_EVENTS)
_DONE = b"[DONE]"


def is_event_stream(content_type: str) -> bool:
    return content_type.split(";", 1)[0].strip().lower() == "text/event-stream"


class EventParser:
    """SSE framing, fed in pieces: which kind of event came last, and whether one failed."""

    def __init__(self) -> None:
        self.partial = b""
        self.name = b""
        self.data: list[bytes] = []
        self.last_was_terminal = False
        self.failed = False

    def feed(self, chunk: bytes) -> None:
        lines = (self.partial + chunk).split(b"\n")
        self.partial = lines.pop()
        for line in lines:
            self._line(line.removesuffix(b"\r"))

    def end(self) -> None:
        """The stream ended: a last line without its newline, and an event without its
        blank line, still count."""
        if self.partial:
            self._line(self.partial.removesuffix(b"\r"))
            self.partial = b""
        self._dispatch()

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
        self.last_was_terminal = self.name in _TERMINAL_NAMES or self.data == [_DONE]
        self.name, self.data = b"", []


class StreamRecorder:
    """The tee mitmproxy calls as `flow.response.stream`."""

    def __init__(self, max_size: int):
        self.max_size = max_size
        self.chunks: list[bytes] = []
        self.size = 0
        self.ended = False
        self.overflow = False
        self.events = EventParser()

    def __call__(self, chunk: bytes) -> bytes:
        if not chunk:
            self.ended = True
            self.events.end()
        elif not self.overflow:
            self.size += len(chunk)
            if self.size > self.max_size:
                self.overflow = True
                self.chunks = []
            else:
                self.chunks.append(chunk)
                self.events.feed(chunk)
        return chunk

    def saw_terminal_event(self) -> bool:
        """Whether the last complete event was a terminal one."""
        return self.events.last_was_terminal

    def complete(self, connection_closed_early: bool) -> bool:
        """Whether the recorded chunks are the whole answer, and a success."""
        if self.overflow or self.events.failed:
            return False
        if self.ended and not connection_closed_early:
            return True
        return self.saw_terminal_event()
