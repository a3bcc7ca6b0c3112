"""AWS event streams (SPEC §4): frames, their CRCs, and Bedrock's completeness rules.

Frames are built by the fake provider's encoder (tests/support/fake_formats.py) and read
back by botocore's own decoder, so that the checker is held to what the SDK accepts.
"""

from __future__ import annotations

import base64
import json
import struct
import zlib
from functools import partial

import pytest
from botocore.eventstream import EventStreamBuffer, ParserError
from hypothesis import given, settings
from hypothesis import strategies as st

from provider_cache.core.eventstream import (
    CONVERSE,
    INVOKE,
    MAX_HEADERS,
    EventStreamChecker,
    operation_for,
    parse_headers,
)
from provider_cache.core.rejections import CUT_SHORT, INCOMPLETE, STREAM_ERROR, UNDECODABLE
from tests.support import fake_formats as fake
from tests.support.checkers import CUTS, SPLITS, assert_any_split_agrees, cases, verdict_of

CONVERSE_PATH = "/model/anthropic.claude-3-haiku-20240307-v1:0/converse-stream"
INVOKE_PATH = "/model/anthropic.claude-3-haiku-20240307-v1:0/invoke-with-response-stream"
OTHER_PATH = "/model/x/other-stream"


def converse(fault: str = "") -> list[bytes]:
    return fake.converse_stream("what is a cache", "a store of answers", fault)


def invoke(fault: str = "") -> list[bytes]:
    return fake.invoke_stream(1, "claude", "what is a cache", "a store of answers", fault)


def chunk_frame(model_event: object) -> bytes:
    """An InvokeModelWithResponseStream `chunk`: the model's event, base64 in JSON."""
    encoded = base64.b64encode(json.dumps(model_event).encode()).decode()
    return fake.event_frame("chunk", {"bytes": encoded})


def verdict(path: str, chunks: list[bytes], ended: bool) -> str | None:
    return verdict_of(EventStreamChecker(operation_for(path)), chunks, ended)


def with_prelude_crc_flipped(frame: bytes) -> bytes:
    damaged = bytearray(frame)
    damaged[8] ^= 0x01
    return bytes(damaged)


def raw_frame(total: int, headers_length: int, rest: bytes = b"") -> bytes:
    """A prelude with a good CRC over lengths no frame can have, then `rest`."""
    prelude = struct.pack(">II", total, headers_length)
    return prelude + struct.pack(">I", zlib.crc32(prelude)) + rest


ERROR_FRAME = fake.frame(
    {":message-type": "error", ":error-code": "InternalFailure", ":error-message": "boom"}, b""
)
METADATA = converse()[-1]
FIRST = converse()[0]

