"""Content-coded streams decoded chunk by chunk for their check (SPEC §4)."""

from __future__ import annotations

import gzip
import sys
import zlib

import brotli
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from provider_cache.core.rejections import CUT_SHORT, STREAM_ERROR, TOO_LARGE, UNDECODABLE
from provider_cache.core.streamdecode import DecodeError, Overflow, decoder_for
from provider_cache.core.streaming import recorder_for
from tests.support import fake_formats as fake

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd

BODY = b"".join(fake.sse({"choices": [{"delta": {"content": f"w{n} "}}]}) for n in range(200))
BODY += b"data: [DONE]\n\n"


def raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


ENCODERS = {
    "gzip": gzip.compress,
    "x-gzip": gzip.compress,
    "deflate": zlib.compress,  # zlib-wrapped, as RFC 9110 says
    "deflate-raw": raw_deflate,  # as some servers send it
    "br": brotli.compress,
    "zstd": zstd.compress,
}
#: Codings whose streams may follow one another (gzip members, zstd frames): the parts.
MEMBERS = {
    "gzip-members": ("gzip", lambda d: [gzip.compress(d[:100]), gzip.compress(d[100:])]),
    "gzip-three-members": (
        "gzip",
        lambda d: [gzip.compress(d[i : i + 700]) for i in range(0, len(d), 700)],
    ),
    "zstd-frames": ("zstd", lambda d: [zstd.compress(d[:100]), zstd.compress(d[100:])]),
}
CONCATENATED = {
    name: (coding, lambda d, parts=parts: b"".join(parts(d)))
    for name, (coding, parts) in MEMBERS.items()
}


def coding_of(name: str) -> str:
    return "deflate" if name == "deflate-raw" else name


def decode(coding: str, pieces: list[bytes], limit: int = 1 << 24) -> bytes:
    decoder = decoder_for(coding, limit)
    assert decoder is not None
    return b"".join(decoder.decode(piece) for piece in pieces)


def split(data: bytes, points: list[float]) -> list[bytes]:
    cuts = sorted({round(p * len(data)) for p in points})
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


@pytest.mark.parametrize("name", ENCODERS)
def test_each_coding_decodes_whole_and_byte_by_byte(name: str) -> None:
    encoded = ENCODERS[name](BODY)
    assert decode(coding_of(name), [encoded]) == BODY
    assert decode(coding_of(name), [bytes([b]) for b in encoded]) == BODY


@pytest.mark.parametrize("name", CONCATENATED)
def test_streams_back_to_back_decode_as_one(name: str) -> None:
    coding, encode = CONCATENATED[name]
    encoded = encode(BODY)
    assert decode(coding, [encoded]) == BODY
    assert decode(coding, [bytes([b]) for b in encoded]) == BODY


@pytest.mark.parametrize("name", MEMBERS)
def test_a_chunk_that_ends_exactly_at_a_stream_end_is_followed_by_the_next(name: str) -> None:
    """zstd raised EOFError (not a DecodeError) when a new frame came after a frame's end."""
    coding, parts = MEMBERS[name]
    assert decode(coding, parts(BODY)) == BODY


@settings(max_examples=200, deadline=None)
@given(
    name=st.sampled_from([*ENCODERS, *CONCATENATED]),
    points=st.lists(st.floats(0.0, 1.0), max_size=10),
)
def test_any_split_decodes_to_the_same_bytes(name: str, points: list[float]) -> None:
    if name in CONCATENATED:
        coding, encode = CONCATENATED[name]
    else:
        coding, encode = coding_of(name), ENCODERS[name]
    assert decode(coding, split(encode(BODY), points)) == BODY


@pytest.mark.parametrize(
    ("encoding", "expected"),
    [("", None), ("identity", None), (" Identity ", None), ("GZIP", "gzip"), (" br ", "br")],
)
def test_identity_needs_no_decoder_and_names_are_read_loosely(
    encoding: str, expected: str | None
) -> None:
    decoder = decoder_for(encoding, 100)
    assert (decoder is None) is (expected is None)


@pytest.mark.parametrize("encoding", ["compress", "gzip, br", "gzip,gzip", "snappy", "x"])
def test_a_coding_not_understood_is_a_decode_error(encoding: str) -> None:
    with pytest.raises(DecodeError, match="not understood"):
        decoder_for(encoding, 100)


