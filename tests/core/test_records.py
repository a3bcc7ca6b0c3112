"""Cache entries and their msgpack form (SPEC §4): round trips, and corrupt data is CorruptEntry."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from provider_cache.core.records import (
    SCHEMA,
    SCHEMAS,
    CorruptEntry,
    Entry,
    StoredRequest,
    StoredResponse,
    pack,
    storable_headers,
    unpack,
)

KEY = "ab" * 32


def entry(
    body: bytes = b'{"id":"chatcmpl-1"}',
    chunks: list[bytes] | None = None,
    meta: dict[str, Any] | None = None,
    offsets: list[float] | None = None,
) -> Entry:
    return Entry(
        key=KEY,
        recorded_at=1_732_579_200.123456,
        request=StoredRequest(
            method="POST",
            url="https://api.openai.com/v1/chat/completions",
            headers=[(b"content-type", b"application/json"), (b"authorization", b"<redacted>")],
            body=b'{"model":"gpt-4o-mini"}',
        ),
        response=StoredResponse(
            status=200,
            reason="OK",
            headers=[(b"content-type", b"application/json"), (b"x-request-id", b"req_1")],
            body=body,
            chunks=chunks,
            offsets=offsets,
        ),
        meta=meta if meta is not None else {},
    )


def well_typed(e: Entry) -> bool:
    """An entry shaped as the dataclasses declare it."""
    req, resp = e.request, e.response

    def headers_ok(headers: list[tuple[bytes, bytes]]) -> bool:
        return all(isinstance(k, bytes) and isinstance(v, bytes) for k, v in headers)

    return (
        isinstance(e.key, str)
        and isinstance(e.recorded_at, float)
        and isinstance(req.method, str)
        and isinstance(req.url, str)
        and headers_ok(req.headers)
        and isinstance(req.body, bytes)
        and isinstance(resp.status, int)
        and isinstance(resp.reason, str)
        and headers_ok(resp.headers)
        and isinstance(resp.body, bytes)
        and (resp.chunks is None or all(isinstance(c, bytes) for c in resp.chunks))
        and (
            resp.offsets is None
            or (
                resp.chunks is not None
                and len(resp.offsets) == len(resp.chunks)
                and all(isinstance(o, float) and 0 <= o < float("inf") for o in resp.offsets)
            )
        )
        and isinstance(e.meta, dict)
    )


# --- round trips -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "original",
    [
        entry(),
        entry(body=b""),
        entry(body=bytes(range(256)) * 4),
        entry(body=b"", chunks=[b"data: {}\n\n", b"data: [DONE]\n\n"]),
        entry(body=b"", chunks=[]),
        entry(body=b"", chunks=[b"", b"\x00\xff", b""]),
        entry(meta={"host": "api.openai.com", "n": 3, "tags": ["a", "b"], "raw": b"\x00"}),
        entry(body=b"", chunks=[b"data: 1\n\n", b"data: [DONE]\n\n"], offsets=[0.0, 1.25]),
        entry(body=b"", chunks=[], offsets=[]),
        entry(meta={"error": "error_status"}),
        Entry(
            key="k",
            recorded_at=0.0,
            request=StoredRequest("GET", "https://h/é?q=☃", [(b"x-\xff", b"\x00")], b""),
            response=StoredResponse(404, "Nicht gefunden ✓", [], b"missing"),
        ),
    ],
    ids=[
        "json",
        "empty",
        "binary",
        "chunks",
        "no-chunks",
        "odd-chunks",
        "meta",
        "offsets",
        "no-chunks-offsets",
        "error",
        "unicode",
    ],
)
def test_pack_unpack_round_trip(original: Entry) -> None:
    data = pack(original)
    assert isinstance(data, bytes)
    assert unpack(data) == original
    assert well_typed(unpack(data))
    assert pack(unpack(data)) == data


def test_chunked_response_content_is_the_join_of_its_chunks() -> None:
    chunks = [b"event: a\ndata: 1\n\n", b"event: b\ndata: 2\n\n"]
    restored = unpack(pack(entry(body=b"", chunks=chunks)))
    assert restored.response.chunks == chunks
    assert restored.response.content == b"".join(chunks)
    assert restored.response.body == b""


def test_chunks_take_precedence_over_body_when_packed() -> None:
    restored = unpack(pack(entry(body=b"stale", chunks=[b"a", b"b"])))
    assert restored.response.content == b"ab"
    assert restored.response.body == b""


def test_unchunked_content_is_the_body() -> None:
    assert unpack(pack(entry(body=b"xyz"))).response.content == b"xyz"
    assert unpack(pack(entry(body=b"xyz"))).response.chunks is None


def test_packed_form_is_plain_msgpack_with_a_schema() -> None:
    raw = msgpack.unpackb(pack(entry()))
    assert raw["schema"] == 1 and SCHEMA == 2 and SCHEMAS == (1, 2)
    assert "offsets" not in raw["response"]
    assert raw["key"] == KEY
    assert raw["response"]["status"] == 200
    assert raw["request"]["headers"][1] == [b"authorization", b"<redacted>"]


# --- schemas: chunk offsets (schema 2), and entries recorded before them (schema 1) -------


def test_a_stream_with_offsets_is_written_in_schema_2() -> None:
    raw = msgpack.unpackb(pack(entry(body=b"", chunks=[b"a", b"b"], offsets=[0.5, 2])))
    assert raw["schema"] == 2
    assert raw["response"]["offsets"] == [0.5, 2.0]


def test_entries_without_offsets_stay_in_schema_1_for_older_readers() -> None:
    """A proxy of the previous version sharing a store or remote reads them still."""
    for original in (entry(), entry(body=b"", chunks=[b"a"])):
        assert msgpack.unpackb(pack(original))["schema"] == 1


#: An entry exactly as the version before chunk offsets packed it (schema 1).
OLD_STREAM = msgpack.packb(
    {
        "schema": 1,
        "key": KEY,
        "recorded_at": 1_700_000_000.5,
        "request": {
            "method": "POST",
            "url": "https://api.openai.com/v1/chat/completions",
            "headers": [[b"content-type", b"application/json"]],
            "body": b"{}",
        },
        "response": {
            "status": 200,
            "reason": "OK",
            "headers": [[b"content-type", b"text/event-stream"]],
            "body": b"",
            "chunks": [b"data: 1\n\n", b"data: [DONE]\n\n"],
        },
        "meta": {"recorded_run": 1},
    },
    use_bin_type=True,
)


def test_an_old_schema_stream_reads_without_offsets() -> None:
    old = unpack(OLD_STREAM)
    assert old.response.chunks == [b"data: 1\n\n", b"data: [DONE]\n\n"]
    assert old.response.offsets is None  # replayed unpaced, as before
    assert pack(old) == OLD_STREAM  # and written back unchanged


def test_missing_meta_reads_as_empty() -> None:
    raw = msgpack.unpackb(pack(entry(meta={"a": 1})))
    del raw["meta"]
    assert unpack(msgpack.packb(raw, use_bin_type=True)).meta == {}


headers_st = st.lists(st.tuples(st.binary(max_size=12), st.binary(max_size=24)), max_size=5)
meta_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=8),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
    max_leaves=8,
)


@settings(max_examples=150, deadline=None)
@given(
    key=st.text(max_size=64),
    recorded_at=st.floats(allow_nan=False),
    method=st.text(max_size=8),
    url=st.text(max_size=40),
    req_headers=headers_st,
    req_body=st.binary(max_size=64),
    status=st.integers(100, 599),
    reason=st.text(max_size=20),
    resp_headers=headers_st,
    body=st.binary(max_size=64),
    chunks=st.none() | st.lists(st.binary(max_size=16), max_size=5),
    meta=st.dictionaries(st.text(max_size=8), meta_values, max_size=3),
    timed=st.booleans(),
    offset=st.floats(0, 1e6),
)
def test_property_round_trip(
    key: str,
    recorded_at: float,
    method: str,
    url: str,
    req_headers: list[tuple[bytes, bytes]],
    req_body: bytes,
    status: int,
    reason: str,
    resp_headers: list[tuple[bytes, bytes]],
    body: bytes,
    chunks: list[bytes] | None,
    meta: dict[str, Any],
    timed: bool,
    offset: float,
) -> None:
    offsets = [offset * n for n in range(len(chunks))] if timed and chunks is not None else None
    original = Entry(
        key=key,
        recorded_at=recorded_at,
        request=StoredRequest(method, url, req_headers, req_body),
        response=StoredResponse(
            status, reason, resp_headers, body if chunks is None else b"", chunks, offsets
        ),
        meta=meta,
    )
    assert unpack(pack(original)) == original


# --- corrupt data ----------------------------------------------------------------------------

GOOD = msgpack.unpackb(pack(entry(chunks=None)))


def mutated(change: Callable[[dict[str, Any]], object]) -> bytes:
    raw = copy.deepcopy(GOOD)
    change(raw)
    return msgpack.packb(raw, use_bin_type=True)


def _set(path: str, value: object) -> Callable[[dict[str, Any]], object]:
    *parents, last = path.split(".")

    def change(raw: dict[str, Any]) -> None:
        target = raw
        for p in parents:
            target = target[p]
        target[last] = value

    return change


def _del(path: str) -> Callable[[dict[str, Any]], object]:
    *parents, last = path.split(".")

    def change(raw: dict[str, Any]) -> None:
        target = raw
        for p in parents:
            target = target[p]
        del target[last]

    return change


CORRUPT: list[tuple[str, bytes]] = [
    ("empty", b""),
    ("never-used-byte", b"\xc1"),
    ("text", b"not msgpack at all"),
    ("msgpack-list", msgpack.packb([1, 2, 3])),
    ("msgpack-int", msgpack.packb(7)),
    ("msgpack-str", msgpack.packb("entry")),
    ("msgpack-bin", msgpack.packb(b"entry", use_bin_type=True)),
    ("msgpack-nil", msgpack.packb(None)),
    ("msgpack-ext", msgpack.packb(msgpack.ExtType(5, b"x"))),
    ("empty-map", msgpack.packb({})),
    ("trailing-data", pack(entry()) + b"\x00"),
    ("two-entries", pack(entry()) + pack(entry())),
    ("invalid-utf8-str", pack(entry()).replace(b"\xa2OK", b"\xa2\xff\xfe")),
    ("int-map-key", msgpack.packb({1: 2})),
    ("schema-3", mutated(_set("schema", 3))),
    ("schema-2-without-offsets", mutated(_set("schema", 2))),
    ("schema-0", mutated(_set("schema", 0))),
    ("schema-str", mutated(_set("schema", "1"))),
    ("schema-none", mutated(_set("schema", None))),
    ("request-list", mutated(_set("request", [1, 2]))),
    ("request-str", mutated(_set("request", "GET /"))),
    ("response-int", mutated(_set("response", 200))),
    ("response-none", mutated(_set("response", None))),
    ("status-str", mutated(_set("response.status", "two hundred"))),
    ("status-none", mutated(_set("response.status", None))),
    ("status-nan", mutated(_set("response.status", float("nan")))),
    ("recorded-at-str", mutated(_set("recorded_at", "yesterday"))),
    ("recorded-at-list", mutated(_set("recorded_at", [1]))),
    ("headers-int", mutated(_set("response.headers", 5))),
    ("header-triple", mutated(_set("response.headers", [[b"a", b"b", b"c"]]))),
    ("header-str", mutated(_set("request.headers", [["content-type", "text/plain"]]))),
    ("header-byte-out-of-range", mutated(_set("request.headers", [[[300], b"v"]]))),
    ("body-str", mutated(_set("response.body", "text"))),
    ("body-none", mutated(_set("response.body", None))),
    ("body-negative", mutated(_set("response.body", -1))),
    ("chunks-int", mutated(_set("response.chunks", 3))),
    ("chunks-of-str", mutated(_set("response.chunks", ["a", "b"]))),
    ("meta-str", mutated(_set("meta", "ab c"))),
    ("meta-int", mutated(_set("meta", 5))),
    # wrong types that do not look like errors to the conversions used
    ("status-inf", mutated(_set("response.status", float("inf")))),
    ("header-name-huge-int", mutated(_set("request.headers", [[2**63, b"v"]]))),
    ("body-huge-int", mutated(_set("response.body", 2**64 - 1))),
    ("chunk-huge-int", mutated(_set("response.chunks", [2**63]))),
    ("body-small-int", mutated(_set("response.body", 5))),
    ("chunks-bytes", mutated(_set("response.chunks", b"abc"))),
    ("method-int", mutated(_set("request.method", 7))),
    ("url-none", mutated(_set("request.url", None))),
]
GOOD_PACED = msgpack.unpackb(pack(entry(body=b"", chunks=[b"a", b"b"], offsets=[0.0, 0.5])))


def paced_mutated(field: str, value: object) -> bytes:
    raw = copy.deepcopy(GOOD_PACED)
    _set(field, value)(raw)
    return msgpack.packb(raw, use_bin_type=True)


CORRUPT += [
    ("offsets-none", paced_mutated("response.offsets", None)),
    ("offsets-int", paced_mutated("response.offsets", 3)),
    ("offsets-too-few", paced_mutated("response.offsets", [0.0])),
    ("offsets-too-many", paced_mutated("response.offsets", [0.0, 0.1, 0.2])),
    ("offsets-negative", paced_mutated("response.offsets", [0.0, -0.1])),
    ("offsets-nan", paced_mutated("response.offsets", [0.0, float("nan")])),
    ("offsets-inf", paced_mutated("response.offsets", [0.0, float("inf")])),
    ("offsets-str", paced_mutated("response.offsets", ["0", "1"])),
    ("offsets-bool", paced_mutated("response.offsets", [True, False])),
    ("offsets-without-chunks", paced_mutated("response.chunks", None)),
    (
        "offsets-missing",
        msgpack.packb(
            {
                **GOOD_PACED,
                "response": {k: v for k, v in GOOD_PACED["response"].items() if k != "offsets"},
            },
            use_bin_type=True,
        ),
    ),
]
CORRUPT += [(f"missing-{k}", mutated(_del(k))) for k in ("schema", "key", "recorded_at")]
CORRUPT += [(f"missing-{k}", mutated(_del(k))) for k in ("request", "response")]
CORRUPT += [
    (f"missing-request.{k}", mutated(_del(f"request.{k}")))
    for k in ("method", "url", "headers", "body")
]
CORRUPT += [
    (f"missing-response.{k}", mutated(_del(f"response.{k}")))
    for k in ("status", "reason", "headers", "body", "chunks")
]


@pytest.mark.parametrize("data", [c[1] for c in CORRUPT], ids=[c[0] for c in CORRUPT])
def test_corrupt_data_raises_corrupt_entry(data: bytes) -> None:
    with pytest.raises(CorruptEntry):
        unpack(data)


def test_corrupt_entry_is_a_value_error() -> None:
    assert issubclass(CorruptEntry, ValueError)


def test_every_truncation_of_a_packed_entry_is_corrupt() -> None:
    data = pack(entry(chunks=[b"data: 1\n\n", b"data: 2\n\n"]))
    for cut in range(len(data)):
        with pytest.raises(CorruptEntry):
            unpack(data[:cut])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_property_random_bytes_are_an_entry_or_corrupt(data: bytes) -> None:
    try:
        result = unpack(data)
    except CorruptEntry:
        return
    assert isinstance(result, Entry)
    assert well_typed(result)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=8), st.data())
def test_property_damaged_entries_are_an_entry_or_corrupt(
    noise: bytes, data: st.DataObject
) -> None:
    packed = pack(entry(chunks=[b"a", b"b"], offsets=[0.0, 0.25]))
    at = data.draw(st.integers(0, len(packed) - 1))
    damaged = packed[:at] + noise + packed[at + len(noise) :]
    try:
        result = unpack(damaged)
    except CorruptEntry:
        return
    assert isinstance(result, Entry)
    assert well_typed(result)


msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**16), 2**16)
    | st.sampled_from([2**63, 2**64 - 1, -(2**63)])
    | st.floats()
    | st.text(max_size=6)
    | st.binary(max_size=6),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
    max_leaves=6,
)
FIELDS = [
    "schema",
    "key",
    "recorded_at",
    "request",
    "response",
    "meta",
    "request.method",
    "request.url",
    "request.headers",
    "request.body",
    "response.status",
    "response.reason",
    "response.headers",
    "response.body",
    "response.chunks",
]


@settings(max_examples=300, deadline=None)
@given(field=st.sampled_from(FIELDS), value=msgpack_values)
def test_property_any_field_value_is_an_entry_or_corrupt(field: str, value: object) -> None:
    data = mutated(_set(field, value))
    try:
        result = unpack(data)
    except CorruptEntry:
        return
    assert isinstance(result, Entry)
    assert well_typed(result)


# --- storable_headers ------------------------------------------------------------------------


def test_storable_headers_drops_per_connection_headers_and_lower_cases() -> None:
    headers = [
        (b"Content-Type", b"text/event-stream"),
        (b"Connection", b"keep-alive"),
        (b"Keep-Alive", b"timeout=5"),
        (b"Proxy-Connection", b"close"),
        (b"Proxy-Authenticate", b"Basic"),
        (b"TE", b"trailers"),
        (b"Trailer", b"x-checksum"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Upgrade", b"h2c"),
        (b"Content-Encoding", b"gzip"),
        (b"Content-Length", b"42"),
        (b"X-Provider-Cache", b"miss"),
        (b"x-provider-cache", b"hit"),
        (b"X-Request-ID", b"req_ABC"),
        (b"Set-Cookie", b"a=1"),
        (b"set-cookie", b"b=2"),
        (b"OpenAI-Processing-Ms", b"120"),
    ]
    assert storable_headers(headers) == [
        (b"content-type", b"text/event-stream"),
        (b"x-request-id", b"req_ABC"),
        (b"openai-processing-ms", b"120"),
    ]


def test_storable_headers_never_keep_cookies() -> None:
    """OpenAI answers carry Cloudflare cookies (__cf_bm, _cfuvid): per client, never replayed."""
    headers = [
        (b"Set-Cookie", b"__cf_bm=abc; path=/; HttpOnly; Secure"),
        (b"set-cookie", b"_cfuvid=def; path=/"),
        (b"Set-Cookie2", b"old=1"),
        (b"content-type", b"application/json"),
    ]
    assert storable_headers(headers) == [(b"content-type", b"application/json")]


def test_storable_headers_keeps_values_verbatim() -> None:
    assert storable_headers([(b"X-Thing", b"  MiXeD \xff ")]) == [(b"x-thing", b"  MiXeD \xff ")]
    assert storable_headers([]) == []


@settings(max_examples=300, deadline=None)
@given(field=st.sampled_from([*FIELDS, "response.offsets"]), value=msgpack_values)
def test_property_any_field_of_a_paced_entry_is_an_entry_or_corrupt(
    field: str, value: object
) -> None:
    try:
        result = unpack(paced_mutated(field, value))
    except CorruptEntry:
        return
    assert isinstance(result, Entry)
    assert well_typed(result)
