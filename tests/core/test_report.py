"""The CI gate's logic (SPEC §7): validating, summing shards, judging, rendering."""

from __future__ import annotations

import copy
import re

import pytest

from provider_cache.core.rejections import CUT_SHORT, REASONS, STREAM_ERROR, TOO_LARGE
from provider_cache.core.report import (
    BadStats,
    explain,
    gate,
    merge,
    percent,
    render_markdown,
    render_text,
    validate,
)
from provider_cache.core.stats import MISSED_LIMIT, RemoteCounts, Stats

KEY_A = "a" * 64
KEY_B = "b" * 64


def doc(hits: int = 0, misses: int = 0, **fields: object) -> dict:
    """A stats document as the proxy writes it (a real snapshot), with fields overridden."""
    document = Stats(mode="replay", window_size=100, started_at=0.0).snapshot()
    document.update(hits=hits, misses=misses, **fields)
    return document


def missed(key: str, count: int = 1, **fields: object) -> dict:
    return {
        "method": "POST",
        "url": "https://api.openai.com/v1/chat/completions",
        "key": key,
        "count": count,
        "request": {"headers": [], "query": [], "body_kind": "json", "body": '{"n":1}'},
        "closest": None,
        **fields,
    }


# --- validate --------------------------------------------------------------------------------


def test_a_real_snapshot_is_valid_and_returned_as_is() -> None:
    document = doc(hits=3, misses=1)
    assert validate(document, "stats.json") is document


BAD_DOCS: list[tuple[str, object, str]] = [
    ("list", [1, 2], "not a provider-cache stats file"),
    ("null", None, "not a provider-cache stats file"),
    ("string", "hits", "not a provider-cache stats file"),
    ("empty-object", {}, "not a provider-cache stats file"),
    ("no-misses", {"schema": 1, "hits": 1}, "not a provider-cache stats file"),
    ("no-hits", {"schema": 1, "misses": 1}, "not a provider-cache stats file"),
    ("no-schema", {"hits": 1, "misses": 1}, "unknown stats schema None (expected 1)"),
    ("schema-2", {**doc(), "schema": 2}, "unknown stats schema 2 (expected 1)"),
    ("schema-str", {**doc(), "schema": "1"}, "unknown stats schema '1' (expected 1)"),
    ("hits-negative", {**doc(), "hits": -1}, "field 'hits' is not a count"),
    ("hits-float", {**doc(), "hits": 1.5}, "field 'hits' is not a count"),
    ("misses-str", {**doc(), "misses": "3"}, "field 'misses' is not a count"),
    ("recorded-missing", {k: v for k, v in doc().items() if k != "recorded"}, "'recorded'"),
    ("passthrough-null", {**doc(), "passthrough": None}, "field 'passthrough' is not a count"),
    ("errors-list", {**doc(), "errors": [1]}, "field 'errors' is not a count"),
]


@pytest.mark.parametrize(
    ("document", "message"), [b[1:] for b in BAD_DOCS], ids=[b[0] for b in BAD_DOCS]
)
def test_invalid_documents_are_bad_stats_naming_the_source(document: object, message: str) -> None:
    with pytest.raises(BadStats) as raised:
        validate(document, "shard-3.json")
    text = str(raised.value)
    assert text.startswith("shard-3.json: ")
    assert message in text
    assert "\n" not in text


