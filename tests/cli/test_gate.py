"""The gate command's loading and judging (SPEC §7): one-line failures, exit codes, formats."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from provider_cache.cli.args import BAD_INPUT, BELOW_THRESHOLD, OK, Fail
from provider_cache.cli.gate import judge, load_file
from provider_cache.core import report
from provider_cache.core.stats import Stats


def snapshot(hits: int = 0, misses: int = 0) -> dict:
    stats = Stats(mode="replay", window_size=100, started_at=0.0)
    for _ in range(hits):
        stats.hit("api.openai.com")
    for i in range(misses):
        stats.miss(
            "api.openai.com",
            "POST",
            "https://api.openai.com/v1/chat/completions",
            f"{i:064x}",
            {"headers": [], "query": [], "body_kind": "json", "body": b'{"n":%d}' % i},
        )
    return stats.snapshot()


def write(tmp_path: Path, content: str | bytes, name: str = "stats.json") -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


# --- load_file -------------------------------------------------------------------------------


def test_load_file_returns_a_valid_document(tmp_path: Path) -> None:
    document = snapshot(hits=2, misses=1)
    loaded = load_file(write(tmp_path, json.dumps(document)))
    assert loaded == json.loads(json.dumps(document))


def fail_of(path: Path) -> Fail:
    with pytest.raises(Fail) as raised:
        load_file(path)
    assert raised.value.code == BAD_INPUT == 2
    assert "\n" not in str(raised.value)
    return raised.value


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent" / "stats.json"
    assert str(fail_of(path)) == f"stats file not found: {path}"


@pytest.mark.parametrize(
    ("text", "where"),
    [("{not json", "line 1, column 2"), ('{"hits": 1,\n  oops}', "line 2, column 3"), ("", "")],
    ids=["bad-key", "second-line", "empty"],
)
def test_invalid_json(tmp_path: Path, text: str, where: str) -> None:
    path = write(tmp_path, text)
    message = str(fail_of(path))
    assert message.startswith(f"{path}: not valid JSON (line ")
    assert where in message


def test_json_that_is_not_a_stats_file(tmp_path: Path) -> None:
    path = write(tmp_path, json.dumps({"status": "ok"}))
    assert str(fail_of(path)) == f"{path}: not a provider-cache stats file"


def test_wrong_schema(tmp_path: Path) -> None:
    path = write(tmp_path, json.dumps({**snapshot(), "schema": 2}))
    assert str(fail_of(path)) == f"{path}: unknown stats schema 2 (expected 1)"


def test_a_count_that_is_not_a_count(tmp_path: Path) -> None:
    path = write(tmp_path, json.dumps({**snapshot(), "errors": -1}))
    assert str(fail_of(path)) == f"{path}: field 'errors' is not a count"


def test_a_file_that_is_not_text(tmp_path: Path) -> None:
    path = write(tmp_path, b"\xff\xfe\x00\x01")
    assert str(fail_of(path)).startswith(f"cannot read stats file {path}: ")


def test_a_directory_in_place_of_the_file(tmp_path: Path) -> None:
    path = tmp_path / "stats.json"
    path.mkdir()
    assert str(fail_of(path)) == f"cannot read stats file {path}: Is a directory"


# --- judge -----------------------------------------------------------------------------------


def merged(*docs: dict) -> dict:
    return report.merge([report.validate(d, "test") for d in docs])


@pytest.mark.parametrize("fmt", ["text", "json", "markdown"])
@pytest.mark.parametrize(
    ("hits", "misses", "threshold", "code"),
    [
        (19, 1, 0.95, OK),
        (18, 2, 0.95, BELOW_THRESHOLD),
        (0, 0, 0.95, OK),  # no lookups: nothing is stale
        (0, 5, None, OK),  # no threshold: never fails
        (0, 5, 0.0, OK),
    ],
)
def test_judge_exit_codes(
    hits: int, misses: int, threshold: float | None, code: int, fmt: str
) -> None:
    assert judge(merged(snapshot(hits, misses)), threshold, fmt)[0] == code


def test_below_threshold_is_exit_1() -> None:
    assert BELOW_THRESHOLD == 1 and OK == 0


@pytest.mark.parametrize(
    ("hits", "misses", "threshold", "passed"),
    [(19, 1, 0.95, True), (18, 2, 0.95, False), (3, 1, None, True)],
)
def test_json_format_is_the_merged_document_plus_the_gate(
    hits: int, misses: int, threshold: float | None, passed: bool
) -> None:
    document = merged(snapshot(hits, misses))
    code, out = judge(document, threshold, "json")
    parsed = json.loads(out)
    assert parsed["gate"] == {
        "passed": passed,
        "min_hit_rate": threshold,
        "min_lookups": 0,
        "verdict": report.gate(document, threshold)[1],
        "warnings": [],
    }
    assert (parsed["hits"], parsed["misses"], parsed["shards"]) == (hits, misses, 1)
    assert len(parsed["missed"]) == misses
    assert code == (OK if passed else BELOW_THRESHOLD)


def test_text_format_is_the_report_with_the_verdict_first() -> None:
    document = merged(snapshot(18, 2))
    code, out = judge(document, 0.95, "text")
    assert code == BELOW_THRESHOLD
    assert out.splitlines()[0] == (
        "provider-cache: hit rate 90.0% is below the threshold 95.0% (18 hits, 2 misses)"
    )
    assert out == report.render_text(document, report.gate(document, 0.95)[1])


@pytest.mark.parametrize(("hits", "icon", "not_icon"), [(20, "✅", "❌"), (18, "❌", "✅")])
def test_markdown_format_marks_the_verdict(hits: int, icon: str, not_icon: str) -> None:
    _, out = judge(merged(snapshot(hits, 20 - hits)), 0.95, "markdown")
    assert out.startswith(f"### {icon} provider-cache: ")
    assert not_icon not in out


def test_judge_of_summed_shards() -> None:
    code, out = judge(merged(snapshot(10, 0), snapshot(0, 10)), 0.6, "json")
    assert code == BELOW_THRESHOLD
    assert json.loads(out)["shards"] == 2
    assert json.loads(out)["hit_rate"] == 0.5


@pytest.mark.parametrize("fmt", ["text", "json", "markdown"])
@pytest.mark.parametrize(
    ("hits", "misses", "threshold", "min_lookups", "verdict"),
    [
        (0, 0, 0.95, 1, "0 provider lookups, fewer than the minimum 1"),
        (0, 0, None, 1, "0 provider lookups, fewer than the minimum 1"),
        (1, 0, 1.0, 2, "1 provider lookup, fewer than the minimum 2"),
        (2, 1, 0.5, 4, "3 provider lookups, fewer than the minimum 4"),
    ],
)
def test_too_few_lookups_fail_the_gate_naming_them(
    hits: int, misses: int, threshold: float | None, min_lookups: int, verdict: str, fmt: str
) -> None:
    """SPEC §7: a client that bypassed the proxy must not pass as "nothing stale"."""
    document = merged(snapshot(hits, misses))
    code, out = judge(document, threshold, fmt, min_lookups)
    assert code == BELOW_THRESHOLD
    expected = f"{verdict}: did the client bypass the proxy?"
    assert report.gate(document, threshold, min_lookups) == (False, expected)
    if fmt == "json":
        gate = json.loads(out)["gate"]
        assert (gate["passed"], gate["min_lookups"], gate["verdict"]) == (
            False,
            min_lookups,
            expected,
        )
    else:
        assert out.splitlines()[0] in (
            f"provider-cache: {expected}",
            f"### ❌ provider-cache: {expected}",
        )


@pytest.mark.parametrize(
    ("hits", "misses", "threshold", "min_lookups", "code", "verdict"),
    [
        (0, 0, 0.95, 0, OK, "no provider lookups were made: nothing is stale"),  # the default
        (3, 0, 1.0, 3, OK, "hit rate 100.0% meets the threshold 100.0% (3 hits, 0 misses)"),
        (2, 1, None, 3, OK, "hit rate 66.7% (3 lookups); no threshold set"),
        (2, 1, 1.0, 3, BELOW_THRESHOLD, "hit rate 66.7% is below the threshold 100.0%"),
    ],
)
def test_enough_lookups_leave_the_verdict_to_the_hit_rate(
    hits: int, misses: int, threshold: float | None, min_lookups: int, code: int, verdict: str
) -> None:
    got_code, out = judge(merged(snapshot(hits, misses)), threshold, "text", min_lookups)
    assert got_code == code
    assert out.splitlines()[0].startswith(f"provider-cache: {verdict}")


# --- answers not stored ----------------------------------------------------------------------


def rejecting_shard(tmp_path: Path, name: str, *reasons: str) -> Path:
    """A recording proxy's stats file that counted these answers as not stored."""
    stats = Stats(mode="record", window_size=100, started_at=0.0)
    stats.hit("api.openai.com")
    for reason in reasons:
        stats.reject("api.openai.com", reason)
    return write(tmp_path, json.dumps(stats.snapshot()), name)


