"""Canonical bodies: JSON canonicalisation, boundary stripping, content decoding, multipart."""

from __future__ import annotations

import gzip
import json
import sys
import tracemalloc
import zlib
from collections.abc import Callable

import brotli
import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from provider_cache.core.bodies import (
    TooLarge,
    canonical_body,
    canonical_json,
    canonical_multipart,
    decode_content,
    form_secret_values,
    is_form_type,
    is_json_type,
    redact_form,
    strip_boundary,
)

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd


# --- canonical_json --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        # key order and white space
        (b'{"b":1,"a":2}', b'{"a":2,"b":1}'),
        (b' {\n\t"b" : 1 ,\r\n "a" : 2 } ', b'{"a":2,"b":1}'),
        (b'{"b":1,"B":2,"a":3,"_":4}', b'{"B":2,"_":4,"a":3,"b":1}'),
        (
            b'{"z":{"y":[{"b":1,"a":2}],"x":{}},"a":[]}',
            b'{"a":[],"z":{"x":{},"y":[{"a":2,"b":1}]}}',
        ),
        (b"[3, 1, 2]", b"[3,1,2]"),
        (b"[ ]", b"[]"),
        (b"{ }", b"{}"),
        # numbers exactly as written
        (b"1", b"1"),
        (b"1.0", b"1.0"),
        (b"1.50", b"1.50"),
        (b"-0", b"-0"),
        (b"1e400", b"1e400"),
        (b"1E5", b"1E5"),
        (b"1e-7", b"1e-7"),
        (b"123456789012345678901234567890", b"123456789012345678901234567890"),
        (b"0.1000000000000000055511151231257827", b"0.1000000000000000055511151231257827"),
        (b"[NaN,Infinity,-Infinity]", b"[NaN,Infinity,-Infinity]"),
        # literals
        (b"[true,false,null]", b"[true,false,null]"),
        # duplicate keys kept, in their order
        (b'{"a":1,"a":2}', b'{"a":1,"a":2}'),
        (b'{"a":2,"a":1}', b'{"a":2,"a":1}'),
        (b'{"b":0,"a":2,"b":1,"a":1}', b'{"a":2,"a":1,"b":0,"b":1}'),
        # string escapes: one canonical spelling
        (b'"\\u00e9"', '"é"'.encode()),
        ('"é"'.encode(), '"é"'.encode()),
        (b'"\\/"', b'"/"'),
        (b'"\\ud83d\\ude00"', '"😀"'.encode()),
        (b'"a\\nb\\t\\"\\\\"', b'"a\\nb\\t\\"\\\\"'),
        (b'"\\u0000\\u001f"', b'"\\u0000\\u001f"'),
        (b'{"\\u0041":1}', b'{"A":1}'),
        (b'"\\u2028"', '"\u2028"'.encode()),
        # encodings JSON allows
        (b'\xef\xbb\xbf{"a":1}', b'{"a":1}'),
        ('{"a":"é"}'.encode("utf-16"), '{"a":"é"}'.encode()),
    ],
)
def test_canonical_json(source: bytes, expected: bytes) -> None:
    assert canonical_json(source) == expected


@pytest.mark.parametrize(
    "source",
    [
        b"",
        b" ",
        b"{",
        b"}",
        b"nope",
        b'{"a":1,}',
        b"[1,]",
        b"{'a':1}",
        b'{"a":1} x',
        b"\xff",
        b'"\xff"',
        b'"\\ud800"',  # lone surrogate cannot be written back as UTF-8
        b'"\\x"',
        b"[" * 100_000,
        b"[" * 100_000 + b"]" * 100_000,
    ],
)
def test_canonical_json_of_non_json_is_none(source: bytes) -> None:
    assert canonical_json(source) is None


def test_canonical_json_is_idempotent() -> None:
    once = canonical_json(b'{"b":[1.0,{"d":null,"c":"\\u00e9"}],"a":1e3}')
    assert once == '{"a":1e3,"b":[1.0,{"c":"é","d":null}]}'.encode()
    assert canonical_json(once) == once


