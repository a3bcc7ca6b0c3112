"""Per-run counters (SPEC §5): totals, window, per host, the capped missed list, snapshot."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from email.utils import formatdate

import pytest

from provider_cache.core.rejections import CUT_SHORT, REASONS, STREAM_ERROR, TOO_LARGE
from provider_cache.core.stats import (
    BODY_PREVIEW,
    MAX_HOSTS,
    MISSED_LIMIT,
    OTHER_HOSTS,
    REMOTE_KEYS_LIMIT,
    SCHEMA,
    RemoteCounts,
    Stats,
    describe,
    parse_retry_after,
    rate,
)

HOST = "api.openai.com"
URL = f"https://{HOST}/v1/chat/completions"
NOW = 1_735_787_045.0  # 2025-01-02 03:04:05 UTC


def normalized(body: bytes = b'{"model":"m"}') -> dict:
    """The shape keys.normalize gives, as much of it as a miss shows."""
    return {
        "method": "POST",
        "headers": [("content-type", "application/json"), ("authorization", "<redacted>")],
        "query": [("api-version", "2024-10-21")],
        "body_kind": "json",
        "body": body,
    }


def miss(stats: Stats, key: str, host: str = HOST) -> bool:
    return stats.miss(host, "POST", URL, key, normalized())


# --- counting --------------------------------------------------------------------------------


def test_hits_and_misses_count_in_totals_and_per_host() -> None:
    stats = Stats(mode="replay", window_size=10)
    stats.hit(HOST)
    stats.hit(HOST)
    stats.hit("api.anthropic.com")
    miss(stats, "k1")
    assert (stats.hits, stats.misses) == (3, 1)
    assert (stats.by_host[HOST].hits, stats.by_host[HOST].misses) == (2, 1)
    assert (stats.by_host["api.anthropic.com"].hits, stats.by_host["api.anthropic.com"].misses) == (
        1,
        0,
    )


def test_record_error_and_passthrough_are_counted() -> None:
    stats = Stats(mode="record", window_size=10)
    stats.record(HOST)
    stats.record(HOST)
    stats.error(HOST)
    stats.pass_through()
    assert (stats.recorded, stats.errors, stats.passthrough) == (2, 1, 1)
    assert (stats.by_host[HOST].recorded, stats.by_host[HOST].errors) == (2, 1)


@pytest.mark.parametrize("host", [None, ""])
def test_an_error_without_a_host_counts_only_in_the_totals(host: str | None) -> None:
    """Some failures (a store that cannot be read) belong to no host."""
    stats = Stats(mode="record", window_size=10)
    stats.error(host)
    assert stats.errors == 1
    assert stats.by_host == {}


def test_recording_and_passthrough_do_not_move_the_window() -> None:
    """The window is over lookups: hits and misses only."""
    stats = Stats(mode="record", window_size=10)
    stats.record(HOST)
    stats.pass_through()
    stats.error(HOST)
    assert len(stats.window) == 0


def test_rate_limit_keeps_the_longest_retry_after() -> None:
    stats = Stats(mode="record", window_size=10)
    stats.rate_limit(None)
    assert (stats.rate_limited, stats.retry_after) == (1, None)
    stats.rate_limit(5.0)
    stats.rate_limit(30.0)
    stats.rate_limit(2.0)
    stats.rate_limit(None)  # an answer without the header does not forget the longest wait
    assert (stats.rate_limited, stats.retry_after) == (5, 30.0)


def test_a_zero_retry_after_is_kept_as_zero() -> None:
    stats = Stats(mode="record", window_size=10)
    stats.rate_limit(0.0)
    assert stats.retry_after == 0.0


COUNTING: list[tuple[str, Callable[[Stats], object]]] = [
    ("hit", lambda s: s.hit(HOST)),
    ("miss", lambda s: miss(s, "k")),
    ("record", lambda s: s.record(HOST)),
    ("passthrough", lambda s: s.pass_through()),
    ("error", lambda s: s.error(HOST)),
    ("rate-limit", lambda s: s.rate_limit(None)),
    ("reject", lambda s: s.reject(HOST, CUT_SHORT)),
]


@pytest.mark.parametrize("count", [c[1] for c in COUNTING], ids=[c[0] for c in COUNTING])
def test_counters_change_whenever_anything_is_counted(count: Callable[[Stats], object]) -> None:
    """The stats flusher rewrites the file only when counters() changed."""
    stats = Stats(mode="record", window_size=10)
    before = stats.counters()
    count(stats)
    assert stats.counters() != before


# --- answers not stored ----------------------------------------------------------------------


def test_a_fresh_run_lists_every_rejection_reason_at_zero() -> None:
    """The gate and dashboards read every reason without guessing which are absent."""
    snap = Stats(mode="record", window_size=10).snapshot()
    assert snap["rejected"] == dict.fromkeys(REASONS, 0)
    assert list(snap["rejected"]) == list(REASONS)


def test_rejections_count_by_reason_in_total_and_per_host() -> None:
    stats = Stats(mode="record", window_size=10)
    stats.reject(HOST, CUT_SHORT)
    stats.reject(HOST, CUT_SHORT)
    stats.reject("api.anthropic.com", STREAM_ERROR)
    snap = stats.snapshot()
    assert snap["rejected"] == {**dict.fromkeys(REASONS, 0), CUT_SHORT: 2, STREAM_ERROR: 1}
    assert snap["by_host"][HOST]["rejected"] == {CUT_SHORT: 2}
    assert snap["by_host"]["api.anthropic.com"]["rejected"] == {STREAM_ERROR: 1}


def test_per_host_rejections_list_only_reasons_that_happened_in_reason_order() -> None:
    stats = Stats(mode="record", window_size=10)
    stats.reject(HOST, TOO_LARGE)
    stats.reject(HOST, CUT_SHORT)
    stats.hit("api.anthropic.com")
    by_host = stats.snapshot()["by_host"]
    assert list(by_host[HOST]["rejected"].items()) == [(CUT_SHORT, 1), (TOO_LARGE, 1)]
    assert by_host["api.anthropic.com"]["rejected"] == {}


def test_a_rejection_is_neither_a_recording_an_error_nor_a_lookup() -> None:
    """An answer not stored is its own count: errors stay upstream/store failures (SPEC §5)."""
    stats = Stats(mode="record", window_size=10)
    stats.reject(HOST, CUT_SHORT)
    assert (stats.recorded, stats.errors, stats.hits, stats.misses) == (0, 0, 0, 0)
    assert len(stats.window) == 0
    assert (stats.by_host[HOST].recorded, stats.by_host[HOST].errors) == (0, 0)


def test_an_unknown_rejection_reason_raises() -> None:
    stats = Stats(mode="record", window_size=10)
    with pytest.raises(ValueError, match="truncated"):
        stats.reject(HOST, "truncated")
    assert stats.snapshot()["rejected"] == dict.fromkeys(REASONS, 0)
    assert stats.by_host == {}


def test_rejections_of_hosts_past_the_cap_fold_into_other_hosts() -> None:
    stats = Stats(mode="record", window_size=10)
    for n in range(MAX_HOSTS + 3):
        stats.reject(f"r{n}.openai.azure.com", CUT_SHORT)
    snap = stats.snapshot()
    assert snap["by_host"][OTHER_HOSTS]["rejected"] == {CUT_SHORT: 3}
    assert sum(c["rejected"].get(CUT_SHORT, 0) for c in snap["by_host"].values()) == MAX_HOSTS + 3
    assert snap["rejected"][CUT_SHORT] == MAX_HOSTS + 3


def test_the_rejection_counts_in_a_snapshot_are_a_copy() -> None:
    stats = Stats(mode="record", window_size=10)
    stats.reject(HOST, CUT_SHORT)
    snap = stats.snapshot()
    snap["rejected"][CUT_SHORT] = 99
    snap["by_host"][HOST]["rejected"][CUT_SHORT] = 99
    again = stats.snapshot()
    assert again["rejected"][CUT_SHORT] == again["by_host"][HOST]["rejected"][CUT_SHORT] == 1


@pytest.mark.parametrize("reason", REASONS)
def test_every_reason_moves_the_counters(reason: str) -> None:
    """The stats file is rewritten when a rejection is all that happened."""
    stats = Stats(mode="record", window_size=10)
    before = stats.counters()
    stats.reject(HOST, reason)
    assert stats.counters() != before


# --- the window ------------------------------------------------------------------------------


def test_window_holds_only_the_most_recent_lookups() -> None:
    stats = Stats(mode="replay", window_size=3)
    for _ in range(5):
        miss(stats, "old")
    stats.hit(HOST)
    stats.hit(HOST)
    window = stats.snapshot()["window"]
    assert window == {"size": 3, "hits": 2, "misses": 1, "hit_rate": 2 / 3}
    assert (stats.hits, stats.misses) == (2, 5)  # the totals keep everything


def test_empty_window_has_no_hit_rate() -> None:
    window = Stats(mode="replay", window_size=4).snapshot()["window"]
    assert window == {"size": 4, "hits": 0, "misses": 0, "hit_rate": None}


# --- the missed requests ---------------------------------------------------------------------


def test_first_miss_of_a_key_is_listed_and_repeats_are_counted() -> None:
    stats = Stats(mode="replay", window_size=10)
    assert miss(stats, "k1") is True  # new: worth diagnosing
    assert miss(stats, "k1") is False
    assert miss(stats, "k1") is False
    assert list(stats.missed) == ["k1"]
    listed = stats.missed["k1"]
    assert (listed.method, listed.url, listed.key, listed.count) == ("POST", URL, "k1", 3)
    assert listed.closest is None
    assert stats.missed_dropped == 0


def test_missed_list_is_capped_and_the_rest_are_counted_as_dropped() -> None:
    stats = Stats(mode="replay", window_size=10)
    assert all(miss(stats, f"k{i}") for i in range(MISSED_LIMIT))
    assert miss(stats, "one-too-many") is False
    assert len(stats.missed) == MISSED_LIMIT
    assert "one-too-many" not in stats.missed
    assert stats.missed_dropped == 1
    assert stats.misses == MISSED_LIMIT + 1  # a dropped miss is still a miss


def test_a_listed_key_still_counts_its_repeats_after_the_cap() -> None:
    stats = Stats(mode="replay", window_size=10)
    for i in range(MISSED_LIMIT):
        miss(stats, f"k{i}")
    assert miss(stats, "k0") is False
    assert stats.missed["k0"].count == 2
    assert stats.missed_dropped == 0


def test_missed_request_is_described_for_the_report() -> None:
    stats = Stats(mode="replay", window_size=10)
    miss(stats, "k1")
    assert stats.missed["k1"].request == {
        "headers": ["content-type: application/json", "authorization: <redacted>"],
        "query": ["api-version=2024-10-21"],
        "body_kind": "json",
        "body": '{"model":"m"}',
    }


# --- snapshot --------------------------------------------------------------------------------


def test_snapshot_has_every_field_of_the_stats_file() -> None:
    stats = Stats(mode="read-old-write-new", window_size=7, started_at=NOW)
    before = time.time()
    snap = stats.snapshot()
    after = time.time()
    assert set(snap) == {
        "schema",
        "mode",
        "started_at",
        "updated_at",
        "hits",
        "misses",
        "recorded",
        "passthrough",
        "errors",
        "rate_limited",
        "retry_after",
        "hit_rate",
        "rejected",
        "window",
        "by_host",
        "missed",
        "missed_dropped",
    }
    assert snap["schema"] == SCHEMA == 1
    assert snap["mode"] == "read-old-write-new"
    assert snap["started_at"] == NOW
    assert before <= snap["updated_at"] <= after
    assert snap["window"]["size"] == 7


def test_snapshot_of_a_fresh_run_is_all_zero_and_has_no_hit_rate() -> None:
    snap = Stats(mode="record", window_size=5).snapshot()
    assert [snap[name] for name in ("hits", "misses", "recorded", "passthrough", "errors")] == [
        0
    ] * 5
    assert (snap["hit_rate"], snap["retry_after"], snap["rate_limited"]) == (None, None, 0)
    assert (snap["by_host"], snap["missed"], snap["missed_dropped"]) == ({}, [], 0)


def test_started_at_defaults_to_now() -> None:
    before = time.time()
    stats = Stats(mode="record", window_size=5)
    assert before <= stats.snapshot()["started_at"] <= time.time()


def test_snapshot_counts_per_host_sorted_with_their_hit_rates() -> None:
    stats = Stats(mode="replay", window_size=10)
    stats.hit("z.example")
    miss(stats, "k", host="a.example")
    stats.hit("a.example")
    stats.hit("a.example")
    stats.record("z.example")
    by_host = stats.snapshot()["by_host"]
    assert list(by_host) == ["a.example", "z.example"]
    assert by_host["a.example"] == {
        "hits": 2,
        "misses": 1,
        "recorded": 0,
        "errors": 0,
        "rejected": {},
        "hit_rate": 2 / 3,
    }
    assert by_host["z.example"] == {
        "hits": 1,
        "misses": 0,
        "recorded": 1,
        "errors": 0,
        "rejected": {},
        "hit_rate": 1.0,
    }


def test_snapshot_lists_missed_requests_with_their_closest_recording() -> None:
    stats = Stats(mode="replay", window_size=10)
    miss(stats, "k1")
    miss(stats, "k1")
    stats.missed["k1"].closest = {"key": "r1", "differences": ["body $.x: 1 → 2"], "more": 0}
    [listed] = stats.snapshot()["missed"]
    assert listed["key"] == "k1" and listed["count"] == 2
    assert listed["closest"] == {"key": "r1", "differences": ["body $.x: 1 → 2"], "more": 0}
    assert listed["request"]["body_kind"] == "json"


def test_snapshot_is_a_copy_and_json_serialisable() -> None:
    """The flusher writes it from another thread while the hooks go on counting."""
    stats = Stats(mode="replay", window_size=10)
    stats.hit(HOST)
    miss(stats, "k1")
    stats.rate_limit(3.0)
    snap = stats.snapshot()
    snap["missed"][0]["count"] = 99
    snap["by_host"][HOST]["hits"] = 99
    assert stats.missed["k1"].count == 1
    assert stats.by_host[HOST].hits == 1
    assert json.loads(json.dumps(snap))["missed"][0]["key"] == "k1"


def test_snapshot_hit_rate_is_over_all_lookups() -> None:
    stats = Stats(mode="replay", window_size=2)
    for _ in range(3):
        stats.hit(HOST)
    miss(stats, "k")
    assert stats.snapshot()["hit_rate"] == 0.75


# --- rate, describe --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hits", "misses", "expected"),
    [(0, 0, None), (1, 0, 1.0), (0, 5, 0.0), (1, 3, 0.25), (2, 1, 2 / 3)],
)
def test_rate(hits: int, misses: int, expected: float | None) -> None:
    assert rate(hits, misses) == expected


@pytest.mark.parametrize("size", [0, 1, BODY_PREVIEW - 1, BODY_PREVIEW])
def test_describe_keeps_a_body_up_to_the_preview_size(size: int) -> None:
    body = b"x" * size
    assert describe(normalized(body))["body"] == "x" * size


@pytest.mark.parametrize("size", [BODY_PREVIEW + 1, BODY_PREVIEW * 10])
def test_describe_truncates_a_longer_body_with_an_ellipsis(size: int) -> None:
    text = describe(normalized(b"y" * size))["body"]
    assert text == "y" * BODY_PREVIEW + "…"


def test_describe_shows_undecodable_bytes_escaped() -> None:
    assert describe(normalized(b"ok \xff\xfe"))["body"] == "ok \\xff\\xfe"


def test_describe_gives_json_able_text() -> None:
    described = describe(normalized(bytes(range(256))))
    assert json.loads(json.dumps(described)) == described
    assert described["headers"] == ["content-type: application/json", "authorization: <redacted>"]
    assert described["query"] == ["api-version=2024-10-21"]


# --- parse_retry_after -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", 0.0),
        ("7", 7.0),
        ("120", 120.0),
        (" 30 ", 30.0),
        ("86400", 86400.0),
    ],
)
def test_retry_after_in_seconds(value: str, expected: float) -> None:
    assert parse_retry_after(value, NOW) == expected


@pytest.mark.parametrize(("offset", "expected"), [(30, 30.0), (3600, 3600.0), (0, 0.0)])
def test_retry_after_as_an_http_date_is_the_wait_from_now(offset: int, expected: float) -> None:
    value = formatdate(NOW + offset, usegmt=True)  # "Thu, 02 Jan 2025 03:04:35 GMT"
    assert parse_retry_after(value, NOW) == expected


def test_retry_after_date_in_the_past_is_no_wait() -> None:
    assert parse_retry_after(formatdate(NOW - 600, usegmt=True), NOW) == 0.0


def test_retry_after_literal_http_date() -> None:
    assert parse_retry_after("Thu, 02 Jan 2025 03:05:05 GMT", NOW) == 60.0


@pytest.mark.parametrize(
    "value", ["", "soon", "-5", "1.5", "12 seconds", "Thu, 99 Foo 2025", "0x10", "∞"]
)
def test_garbage_retry_after_is_none(value: str) -> None:
    assert parse_retry_after(value, NOW) is None


@pytest.mark.parametrize("value", ["²", "1²"])
def test_retry_after_with_digit_like_characters_is_none(value: str) -> None:
    """An upstream's odd header must not raise out of the response hook."""
    assert parse_retry_after(value, NOW) is None