# (id, path, frames, ended, verdict); ended = the stream ended properly.
TABLE: list[tuple[str, str, list[bytes], bool, str | None]] = [
    # ConverseStream: complete with its `metadata` event
    ("converse-complete", CONVERSE_PATH, converse(), True, None),
    ("converse-early-close-after-metadata", CONVERSE_PATH, converse(), False, None),
    ("converse-no-metadata", CONVERSE_PATH, converse("no-terminal"), True, INCOMPLETE),
    ("converse-cut-before-metadata", CONVERSE_PATH, converse("no-terminal"), False, CUT_SHORT),
    (
        "converse-cut-mid-frame",
        CONVERSE_PATH,
        [*converse()[:2], converse()[2][:20]],
        False,
        CUT_SHORT,
    ),
    (
        "converse-ended-mid-frame",
        CONVERSE_PATH,
        [*converse()[:2], converse()[2][:20]],
        True,
        CUT_SHORT,
    ),
    ("converse-cut-mid-prelude", CONVERSE_PATH, [FIRST, METADATA[:7]], False, CUT_SHORT),
    ("converse-metadata-then-part", CONVERSE_PATH, [*converse(), FIRST[:30]], False, CUT_SHORT),
    ("converse-metadata-not-last", CONVERSE_PATH, [*converse(), FIRST], True, INCOMPLETE),
    ("converse-exception-frame", CONVERSE_PATH, converse("exception-frame"), True, STREAM_ERROR),
    (
        "converse-exception-then-cut",
        CONVERSE_PATH,
        converse("exception-frame"),
        False,
        STREAM_ERROR,
    ),
    (
        "converse-exception-after-end",
        CONVERSE_PATH,
        [*converse(), fake.exception_frame()],
        True,
        STREAM_ERROR,
    ),
    ("converse-error-frame", CONVERSE_PATH, [FIRST, ERROR_FRAME], True, STREAM_ERROR),
    ("converse-bad-message-crc", CONVERSE_PATH, converse("bad-crc"), True, UNDECODABLE),
    ("converse-bad-message-crc-cut", CONVERSE_PATH, converse("bad-crc")[:3], False, UNDECODABLE),
    (
        "converse-bad-prelude-crc",
        CONVERSE_PATH,
        [FIRST, with_prelude_crc_flipped(METADATA)],
        True,
        UNDECODABLE,
    ),
    (
        "converse-bad-prelude-crc-seen-before-the-frame-is-whole",
        CONVERSE_PATH,
        [FIRST, with_prelude_crc_flipped(METADATA)[:12]],
        False,
        UNDECODABLE,
    ),
    ("converse-nothing-ended", CONVERSE_PATH, [], True, INCOMPLETE),
    ("converse-nothing-cut", CONVERSE_PATH, [], False, CUT_SHORT),
    ("converse-frame-too-short", CONVERSE_PATH, [raw_frame(15, 0, b"\0" * 3)], True, UNDECODABLE),
    ("converse-headers-past-frame", CONVERSE_PATH, [raw_frame(20, 5)], False, UNDECODABLE),
    (
        "converse-headers-too-long",
        CONVERSE_PATH,
        [raw_frame(1 << 20, MAX_HEADERS + 1)],
        False,
        UNDECODABLE,
    ),
    ("converse-frame-too-long", CONVERSE_PATH, [raw_frame(1 << 30, 0)], False, UNDECODABLE),
    # InvokeModelWithResponseStream: the model's terminal event
    ("invoke-complete", INVOKE_PATH, invoke(), True, None),
    ("invoke-early-close", INVOKE_PATH, invoke(), False, None),
    ("invoke-no-stop", INVOKE_PATH, invoke("no-terminal"), True, INCOMPLETE),
    ("invoke-cut", INVOKE_PATH, invoke("no-terminal"), False, CUT_SHORT),
    ("invoke-exception", INVOKE_PATH, invoke("exception-frame"), True, STREAM_ERROR),
    ("invoke-bad-crc", INVOKE_PATH, invoke("bad-crc"), True, UNDECODABLE),
    (
        "invoke-stop-without-metrics",
        INVOKE_PATH,
        [chunk_frame({"type": "message_stop"})],
        False,
        None,
    ),
    (
        "invoke-metrics-of-another-model",
        INVOKE_PATH,
        [chunk_frame({"outputText": "hi", "amazon-bedrock-invocationMetrics": {}})],
        False,
        None,
    ),
    (
        "invoke-a-delta-last",
        INVOKE_PATH,
        [chunk_frame({"type": "content_block_delta"})],
        True,
        INCOMPLETE,
    ),
    (
        "invoke-stop-quoted-in-text",
        INVOKE_PATH,
        [chunk_frame({"type": "content_block_delta", "delta": {"text": '"type": "message_stop"'}})],
        False,
        CUT_SHORT,
    ),
    (
        "invoke-not-base64",
        INVOKE_PATH,
        [fake.event_frame("chunk", {"bytes": "!!"})],
        True,
        INCOMPLETE,
    ),
    ("invoke-no-bytes", INVOKE_PATH, [fake.event_frame("chunk", {"b": "e30="})], True, INCOMPLETE),
    ("invoke-model-event-a-list", INVOKE_PATH, [chunk_frame(["message_stop"])], True, INCOMPLETE),
    (
        "invoke-stop-in-another-event",
        INVOKE_PATH,
        [fake.event_frame("other", {"type": "message_stop"})],
        True,
        INCOMPLETE,
    ),
    ("invoke-metadata-is-not-its-end", INVOKE_PATH, [METADATA], True, INCOMPLETE),
    # Another event stream: ended properly on a frame boundary
    ("other-ended", OTHER_PATH, converse("no-terminal"), True, None),
    ("other-cut", OTHER_PATH, converse(), False, CUT_SHORT),
    ("other-nothing-ended", OTHER_PATH, [], True, None),
    ("other-mid-frame", OTHER_PATH, [FIRST[:-1]], True, CUT_SHORT),
    ("other-exception", OTHER_PATH, [fake.exception_frame()], True, STREAM_ERROR),
]


