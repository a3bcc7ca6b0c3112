"""Gemini's streamed JSON array (SPEC §4): complete when its closing `]` parses."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from provider_cache.core.jsonarray import JSONArrayChecker
from provider_cache.core.rejections import CUT_SHORT, INCOMPLETE, STREAM_ERROR, UNDECODABLE
from tests.support import fake_formats as fake
from tests.support.checkers import (
    CUTS,
    SPLITS,
    assert_any_split_agrees,
    byte_by_byte,
    cases,
    pieces,
    verdict_of,
)


def gemini(fault: str = "") -> list[bytes]:
    chunks = fake.gemini_chunks(1, "gemini-2.0-flash", "hi", "a store of answers", fault)
    return fake.gemini_array(chunks, fault)


def verdict(chunks: list[bytes], ended: bool) -> str | None:
    return verdict_of(JSONArrayChecker(), chunks, ended)


ERROR = b',\r\n{"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}}\r\n'
TRICKY = json.dumps(
    [{"text": 'a "quoted" ] and }, [ { \\ and \u00e9 ,'}, {"n": [1, [2, {}]]}]
).encode()

# (id, chunks, ended, verdict); ended = the stream ended properly.
TABLE: list[tuple[str, list[bytes], bool, str | None]] = [
    ("complete", gemini(), True, None),
    ("early-close-after-the-bracket", gemini(), False, None),
    ("no-closing-bracket", gemini("no-terminal"), True, INCOMPLETE),
    ("cut-before-the-bracket", gemini("no-terminal"), False, CUT_SHORT),
    ("cut-mid-element", [*gemini()[:2], gemini()[2][:25]], False, CUT_SHORT),
    ("ended-mid-element", [*gemini()[:2], gemini()[2][:25]], True, INCOMPLETE),
    ("error-element", [*gemini("no-terminal"), ERROR, b"]"], True, STREAM_ERROR),
    ("error-element-then-hang-up", [*gemini("no-terminal"), ERROR, b"]"], False, STREAM_ERROR),
    ("error-element-cut", [*gemini("no-terminal"), ERROR], False, CUT_SHORT),
    ("error-only", [b"[" + ERROR[3:] + b"]"], True, STREAM_ERROR),
    ("error-field-inside-an-element", [b'[{"candidates": [], "x": {"error": 1}}]'], True, None),
    ("empty-array", [b"[]"], True, None),
    ("empty-array-spaced", [b" \r\n[ \n ] \n"], True, None),
    ("white-space-after-the-bracket", [*gemini(), b"\r\n  "], True, None),
    ("text-after-the-bracket", [*gemini(), b"x"], True, UNDECODABLE),
    ("a-second-array", [b"[1]", b"[2]"], True, UNDECODABLE),
    ("not-an-array", [b'{"candidates": []}'], True, UNDECODABLE),
    ("not-json", [b"<html>"], True, UNDECODABLE),
    ("mismatched-brackets", [b'[{"a": 1]'], True, UNDECODABLE),
    ("last-element-does-not-parse", [b"[{}, {oops}]"], True, UNDECODABLE),
    ("missing-comma", [b"[{} {}]"], True, UNDECODABLE),
    ("trailing-comma", [b"[{},]"], True, UNDECODABLE),
    ("brackets-in-strings", [TRICKY], True, None),
    ("brackets-in-strings-cut", [TRICKY[:-1]], True, INCOMPLETE),
    ("bracket-quoted-in-text-cut", [b'[{"text": "]"}', b',{"text": "]'], False, CUT_SHORT),
    ("scalars", [b"[1, 2.5, true, null]"], True, None),
    ("nothing-ended", [], True, INCOMPLETE),
    ("nothing-cut", [], False, CUT_SHORT),
    ("only-white-space", [b" \n"], True, INCOMPLETE),
]


@pytest.mark.parametrize(("chunks", "ended", "expected"), cases(TABLE))
def test_verdict(chunks: list[bytes], ended: bool, expected: str | None) -> None:
    assert verdict(chunks, ended) == expected


@pytest.mark.parametrize(("chunks", "ended", "expected"), cases(TABLE))
def test_verdict_byte_by_byte(chunks: list[bytes], ended: bool, expected: str | None) -> None:
    assert verdict(byte_by_byte(chunks), ended) == expected


def test_the_pieces_are_kept_as_they_came_not_copied() -> None:
    """The recorder holds the same chunks: the checker adds references, not bytes."""
    checker = JSONArrayChecker()
    chunks = gemini()
    for chunk in chunks:
        checker.feed(chunk)
    assert all(kept is chunk for kept, chunk in zip(checker.pieces, chunks, strict=True))
    assert (
        json.loads(b"".join(checker.pieces))[-1]
        == fake.gemini_chunks(1, "gemini-2.0-flash", "hi", "a store of answers", "")[-1]
    )


# --- any split of the same bytes gives the same verdict ----------------------------------------

STREAMS = [
    b"".join(gemini()),
    b"".join([*gemini("no-terminal"), ERROR, b"]"]),
    TRICKY,
    b'[{"s": "\\\\\\"]\\\\"}, "\\u005d"]',
]


@settings(max_examples=400, deadline=None)
@given(whole=st.sampled_from(STREAMS), cut=CUTS, splits=SPLITS, ended=st.booleans())
def test_any_split_gives_the_verdict_of_one_chunk(
    whole: bytes, cut: float, splits: list[float], ended: bool
) -> None:
    assert_any_split_agrees(verdict, whole, cut, splits, ended)


@settings(max_examples=300, deadline=None)
@given(
    value=st.lists(
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(),
            lambda inner: (
                st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3)
            ),
            max_leaves=8,
        ),
        max_size=5,
    ),
    splits=st.lists(st.floats(0.0, 1.0), max_size=8),
)
def test_any_json_array_in_any_pieces_is_complete(value: list, splits: list[float]) -> None:
    """The scanner agrees with json.loads on arrays of any JSON, split anywhere."""
    body = json.dumps(value).encode()
    last = value[-1] if value else None
    expected = STREAM_ERROR if isinstance(last, dict) and "error" in last else None
    assert verdict(pieces(body, splits), True) == expected