#: Issue 12: a wrong type anywhere the gate reads is refused, naming the field, instead of
#: raising in merge() or render (which the command reported as a traceback and exit 1).
BAD_SHAPES: list[tuple[str, dict, str]] = [
    ("mode-list", {"mode": []}, "field 'mode' is not a string"),
    ("mode-number", {"mode": 3}, "field 'mode' is not a string"),
    ("rate-limited-str", {"rate_limited": "x"}, "field 'rate_limited' is not a count"),
    ("rate-limited-bool", {"rate_limited": True}, "field 'rate_limited' is not a count"),
    ("retry-after-str", {"retry_after": "x"}, "field 'retry_after' is not a number of seconds"),
    ("retry-after-neg", {"retry_after": -1}, "field 'retry_after' is not a number of seconds"),
    ("retry-after-inf", {"retry_after": float("inf")}, "'retry_after' is not a number of"),
    ("retry-after-nan", {"retry_after": float("nan")}, "'retry_after' is not a number of"),
    ("missed-dropped-str", {"missed_dropped": "x"}, "field 'missed_dropped' is not a count"),
    ("hit-rate-str", {"hit_rate": "1"}, "field 'hit_rate' is not a number or null"),
    ("started-at-str", {"started_at": "now"}, "field 'started_at' is not a number"),
    ("window-list", {"window": []}, "field 'window' is not an object"),
    ("window-hits-str", {"window": {"size": 1, "hits": "a"}}, "field 'window.hits' is not a"),
    ("window-size-neg", {"window": {"size": -1}}, "field 'window.size' is not a count"),
    ("by-host-list", {"by_host": [1]}, "field 'by_host' is not an object"),
    ("by-host-int", {"by_host": {"h": 3}}, "field \"by_host['h']\" is not an object"),
    (
        "by-host-hits-str",
        {"by_host": {"h": {"hits": "x"}}},
        "field \"by_host['h'].hits\" is not a count",
    ),
    (
        "by-host-rate-str",
        {"by_host": {"h": {"hits": 1, "hit_rate": "x"}}},
        "field \"by_host['h'].hit_rate\" is not a number or null",
    ),
    ("missed-object", {"missed": {}}, "field 'missed' is not a list"),
    ("missed-item-int", {"missed": [1]}, "field 'missed[0]' is not an object"),
    (
        "missed-no-count",
        {"missed": [{"method": "GET", "url": "u", "key": "k"}]},
        "'missed[0].count'",
    ),
    (
        "missed-key-int",
        {"missed": [{"method": "GET", "url": "u", "key": 1, "count": 1}]},
        "'missed[0].key' is not a string",
    ),
    (
        "missed-url-null",
        {"missed": [{"method": "GET", "url": None, "key": "k", "count": 1}]},
        "'missed[0].url' is not a string",
    ),
    (
        "missed-request-list",
        {"missed": [{"method": "GET", "url": "u", "key": "k", "count": 1, "request": []}]},
        "'missed[0].request' is not an object",
    ),
    (
        "missed-body-int",
        {"missed": [{"method": "GET", "url": "u", "key": "k", "count": 1, "request": {"body": 5}}]},
        "'missed[0].request.body' is not a string",
    ),
    (
        "missed-closest-str",
        {"missed": [{"method": "GET", "url": "u", "key": "k", "count": 1, "closest": "x"}]},
        "'missed[0].closest' is not an object or null",
    ),
    (
        "missed-closest-diffs",
        {
            "missed": [
                {
                    "method": "GET",
                    "url": "u",
                    "key": "k",
                    "count": 1,
                    "closest": {"key": "c", "differences": [1]},
                }
            ]
        },
        "'missed[0].closest.differences[0]' is not a string",
    ),
    (
        "missed-closest-more",
        {
            "missed": [
                {
                    "method": "GET",
                    "url": "u",
                    "key": "k",
                    "count": 1,
                    "closest": {"key": "c", "differences": [], "more": "2"},
                }
            ]
        },
        "'missed[0].closest.more' is not a count",
    ),
    ("rejected-list", {"rejected": [1]}, "field 'rejected' is not an object"),
    ("rejected-str", {"rejected": {"cut_short": "2"}}, "'rejected.cut_short' is not a count"),
    ("rejected-negative", {"rejected": {"cut_short": -1}}, "'rejected.cut_short' is not a"),
    (
        "by-host-rejected-int",
        {"by_host": {"h": {"hits": 1, "rejected": 3}}},
        "field \"by_host['h'].rejected\" is not an object",
    ),
    (
        "by-host-rejected-bool",
        {"by_host": {"h": {"rejected": {"too_large": True}}}},
        "field \"by_host['h'].rejected.too_large\" is not a count",
    ),
]