json_leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
json_values = st.recursive(
    json_leaves,
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=5), c, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_property_canonical_json_means_the_same_value(value: object) -> None:
    canonical = canonical_json(json.dumps(value, indent=2).encode())
    assert canonical is not None
    assert json.loads(canonical) == json.loads(json.dumps(value))
    assert (
        canonical
        == json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    )
    assert canonical_json(canonical) == canonical


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_property_canonical_json_never_raises(data: bytes) -> None:
    result = canonical_json(data)
    assert result is None or isinstance(result, bytes)


# --- is_json_type / strip_boundary -----------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ("application/json", True),
        ("Application/JSON", True),
        ("application/json; charset=utf-8", True),
        (" application/json ;charset=utf-8", True),
        ("application/vnd.api+json", True),
        ("application/problem+json", True),
        ("text/json", False),
        ("application/jsonl", False),
        ("application/x-ndjson", False),
        ("text/plain", False),
        ("", False),
    ],
)
def test_is_json_type(content_type: str, expected: bool) -> None:
    assert is_json_type(content_type) is expected


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ("multipart/form-data; boundary=abc123", "multipart/form-data"),
        ("multipart/form-data;boundary=abc123", "multipart/form-data"),
        ("multipart/form-data;  boundary=abc123", "multipart/form-data"),
        ('multipart/form-data; boundary="a;b c"', "multipart/form-data"),
        ("multipart/form-data; BOUNDARY=abc", "multipart/form-data"),
        ("multipart/form-data; boundary=abc; charset=utf-8", "multipart/form-data; charset=utf-8"),
        ("multipart/mixed; charset=utf-8; boundary=x", "multipart/mixed; charset=utf-8"),
        ("multipart/form-data", "multipart/form-data"),
        ("application/json", "application/json"),
        ("application/json; charset=utf-8", "application/json; charset=utf-8"),
    ],
)
def test_strip_boundary(content_type: str, expected: str) -> None:
    assert strip_boundary(content_type) == expected


# --- decode_content --------------------------------------------------------------------------

PAYLOAD = b'{"model":"m","messages":[{"role":"user","content":"' + b"hello " * 50 + b'"}]}'


def _raw_deflate(data: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


ENCODERS: list[tuple[str, Callable[[bytes], bytes]]] = [
    ("gzip", gzip.compress),
    ("GZIP", gzip.compress),
    (" gzip ", gzip.compress),
    ("deflate", zlib.compress),
    ("deflate", _raw_deflate),
    ("br", brotli.compress),
    ("zstd", zstd.compress),
    ("identity", lambda d: d),
    ("Identity", lambda d: d),
    ("", lambda d: d),
]


@pytest.mark.parametrize(("encoding", "encode"), ENCODERS)
def test_decode_content(encoding: str, encode: Callable[[bytes], bytes]) -> None:
    encoded = encode(PAYLOAD)
    assert decode_content(encoded, encoding) == PAYLOAD
    assert decode_content(encode(b""), encoding) == b""


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "zstd"])
@pytest.mark.parametrize(
    "garbage",
    [b"garbage", b"\x00" * 16, b"\x1f\x8b\x08\x00broken", b"\x28\xb5\x2f\xfd\x00"],
    ids=["text", "zeros", "gzip-magic", "zstd-magic"],
)
def test_decode_content_of_garbage_is_none(encoding: str, garbage: bytes) -> None:
    assert decode_content(garbage, encoding) is None


