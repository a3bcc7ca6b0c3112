"""NameMatcher: many glob patterns at once, answering exactly as fnmatchcase does."""

from __future__ import annotations

from fnmatch import fnmatchcase

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from provider_cache.core.globs import NameMatcher


def reference(patterns: tuple[str, ...], name: str) -> bool:
    return any(fnmatchcase(name, p) for p in patterns)


HEADERS = ("authorization", "x-api-key", "x-stainless-*", "traceparent", "x-datadog-?", "cf-[ab]*")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("authorization", True),
        ("x-api-key", True),
        ("x-stainless-os", True),
        ("x-stainless-", True),
        ("x-datadog-1", True),
        ("x-datadog-12", False),  # ? is one character
        ("cf-ray", False),
        ("cf-access", True),
        ("cf-b", True),
        ("authorizatio", False),
        ("authorization2", False),  # exact names are whole names
        ("Authorization", False),  # case-sensitive, as fnmatchcase (callers lower-case)
        ("xx-stainless-os", False),
        ("", False),
    ],
)
def test_exact_names_and_globs(name: str, expected: bool) -> None:
    matcher = NameMatcher(HEADERS)
    assert matcher(name) is expected
    assert reference(HEADERS, name) is expected


def test_no_patterns_match_nothing() -> None:
    matcher = NameMatcher(())
    assert matcher.glob is None
    assert not matcher("anything") and not matcher("")


def test_exact_names_and_globs_are_told_apart() -> None:
    matcher = NameMatcher(("a", "b*", "c?", "[de]", "f]", "g!"))
    assert matcher.exact == {"a", "f]", "g!"}
    assert matcher.globs == ("b*", "c?", "[de]")


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        ("[!a]b", "cb", True),
        ("[!a]b", "ab", False),
        ("[", "[", True),  # an unclosed bracket is a literal
        ("a[", "a[", True),
        ("[]]", "]", True),
        ("*", "", True),
        ("*", "line\nbreak", True),  # * matches newlines too
        ("a.b", "axb", False),  # regex characters are literal
        ("a+", "aa", False),
        ("(x)|y", "y", False),
        ("a\\*", "a\\bc", True),  # no escape character: the backslash is literal
    ],
)
def test_odd_patterns_answer_as_fnmatchcase(pattern: str, name: str, expected: bool) -> None:
    """Alone and combined into one regex with other globs, the answer is fnmatchcase's."""
    assert fnmatchcase(name, pattern) is expected
    assert NameMatcher((pattern,))(name) is expected
    combined = ("zz*", pattern, "q?q")
    assert NameMatcher(combined)(name) is reference(combined, name)


def test_answers_stay_the_same_when_asked_again() -> None:
    """Answers are memoised per name: the memo must give the first answer back."""
    matcher = NameMatcher(HEADERS)
    names = ["x-stainless-os", "cf-ray", "authorization", "other"] * 3
    assert [matcher(n) for n in names] == [reference(HEADERS, n) for n in names]


ALPHABET = "ab-.*?[]!\\\n"
patterns_st = st.lists(st.text(ALPHABET, max_size=6), max_size=6).map(tuple)
names_st = st.text("ab-.[]!\\\n*?", max_size=8)


@settings(max_examples=400, deadline=None)
@given(patterns=patterns_st, names=st.lists(names_st, min_size=1, max_size=5))
def test_property_same_answer_as_any_fnmatchcase(
    patterns: tuple[str, ...], names: list[str]
) -> None:
    matcher = NameMatcher(patterns)
    for name in names:
        assert matcher(name) is reference(patterns, name), (patterns, name)


@settings(max_examples=200, deadline=None)
@given(patterns=patterns_st)
def test_property_every_exact_pattern_matches_itself(patterns: tuple[str, ...]) -> None:
    matcher = NameMatcher(patterns)
    for pattern in matcher.exact:
        assert matcher(pattern)
