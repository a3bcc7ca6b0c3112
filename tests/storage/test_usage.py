"""The usage log (real LMDB on disk): the run counter and the last run that hit each entry."""

from __future__ import annotations

from pathlib import Path

import msgpack
import pytest

from provider_cache.storage.cachedir import USAGE_DIR
from provider_cache.storage.store import StoreError
from provider_cache.storage.usage import (
    KEEP_RUNS,
    RUN_COUNTER,
    KeyUsage,
    LastHit,
    RunRecord,
    Usage,
    Window,
    note_arrivals,
    window,
)


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def test_usage_lives_in_its_own_environment_under_the_cache_dir(cache_dir: Path) -> None:
    """Not in data.mdb: the committed recordings must not change when a suite replays them."""
    Usage(cache_dir).close()
    assert (cache_dir / USAGE_DIR / "data.mdb").is_file()
    assert not (cache_dir / "data.mdb").exists()


def test_begin_run_counts_up_across_reopening(cache_dir: Path) -> None:
    usage = Usage(cache_dir)
    assert usage.current_run() == 0
    assert [usage.begin_run(), usage.begin_run()] == [1, 2]
    usage.close()
    usage = Usage(cache_dir)
    assert usage.current_run() == 2
    assert usage.begin_run() == 3
    assert usage.current_run() == 3
    usage.close()


def test_mark_hits_then_last_hit(cache_dir: Path) -> None:
    usage = Usage(cache_dir)
    run = usage.begin_run()
    usage.mark_hits({"k1": 100.5, "k2": 200.25}, run)
    assert usage.last_hit("k1") == LastHit(run=1, at=100.5)
    assert usage.last_hit("k2") == LastHit(run=1, at=200.25)
    assert usage.last_hit("never-hit") is None
    usage.close()


def test_a_later_run_replaces_the_last_hit(cache_dir: Path) -> None:
    usage = Usage(cache_dir)
    usage.mark_hits({"k1": 10.0}, usage.begin_run())
    usage.mark_hits({"k1": 20.0}, usage.begin_run())
    assert usage.last_hit("k1") == LastHit(run=2, at=20.0)
    usage.close()


def test_hits_survive_reopening(cache_dir: Path) -> None:
    usage = Usage(cache_dir)
    usage.mark_hits({"k1": 1.0}, usage.begin_run())
    usage.close()
    usage = Usage(cache_dir)
    assert usage.last_hit("k1") == LastHit(1, 1.0)
    usage.close()


def test_all_hits_lists_every_key_but_not_the_run_counter(cache_dir: Path) -> None:
    usage = Usage(cache_dir)
    run = usage.begin_run()
    usage.mark_hits({"b": 2.0, "a": 1.0}, run)
    assert usage.all_hits() == {"a": LastHit(1, 1.0), "b": LastHit(1, 2.0)}
    assert RUN_COUNTER.decode() not in usage.all_hits()
    usage.close()


def test_all_hits_of_a_fresh_log_is_empty(cache_dir: Path) -> None:
    usage = Usage(cache_dir)
    usage.begin_run()
    assert usage.all_hits() == {}
    usage.close()


def test_forget_removes_one_key_only(cache_dir: Path) -> None:
    usage = Usage(cache_dir)
    run = usage.begin_run()
    usage.mark_hits({"k1": 1.0, "k2": 2.0}, run)
    usage.forget("k1")
    usage.forget("never-there")  # nothing to forget is fine
    assert usage.last_hit("k1") is None
    assert usage.all_hits() == {"k2": LastHit(1, 2.0)}
    assert usage.current_run() == 1
    usage.close()


def test_open_if_present_is_none_for_a_store_never_replayed(cache_dir: Path) -> None:
    assert Usage.open_if_present(cache_dir) is None  # no cache directory at all
    cache_dir.mkdir()
    (cache_dir / "data.mdb").write_bytes(b"")  # recordings, but no usage log
    assert Usage.open_if_present(cache_dir) is None
    assert not (cache_dir / USAGE_DIR).exists()  # and looking did not create one


def test_open_if_present_opens_read_only(cache_dir: Path) -> None:
    usage = Usage(cache_dir)
    usage.mark_hits({"k1": 5.0}, usage.begin_run())
    usage.close()
    found = Usage.open_if_present(cache_dir)
    assert found is not None
    try:
        assert found.store.readonly is True
        assert found.current_run() == 1
        assert found.last_hit("k1") == LastHit(1, 5.0)
        with pytest.raises(StoreError, match="cannot write cache store"):
            found.begin_run()
    finally:
        found.close()


def test_read_only_open_sees_what_was_written(cache_dir: Path) -> None:
    usage = Usage(cache_dir)
    usage.mark_hits({"k": 3.0}, usage.begin_run())
    usage.close()
    readonly = Usage(cache_dir, readonly=True)
    assert readonly.all_hits() == {"k": LastHit(1, 3.0)}
    readonly.close()


# -- issue 12: the ledger of runs, and when entries arrived -----------------------------------


def test_a_run_counts_only_with_lookups_and_every_member_ended(cache_dir: Path) -> None:
    usage = Usage(cache_dir)
    idle = usage.begin_run(pid=10, at=100.0)
    usage.end_member(idle, 10, lookups=0)
    used = usage.begin_run(pid=11, at=200.0)
    assert usage.join_run(pid=12) == used
    usage.end_member(used, 11, lookups=3)
    assert not usage.runs()[used].counts  # member 12 has not ended (or was killed)
    usage.end_member(used, 12, lookups=0)
    runs = usage.runs()
    assert runs[idle] == RunRecord(100.0, [10], [10], 0) and not runs[idle].counts
    assert runs[used] == RunRecord(200.0, [11, 12], [11, 12], 3) and runs[used].counts
    usage.close()