def test_every_format_reports_the_rejections_summed_over_shard_files(tmp_path: Path) -> None:
    first = rejecting_shard(tmp_path, "a.json", "cut_short", "stream_error")
    second = rejecting_shard(tmp_path, "b.json", "cut_short")
    document = report.merge([load_file(first), load_file(second)])
    _, text = judge(document, None, "text")
    assert "not stored: 3 (2 cut_short, 1 stream_error)" in text.splitlines()
    assert (
        "  api.openai.com: 2 hits, 0 misses (100.0%); not stored: 2 cut_short, 1 stream_error"
        in (text.splitlines())
    )
    _, markdown = judge(document, None, "markdown")
    assert "| api.openai.com | cut_short | 2 | it was cut short |" in markdown.splitlines()
    _, out = judge(document, None, "json")
    parsed = json.loads(out)
    assert (parsed["rejected"]["cut_short"], parsed["rejected"]["stream_error"]) == (2, 1)
    assert parsed["by_host"]["api.openai.com"]["rejected"] == {"cut_short": 2, "stream_error": 1}


def test_rejections_alone_do_not_fail_the_gate(tmp_path: Path) -> None:
    """The hit rate judges staleness; answers not stored are reported, not judged."""
    document = report.merge([load_file(rejecting_shard(tmp_path, "a.json", "too_large"))])
    assert judge(document, 0.9, "text")[0] == OK