@pytest.mark.parametrize(
    ("fields", "message"), [b[1:] for b in BAD_SHAPES], ids=[b[0] for b in BAD_SHAPES]
)
def test_a_wrong_type_anywhere_is_bad_stats_naming_the_field(fields: dict, message: str) -> None:
    with pytest.raises(BadStats) as raised:
        validate({**doc(hits=1, misses=1), **fields}, "shard-3.json")
    text = str(raised.value)
    assert text.startswith("shard-3.json: ") and message in text and "\n" not in text


def test_a_host_name_with_a_newline_keeps_the_message_on_one_line() -> None:
    with pytest.raises(BadStats) as raised:
        validate({**doc(), "by_host": {"a\nb": {"hits": "x"}}}, "s.json")
    assert "\n" not in str(raised.value) and "hits" in str(raised.value)


def test_every_shape_the_proxy_writes_is_valid() -> None:
    """A snapshot with hosts, a window, missed requests with and without a closest recording,
    rate limits and a retry-after: what the proxy writes passes as it is."""
    stats = Stats(mode="record", window_size=10)
    stats.hit("api.openai.com")
    normalized = {
        "headers": [("a", "b")],
        "query": [("q", "1")],
        "body_kind": "json",
        "body": b"{}",
    }
    stats.miss("api.openai.com", "POST", "https://api.openai.com/v1/x", KEY_A, normalized)
    stats.miss("api.openai.com", "POST", "https://api.openai.com/v1/y", KEY_B, normalized)
    stats.missed[KEY_A].closest = {"key": KEY_B, "differences": ["body $.n: 0 → 1"], "more": 0}
    stats.rate_limit(7.0)
    document = stats.snapshot()
    assert validate(document, "s.json") is document
    assert validate({**document, "retry_after": None, "hit_rate": None}, "s.json")


def test_bad_stats_is_a_value_error() -> None:
    assert issubclass(BadStats, ValueError)


@pytest.mark.parametrize("value", [True, False])
def test_a_boolean_is_not_a_count(value: bool) -> None:
    with pytest.raises(BadStats, match="'hits' is not a count"):
        validate({**doc(), "hits": value}, "stats.json")


# --- merge -----------------------------------------------------------------------------------


def test_merge_of_one_document_keeps_its_counts() -> None:
    merged = merge([doc(hits=3, misses=1, recorded=2, passthrough=4, errors=5)])
    assert [merged[k] for k in ("hits", "misses", "recorded", "passthrough", "errors")] == [
        3,
        1,
        2,
        4,
        5,
    ]
    assert (merged["shards"], merged["mode"], merged["hit_rate"]) == (1, "replay", 0.75)


def test_merge_sums_the_totals_of_shards() -> None:
    merged = merge(
        [
            doc(hits=3, misses=1, recorded=1, passthrough=0, errors=2, rate_limited=1),
            doc(hits=5, misses=3, recorded=0, passthrough=7, errors=0, rate_limited=2),
        ]
    )
    assert (merged["hits"], merged["misses"], merged["recorded"]) == (8, 4, 1)
    assert (merged["passthrough"], merged["errors"], merged["rate_limited"]) == (7, 2, 3)
    assert merged["hit_rate"] == 8 / 12
    assert merged["shards"] == 2


def test_merge_sums_windows() -> None:
    merged = merge(
        [
            doc(window={"size": 100, "hits": 9, "misses": 1, "hit_rate": 0.9}),
            doc(window={"size": 50, "hits": 1, "misses": 9, "hit_rate": 0.1}),
            doc(),  # a shard without lookups: its window is empty
        ]
    )
    assert merged["window"] == {"size": 250, "hits": 10, "misses": 10, "hit_rate": 0.5}


