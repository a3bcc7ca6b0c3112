"""cache_rebuild.py's judgement of a run, and its lock: one rebuild of a store at a time."""

from __future__ import annotations

from pathlib import Path

import pytest

from provider_cache.cli.args import BELOW_THRESHOLD, Fail
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