# --- freshness: unused entries and old recordings (SPEC §7) ---------------------------------


def test_fail_unused_fails_on_unused_entries_and_names_them() -> None:
    document = merged(snapshot(3, 0))
    document["unused"] = {"count": 2, "keys": ["a" * 64, "b" * 64]}
    code, out = judge(document, 1.0, "text", wanted=report.Freshness(fail_unused=True))
    assert code == BELOW_THRESHOLD
    assert out.splitlines()[0].endswith("; 2 unused entries (--fail-unused)")
    assert "unused entries (2): no request of this run used them" in out
    assert judge(document, 1.0, "text")[0] == OK  # reported, but only the flag fails


def test_fail_unused_without_the_field_fails_as_unknown() -> None:
    code, out = judge(merged(snapshot(3, 0)), None, "text", wanted=report.Freshness(True))
    assert code == BELOW_THRESHOLD and "unused entries unknown" in out


def test_max_age_fails_and_warn_age_only_warns() -> None:
    document = merged(snapshot(3, 0))
    document["oldest_used"] = {"recorded_at": time.time() - 40 * 86400, "key": "c" * 64}
    code, out = judge(document, None, "text", wanted=report.Freshness(warn_age=30 * 86400))
    assert code == OK and out.endswith(
        "warning: a recording used is 40d old, over --warn-age 30d (key cccccccccccccccc)"
    )
    code, out = judge(document, None, "markdown", wanted=report.Freshness(max_age=30 * 86400))
    assert code == BELOW_THRESHOLD and out.startswith("### ❌") and "over --max-age 30d" in out
    assert judge(document, None, "text", wanted=report.Freshness(max_age=50 * 86400))[0] == OK


def test_the_part_that_saw_the_most_use_gives_the_unused_entries() -> None:
    first, last = snapshot(1, 0), snapshot(2, 0)
    first["unused"] = {"count": 3, "keys": ["a", "b", "c"]}
    last["unused"] = {"count": 1, "keys": ["c"]}
    first["oldest_used"] = {"recorded_at": 5.0, "key": "old"}
    last["oldest_used"] = {"recorded_at": 9.0, "key": "newer"}
    combined = report.merge([first, last])
    assert combined["unused"] == {"count": 1, "keys": ["c"]}
    assert combined["oldest_used"]["key"] == "old"