def test_the_per_host_table_is_capped_and_folds_the_rest_into_other_hosts() -> None:
    """3,000 hosts under one glob made a 450 KB stats file and 12,000 lines of /metrics."""
    stats = Stats(mode="record", window_size=10)
    for n in range(3000):
        stats.hit(f"r{n}.openai.azure.com")
    stats.hit("r0.openai.azure.com")
    snapshot = stats.snapshot()
    assert len(snapshot["by_host"]) == MAX_HOSTS + 1
    assert snapshot["by_host"][OTHER_HOSTS]["hits"] == 3000 - MAX_HOSTS
    assert snapshot["by_host"]["r0.openai.azure.com"]["hits"] == 2
    assert sum(c["hits"] for c in snapshot["by_host"].values()) == snapshot["hits"] == 3001


def test_a_remote_tier_adds_tiers_and_its_counts_to_the_snapshot_and_counters() -> None:
    stats = Stats(mode="record", window_size=10, remote=RemoteCounts("s3://b-1/p"))
    before = stats.counters()
    stats.hit(HOST)
    stats.hit(HOST)
    stats.from_remote()
    assert stats.remote is not None
    stats.remote.uploaded += 1
    assert stats.counters() != before
    document = stats.snapshot()
    assert document["tiers"] == {"local": 1, "remote": 1}
    assert document["remote"]["uploaded"] == 1 and document["remote"]["location"] == "s3://b-1/p"
    assert "tiers" not in Stats(mode="record", window_size=10).snapshot()


