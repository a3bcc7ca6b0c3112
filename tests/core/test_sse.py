"""Server-sent events (SPEC §4): the framing parser and each dialect's completeness rule."""

from __future__ import annotations

import json
from functools import partial

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from provider_cache.core.rejections import CUT_SHORT, INCOMPLETE, STREAM_ERROR
from provider_cache.core.sse import GENERIC, EventParser, SSEChecker, dialect_for
from tests.support import fake_formats as fake
from tests.support.checkers import (
    CUTS,
    SPLITS,
    assert_any_split_agrees,
    byte_by_byte,
    cases,
    verdict_of,
)

CHAT = "/v1/chat/completions"
RESPONSES = "/v1/responses"
MESSAGES = "/v1/messages"
COHERE = "/v2/chat"
GEMINI = "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse"
UNKNOWN = "/v1/something/else"


def verdict(path: str, chunks: list[bytes], ended: bool) -> str | None:
    return verdict_of(SSEChecker(dialect_for(path)), chunks, ended)


def delta(text: str) -> bytes:
    return fake.sse({"choices": [{"delta": {"content": text}}]})


def anthropic(name: str, **data: object) -> bytes:
    return fake.sse({"type": name, **data}, name)


def responses(fault: str = "") -> list[bytes]:
    return fake.responses_stream(1, "gpt-4o", "hi there", "hello to you", fault)


def gemini(finish: bool = True) -> list[bytes]:
    return [
        fake.sse(fake.gemini_chunk(1, "gemini", "Hel", False)),
        fake.sse(fake.gemini_chunk(1, "gemini", "lo", finish, "hi")),
    ]


OPENAI_OK = [delta("Hel"), delta("lo"), b"data: [DONE]\n\n"]
ANTHROPIC_OK = [
    anthropic("message_start", message={"id": "msg_1"}),
    b"event: ping\ndata: {}\n\n",
    anthropic("content_block_delta", delta={"text": "Hi"}),
    anthropic("message_stop"),
]
COHERE_OK = [
    fake.sse({"type": "content-delta", "delta": {"message": {"content": {"text": "Hi"}}}}),
    fake.sse({"type": "message-end", "delta": {"finish_reason": "COMPLETE"}}, "message-end"),
]
ERROR_EVENT = fake.sse({"type": "error", "error": {"type": "overloaded_error"}}, "error")
QUOTED = delta("a stream ends with\ndata: [DONE]\n\nor event: message_stop\n\n")