@pytest.mark.parametrize(
    ("encoding", "encode"),
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("br", brotli.compress),
        ("zstd", zstd.compress),
    ],
)
def test_decode_content_of_truncated_stream_is_none(
    encoding: str, encode: Callable[[bytes], bytes]
) -> None:
    # A cut-off stream is not the body that was sent: a prefix of it must not pass for it.
    encoded = encode(PAYLOAD)
    for cut in (len(encoded) // 2, len(encoded) - 1):
        assert decode_content(encoded[:cut], encoding) is None, cut


@pytest.mark.parametrize("encoding", ["x-unknown", "gzip, br", "compress", "aes128gcm"])
def test_decode_content_of_unknown_encoding_is_none(encoding: str) -> None:
    assert decode_content(gzip.compress(PAYLOAD), encoding) is None


@pytest.mark.parametrize("encoding", ["utf-8", "latin-1", "rot13", "idna", "base64", "hex"])
def test_decode_content_returns_bytes_or_none_for_any_encoding_name(encoding: str) -> None:
    # Python codec names are not HTTP content codings; whatever is done with them, the
    # result type is the documented bytes | None and nothing is raised.
    result = decode_content(b"aGVsbG8=", encoding)
    assert result is None or isinstance(result, bytes)


@settings(max_examples=200, deadline=None)
@given(
    body=st.binary(max_size=64),
    encoding=st.sampled_from(["gzip", "deflate", "br", "zstd", "identity", "nope"]),
)
def test_property_decode_content_never_raises(body: bytes, encoding: str) -> None:
    result = decode_content(body, encoding)
    assert result is None or isinstance(result, bytes)


# --- canonical_multipart / canonical_body ----------------------------------------------------


def _form(boundary: bytes, *parts: bytes) -> bytes:
    return b"".join(b"--" + boundary + b"\r\n" + p + b"\r\n" for p in parts) + (
        b"--" + boundary + b"--\r\n"
    )


FILE_PART = (
    b'Content-Disposition: form-data; name="file"; filename="a.bin"\r\n'
    b"Content-Type: application/octet-stream\r\n\r\n\x00\x01\xff"
)
FIELD_PART = b'Content-Disposition: form-data; name="purpose"\r\n\r\nbatch'


def test_canonical_multipart_lists_parts_in_order() -> None:
    body = _form(b"xyz", FIELD_PART, FILE_PART)
    parts = msgpack.unpackb(canonical_multipart(body, "multipart/form-data; boundary=xyz"))
    assert parts == [
        ["purpose", "", "text/plain", b"batch"],
        ["file", "a.bin", "application/octet-stream", b"\x00\x01\xff"],
    ]


def test_canonical_multipart_decodes_transfer_encoding() -> None:
    b64 = (
        b'Content-Disposition: form-data; name="file"; filename="a.bin"\r\n'
        b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\nAAH/"
    )
    ct = "multipart/form-data; boundary=q"
    assert canonical_multipart(_form(b"q", b64), ct) == canonical_multipart(
        _form(b"q", FILE_PART), ct
    )


def test_canonical_multipart_rfc2231_names() -> None:
    encoded = b"Content-Disposition: form-data; name*=utf-8''caf%C3%A9\r\n\r\nv"
    plain = 'Content-Disposition: form-data; name="café"\r\n\r\nv'.encode()
    ct = "multipart/form-data; boundary=q"
    parts = msgpack.unpackb(canonical_multipart(_form(b"q", encoded), ct))
    assert parts[0][0] == "café"
    assert canonical_multipart(_form(b"q", encoded), ct) == canonical_multipart(
        _form(b"q", plain), ct
    )


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (_form(b"xyz", FIELD_PART), "multipart/form-data"),  # no boundary parameter
        (_form(b"xyz", FIELD_PART), "multipart/form-data; boundary=other"),  # wrong boundary
        (_form(b"xyz", FIELD_PART)[:-9], "multipart/form-data; boundary=xyz"),  # no close
        (b"not multipart at all", "multipart/form-data; boundary=xyz"),
        (b"", "multipart/form-data; boundary=xyz"),
    ],
    ids=["no-boundary", "wrong-boundary", "unterminated", "text", "empty"],
)
def test_canonical_multipart_of_malformed_body_is_none(body: bytes, content_type: str) -> None:
    assert canonical_multipart(body, content_type) is None