def test_remote_key_lists_are_capped_and_never_repeat_a_key() -> None:
    counts = RemoteCounts("s3://b-1/p")
    for n in range(REMOTE_KEYS_LIMIT + 5):
        counts.list_key("failed_keys", f"{n:064x}")
        counts.list_key("failed_keys", f"{n:064x}")
    assert len(counts.failed_keys) == REMOTE_KEYS_LIMIT == len(set(counts.failed_keys))


# --- per test (SPEC §12) ---------------------------------------------------------------------


def test_no_test_named_means_no_by_test_field() -> None:
    stats = Stats(mode="replay", window_size=10)
    stats.hit(HOST)
    assert "by_test" not in stats.snapshot()


def test_lookups_count_for_the_test_running_and_none_between_tests() -> None:
    stats = Stats(mode="record", window_size=10)
    stats.run_test("tests/test_a.py::test_one")
    stats.hit(HOST)
    stats.miss(HOST, "POST", URL, "k1", normalized())
    stats.record(HOST)
    stats.run_test(None)
    stats.hit(HOST)  # between tests (a session fixture): counted in total only
    stats.run_test("tests/test_a.py::test_two")
    stats.failed_lookup(HOST)
    snap = stats.snapshot()
    assert snap["hits"] == 2
    assert snap["by_test"] == {
        "tests/test_a.py::test_one": {"hits": 1, "misses": 1, "recorded": 1, "hit_rate": 0.5},
        "tests/test_a.py::test_two": {"hits": 0, "misses": 1, "recorded": 0, "hit_rate": 0.0},
    }
    assert stats.test_counts() == {"hits": 0, "misses": 1, "recorded": 0, "hit_rate": 0.0}


def test_a_missed_request_names_each_test_that_sent_it_once() -> None:
    stats = Stats(mode="replay", window_size=10)
    for test in ("t::a", "t::b", "t::a"):
        stats.run_test(test)
        stats.miss(HOST, "POST", URL, "k1", normalized())
    (missed,) = stats.snapshot()["missed"]
    assert missed["count"] == 3 and missed["tests"] == ["t::a", "t::b"]
