"""The text export: lossless, deterministic, diffable, and strict about what it reads."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from provider_cache.core.records import Entry, StoredRequest, StoredResponse
from provider_cache.core.textform import FORMAT, VERSION, BadExport, dumps, loads

RECORDED_AT = 1_735_787_045.123456  # 2025-01-02 03:04:05 UTC


def entry(
    key: str = "a" * 64,
    body: bytes = b'{"id": "chatcmpl-1",\n "ok": true}\n',
    chunks: list[bytes] | None = None,
    request_headers: list[tuple[bytes, bytes]] | None = None,
    response_headers: list[tuple[bytes, bytes]] | None = None,
    request_body: bytes = b'{"model":"gpt-4o-mini"}',
    meta: dict | None = None,
) -> Entry:
    return Entry(
        key=key,
        recorded_at=RECORDED_AT,
        request=StoredRequest(
            method="POST",
            url="https://api.openai.com/v1/chat/completions",
            headers=request_headers
            or [(b"content-type", b"application/json"), (b"authorization", b"<redacted>")],
            body=request_body,
        ),
        response=StoredResponse(
            status=200,
            reason="OK",
            headers=response_headers or [(b"content-type", b"application/json")],
            body=body if chunks is None else b"",
            chunks=chunks,
        ),
        meta=meta if meta is not None else {"recorded_run": 3},
    )


ENTRIES = {
    "text": entry(),
    "empty-body": entry(body=b""),
    "odd-line-ends": entry(body="line 1\r\nline 2\rline 3\x0bv\x85\u2028no final newline".encode()),
    "unicode": entry(body="Grüße ☃ — 世界\n".encode()),
    "binary-body": entry(body=bytes(range(256))),
    "gzip-like-request": entry(request_body=b"\x1f\x8b\x08\x00\xff\xfe"),
    "chunks": entry(chunks=[b'data: {"x": 1}\n\n', b"data: [DONE]\n\n"]),
    "binary-chunks": entry(chunks=[b"\x00\xff", b"", b"ok\n"]),
    "no-chunks": entry(chunks=[]),
    "latin-1-headers": entry(
        request_headers=[(b"x-caf\xe9", b"cr\xe8me br\xfbl\xe9e"), (b"x-raw", b"\xff\x00\x80")],
        response_headers=[(b"x-note", b"na\xefve"), (b"x-empty", b""), (b"x-space", b"  lead")],
    ),
    "no-meta": entry(meta={}),
}


@pytest.mark.parametrize("original", ENTRIES.values(), ids=ENTRIES.keys())
def test_round_trip_of_one_entry(original: Entry) -> None:
    assert loads(dumps([original])) == [original]


def test_round_trip_of_several_entries_sorts_them_by_key() -> None:
    entries = [entry(key=k) for k in ("c" * 64, "a" * 64, "b" * 64)]
    assert [e.key for e in loads(dumps(entries))] == ["a" * 64, "b" * 64, "c" * 64]
    assert sorted(loads(dumps(entries)), key=lambda e: e.key) == sorted(
        entries, key=lambda e: e.key
    )


def test_output_does_not_depend_on_the_order_given() -> None:
    entries = [entry(key=f"{i:064x}", body=f"answer {i}\n".encode()) for i in range(20)]
    shuffled = entries[:]
    random.Random(7).shuffle(shuffled)
    assert dumps(shuffled) == dumps(entries)
    assert dumps(entries) == dumps(loads(dumps(entries)))  # and is a fixed point


def test_document_shape_for_code_review() -> None:
    """Text bodies are lines (a changed answer is a changed line), other bodies base64."""
    text = dumps([entry(body=b"one\ntwo\n"), entry(key="b" * 64, body=b"\xff\xfe")])
    assert text.endswith("}\n")
    document = json.loads(text)
    assert (
        (document["format"], document["version"])
        == (FORMAT, VERSION)
        == (
            "provider-cache-export",
            1,
        )
    )
    first, second = document["entries"]
    assert list(first) == ["key", "recorded", "recorded_at", "meta", "request", "response"]
    assert first["recorded"] == "2025-01-02T03:04:05Z"
    assert first["request"]["headers"] == [
        "content-type: application/json",
        "authorization: <redacted>",
    ]
    assert first["response"]["body"] == {"lines": ["one\n", "two\n"]}
    assert second["response"]["body"] == {"base64": "//4="}


def test_streamed_response_is_exported_as_chunks_without_a_body() -> None:
    [exported] = json.loads(dumps([entry(chunks=[b"data: 1\n\n", b"\xff"])]))["entries"]
    assert exported["response"]["chunks"] == [{"lines": ["data: 1\n", "\n"]}, {"base64": "/w=="}]
    assert "body" not in exported["response"]


def test_non_ascii_text_is_written_as_is() -> None:
    assert "Grüße ☃" in dumps([entry(body="Grüße ☃\n".encode())])


def test_empty_export_round_trips() -> None:
    assert loads(dumps([])) == []


headers_st = st.lists(
    st.tuples(
        st.binary(min_size=1, max_size=10).filter(lambda b: b":" not in b),
        st.binary(max_size=16),
    ),
    max_size=4,
)


@settings(max_examples=150, deadline=None)
@given(
    req_headers=headers_st,
    resp_headers=headers_st,
    req_body=st.binary(max_size=64) | st.text(max_size=40).map(str.encode),
    body=st.binary(max_size=64) | st.text(max_size=40).map(str.encode),
    chunks=st.none() | st.lists(st.binary(max_size=16) | st.text(max_size=10).map(str.encode)),
    recorded_at=st.floats(min_value=0, max_value=4e9),
)
def test_property_round_trip(
    req_headers: list[tuple[bytes, bytes]],
    resp_headers: list[tuple[bytes, bytes]],
    req_body: bytes,
    body: bytes,
    chunks: list[bytes] | None,
    recorded_at: float,
) -> None:
    original = Entry(
        key="k",
        recorded_at=recorded_at,
        request=StoredRequest("POST", "https://h/p?q=1", req_headers, req_body),
        response=StoredResponse(
            201, "Created", resp_headers, body if chunks is None else b"", chunks
        ),
    )
    assert loads(dumps([original])) == [original]


# --- what it refuses -------------------------------------------------------------------------

GOOD = json.loads(dumps([entry()]))


def with_entry(**changes: object) -> str:
    document = json.loads(json.dumps(GOOD))
    document["entries"][0].update(changes)
    return json.dumps(document)


def with_response(**changes: object) -> str:
    document = json.loads(json.dumps(GOOD))
    document["entries"][0]["response"].update(changes)
    return json.dumps(document)


@pytest.mark.parametrize(
    "text",
    [
        json.dumps({**GOOD, "format": "har"}),
        json.dumps({**GOOD, "version": 2}),
        json.dumps({**GOOD, "version": "1"}),
        json.dumps({k: v for k, v in GOOD.items() if k != "format"}),
        json.dumps({"entries": []}),
    ],
    ids=["other-format", "version-2", "version-str", "no-format", "no-header"],
)
def test_wrong_format_or_version_is_bad_export(text: str) -> None:
    with pytest.raises(BadExport, match="not a provider-cache-export version 1 document"):
        loads(text)


MALFORMED = {
    "not-json": "{not json",
    "empty": "",
    "json-list": "[1, 2]",
    "json-string": '"provider-cache-export"',
    "no-entries": json.dumps({"format": FORMAT, "version": VERSION}),
    "entries-not-a-list": json.dumps({"format": FORMAT, "version": VERSION, "entries": 5}),
    "entry-not-an-object": json.dumps({"format": FORMAT, "version": VERSION, "entries": [7]}),
    "no-request": with_entry(request=None),
    "recorded-at-text": with_entry(recorded_at="yesterday"),
    "recorded-at-null": with_entry(recorded_at=None),
    "status-text": with_response(status="OK"),
    "header-without-separator": with_response(headers=["content-type=application/json"]),
    "header-not-latin-1": with_response(headers=["x: ☃"]),
    "bad-base64": with_response(body={"base64": "not base64!"}),
    "body-neither-lines-nor-base64": with_response(body={"text": "hi"}),
    "lines-of-numbers": with_response(body={"lines": [1, 2]}),
    "chunks-not-bodies": with_response(chunks=["data: 1"]),
}


@pytest.mark.parametrize("text", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_export_is_bad_export_on_one_line(text: str) -> None:
    with pytest.raises(BadExport) as raised:
        loads(text)
    assert "\n" not in str(raised.value)


def test_bad_export_is_a_value_error() -> None:
    assert issubclass(BadExport, ValueError)


def test_slots_round_trip_and_follow_their_first_in_order() -> None:
    from provider_cache.core import slots

    first = entry(key="f" * 64, body=b"answer 1\n")
    later = [
        slots.as_slot(entry(key="x", body=f"answer {n}\n".encode()), first.key, n)
        for n in (3, 2, 10)
    ]
    other = entry(key="0" * 64)
    back = loads(dumps([*later, other, first]))
    assert back == sorted([first, other, *later], key=lambda e: slots.position(e))
    assert [slots.position(e) for e in back] == [
        ("0" * 64, 1),
        (first.key, 1),
        (first.key, 2),
        (first.key, 3),
        (first.key, 10),
    ]
    assert back[3].key == slots.slot_key(first.key, 3) and back[3].meta["slot"] == 3