@pytest.mark.parametrize(("path", "frames", "ended", "expected"), cases(TABLE))
def test_verdict(path: str, frames: list[bytes], ended: bool, expected: str | None) -> None:
    assert verdict(path, frames, ended) == expected


@pytest.mark.parametrize("fault", ["", "no-terminal", "exception-frame"])
@pytest.mark.parametrize("stream", [converse, invoke], ids=["converse", "invoke"])
def test_the_fake_frames_are_what_botocore_decodes(stream, fault: str) -> None:
    """The table's frames are real: botocore reads each one with its CRCs checked."""
    frames = stream(fault)
    buffer = EventStreamBuffer()
    buffer.add_data(b"".join(frames))
    messages = list(buffer)
    assert len(messages) == len(frames)
    kinds = [m.headers[":message-type"] for m in messages]
    assert kinds[-1] == ("exception" if fault == "exception-frame" else "event")


def test_botocore_refuses_the_bad_crc_stream_the_checker_calls_undecodable() -> None:
    buffer = EventStreamBuffer()
    buffer.add_data(b"".join(converse("bad-crc")))
    with pytest.raises(ParserError):
        list(buffer)


def test_a_header_that_does_not_parse_makes_the_stream_undecodable() -> None:
    head = b"\x05:type\x0b"  # type 11 does not exist
    assert (
        verdict(CONVERSE_PATH, [fake.frame({}, b""), frame_with_headers(head)], True) == UNDECODABLE
    )


def test_nothing_after_a_broken_frame_is_trusted() -> None:
    checker = EventStreamChecker(CONVERSE)
    checker.feed(converse("bad-crc")[2])
    checker.feed(METADATA)
    assert (checker.verdict(True), checker.frames) == (UNDECODABLE, 0)


def test_frames_are_dropped_once_checked() -> None:
    """Only a frame not yet whole is held: memory does not grow with the stream."""
    checker = EventStreamChecker(CONVERSE)
    for frame in converse():
        checker.feed(frame)
    assert (checker.frames, len(checker.buffer)) == (len(converse()), 0)
    checker.feed(FIRST[:5])
    assert len(checker.buffer) == 5


@pytest.mark.parametrize(
    ("path", "operation"),
    [
        (CONVERSE_PATH, CONVERSE),
        (INVOKE_PATH, INVOKE),
        (CONVERSE_PATH + "?x=1", CONVERSE),
        (
            "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Ainference-profile%2Fus.x/converse-stream",
            CONVERSE,
        ),
        ("/model/m/converse", ""),
        ("/model/m/invoke", ""),
        ("/model/m/xconverse-stream", ""),
        ("/x?next=/converse-stream", ""),
        ("", ""),
    ],
)
def test_operation_for(path: str, operation: str) -> None:
    assert operation_for(path) == operation


# --- headers ----------------------------------------------------------------------------------


def header(name: str, kind: int, value: bytes) -> bytes:
    return bytes([len(name)]) + name.encode() + bytes([kind]) + value


