"""Recording a server-sent-event stream while it flows through to the client (SPEC §4).

mitmproxy calls the recorder with every chunk as it arrives and with b"" at the
end; it keeps a copy and returns the chunk unchanged, so the client sees each
token live. A stream counts as complete when it ended properly, or when its
terminal event arrived before the client hung up (the openai SDK closes the
connection as soon as it reads `data: [DONE]`).
"""

from __future__ import annotations

#: Events after which a provider sends nothing more of substance.
TERMINAL_EVENTS: tuple[bytes, ...] = (
    b"data: [DONE]",  # OpenAI and every OpenAI-compatible provider
    b"event: message_stop",  # Anthropic Messages
    b"event: response.completed",  # OpenAI Responses
    b"event: response.incomplete",
    b"event: message-end",  # Cohere v2
)
_TAIL = 512


def is_event_stream(content_type: str) -> bool:
    return content_type.split(";", 1)[0].strip().lower() == "text/event-stream"


class StreamRecorder:
    """The tee mitmproxy calls as `flow.response.stream`."""

    def __init__(self, max_size: int):
        self.max_size = max_size
        self.chunks: list[bytes] = []
        self.size = 0
        self.ended = False
        self.overflow = False

    def __call__(self, chunk: bytes) -> bytes:
        if not chunk:
            self.ended = True
        elif not self.overflow:
            self.size += len(chunk)
            if self.size > self.max_size:
                self.overflow = True
                self.chunks = []
            else:
                self.chunks.append(chunk)
        return chunk

    def saw_terminal_event(self) -> bool:
        tail = b"".join(self.chunks[-8:])[-_TAIL:]
        return any(event in tail for event in TERMINAL_EVENTS)

    def complete(self, connection_closed_early: bool) -> bool:
        """Whether the recorded chunks are the whole answer."""
        if self.overflow:
            return False
        if self.ended and not connection_closed_early:
            return True
        return self.saw_terminal_event()