# (id, path, chunks, ended, verdict): ended = the stream ended properly (not cut, the client
# did not hang up first).
TABLE: list[tuple[str, str, list[bytes], bool, str | None]] = [
    # OpenAI chat (and every OpenAI-compatible provider)
    ("chat-complete", CHAT, OPENAI_OK, True, None),
    ("chat-early-close-after-done", CHAT, OPENAI_OK, False, None),
    ("chat-no-done", CHAT, OPENAI_OK[:-1], True, INCOMPLETE),
    ("chat-cut-before-done", CHAT, OPENAI_OK[:-1], False, CUT_SHORT),
    ("chat-cut-mid-line", CHAT, [delta("Hel"), b'data: {"choi'], False, CUT_SHORT),
    ("chat-cut-mid-event", CHAT, [delta("Hel"), b'data: {"x":1}\n'], False, CUT_SHORT),
    ("chat-cut-mid-done-line", CHAT, [delta("Hel"), b"data: [DO"], False, CUT_SHORT),
    ("chat-ended-mid-done-line", CHAT, [delta("Hel"), b"data: [DO"], True, INCOMPLETE),
    ("chat-done-without-blank-line-ended", CHAT, [delta("a"), b"data: [DONE]"], True, None),
    ("chat-done-without-blank-line-cut", CHAT, [delta("a"), b"data: [DONE]\n"], False, CUT_SHORT),
    ("chat-error-event", CHAT, [delta("a"), ERROR_EVENT, b"data: [DONE]\n\n"], True, STREAM_ERROR),
    ("chat-quoted-terminal-cut", CHAT, [delta("a"), QUOTED], False, CUT_SHORT),
    ("chat-quoted-terminal-ended", CHAT, [delta("a"), QUOTED], True, INCOMPLETE),
    ("chat-done-then-more", CHAT, [b"data: [DONE]\n\n", delta("more")], False, CUT_SHORT),
    ("chat-done-then-partial-event", CHAT, [*OPENAI_OK, b"data: {"], False, CUT_SHORT),
    ("chat-done-then-comment", CHAT, [*OPENAI_OK, b": keep-alive\n\n"], False, None),
    ("chat-done-in-a-second-data-line", CHAT, [b"data: x\ndata: [DONE]\n\n"], False, CUT_SHORT),
    ("chat-done-named-event", CHAT, [b"event: done\ndata: [DONE]\n\n"], False, None),
    ("chat-crlf", CHAT, [b"data: {}\r\n\r\ndata: [DONE]\r\n\r\n"], False, None),
    ("chat-nothing-ended", CHAT, [], True, INCOMPLETE),
    ("chat-nothing-cut", CHAT, [], False, CUT_SHORT),
    # OpenAI Responses
    ("responses-completed", RESPONSES, responses(), True, None),
    ("responses-completed-early-close", RESPONSES, responses(), False, None),
    ("responses-failed", RESPONSES, responses("response-failed"), True, STREAM_ERROR),
    ("responses-failed-cut", RESPONSES, responses("response-failed"), False, STREAM_ERROR),
    ("responses-error-event", RESPONSES, responses("event-error"), True, STREAM_ERROR),
    ("responses-no-terminal", RESPONSES, responses("no-terminal"), True, INCOMPLETE),
    ("responses-cut", RESPONSES, responses("no-terminal"), False, CUT_SHORT),
    (
        "responses-incomplete-is-an-answer",
        RESPONSES,
        [*responses("no-terminal"), fake.sse({"type": "x"}, "response.incomplete")],
        False,
        None,
    ),
    ("responses-done-data-is-not-its-end", RESPONSES, OPENAI_OK, False, CUT_SHORT),
    # Anthropic Messages
    ("anthropic-complete", MESSAGES, ANTHROPIC_OK, True, None),
    ("anthropic-early-close", MESSAGES, ANTHROPIC_OK, False, None),
    ("anthropic-no-stop", MESSAGES, ANTHROPIC_OK[:-1], True, INCOMPLETE),
    ("anthropic-cut", MESSAGES, ANTHROPIC_OK[:-1], False, CUT_SHORT),
    ("anthropic-error", MESSAGES, [*ANTHROPIC_OK[:2], ERROR_EVENT], True, STREAM_ERROR),
    ("anthropic-error-then-stop", MESSAGES, [ERROR_EVENT, *ANTHROPIC_OK], False, STREAM_ERROR),
    (
        "anthropic-stop-only-in-data",
        MESSAGES,
        [*ANTHROPIC_OK[:-1], b'data: {"type":"message_stop"}\n\n'],
        False,
        CUT_SHORT,
    ),
    # Cohere v2
    ("cohere-complete", COHERE, COHERE_OK, False, None),
    ("cohere-no-end", COHERE, COHERE_OK[:-1], True, INCOMPLETE),
    # Gemini alt=sse: no terminal event; a proper end and a finishReason on the last event
    ("gemini-complete", GEMINI, gemini(), True, None),
    ("gemini-finish-but-cut", GEMINI, gemini(), False, CUT_SHORT),
    ("gemini-no-finish", GEMINI, gemini(finish=False), True, INCOMPLETE),
    ("gemini-no-finish-cut", GEMINI, gemini(finish=False), False, CUT_SHORT),
    (
        "gemini-finish-not-last",
        GEMINI,
        [*reversed(gemini())],
        True,
        INCOMPLETE,
    ),
    (
        "gemini-empty-finish-reason",
        GEMINI,
        [fake.sse({"candidates": [{"finishReason": ""}]})],
        True,
        INCOMPLETE,
    ),
    ("gemini-not-json", GEMINI, [b"data: finishReason\n\n"], True, INCOMPLETE),
    ("gemini-a-list", GEMINI, [b'data: [{"finishReason": "STOP"}]\n\n'], True, INCOMPLETE),
    ("gemini-done-is-not-its-end", GEMINI, OPENAI_OK, True, INCOMPLETE),
    ("gemini-error", GEMINI, [*gemini(), ERROR_EVENT], True, STREAM_ERROR),
    # A path of no known dialect: a proper end, or any dialect's terminal event
    ("unknown-ended", UNKNOWN, [delta("a")], True, None),
    ("unknown-cut", UNKNOWN, [delta("a")], False, CUT_SHORT),
    ("unknown-done-early-close", UNKNOWN, OPENAI_OK, False, None),
    ("unknown-stop-early-close", UNKNOWN, ANTHROPIC_OK, False, None),
    ("unknown-error", UNKNOWN, [delta("a"), ERROR_EVENT], True, STREAM_ERROR),
    ("unknown-failed", UNKNOWN, responses("response-failed"), True, STREAM_ERROR),
]


@pytest.mark.parametrize(("path", "chunks", "ended", "expected"), cases(TABLE))
def test_verdict(path: str, chunks: list[bytes], ended: bool, expected: str | None) -> None:
    assert verdict(path, chunks, ended) == expected


@pytest.mark.parametrize(("path", "chunks", "ended", "expected"), cases(TABLE[:12]))
def test_verdict_byte_by_byte(
    path: str, chunks: list[bytes], ended: bool, expected: str | None
) -> None:
    assert verdict(path, byte_by_byte(chunks), ended) == expected


