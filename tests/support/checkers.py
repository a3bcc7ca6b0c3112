"""The table and split tests of the stream checkers (core/sse.py, eventstream.py,
jsonarray.py, ndjson.py): the same bytes fed in different pieces must get one verdict,
since a provider's chunks fall wherever the network puts them."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import pytest
from hypothesis import strategies as st

#: Where a property's stream is cut, as a fraction of it (from 0.9 on it is kept whole, so
#: that whole streams are a tenth of the examples).
CUTS = st.floats(0.0, 1.0)
#: Where its body is split into pieces, as fractions of it.
SPLITS = st.lists(st.floats(0.0, 1.0), max_size=12)
WHOLE_FROM = 0.9


class Checker(Protocol):
    def feed(self, chunk: bytes) -> None: ...

    def verdict(self, ended: bool) -> str | None: ...


Judge = Callable[[list[bytes], bool], str | None]


def verdict_of(checker: Checker, chunks: Iterable[bytes], ended: bool) -> str | None:
    """The checker's verdict once it has been fed `chunks`; ended = the stream ended properly."""
    for chunk in chunks:
        checker.feed(chunk)
    return checker.verdict(ended)


def cases(table: Sequence[tuple[Any, ...]]) -> list[Any]:
    """A table's rows (id, then the test's arguments) as pytest params named by their id."""
    return [pytest.param(*row[1:], id=row[0]) for row in table]


def byte_by_byte(chunks: Iterable[bytes]) -> list[bytes]:
    """The same bytes, one a chunk."""
    return [bytes([b]) for b in b"".join(chunks)]


def pieces(body: bytes, splits: Iterable[float]) -> list[bytes]:
    """`body` split at each fraction of `splits` (pieces may be empty)."""
    points = sorted({round(s * len(body)) for s in splits})
    return [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True)]


def assert_any_split_agrees(
    judge: Judge, whole: bytes, cut: float, splits: list[float], ended: bool
) -> None:
    """The stream cut at `cut` (or whole), fed in the pieces of `splits`, is judged as it is
    fed in one chunk."""
    body = whole[: round(cut * len(whole))] if cut < WHOLE_FROM else whole
    assert judge(pieces(body, splits), ended) == judge([body], ended)
