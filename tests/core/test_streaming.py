"""Teeing a server-sent-event stream (SPEC §4): the client sees every chunk, we keep a copy."""

from __future__ import annotations

import pytest

from provider_cache.core.rejections import CUT_SHORT, STREAM_ERROR, TOO_LARGE, UNDECODABLE
from provider_cache.core.streaming import (
    FAILURE_EVENTS,
    TERMINAL_EVENTS,
    StreamRecorder,
    is_event_stream,
    recorder_for,
)

OPENAI = [b'data: {"choices":[{"delta":{"content":"Hel"}}]}\n\n', b"data: [DONE]\n\n"]
ANTHROPIC = [
    b'event: content_block_delta\ndata: {"delta":{"text":"Hi"}}\n\n',
    b'event: message_stop\ndata: {"type":"message_stop"}\n\n',
]
CUT = [b'data: {"choices":[{"delta":{"content":"Hel"}}]}\n\n']


def feed(recorder: StreamRecorder, chunks: list[bytes], end: bool) -> None:
    for chunk in chunks:
        recorder(chunk)
    if end:
        recorder(b"")  # mitmproxy's call at the end of the stream


# --- the tee ---------------------------------------------------------------------------------


def test_tee_returns_each_chunk_unchanged_and_keeps_a_copy() -> None:
    recorder = StreamRecorder(max_size=1 << 20)
    for chunk in OPENAI:
        assert recorder(chunk) is chunk
    assert recorder.chunks == OPENAI
    assert recorder.size == sum(map(len, OPENAI))
    assert recorder.ended is False


def test_empty_chunk_marks_the_end_and_is_passed_on() -> None:
    recorder = StreamRecorder(max_size=1 << 20)
    recorder(b"data: 1\n\n")
    assert recorder(b"") == b""
    assert recorder.ended is True
    assert recorder.chunks == [b"data: 1\n\n"]  # the end is not a chunk


def test_stream_of_exactly_the_maximum_size_is_kept() -> None:
    recorder = StreamRecorder(max_size=10)
    feed(recorder, [b"12345", b"67890"], end=True)
    assert recorder.overflow is False
    assert recorder.chunks == [b"12345", b"67890"]
    assert recorder.complete(connection_closed_early=False) is True


def test_overflow_drops_the_copy_but_still_passes_every_chunk_on() -> None:
    recorder = StreamRecorder(max_size=10)
    assert recorder(b"12345") == b"12345"
    assert recorder(b"678901") == b"678901"  # 11 bytes: over
    assert recorder.overflow is True
    assert recorder.chunks == []
    assert recorder(b"data: [DONE]\n\n") == b"data: [DONE]\n\n"
    assert recorder.chunks == []  # nothing more is kept after an overflow


@pytest.mark.parametrize("closed_early", [False, True])
def test_an_overflowed_stream_is_never_complete(closed_early: bool) -> None:
    recorder = StreamRecorder(max_size=8)
    feed(recorder, OPENAI, end=True)
    assert recorder.overflow is True
    assert recorder.complete(connection_closed_early=closed_early) is False


# --- complete() ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("chunks", "ended", "closed_early", "complete"),
    [
        (OPENAI, True, False, True),
        (CUT, True, False, True),  # ended properly: whatever came is the whole answer
        ([], True, False, True),
        (OPENAI, True, True, True),  # the SDK hung up after [DONE]
        (ANTHROPIC, False, True, True),
        (OPENAI, False, False, True),  # the terminal event arrived; the end is a formality
        (CUT, True, True, False),  # cut off before the terminal event
        (CUT, False, True, False),
        (CUT, False, False, False),
        ([], False, True, False),
    ],
    ids=[
        "ended",
        "ended-without-terminal-event",
        "ended-empty",
        "terminal-then-hang-up",
        "anthropic-terminal-then-hang-up",
        "terminal-not-ended",
        "ended-but-hung-up-early",
        "cut",
        "cut-not-ended",
        "nothing",
    ],
)
def test_complete(chunks: list[bytes], ended: bool, closed_early: bool, complete: bool) -> None:
    recorder = StreamRecorder(max_size=1 << 20)
    feed(recorder, chunks, end=ended)
    assert recorder.complete(connection_closed_early=closed_early) is complete


@pytest.mark.parametrize("event", TERMINAL_EVENTS)
def test_every_terminal_event_completes_a_stream_the_client_hung_up_on(event: bytes) -> None:
    recorder = StreamRecorder(max_size=1 << 20)
    feed(recorder, [b'data: {"x": 1}\n\n', event + b"\n\n"], end=False)
    assert recorder.complete(connection_closed_early=True) is True


def test_terminal_event_split_across_chunks_is_seen() -> None:
    recorder = StreamRecorder(max_size=1 << 20)
    feed(recorder, [b'data: {"x": 1}\n\nda', b"ta: [DO", b"NE]\n\n"], end=False)
    assert recorder.complete(connection_closed_early=True) is True


def test_terminal_event_followed_by_much_more_text_is_not_the_end() -> None:
    """Only the tail counts: an early `[DONE]` inside a long answer does not end it."""
    recorder = StreamRecorder(max_size=1 << 20)
    feed(recorder, [b"data: [DONE]\n\n", *[b'data: {"more": 1}\n\n'] * 50], end=False)
    assert recorder.complete(connection_closed_early=True) is False


def test_stream_without_a_terminal_event_name_is_not_seen_as_ended() -> None:
    recorder = StreamRecorder(max_size=1 << 20)
    feed(recorder, [b"event: message_start\n\n", b"data: DONE\n\n"], end=False)
    assert recorder.complete(connection_closed_early=True) is False


