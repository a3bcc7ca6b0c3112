"""Newline-delimited JSON (SPEC §4): complete when the last line says `"done": true`."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from provider_cache.core.ndjson import NDJSONChecker
from provider_cache.core.rejections import CUT_SHORT, INCOMPLETE, STREAM_ERROR, UNDECODABLE
from tests.support import fake_formats as fake
from tests.support.checkers import CUTS, SPLITS, assert_any_split_agrees, cases, verdict_of


def ollama(fault: str = "") -> list[bytes]:
    return fake.ollama_lines("llama3", "a store of answers", fault)


def verdict(chunks: list[bytes], ended: bool) -> str | None:
    return verdict_of(NDJSONChecker(), chunks, ended)


DONE = ollama()[-1]
ERROR = b'{"error":"model runner has unexpectedly stopped"}\n'

# (id, chunks, ended, verdict); ended = the stream ended properly.
TABLE: list[tuple[str, list[bytes], bool, str | None]] = [
    ("complete", ollama(), True, None),
    ("early-close-after-done", ollama(), False, None),
    ("no-done", ollama("no-terminal"), True, INCOMPLETE),
    ("cut-before-done", ollama("no-terminal"), False, CUT_SHORT),
    ("cut-mid-line", [*ollama()[:2], ollama()[2][:15]], False, CUT_SHORT),
    ("ended-mid-line", [*ollama()[:2], ollama()[2][:15]], True, UNDECODABLE),
    ("cut-mid-done-line", [*ollama()[:-1], DONE[:-5]], False, CUT_SHORT),
    ("done-line-without-newline-ended", [*ollama()[:-1], DONE.rstrip()], True, None),
    ("done-line-without-newline-cut", [*ollama()[:-1], DONE.rstrip()], False, CUT_SHORT),
    ("error-line", [*ollama("no-terminal"), ERROR], True, STREAM_ERROR),
    ("error-line-then-hang-up", [*ollama("no-terminal"), ERROR], False, STREAM_ERROR),
    ("error-only", [ERROR], True, STREAM_ERROR),
    ("empty-error-is-no-error", [b'{"error":"","done":true}\n'], True, None),
    ("done-false", [b'{"done":false}\n'], True, INCOMPLETE),
    ("done-a-string", [b'{"done":"true"}\n'], True, INCOMPLETE),
    ("done-one", [b'{"done":1}\n'], True, INCOMPLETE),
    ("done-not-last", [DONE, ollama()[0]], True, INCOMPLETE),
    ("done-then-blank-lines", [*ollama(), b"\n\r\n  \n"], True, None),
    ("crlf", [line.replace(b"\n", b"\r\n") for line in ollama()], True, None),
    ("last-line-not-json", [DONE, b"{oops\n"], True, UNDECODABLE),
    ("last-line-a-list", [b'[{"done": true}]\n'], True, UNDECODABLE),
    (
        "done-quoted-in-text",
        [b'{"message":{"content":"\\"done\\": true"},"done":false}\n'],
        True,
        INCOMPLETE,
    ),
    ("nothing-ended", [], True, INCOMPLETE),
    ("nothing-cut", [], False, CUT_SHORT),
    ("only-blank-lines", [b"\n\n"], True, INCOMPLETE),
    ("application-ndjson-from-one-chunk", [b"".join(ollama())], True, None),
]


@pytest.mark.parametrize(("chunks", "ended", "expected"), cases(TABLE))
def test_verdict(chunks: list[bytes], ended: bool, expected: str | None) -> None:
    assert verdict(chunks, ended) == expected


def test_only_the_last_line_is_kept() -> None:
    """Memory does not grow with the answer: one line, and the start of the next."""
    checker = NDJSONChecker()
    for chunk in ollama() * 50:
        checker.feed(chunk)
    checker.feed(b'{"partial')
    assert checker.last_line == DONE.rstrip()
    assert bytes(checker.partial) == b'{"partial'


# --- any split of the same bytes gives the same verdict ----------------------------------------

STREAMS = [
    b"".join(ollama()),
    b"".join(ollama()).replace(b"\n", b"\r\n"),
    b"".join([*ollama("no-terminal"), ERROR]),
    b"".join([*ollama(), b"\n \n"]),
]


@settings(max_examples=300, deadline=None)
@given(whole=st.sampled_from(STREAMS), cut=CUTS, splits=SPLITS, ended=st.booleans())
def test_any_split_gives_the_verdict_of_one_chunk(
    whole: bytes, cut: float, splits: list[float], ended: bool
) -> None:
    assert_any_split_agrees(verdict, whole, cut, splits, ended)