def test_asking_twice_gives_the_same_verdict() -> None:
    """The proxy may ask for the reason, then for complete(); end() is idempotent."""
    checker = SSEChecker(dialect_for(CHAT))
    for chunk in [delta("a"), b"data: [DONE]"]:
        checker.feed(chunk)
    assert checker.verdict(True) is None
    assert checker.verdict(True) is None


@pytest.mark.parametrize(
    ("path", "dialect"),
    [
        ("/v1/chat/completions", "openai-chat"),
        ("/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21", "openai-chat"),
        ("/v1/completions", "openai-chat"),
        ("/v1/responses", "openai-responses"),
        ("/openai/v1/responses?api-version=preview", "openai-responses"),
        ("/v1/messages", "anthropic"),
        ("/v1/messages?beta=true", "anthropic"),
        ("/v2/chat", "cohere"),
        ("/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse", "gemini"),
        ("/v1/models/gemini-pro:streamGenerateContent", "gemini"),
        ("/v1/chat", "generic"),
        ("/v1/messages/batches", "generic"),
        ("/v1/responses/resp_1/input_items", "generic"),
        ("/x?path=/v1/messages", "generic"),  # the query does not name the dialect
        ("", "generic"),
    ],
)
def test_dialect_for(path: str, dialect: str) -> None:
    assert dialect_for(path).name == dialect


def test_an_unknown_path_is_the_generic_dialect() -> None:
    assert dialect_for(UNKNOWN) is GENERIC


# --- the framing ------------------------------------------------------------------------------


def parsed(*chunks: bytes) -> EventParser:
    parser = EventParser()
    for chunk in chunks:
        parser.feed(chunk)
    return parser


def test_fields_are_parsed_as_the_sse_specification_says() -> None:
    parser = parsed(b"event:message_stop\ndata\ndata:  two spaces\nid: 7\nretry: 10\n\n")
    assert parser.last == (b"message_stop", [b"", b" two spaces"])


def test_comments_are_no_events() -> None:
    parser = parsed(b": ping\n\n:another\n\n")
    assert parser.last is None and not parser.mid_event


def test_an_event_held_until_its_blank_line() -> None:
    parser = parsed(b"data: 1\n")
    assert parser.last is None and parser.mid_event
    parser.feed(b"\n")
    assert parser.last == (b"", [b"1"]) and not parser.mid_event


def test_end_dispatches_a_last_event_without_its_blank_line_or_newline() -> None:
    parser = parsed(b"event: x\ndata: 1")
    parser.end()
    assert parser.last == (b"x", [b"1"])
    parser.end()
    assert parser.last == (b"x", [b"1"])


def test_a_failure_event_is_remembered_after_later_events() -> None:
    parser = parsed(b"event: error\ndata: {}\n\n", b"data: [DONE]\n\n")
    assert parser.failed and parser.last == (b"", [b"[DONE]"])


def test_an_error_named_only_in_data_is_no_failure_event() -> None:
    parser = parsed(b'data: {"event": "error"}\n\nevent: errors\ndata: {}\n\n')
    assert not parser.failed


# --- any split of the same bytes gives the same verdict ----------------------------------------

STREAMS = [
    (CHAT, b"".join(OPENAI_OK)),
    (CHAT, b"".join(OPENAI_OK).replace(b"\n", b"\r\n")),
    (CHAT, b"".join([delta("a"), QUOTED, b"data: [DONE]\n\n"])),
    (RESPONSES, b"".join(responses())),
    (RESPONSES, b"".join(responses("response-failed"))),
    (MESSAGES, b"".join([*ANTHROPIC_OK[:2], ERROR_EVENT, ANTHROPIC_OK[-1]])),
    (MESSAGES, b": ping\n\n" + b"".join(ANTHROPIC_OK)),
    (GEMINI, b"".join(gemini())),
    (UNKNOWN, b"".join(OPENAI_OK)),
]


@settings(max_examples=300, deadline=None)
@given(stream=st.sampled_from(STREAMS), cut=CUTS, splits=SPLITS, ended=st.booleans())
def test_any_split_gives_the_verdict_of_one_chunk(
    stream: tuple[str, bytes], cut: float, splits: list[float], ended: bool
) -> None:
    """A stream cut anywhere (or whole), fed in any pieces, is judged as fed in one."""
    path, whole = stream
    assert_any_split_agrees(partial(verdict, path), whole, cut, splits, ended)


def test_the_whole_streams_of_the_property_are_complete() -> None:
    """The property covers complete streams too, not only cut ones."""
    results = [verdict(path, [body], True) for path, body in STREAMS]
    assert results == [None, None, None, None, STREAM_ERROR, STREAM_ERROR, None, None, None]
    assert json.loads(b"".join(gemini())[6:].split(b"\n")[0])["candidates"]