def test_a_member_cut_short_keeps_its_run_from_counting(cache_dir: Path) -> None:
    usage = Usage(cache_dir)
    run = usage.begin_run(pid=10)
    usage.end_member(run, 10, lookups=None)
    assert usage.runs()[run].interrupted and not usage.runs()[run].counts
    usage.close()


def test_mark_interrupted_finds_the_latest_run_of_a_member(cache_dir: Path) -> None:
    usage = Usage(cache_dir)
    first = usage.begin_run(pid=7)
    usage.end_member(first, 7, lookups=2)
    second = usage.begin_run(pid=7)  # the same pid again, later
    usage.end_member(second, 7, lookups=2)
    assert usage.mark_interrupted(7) == second
    assert usage.mark_interrupted(99) is None
    runs = usage.runs()
    assert runs[first].counts and not runs[second].counts
    usage.close()


def test_joining_without_a_current_run_begins_one(cache_dir: Path) -> None:
    """A ledger from before runs were recorded: the counter, but no record to join."""
    usage = Usage(cache_dir)
    usage.store.put(RUN_COUNTER, b"4")
    assert usage.join_run(pid=1, at=50.0) == 5
    assert usage.runs() == {5: RunRecord(50.0, [1])}
    usage.close()


def test_unreadable_run_records_are_no_evidence(cache_dir: Path) -> None:
    usage = Usage(cache_dir)
    run = usage.begin_run()
    usage.store.put(b"~run/%010d" % run, b"\x92\x01")
    assert usage.runs() == {}
    usage.close()


def test_old_run_records_are_dropped(cache_dir: Path) -> None:
    usage = Usage(cache_dir)
    usage.store.put(RUN_COUNTER, str(KEEP_RUNS).encode())
    usage.store.put(b"~run/%010d" % 1, RunRecord(1.0, [1], [1], 1).pack())
    usage.begin_run()
    assert 1 not in usage.runs() and KEEP_RUNS + 1 in usage.runs()
    usage.close()


def test_arrivals_are_stamped_after_the_current_run_and_drop_old_hits(cache_dir: Path) -> None:
    usage = Usage(cache_dir)
    usage.mark_hits({"replaced": 1.0}, usage.begin_run())
    usage.begin_run()
    usage.note_arrivals([b"replaced", b"new"])
    keys = usage.all_keys()
    assert keys["replaced"] == KeyUsage(None, 2) and keys["new"] == KeyUsage(None, 2)
    usage.mark_hits({"new": 9.0}, usage.begin_run())  # a later hit keeps the arrival
    assert usage.all_keys()["new"] == KeyUsage(LastHit(3, 9.0), 2)
    assert usage.all_hits() == {"new": LastHit(3, 9.0)}
    usage.close()


def test_arrivals_of_a_whole_store_forget_every_other_key(cache_dir: Path) -> None:
    usage = Usage(cache_dir)
    usage.mark_hits({"gone": 1.0, "kept": 2.0}, usage.begin_run())
    usage.note_arrivals([b"kept"], only_these=True)
    assert usage.all_keys() == {"kept": KeyUsage(None, 1)}
    assert usage.current_run() == 1 and list(usage.runs()) == [1]  # the ledger stays
    usage.close()


def test_a_hit_value_from_before_arrivals_were_kept_still_reads(cache_dir: Path) -> None:
    usage = Usage(cache_dir)
    usage.store.put(b"k", msgpack.packb([3, 30.0]))
    usage.store.put(b"bad", b"\xc1")
    assert usage.all_keys() == {"k": KeyUsage(LastHit(3, 30.0)), "bad": KeyUsage()}
    usage.mark_hits({"bad": 1.0}, usage.begin_run())  # a bad value is simply replaced
    assert usage.last_hit("bad") == LastHit(1, 1.0)
    usage.close()


def test_note_arrivals_needs_a_usage_log_and_creates_none(cache_dir: Path) -> None:
    note_arrivals(cache_dir, [b"k"])
    assert not (cache_dir / USAGE_DIR).exists()


def test_the_window_is_the_last_n_counted_runs() -> None:
    runs = {
        1: RunRecord(100.0, [1], [1], 5),
        2: RunRecord(200.0, [1], [1], 0),  # idle
        3: RunRecord(300.0, [1], [], 5),  # killed
        4: RunRecord(400.0, [1], [1], 5, interrupted=True),
        5: RunRecord(500.0, [1, 2], [2, 1], 5),
    }
    assert window(runs, 2) == Window([1, 5], 100.0)
    assert window(runs, 1) == Window([5], 500.0)
    assert window(runs, 3) is None


@pytest.mark.parametrize(
    ("recorded_at", "key_usage", "unused"),
    [
        (450.0, None, True),  # recorded before run 5 began: present in it, not hit
        (550.0, None, False),  # recorded after run 5 began (pulled from git meanwhile)
        (10.0, KeyUsage(LastHit(5, 510.0)), False),
        (10.0, KeyUsage(LastHit(4, 410.0)), True),
        (10.0, KeyUsage(None, 4), True),  # arrived after run 4: present in run 5
        (10.0, KeyUsage(None, 5), False),  # arrived after run 5 (a merge just now)
        (10.0, KeyUsage(LastHit(6, 610.0), 5), False),
    ],
)
def test_an_entry_is_unused_if_present_in_the_whole_window_and_hit_in_none(
    recorded_at: float, key_usage: KeyUsage | None, unused: bool
) -> None:
    assert Window([5], 500.0).unused(recorded_at, key_usage) is unused