def test_merge_sums_per_host_counts_and_recomputes_their_hit_rates() -> None:
    merged = merge(
        [
            doc(
                by_host={
                    "b.example": {"hits": 1, "misses": 1, "recorded": 0, "errors": 0},
                    "a.example": {"hits": 2, "misses": 0, "recorded": 1, "errors": 1},
                }
            ),
            doc(by_host={"b.example": {"hits": 2, "misses": 0, "recorded": 3, "errors": 0}}),
        ]
    )
    assert list(merged["by_host"]) == ["a.example", "b.example"]
    assert merged["by_host"]["b.example"] == {
        "hits": 3,
        "misses": 1,
        "recorded": 3,
        "errors": 0,
        "rejected": {},
        "hit_rate": 0.75,
    }
    assert merged["by_host"]["a.example"]["hit_rate"] == 1.0


def rejecting(*rejections: tuple[str, str]) -> dict:
    """A real snapshot of a recording proxy that did not store these (host, reason) answers."""
    stats = Stats(mode="record", window_size=10, started_at=0.0)
    for host, reason in rejections:
        stats.hit(host)  # a host line in the report
        stats.reject(host, reason)
    return validate(stats.snapshot(), "s.json")


def test_merge_sums_rejections_in_total_and_per_host() -> None:
    merged = merge(
        [
            rejecting(("a.example", CUT_SHORT), ("b.example", CUT_SHORT)),
            rejecting(("a.example", CUT_SHORT), ("a.example", TOO_LARGE)),
            doc(hits=1),  # nothing rejected
        ]
    )
    assert merged["rejected"] == {**dict.fromkeys(REASONS, 0), CUT_SHORT: 3, TOO_LARGE: 1}
    assert merged["by_host"]["a.example"]["rejected"] == {CUT_SHORT: 2, TOO_LARGE: 1}
    assert merged["by_host"]["b.example"]["rejected"] == {CUT_SHORT: 1}


def test_merge_of_shards_without_rejections_lists_every_reason_at_zero() -> None:
    """Stats files written before rejections were counted have no `rejected`."""
    old = {k: v for k, v in doc(hits=2).items() if k != "rejected"}
    old["by_host"] = {"h": {"hits": 2, "misses": 0, "recorded": 0, "errors": 0}}
    merged = merge([validate(old, "old.json")])
    assert merged["rejected"] == dict.fromkeys(REASONS, 0)
    assert merged["by_host"]["h"]["rejected"] == {}


def test_merge_keeps_a_reason_it_does_not_know_after_the_known_ones() -> None:
    """A newer proxy's reason is summed, not dropped (validate leaves unknown fields alone)."""
    newer = validate(doc(rejected={"quota": 2, CUT_SHORT: 1}), "new.json")
    merged = merge([newer, doc(rejected={"quota": 1})])
    assert list(merged["rejected"]) == [*REASONS, "quota"]
    assert (merged["rejected"]["quota"], merged["rejected"][CUT_SHORT]) == (3, 1)


def test_merge_joins_missed_requests_by_key_summing_their_counts() -> None:
    closest = {"key": "c" * 64, "differences": ["body $.n: 0 → 1"], "more": 0}
    first = [missed(KEY_A, 2, closest=closest), missed(KEY_B, 1)]
    second = [missed(KEY_A, 3), missed("d" * 64, 4)]
    merged = merge(
        [doc(missed=first, missed_dropped=1), doc(missed=second, missed_dropped=5), doc()]
    )
    assert [(m["key"], m["count"]) for m in merged["missed"]] == [
        (KEY_A, 5),
        (KEY_B, 1),
        ("d" * 64, 4),
    ]
    assert merged["missed"][0]["closest"] == closest  # the first shard's diagnosis is kept
    assert merged["missed_dropped"] == 6


def test_merge_does_not_change_its_inputs() -> None:
    docs = [doc(missed=[missed(KEY_A, 2)]), doc(missed=[missed(KEY_A, 3)])]
    before = copy.deepcopy(docs)
    merge(docs)
    assert docs == before


@pytest.mark.parametrize(
    ("modes", "expected"),
    [(["replay"], "replay"), (["replay", "replay"], "replay"), (["record", "replay"], "mixed")],
)
def test_merge_names_the_mode_or_mixed(modes: list[str], expected: str) -> None:
    assert merge([doc(mode=m) for m in modes])["mode"] == expected