# --- is_event_stream -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ("text/event-stream", True),
        ("text/event-stream; charset=utf-8", True),
        ("TEXT/Event-Stream;charset=UTF-8", True),
        ("  text/event-stream  ; x=1", True),
        ("text/event-stream;", True),
        ("application/json", False),
        ("", False),
        ("text/event-streams", False),
        ("text/plain; profile=text/event-stream", False),
        ("application/x-ndjson", False),
    ],
)
def test_is_event_stream(content_type: str, expected: bool) -> None:
    assert is_event_stream(content_type) is expected


def test_a_terminal_event_quoted_in_the_text_is_not_the_end() -> None:
    """Parsed, not searched: an answer that *says* `data: [DONE]` and is then cut off."""
    recorder = StreamRecorder(max_size=1 << 20)
    quoted = (
        b'data: {"delta": "the stream ends with\\ndata: [DONE]\\n\\n and event: message_stop"}\n\n'
    )
    feed(recorder, [b'data: {"x": 1}\n\n', quoted], end=False)
    assert recorder.complete(connection_closed_early=True) is False


def test_a_terminal_line_inside_a_multi_line_event_is_not_the_end() -> None:
    recorder = StreamRecorder(max_size=1 << 20)
    feed(recorder, [b"data: first line\ndata: [DONE]\n\n"], end=False)
    assert recorder.complete(connection_closed_early=True) is False


@pytest.mark.parametrize("failure", FAILURE_EVENTS)
@pytest.mark.parametrize("ended", [True, False])
def test_a_failure_event_is_never_complete(failure: bytes, ended: bool) -> None:
    recorder = StreamRecorder(max_size=1 << 20)
    feed(
        recorder,
        [b'data: {"x": 1}\n\n', failure + b'\ndata: {"error": {}}\n\n', *OPENAI],
        end=ended,
    )
    assert recorder.complete(connection_closed_early=not ended) is False


def test_crlf_line_endings_and_comments_are_understood() -> None:
    recorder = StreamRecorder(max_size=1 << 20)
    feed(recorder, [b": ping\r\n\r\n", b"event: message_stop\r\ndata: {}\r\n\r\n"], end=False)
    assert recorder.complete(connection_closed_early=True) is True


def test_a_last_event_without_its_blank_line_counts_when_the_stream_ends() -> None:
    recorder = StreamRecorder(max_size=1 << 20)
    feed(recorder, [b'data: {"x": 1}\n\n', b"event: error\ndata: {}"], end=True)
    assert recorder.complete(connection_closed_early=False) is False


# --- chunk offsets (SPEC §4, Timing) -----------------------------------------------------------


class Clock:
    """A clock the test moves by hand: offsets without sleeping."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_each_chunk_keeps_its_offset_from_the_recorders_start() -> None:
    clock = Clock()
    recorder = StreamRecorder(max_size=1 << 20, clock=clock)  # made as the headers arrive
    chunks = [b"data: 1\n\n", b"data: 2\n\n", b"data: [DONE]\n\n"]
    for delay, chunk in zip([0.25, 0.5, 1.0], chunks, strict=True):
        clock.now += delay
        recorder(chunk)
    clock.now += 3
    recorder(b"")  # the end is no chunk: no offset
    assert recorder.offsets == [0.25, 0.75, 1.75]
    assert len(recorder.offsets) == len(recorder.chunks)


def test_recorder_for_passes_the_clock_on() -> None:
    clock = Clock(5.0)
    recorder = recorder_for("text/event-stream", "", "/v1/chat/completions", 1 << 20, clock)
    assert recorder is not None
    clock.now = 7.5
    recorder(b"data: [DONE]\n\n")
    assert recorder.offsets == [2.5]


def test_an_overflow_drops_the_offsets_with_the_chunks() -> None:
    clock = Clock()
    recorder = StreamRecorder(max_size=10, clock=clock)
    feed(recorder, [b"12345", b"678901", b"x"], end=True)
    assert recorder.chunks == [] and recorder.offsets == []


# --- transport_rejection: the answer as sent, whatever its format says ------------------------

ERROR_EVENT = [b'data: {"x": 1}\n\n', b'event: error\ndata: {"message": "overloaded"}\n\n']


@pytest.mark.parametrize(
    ("ended", "closed_early", "expected"),
    [
        (True, False, None),
        (False, False, CUT_SHORT),
        (True, True, CUT_SHORT),
        (False, True, CUT_SHORT),
    ],
)
def test_transport_rejection_is_about_the_end_not_the_format(ended, closed_early, expected) -> None:
    recorder = StreamRecorder(max_size=1 << 20)
    feed(recorder, ERROR_EVENT, end=ended)
    assert recorder.rejection(closed_early) == STREAM_ERROR  # the format: a failure
    assert recorder.transport_rejection(closed_early) == expected


def test_transport_rejection_names_overflow_and_undecodable_codings() -> None:
    big = StreamRecorder(max_size=4)
    feed(big, ERROR_EVENT, end=True)
    assert big.transport_rejection(False) == TOO_LARGE
    garbled = StreamRecorder(max_size=1 << 20, encoding="gzip")
    feed(garbled, [b"not gzip at all"], end=True)
    assert garbled.transport_rejection(False) == UNDECODABLE
    unknown = StreamRecorder(max_size=1 << 20, encoding="compress")
    assert unknown.transport_rejection(False) == UNDECODABLE
