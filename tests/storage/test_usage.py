"""The usage log (real LMDB on disk): the run counter and the last run that hit each entry."""

from __future__ import annotations

from pathlib import Path

import pytest

from provider_cache.storage.cachedir import USAGE_DIR
from provider_cache.storage.store import StoreError
from provider_cache.storage.usage import RUN_COUNTER, LastHit, Usage


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