@pytest.mark.parametrize(
    ("waits", "expected"), [([None, None], None), ([None, 3.0], 3.0), ([10.0, 2.5], 10.0)]
)
def test_merge_keeps_the_longest_retry_after(
    waits: list[float | None], expected: float | None
) -> None:
    assert merge([doc(retry_after=w) for w in waits])["retry_after"] == expected


def test_merge_takes_optional_fields_as_absent() -> None:
    """Only the totals are required by validate(): the rest defaults to nothing."""
    minimal = {"schema": 1, "hits": 1, "misses": 1, "recorded": 0, "passthrough": 0, "errors": 0}
    merged = merge([validate(minimal, "m.json")])
    assert merged["mode"] == "?"
    assert (merged["by_host"], merged["missed"], merged["missed_dropped"]) == ({}, [], 0)
    assert merged["window"] == {"size": 0, "hits": 0, "misses": 0, "hit_rate": None}
    assert (merged["rate_limited"], merged["retry_after"]) == (0, None)


# --- gate ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hits", "misses", "threshold", "passed", "verdict"),
    [
        (
            19,
            1,
            0.95,
            True,
            "hit rate 95.0% meets the threshold 95.0% (19 hits, 1 misses)",
        ),
        (
            18,
            2,
            0.95,
            False,
            "hit rate 90.0% is below the threshold 95.0% (18 hits, 2 misses)",
        ),
        (10, 0, 1.0, True, "hit rate 100.0% meets the threshold 100.0% (10 hits, 0 misses)"),
        (0, 3, 0.0, True, "hit rate 0.0% meets the threshold 0.0% (0 hits, 3 misses)"),
        (0, 0, 0.95, True, "no provider lookups were made: nothing is stale"),
        (3, 1, None, True, "hit rate 75.0% (4 lookups); no threshold set"),
        (0, 0, None, True, "hit rate n/a (0 lookups); no threshold set"),
        (0, 5, None, True, "hit rate 0.0% (5 lookups); no threshold set"),
    ],
    ids=[
        "meets",
        "below",
        "all-hits",
        "zero-threshold",
        "no-lookups",
        "no-threshold",
        "nothing-no-threshold",
        "all-misses-no-threshold",
    ],
)
def test_gate_verdicts(
    hits: int, misses: int, threshold: float | None, passed: bool, verdict: str
) -> None:
    assert gate(merge([doc(hits=hits, misses=misses)]), threshold) == (passed, verdict)


def test_gate_on_summed_shards() -> None:
    """Each shard alone would pass or fail differently: the gate judges their sum."""
    merged = merge([doc(hits=10, misses=0), doc(hits=0, misses=10)])
    assert gate(merged, 0.5) == (
        True,
        "hit rate 50.0% meets the threshold 50.0% (10 hits, 10 misses)",
    )
    assert gate(merged, 0.51)[0] is False


@pytest.mark.parametrize(
    ("value", "text"), [(None, "n/a"), (0.0, "0.0%"), (1.0, "100.0%"), (2 / 3, "66.7%")]
)
def test_percent(value: float | None, text: str) -> None:
    assert percent(value) == text


# --- explain ---------------------------------------------------------------------------------


def test_explain_names_the_closest_recording_and_its_differences() -> None:
    closest = {"key": KEY_B, "differences": ["body $.n: 0 → 1", "header x: a → b"], "more": 0}
    assert explain(missed(KEY_A, closest=closest)) == [
        f"closest recording {KEY_B[:16]} differs in:",
        "  body $.n: 0 → 1",
        "  header x: a → b",
    ]


def test_explain_says_how_many_more_differences_there_are() -> None:
    closest = {"key": KEY_B, "differences": ["body $.n: 0 → 1"], "more": 3}
    assert explain(missed(KEY_A, closest=closest))[0] == (
        f"closest recording {KEY_B[:16]} differs in: (+3 more)"
    )


def test_explain_without_a_close_recording_shows_the_body_preview() -> None:
    item = missed(KEY_A)
    item["request"]["body"] = "x" * 500
    assert explain(item) == ["no recording of the same method, host and path", "body: " + "x" * 200]