def frame_with_headers(head: bytes, payload: bytes = b"") -> bytes:
    total = 12 + len(head) + len(payload) + 4
    prelude = struct.pack(">II", total, len(head))
    message = prelude + struct.pack(">I", zlib.crc32(prelude)) + head + payload
    return message + struct.pack(">I", zlib.crc32(message))


EVERY_TYPE = b"".join(
    [
        header("t", 0, b""),
        header("f", 1, b""),
        header("b", 2, b"\x07"),
        header("s", 3, b"\x00\x08"),
        header("i", 4, b"\x00\x00\x00\x09"),
        header("l", 5, b"\x00" * 7 + b"\x0a"),
        header("bytes", 6, b"\x00\x02\xff\xfe"),
        header(":event-type", 7, b"\x00\x08metadata"),
        header("ts", 8, b"\x00" * 8),
        header("uuid", 9, b"\x01" * 16),
    ]
)


def test_headers_of_every_type_parse() -> None:
    headers = parse_headers(EVERY_TYPE)
    assert headers["t"] is True and headers["f"] is False
    assert (headers["b"], headers["s"], headers["i"]) == (b"\x07", b"\x00\x08", b"\x00\x00\x00\x09")
    assert (headers["bytes"], headers[":event-type"]) == (b"\xff\xfe", "metadata")
    assert (len(headers["l"]), len(headers["ts"]), len(headers["uuid"])) == (8, 8, 16)  # type: ignore[arg-type]


def test_a_frame_with_headers_of_every_type_is_checked_as_botocore_reads_it() -> None:
    frame = frame_with_headers(EVERY_TYPE + header(":message-type", 7, b"\x00\x05event"))
    buffer = EventStreamBuffer()
    buffer.add_data(frame)
    [message] = list(buffer)
    assert message.headers[":event-type"] == "metadata"
    assert verdict(CONVERSE_PATH, [frame], False) is None


@pytest.mark.parametrize(
    "raw",
    [
        b"\x05:type",  # a name without its type
        b"\x05:ty",  # a name cut short
        header("s", 7, b"\x00"),  # a string without its whole length
        header("s", 7, b"\x00\x09abc"),  # a string past the headers
        header("l", 5, b"\x00" * 4),  # a long cut short
        header("x", 10, b""),  # no such type
        b"\x01\xff\x07\x00\x00",  # a name not UTF-8
    ],
)
def test_headers_that_do_not_parse_raise_value_error(raw: bytes) -> None:
    with pytest.raises(ValueError):
        parse_headers(raw)


# --- any split of the same bytes gives the same verdict ----------------------------------------

STREAMS = [
    (CONVERSE_PATH, b"".join(converse())),
    (CONVERSE_PATH, b"".join(converse("exception-frame"))),
    (CONVERSE_PATH, b"".join(converse("bad-crc"))),
    (INVOKE_PATH, b"".join(invoke())),
    (OTHER_PATH, b"".join(converse())),
]


@settings(max_examples=300, deadline=None)
@given(stream=st.sampled_from(STREAMS), cut=CUTS, splits=SPLITS, ended=st.booleans())
def test_any_split_gives_the_verdict_of_one_chunk(
    stream: tuple[str, bytes], cut: float, splits: list[float], ended: bool
) -> None:
    path, whole = stream
    assert_any_split_agrees(partial(verdict, path), whole, cut, splits, ended)


@settings(max_examples=300, deadline=None)
@given(position=st.floats(0.0, 1.0, exclude_max=True), flip=st.integers(1, 255))
def test_any_byte_changed_is_undecodable_as_botocore_finds(position: float, flip: int) -> None:
    """A CRC32 catches every single-byte change; the checker and botocore agree on it."""
    whole = bytearray(b"".join(converse()))
    whole[int(position * len(whole))] ^= flip
    assert verdict(CONVERSE_PATH, [bytes(whole)], True) == UNDECODABLE
    buffer = EventStreamBuffer()
    buffer.add_data(bytes(whole))
    with pytest.raises(ParserError):
        list(buffer)
