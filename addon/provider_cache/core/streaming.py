"""Recording a streamed answer while it flows through to the client (SPEC §4).

mitmproxy calls the recorder with every chunk as it arrives and with b"" at the end; it
keeps a copy and returns the chunk unchanged, so the client sees each token live. As the
chunks pass, the checker of the answer's wire format follows its framing (never a
substring search over the body), so that at the end the recorder can say whether the
copy is the whole answer and a success — and if not, why (core/rejections.py):

    text/event-stream                    core/sse.py         (the dialect by the path)
    application/vnd.amazon.eventstream   core/eventstream.py (the Bedrock operation by the path)
    application/x-ndjson                 core/ndjson.py
    …:streamGenerateContent, JSON        core/jsonarray.py   (Gemini without `alt=sse`)

A content-encoded stream is decoded for its checker as it passes (core/streamdecode.py).
Each chunk's arrival is kept too, in seconds from the recorder's start (the answer's
headers): the offsets a paced replay follows (SPEC §4, Timing).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from provider_cache.core.eventstream import EventStreamChecker, operation_for
from provider_cache.core.jsonarray import JSONArrayChecker
from provider_cache.core.ndjson import NDJSONChecker
from provider_cache.core.rejections import CUT_SHORT, TOO_LARGE, UNDECODABLE
from provider_cache.core.sse import (
    FAILURE_EVENTS,
    TERMINAL_EVENTS,
    EventParser,
    SSEChecker,
    dialect_for,
)
from provider_cache.core.streamdecode import DecodeError, Overflow, StreamDecoder, decoder_for

__all__ = [
    "FAILURE_EVENTS",
    "TERMINAL_EVENTS",
    "Checker",
    "EventParser",
    "StreamRecorder",
    "checker_for",
    "is_event_stream",
    "is_streamed",
    "recorder_for",
]

EVENT_STREAM = "text/event-stream"
AWS_EVENT_STREAM = "application/vnd.amazon.eventstream"
NDJSON_TYPES = ("application/x-ndjson", "application/ndjson")
#: Gemini's streaming method; without `alt=sse` it answers a JSON array, in pieces.
GEMINI_STREAM = ":streamGenerateContent"


class Checker(Protocol):
    """One wire format's completeness rule, fed the decoded chunks as they pass."""

    def feed(self, chunk: bytes) -> None: ...

    def verdict(self, ended: bool) -> str | None:
        """None when the answer is complete; else a reason of core/rejections.py.
        `ended`: the stream ended properly (not cut, the client did not hang up)."""
        ...


def _mime(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def is_event_stream(content_type: str) -> bool:
    return _mime(content_type) == EVENT_STREAM


def checker_for(content_type: str, path: str) -> Checker | None:
    """The checker of a streamed answer to a request for `path`; None when the answer is
    not a stream (it is buffered and stored whole)."""
    mime = _mime(content_type)
    if mime == EVENT_STREAM:
        return SSEChecker(dialect_for(path))
    if mime == AWS_EVENT_STREAM:
        return EventStreamChecker(operation_for(path))
    if mime in NDJSON_TYPES:
        return NDJSONChecker()
    if mime == "application/json" and path.partition("?")[0].endswith(GEMINI_STREAM):
        return JSONArrayChecker()
    return None


def is_streamed(content_type: str, path: str) -> bool:
    """Whether an answer of this type to this path is streamed (and kept as chunks)."""
    return checker_for(content_type, path) is not None


def recorder_for(
    content_type: str,
    content_encoding: str,
    path: str,
    max_size: int,
    clock: Callable[[], float] = time.monotonic,
) -> StreamRecorder | None:
    """The tee for a streamed answer; None when the answer is not a stream."""
    checker = checker_for(content_type, path)
    if checker is None:
        return None
    return StreamRecorder(max_size, checker, content_encoding, clock)


class StreamRecorder:
    """The tee mitmproxy calls as `flow.response.stream`; made when the headers arrive."""

    def __init__(
        self,
        max_size: int,
        checker: Checker | None = None,
        encoding: str = "",
        clock: Callable[[], float] = time.monotonic,
    ):
        self.max_size = max_size
        self.chunks: list[bytes] = []
        #: Each chunk's arrival, in seconds since the recorder was made.
        self.offsets: list[float] = []
        self.clock = clock
        self.started = clock()
        self.size = 0
        self.ended = False
        self.overflow = False
        self.checker: Checker = checker if checker is not None else SSEChecker()
        self.undecodable = False
        self.decoder: StreamDecoder | None = None
        try:
            self.decoder = decoder_for(encoding, max_size)
        except DecodeError:
            self.undecodable = True

    def __call__(self, chunk: bytes) -> bytes:
        if not chunk:
            self.ended = True
        elif not self.overflow:
            self.size += len(chunk)
            if self.size > self.max_size:
                self._overflowed()
            else:
                self.chunks.append(chunk)
                self.offsets.append(self.clock() - self.started)
                self._check(chunk)
        return chunk

    def _overflowed(self) -> None:
        self.overflow = True
        self.chunks, self.offsets = [], []

    def _check(self, chunk: bytes) -> None:
        if self.undecodable:
            return
        if self.decoder is not None:
            try:
                chunk = self.decoder.decode(chunk)
            except Overflow:
                self._overflowed()
                return
            except DecodeError:
                self.undecodable = True
                return
        self.checker.feed(chunk)

    def rejection(self, connection_closed_early: bool) -> str | None:
        """Why the recorded chunks may not be stored (core/rejections.py); None when they
        are the whole answer, and a success."""
        if self.overflow:
            return TOO_LARGE
        if self.undecodable:
            return UNDECODABLE
        return self.checker.verdict(self.ended and not connection_closed_early)

    def transport_rejection(self, connection_closed_early: bool) -> str | None:
        """Why the chunks are not the whole answer as sent, whatever its format says: too
        large, a content coding that does not decode, or not ended properly. For an
        answer recorded although its format calls it a failure (cache_record_errors)."""
        if self.overflow:
            return TOO_LARGE
        if self.undecodable:
            return UNDECODABLE
        return None if self.ended and not connection_closed_early else CUT_SHORT

    def complete(self, connection_closed_early: bool) -> bool:
        return self.rejection(connection_closed_early) is None