@pytest.mark.parametrize("item", [{"request": {"body": ""}}, {}], ids=["empty-body", "no-request"])
def test_explain_without_a_body_says_only_that_nothing_is_close(item: dict) -> None:
    assert explain(item) == ["no recording of the same method, host and path"]


# --- render_text -----------------------------------------------------------------------------


def failing() -> tuple[dict, str, bool]:
    closest = {"key": KEY_B, "differences": ["body $.temperature: 0 → 0.7"], "more": 0}
    merged = merge(
        [
            doc(
                hits=1,
                misses=2,
                recorded=0,
                by_host={"api.openai.com": {"hits": 1, "misses": 2, "recorded": 0, "errors": 0}},
                missed=[missed(KEY_A, 2, closest=closest)],
                missed_dropped=4,
            )
        ]
    )
    passed, verdict = gate(merged, 0.9)
    return merged, verdict, passed


def test_render_text_of_a_failing_gate() -> None:
    merged, verdict, passed = failing()
    assert passed is False
    assert render_text(merged, verdict).splitlines() == [
        "provider-cache: hit rate 33.3% is below the threshold 90.0% (1 hits, 2 misses)",
        "mode replay: 1 hits, 2 misses, 0 recorded, 0 passthrough, 0 errors",
        "  api.openai.com: 1 hits, 2 misses (33.3%)",
        "missed requests (1):",
        f"  2x POST https://api.openai.com/v1/chat/completions  key {KEY_A[:16]}",
        f"      closest recording {KEY_B[:16]} differs in:",
        "        body $.temperature: 0 → 0.7",
        "  … and 4 more misses of requests not listed",
    ]


def test_render_text_without_misses_has_no_missed_section() -> None:
    merged = merge([doc(hits=4)])
    text = render_text(merged, gate(merged, 0.9)[1])
    assert "missed requests" not in text and "not listed" not in text
    assert text.splitlines()[0] == (
        "provider-cache: hit rate 100.0% meets the threshold 90.0% (4 hits, 0 misses)"
    )


def test_misses_beyond_the_list_are_counted_as_misses_not_as_distinct_requests() -> None:
    """The count goes up with every miss of an unlisted request (keeping the distinct ones
    would take memory without bound), so the report says misses, not distinct requests."""
    stats = Stats(mode="replay", window_size=10)
    normalized = {"headers": [], "query": [], "body_kind": "empty", "body": b""}
    for i in range(MISSED_LIMIT):
        stats.miss("h", "GET", f"https://h/{i}", f"k{i}", normalized)
    stats.miss("h", "GET", "https://h/again", "again", normalized)
    stats.miss("h", "GET", "https://h/again", "again", normalized)  # the same request again
    merged = merge([validate(stats.snapshot(), "stats.json")])
    text = render_text(merged, gate(merged, None)[1])
    assert "  … and 2 more misses of requests not listed" in text.splitlines()


def test_render_text_lists_the_answers_not_stored_by_reason_and_host() -> None:
    merged = merge(
        [rejecting(("a.example", CUT_SHORT), ("a.example", CUT_SHORT), ("b.example", STREAM_ERROR))]
    )
    lines = render_text(merged, "v").splitlines()
    assert lines[2:5] == [
        "not stored: 3 (2 cut_short, 1 stream_error)",
        "  a.example: 2 hits, 0 misses (100.0%); not stored: 2 cut_short",
        "  b.example: 1 hits, 0 misses (100.0%); not stored: 1 stream_error",
    ]


def test_render_text_says_nothing_of_rejections_when_every_answer_was_stored() -> None:
    text = render_text(merge([rejecting(), doc(hits=1)]), "v")
    assert "not stored" not in text


# --- render_markdown -------------------------------------------------------------------------


def test_markdown_of_a_failing_gate_shows_a_cross_and_never_a_tick() -> None:
    merged, verdict, passed = failing()
    markdown = render_markdown(merged, verdict, passed)
    assert markdown.startswith(f"### ❌ provider-cache: {verdict}\n")
    assert "✅" not in markdown
    assert markdown.endswith("\n")