@pytest.mark.parametrize(
    ("body", "headers", "expected"),
    [
        (b'{ "a" : 1 }', {"content-type": "application/json"}, (b'{"a":1}', "json")),
        (b"{ bad", {"content-type": "application/json"}, (b"{ bad", "raw")),
        (b'{ "a" : 1 }', {}, (b'{ "a" : 1 }', "raw")),
        (b'{ "a" : 1 }', {"content-type": "text/plain"}, (b'{ "a" : 1 }', "raw")),
        (
            gzip.compress(b'{ "a" : 1 }'),
            {"content-type": "application/json", "content-encoding": "gzip"},
            (b'{"a":1}', "json"),
        ),
        (b"junk", {"content-encoding": "gzip"}, (b"junk", "raw-encoded")),
        (
            b"junk",
            {"content-type": "application/json", "content-encoding": "br"},
            (b"junk", "raw-encoded"),
        ),
        (b"abc", {"content-type": "multipart/form-data; boundary=x"}, (b"abc", "raw")),
    ],
)
def test_canonical_body(body: bytes, headers: dict[str, str], expected: tuple[bytes, str]) -> None:
    assert canonical_body(body, headers) == expected


def test_canonical_body_multipart_kind() -> None:
    body = _form(b"xyz", FIELD_PART)
    canonical, kind = canonical_body(body, {"content-type": "multipart/form-data; boundary=xyz"})
    assert kind == "multipart"
    assert canonical == canonical_multipart(body, "multipart/form-data; boundary=xyz")
    assert b"xyz" not in canonical


def _bomb(coding: str, size: int) -> bytes:
    """`size` zero bytes in a coding, compressed a MiB at a time (never held decoded)."""
    block = b"\0" * (1 << 20)
    if coding in ("gzip", "deflate"):
        packer = zlib.compressobj(
            9, zlib.DEFLATED, 16 + zlib.MAX_WBITS if coding == "gzip" else zlib.MAX_WBITS
        )
        return b"".join(packer.compress(block) for _ in range(size >> 20)) + packer.flush()
    if coding == "br":
        packer_br = brotli.Compressor(quality=1)
        return b"".join(packer_br.process(block) for _ in range(size >> 20)) + packer_br.finish()
    packer_zstd = zstd.ZstdCompressor()
    return b"".join(packer_zstd.compress(block) for _ in range(size >> 20)) + packer_zstd.flush()


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br", "zstd"])
def test_a_compression_bomb_stops_at_the_limit_without_inflating(coding: str) -> None:
    """256 MiB of zeros in a few hundred KB: the decoder stops at the limit, memory stays small."""
    bomb = _bomb(coding, 256 << 20)
    assert len(bomb) < 2 << 20
    tracemalloc.start()
    try:
        with pytest.raises(TooLarge):
            decode_content(bomb, coding, limit=1 << 20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br", "zstd"])
def test_a_body_within_the_limit_decodes_whole(coding: str) -> None:
    body = _bomb(coding, 2 << 20)
    assert decode_content(body, coding, limit=2 << 20) == b"\0" * (2 << 20)
    with pytest.raises(TooLarge):
        decode_content(body, coding, limit=(2 << 20) - 1)


def test_a_request_bomb_is_keyed_by_its_encoded_bytes() -> None:
    bomb = _bomb("gzip", 128 << 20)
    body, kind = canonical_body(
        bomb, {"content-encoding": "gzip", "content-type": "application/json"}
    )
    assert (body, kind) == (bomb, "raw-encoded")


# --- form bodies -----------------------------------------------------------------------------

#: The secret form fields of these tests (the real predicate is KeyRules.is_form_secret).
SECRET_FORM_FIELDS = frozenset({"client_secret", "api_key"})
is_secret_form_field = SECRET_FORM_FIELDS.__contains__


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ("application/x-www-form-urlencoded", True),
        ("Application/X-WWW-Form-Urlencoded; charset=utf-8", True),
        ("multipart/form-data; boundary=x", False),
        ("application/json", False),
        ("text/plain", False),
        ("", False),
    ],
)
def test_is_form_type(content_type: str, expected: bool) -> None:
    assert is_form_type(content_type) is expected


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        # only the secret values change, every other byte (order, escapes, +) as sent
        (b"b=2&client_secret=s3&a=1", b"b=2&client_secret=%3Credacted%3E&a=1"),
        (b"q=a+b%2Fc&api_key=k%2B1", b"q=a+b%2Fc&api_key=%3Credacted%3E"),
        # a name is matched decoded
        (b"client%5Fsecret=s3", b"client%5Fsecret=%3Credacted%3E"),
        # every occurrence of a repeated field
        (b"api_key=1&api_key=2", b"api_key=%3Credacted%3E&api_key=%3Credacted%3E"),
        # an empty value or a bare name holds nothing to hide
        (b"client_secret=&api_key&x=1", b"client_secret=&api_key&x=1"),
        # no secret field: the body itself
        (
            b"grant_type=client_credentials&client_id=app",
            b"grant_type=client_credentials&client_id=app",
        ),
        (b"not a form at all", b"not a form at all"),
        (b"", b""),
        # undecodable bytes stay as sent
        (b"n=\xff&client_secret=\xfe", b"n=\xff&client_secret=%3Credacted%3E"),
    ],
)
def test_redact_form(body: bytes, expected: bytes) -> None:
    assert redact_form(body, is_secret_form_field) == expected