@pytest.mark.parametrize(
    ("coding", "garbage"),
    [
        ("gzip", b"not gzip at all"),
        ("gzip", gzip.compress(b"ok") + b"trailing garbage"),
        ("deflate", b"\xff\xff\xff\xff"),
        ("br", b"\xff\xff\xff\xff not brotli"),
        ("zstd", b"not zstd at all"),
        ("br", brotli.compress(b"ok") + b"more"),
    ],
)
def test_bytes_that_do_not_decode_are_a_decode_error(coding: str, garbage: bytes) -> None:
    with pytest.raises(DecodeError):
        decode(coding, [garbage])


def test_decode_error_and_overflow_are_value_errors() -> None:
    assert issubclass(DecodeError, ValueError) and issubclass(Overflow, ValueError)


@pytest.mark.parametrize("name", ENCODERS)
def test_a_body_that_decodes_to_exactly_the_limit_is_allowed(name: str) -> None:
    encoded = ENCODERS[name](BODY)
    assert decode(coding_of(name), [encoded], limit=len(BODY)) == BODY


@pytest.mark.parametrize("name", [*ENCODERS, *CONCATENATED])
def test_one_byte_over_the_limit_is_an_overflow(name: str) -> None:
    if name in CONCATENATED:
        coding, encode = CONCATENATED[name]
    else:
        coding, encode = coding_of(name), ENCODERS[name]
    with pytest.raises(Overflow):
        decode(coding, [encode(BODY)], limit=len(BODY) - 1)


@pytest.mark.parametrize("name", ENCODERS)
def test_a_compression_bomb_stops_at_the_limit(name: str) -> None:
    """16 MiB of zeros in a few KiB: decoding stops just past the limit, not at 16 MiB."""
    bomb = ENCODERS[name](bytes(16 << 20))
    decoder = decoder_for(coding_of(name), 1 << 20)
    assert decoder is not None
    with pytest.raises(Overflow):
        decoder.decode(bomb)
    assert decoder.size <= 2 << 20


# --- through the recorder: the check reads the decoded stream ----------------------------------

PATH = "/v1/chat/completions"


def record(encoding: str, chunks: list[bytes], ended: bool, limit: int = 1 << 24) -> str | None:
    recorder = recorder_for("text/event-stream", encoding, PATH, limit)
    assert recorder is not None
    for chunk in chunks:
        recorder(chunk)
    if ended:
        recorder(b"")
    return recorder.rejection(connection_closed_early=not ended)


@pytest.mark.parametrize("name", [*ENCODERS, "gzip-members"])
def test_an_encoded_complete_stream_is_complete(name: str) -> None:
    coding, encode = CONCATENATED.get(name, (coding_of(name), ENCODERS.get(name)))
    encoded = encode(BODY)  # type: ignore[misc]
    assert record(coding, split(encoded, [0.1, 0.5, 0.9]), ended=True) is None
    assert record(coding, [encoded], ended=False) is None  # the SDK hung up after [DONE]


@pytest.mark.parametrize("name", ENCODERS)
def test_an_encoded_stream_cut_before_its_end_is_cut_short(name: str) -> None:
    compressor = ENCODERS[name](BODY[: len(BODY) // 2])
    assert record(coding_of(name), [compressor], ended=False) == CUT_SHORT


def test_an_encoded_error_event_is_a_stream_error() -> None:
    body = fake.sse({"error": {"message": "x"}}, "error") + b"data: [DONE]\n\n"
    assert record("gzip", [gzip.compress(body)], ended=True) == STREAM_ERROR


def test_an_encoded_stream_that_does_not_decode_is_undecodable() -> None:
    assert record("gzip", [b"data: [DONE]\n\n"], ended=True) == UNDECODABLE
    assert record("compress", [b"data: [DONE]\n\n"], ended=True) == UNDECODABLE


def test_an_encoded_stream_that_decodes_past_the_limit_is_too_large() -> None:
    encoded = gzip.compress(BODY)
    assert len(encoded) < 4096 < len(BODY)
    assert record("gzip", [encoded], ended=True, limit=4096) == TOO_LARGE