def test_markdown_of_a_passing_gate_shows_a_tick() -> None:
    merged = merge([doc(hits=4)])
    passed, verdict = gate(merged, 0.9)
    markdown = render_markdown(merged, verdict, passed)
    assert markdown.startswith(f"### ✅ provider-cache: {verdict}\n")
    assert "❌" not in markdown
    assert "Missed requests" not in markdown


def test_markdown_summary_row_and_missed_table() -> None:
    merged, verdict, passed = failing()
    lines = render_markdown(merged, verdict, passed).splitlines()
    assert "| replay | 1 | 2 | 33.3% | 0 | 0 | 0 |" in lines
    assert lines[-1] == (
        f"| 2 | `POST https://api.openai.com/v1/chat/completions` | `{KEY_A[:16]}` | "
        f"closest recording {KEY_B[:16]} differs in:<br>body $.temperature: 0 → 0.7 |"
    )


def test_markdown_tables_the_answers_not_stored_by_host_and_reason() -> None:
    merged = merge([rejecting(("a.example", CUT_SHORT), ("a|b.example", STREAM_ERROR))])
    lines = render_markdown(merged, "v", True).splitlines()
    start = lines.index("**Answers not stored** (2: 1 cut_short, 1 stream_error):")
    assert lines[start + 2 : start + 6] == [
        "| host | reason | count | why |",
        "|---|---|---:|---|",
        "| a.example | cut_short | 1 | it was cut short |",
        "| a\\|b.example | stream_error | 1 | the stream reported an error |",
    ]
    assert len(cells(lines[start + 5])) == 4


def test_markdown_has_no_rejection_table_when_every_answer_was_stored() -> None:
    assert "not stored" not in render_markdown(merge([rejecting(), doc(hits=1)]), "v", True)


def cells(row: str) -> list[str]:
    """The cells of a GitHub markdown table row: split at pipes not escaped by a backslash."""
    return re.split(r"(?<!\\)\|", row)[1:-1]


def test_markdown_escapes_pipes_and_angle_brackets_in_the_explanation() -> None:
    item = missed(KEY_A)
    item["request"]["body"] = '{"q": "a|b <script>"}'
    merged = merge([doc(misses=1, missed=[item])])
    row = render_markdown(merged, "v", False).splitlines()[-1]
    assert len(cells(row)) == 4
    assert "&lt;script>" in row and "<script>" not in row


def test_markdown_row_of_a_url_with_a_pipe_keeps_four_cells() -> None:
    """A pipe inside backticks still ends a GitHub table cell unless it is escaped."""
    item = missed(KEY_A, url="https://api.example.com/v1/search?fields=a|b")
    merged = merge([doc(misses=1, missed=[item])])
    row = render_markdown(merged, "v", False).splitlines()[-1]
    assert len(cells(row)) == 4


# --- the remote tier (SPEC §11) ---------------------------------------------------------------


def remote_doc(hits: int, remote_hits: int, **counts: object) -> dict:
    """A real snapshot of a proxy with a remote tier, with counts overridden."""
    stats = Stats(mode="replay", window_size=100, started_at=0.0, remote=RemoteCounts("s3://b-1/p"))
    stats.hits, stats.remote_hits = hits, remote_hits
    for name, value in counts.items():
        setattr(stats.remote, name, value)
    return stats.snapshot()


def test_a_snapshot_with_a_remote_is_valid() -> None:
    document = remote_doc(3, 1, uploaded=2, failed_keys=[KEY_A])
    assert validate(document, "s") is document
    assert document["tiers"] == {"local": 2, "remote": 1}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"tiers": []}, "'tiers' is not an object"),
        ({"tiers": {"local": -1}}, "'tiers.local' is not a count"),
        ({"remote": {"uploaded": "2"}}, "'remote.uploaded' is not a count"),
        ({"remote": {"failed_keys": [3]}}, "'remote.failed_keys[0]' is not a string"),
        ({"remote": {"location": None}}, "'remote.location' is not a string"),
    ],
)
def test_a_wrong_remote_field_is_bad_stats(fields: dict, message: str) -> None:
    with pytest.raises(BadStats, match=re.escape(message)):
        validate(doc(**fields), "s")