def test_redact_form_returns_a_body_without_secrets_as_the_same_object() -> None:
    """What keeps the key of such a body as it was, and costs no copy."""
    body = b"grant_type=client_credentials&client_id=app"
    assert redact_form(body, is_secret_form_field) is body


def test_redact_form_is_idempotent() -> None:
    """A stored (redacted) request keys as the request that was sent."""
    once = redact_form(b"a=1&client_secret=s3", is_secret_form_field)
    assert redact_form(once, is_secret_form_field) == once


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"client_secret=s3cr3t%2Bvalue&a=1", {"client_secret": ["s3cr3t+value"]}),
        (b"api_key=with+space", {"api_key": ["with space"]}),
        (b"api_key=1&api_key=2", {"api_key": ["1", "2"]}),
        (b"client%5Fsecret=s3", {"client_secret": ["s3"]}),
        (b"client_secret=&api_key", {}),
        (b"grant_type=client_credentials", {}),
        # as sent: UTF-8 decoded, escaped or not; an undecodable byte a lone surrogate
        ("api_key=sécret".encode(), {"api_key": ["sécret"]}),
        (b"api_key=s%C3%A9cret", {"api_key": ["sécret"]}),
        (b"api_key=s\xffcret", {"api_key": ["s\udcffcret"]}),
    ],
)
def test_form_secret_values(body: bytes, expected: dict[str, list[str]]) -> None:
    assert form_secret_values(body, is_secret_form_field) == expected


@pytest.mark.parametrize(
    ("body", "content_type", "form_secret", "expected"),
    [
        (
            b"client_secret=s3&a=1",
            "application/x-www-form-urlencoded",
            is_secret_form_field,
            b"client_secret=%3Credacted%3E&a=1",
        ),
        # no predicate (the key's callers always give one): as sent
        (
            b"client_secret=s3&a=1",
            "application/x-www-form-urlencoded",
            None,
            b"client_secret=s3&a=1",
        ),
        # another content type: as sent, even when it reads like a form
        (b"client_secret=s3&a=1", "text/plain", is_secret_form_field, b"client_secret=s3&a=1"),
    ],
)
def test_canonical_body_of_a_form(
    body: bytes, content_type: str, form_secret: Callable[[str], bool] | None, expected: bytes
) -> None:
    assert canonical_body(body, {"content-type": content_type}, None, form_secret) == (
        expected,
        "raw",
    )
