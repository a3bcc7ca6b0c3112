"""Times for people: UTC, to the second, the same string on every machine."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from provider_cache.core import timefmt

#: 2025-01-02 03:04:05 UTC, and a fraction of a second more.
MOMENT = 1_735_787_045.75


@pytest.mark.parametrize(
    ("timestamp", "stamp", "iso"),
    [
        (MOMENT, "2025-01-02 03:04:05", "2025-01-02T03:04:05Z"),
        (1_735_787_045.0, "2025-01-02 03:04:05", "2025-01-02T03:04:05Z"),
        (1_735_787_045.999, "2025-01-02 03:04:05", "2025-01-02T03:04:05Z"),  # cut, not rounded
        (0.0, "1970-01-01 00:00:00", "1970-01-01T00:00:00Z"),
        (951_782_400.0, "2000-02-29 00:00:00", "2000-02-29T00:00:00Z"),
        (1_767_225_599.0, "2025-12-31 23:59:59", "2025-12-31T23:59:59Z"),
    ],
)
def test_exact_strings(timestamp: float, stamp: str, iso: str) -> None:
    assert timefmt.stamp(timestamp) == stamp
    assert timefmt.stamp_utc(timestamp) == f"{stamp} UTC"
    assert timefmt.iso(timestamp) == iso


@pytest.fixture
def far_from_utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A machine whose local time is UTC+14 (a POSIX TZ string: no tz database needed)."""
    monkeypatch.setenv("TZ", "LINT-14")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("far_from_utc")
def test_the_local_time_zone_does_not_matter() -> None:
    assert time.localtime(MOMENT).tm_hour == 17  # the zone is in force for this test
    assert timefmt.stamp(MOMENT) == "2025-01-02 03:04:05"
    assert timefmt.stamp_utc(MOMENT + 1) == "2025-01-02 03:04:06 UTC"
    assert timefmt.iso(MOMENT) == "2025-01-02T03:04:05Z"


def test_stamp_utc_gives_the_same_answer_when_asked_again() -> None:
    """It is memoised (mitmweb comments every hit with it): the memo must not mix answers."""
    assert [timefmt.stamp_utc(t) for t in (0.0, MOMENT, 0.0, MOMENT)] == [
        "1970-01-01 00:00:00 UTC",
        "2025-01-02 03:04:05 UTC",
        "1970-01-01 00:00:00 UTC",
        "2025-01-02 03:04:05 UTC",
    ]