def test_merge_sums_tiers_and_remote_counts_and_joins_their_keys() -> None:
    one = remote_doc(3, 1, uploaded=2, conflicts=1, conflict_keys=[KEY_A], failed=1)
    two = remote_doc(4, 4, misses=2, errors=1, pending=1, failed=1, failed_keys=[KEY_B])
    merged = merge([one, two, doc(hits=5)])  # a shard without a remote
    assert merged["tiers"] == {"local": 7, "remote": 5}
    remote = merged["remote"]
    assert remote["location"] == "s3://b-1/p"
    assert (remote["uploaded"], remote["misses"], remote["errors"]) == (2, 2, 1)
    assert (remote["pending"], remote["failed"], remote["conflicts"]) == (1, 2, 1)
    assert (remote["failed_keys"], remote["conflict_keys"]) == ([KEY_B], [KEY_A])
    other = remote_doc(0, 0)
    other["remote"]["location"] = "s3://b-2/p"
    assert merge([one, other])["remote"]["location"] == "mixed"


def test_merge_without_a_remote_adds_no_remote_fields() -> None:
    assert "remote" not in merge([doc(hits=1)]) and "tiers" not in merge([doc(hits=1)])


def test_the_reports_name_the_remote_tier_and_the_keys_not_uploaded() -> None:
    merged = merge([remote_doc(3, 1, uploaded=2, failed=1, failed_keys=[KEY_A])])
    text = render_text(merged, "ok")
    assert (
        "remote s3://b-1/p: 1 hits, 0 misses, 0 errors, 0 not asked; 2 uploaded, 0 pending, "
        "1 failed, 0 conflicts"
    ) in text
    assert f"  not uploaded: {KEY_A[:16]}" in text
    assert "remote s3://b-1/p: 1 hits" in render_markdown(merged, "ok", True)
    assert "remote" not in render_text(merge([doc(hits=1)]), "ok")


# --- per test (SPEC §12) ---------------------------------------------------------------------


def test_shards_sum_their_tests_and_the_reports_name_the_tests_that_missed() -> None:
    one = doc(1, 1, missed=[missed(KEY_A, tests=["t::changed"])])
    one["by_test"] = {"t::changed": {"hits": 0, "misses": 1, "recorded": 0, "hit_rate": 0.0}}
    one["by_test"]["t::fine"] = {"hits": 1, "misses": 0, "recorded": 0, "hit_rate": 1.0}
    two = doc(1, 1, missed=[missed(KEY_A, tests=["t::other"])])
    two["by_test"] = {"t::other": {"hits": 1, "misses": 1, "recorded": 0, "hit_rate": 0.5}}
    merged = merge([validate(one, "one"), validate(two, "two")])
    assert merged["by_test"]["t::other"]["hit_rate"] == 0.5
    assert merged["missed"][0]["tests"] == ["t::changed", "t::other"]
    text = render_text(merged, "verdict")
    assert "sent by t::changed, t::other" in text
    assert text.endswith("tests that missed (2):\n  t::changed\n  t::other")
    markdown = render_markdown(merged, "verdict", False)
    assert "**Tests that missed** (2):" in markdown and "- `t::fine`" not in markdown


def test_a_wrong_typed_test_name_is_named() -> None:
    with pytest.raises(BadStats, match=r"missed\[0\]\.tests\[0\]"):
        validate(doc(0, 1, missed=[missed(KEY_A, tests=[3])]), "f")


def test_a_miss_with_no_close_recording_still_says_which_rule_applied() -> None:
    item = missed(KEY_A)
    item["request"]["rules"] = ["cache_normalize uuid replaced 1 value"]
    assert explain(item)[:2] == [
        "no recording of the same method, host and path",
        "rule applied: cache_normalize uuid replaced 1 value",
    ]
