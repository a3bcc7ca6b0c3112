"""cache_rebuild.py's judgement of a run, its options, and its lock: one rebuild of a store at
a time."""

from __future__ import annotations

from pathlib import Path

import pytest

from provider_cache.cli.args import BAD_INPUT, BELOW_THRESHOLD, Fail
from provider_cache.cli.main import script_parser
from provider_cache.cli.rebuild import Run, StoreLock


def stats(hits: int, misses: int) -> dict:
    total = hits + misses
    return {"hits": hits, "misses": misses, "hit_rate": hits / total if total else None}


@pytest.mark.parametrize(
    ("status", "document", "meets"),
    [
        (0, stats(0, 0), True),  # nothing looked up, and the command passed: nothing stale
        (1, stats(0, 0), False),  # issue 12: `rebuild -- false` passed at "100.0%"
        (2, stats(0, 0), False),
        (0, stats(9, 1), False),
        (0, stats(10, 0), True),
        (1, stats(10, 0), True),  # with lookups the hit rate decides (a test may fail)
        (0, None, False),  # no stats at all: nothing is known
    ],
)
def test_a_run_meets_the_threshold(status: int, document: dict | None, meets: bool) -> None:
    assert Run(status, document).meets(1.0) is meets


@pytest.mark.parametrize(
    ("status", "document", "text"),
    [
        (0, stats(2, 1), "hit rate 66.7%"),
        (0, stats(0, 0), "no provider lookups"),
        (1, stats(0, 0), "no provider lookups"),
        (0, None, "no stats"),
    ],
)
def test_a_run_describes_its_outcome(status: int, document: dict | None, text: str) -> None:
    assert Run(status, document).outcome == text


def test_a_second_lock_of_one_store_fails_in_one_line_naming_the_holder(tmp_path: Path) -> None:
    cache_dir = tmp_path / "ci" / "recordings"
    with StoreLock(cache_dir) as lock:
        assert lock.path == tmp_path / "ci" / ".recordings.rebuild.lock"
        with pytest.raises(Fail) as raised, StoreLock(cache_dir):
            pass
        assert raised.value.code == BELOW_THRESHOLD == 1
        message = str(raised.value)
        assert message.startswith(f"another rebuild of {cache_dir} is running (pid ")
        assert "\n" not in message
        with StoreLock(tmp_path / "ci" / "other"):  # another store: its own lock
            pass
    assert not lock.path.exists()  # removed on release: nothing left beside the store
    with StoreLock(cache_dir):  # and free again
        pass


def test_a_lock_that_cannot_be_created_is_one_line_exit_2(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(Fail) as raised, StoreLock(tmp_path / "file" / "recordings"):
        pass
    assert raised.value.code == 2 and "cannot lock" in str(raised.value)


def test_a_retry_after_from_the_record_run_does_not_make_missing_stats_pass() -> None:
    """attempt() used to merge it into the verify run's stats: {"retry_after": 7.0} alone then
    read as a stats document (and raised KeyError on its counts)."""
    run = Run(0, None, limited_for=7.0)
    assert (run.meets(0.5), run.retry_after, run.outcome) == (False, 7.0, "no stats")
    assert Run(0, {**stats(1, 0), "retry_after": 3.0}).retry_after == 3.0


def test_a_record_run_says_what_it_recorded_not_the_stores_earlier_hit_rate() -> None:
    """Its hit rate is the store's before it recorded: "attempt 1/3 record: … hit rate 66.7%"
    read as if the rebuild had left the store short."""
    record = Run(0, {**stats(2, 1), "recorded": 1}, mode="record")
    assert record.outcome == "recorded 1 of 1 misses (2 hits)"
    assert Run(0, {**stats(2, 1), "recorded": 1}).outcome == "hit rate 66.7%"  # replay


@pytest.mark.parametrize(
    ("status", "document", "min_lookups", "meets"),
    [
        (0, stats(0, 0), 0, True),  # the default: no minimum
        (0, stats(0, 0), 1, False),  # a client that bypassed the proxy looks like this
        (0, stats(2, 0), 3, False),
        (0, stats(3, 0), 3, True),
        (0, stats(2, 1), 3, False),  # enough lookups; the hit rate still decides
    ],
)
def test_a_run_with_fewer_lookups_than_the_minimum_does_not_meet_it(
    status: int, document: dict, min_lookups: int, meets: bool
) -> None:
    assert Run(status, document).meets(1.0, min_lookups) is meets


def rebuild_args(*options: str) -> list[str]:
    return ["--min-hit-rate", "1.0", *options, "--", "true"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--max-attempts", "0"], "argument --max-attempts: must be 1 or more: '0'"),
        (["--max-attempts", "1.5"], "argument --max-attempts: not a whole number: '1.5'"),
        (["--base-delay", "-1"], "argument --base-delay: must be 0 or more: '-1'"),
        (["--max-delay", "-0.5"], "argument --max-delay: must be 0 or more: '-0.5'"),
        (["--base-delay", "nan"], "argument --base-delay: not a number of seconds: 'nan'"),
        (["--max-delay", "inf"], "argument --max-delay: not a number of seconds: 'inf'"),
        (["--factor", "0.5"], "argument --factor: must be 1 or more: '0.5'"),
        (["--min-lookups", "-1"], "argument --min-lookups: must be 0 or more: '-1'"),
        # Options that were accepted and did nothing:
        (["--fresh-for", "60"], "unrecognized arguments: --fresh-for"),
        (["--stats-file", "s.json"], "unrecognized arguments: --stats-file"),
        (["--proxy-log", "p.log"], "unrecognized arguments: --proxy-log"),
    ],
)
def test_bad_backoff_options_are_one_line_and_exit_2(options: list[str], message: str) -> None:
    with pytest.raises(Fail) as raised:
        script_parser("cache_rebuild").parse_args(rebuild_args(*options))
    assert raised.value.code == BAD_INPUT == 2
    assert str(raised.value).startswith(f"cache_rebuild.py: {message}")
    assert "\n" not in str(raised.value)


def test_the_backoff_options_accept_their_edges() -> None:
    options = ["--max-attempts", "1", "--base-delay", "0", "--max-delay", "0", "--factor", "1"]
    args = script_parser("cache_rebuild").parse_args(rebuild_args(*options, "--min-lookups", "0"))
    assert (args.max_attempts, args.base_delay, args.max_delay, args.factor) == (1, 0, 0, 1)
    assert args.min_lookups == 0 and not hasattr(args, "fresh_for")
