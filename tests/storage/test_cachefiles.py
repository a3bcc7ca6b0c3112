"""The files of one cache directory, opened and closed together (real LMDB in tmp_path)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import lmdb
import pytest

from provider_cache.storage.cachedir import GITIGNORE, USAGE_DIR
from provider_cache.storage.cachefiles import CacheFiles
from provider_cache.storage.usage import LastHit, Usage

MAP_SIZE = 1 << 20


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def files(cache_dir: Path) -> Iterator[CacheFiles]:
    opened = CacheFiles(cache_dir, cache_dir / "stats.json", MAP_SIZE)
    yield opened
    opened.close()


def last_hits(cache_dir: Path) -> dict[str, LastHit]:
    usage = Usage(cache_dir, readonly=True)
    try:
        return usage.all_hits()
    finally:
        usage.close()


def test_opening_creates_the_store_the_usage_log_and_the_gitignore(
    files: CacheFiles, cache_dir: Path
) -> None:
    assert (cache_dir / "data.mdb").is_file()
    assert (cache_dir / USAGE_DIR / "data.mdb").is_file()
    assert (cache_dir / ".gitignore").read_text() == GITIGNORE
    files.store.put(b"k", b"v")
    assert files.store.get(b"k") == b"v"
    assert files.run == 0 and files.closing is False


def test_opening_keeps_an_existing_gitignore(cache_dir: Path) -> None:
    cache_dir.mkdir()
    (cache_dir / ".gitignore").write_text("custom\n")
    CacheFiles(cache_dir, cache_dir / "stats.json", MAP_SIZE).close()
    assert (cache_dir / ".gitignore").read_text() == "custom\n"


def test_serves_its_own_cache_dir_and_stats_file_only(
    files: CacheFiles, cache_dir: Path, tmp_path: Path
) -> None:
    assert files.serves(cache_dir, cache_dir / "stats.json")
    assert not files.serves(tmp_path / "other", cache_dir / "stats.json")
    assert not files.serves(cache_dir, tmp_path / "elsewhere.json")


def test_begin_run_numbers_runs_across_reopening(cache_dir: Path) -> None:
    first = CacheFiles(cache_dir, cache_dir / "stats.json", MAP_SIZE)
    assert first.begin_run() == 1 and first.run == 1
    first.close()
    second = CacheFiles(cache_dir, cache_dir / "stats.json", MAP_SIZE)
    assert second.run == 0  # not started yet
    assert second.begin_run() == 2
    second.close()


def test_hits_are_held_in_memory_until_flushed(files: CacheFiles, cache_dir: Path) -> None:
    files.begin_run()
    files.note_hit("k1", 10.0)
    files.note_hit("k1", 11.0)  # the latest time counts
    files.note_hit("k2", 12.0)
    assert files.usage.all_hits() == {}
    files.flush_usage()
    assert files.usage.all_hits() == {"k1": LastHit(1, 11.0), "k2": LastHit(1, 12.0)}
    assert files.unwritten_hits == {}


def test_hits_before_begin_run_are_not_written_until_a_run_begins(files: CacheFiles) -> None:
    """Run 0 is no run: a hit is filed under the run that begins."""
    files.note_hit("k1", 10.0)
    files.flush_usage()
    assert files.usage.all_hits() == {}
    assert files.unwritten_hits == {"k1": 10.0}
    files.begin_run()
    files.flush_usage()
    assert files.usage.all_hits() == {"k1": LastHit(1, 10.0)}


def test_flush_without_hits_writes_nothing(files: CacheFiles) -> None:
    files.begin_run()
    files.flush_usage()
    assert files.usage.all_hits() == {}


def test_close_flushes_the_hits_still_in_memory(cache_dir: Path) -> None:
    files = CacheFiles(cache_dir, cache_dir / "stats.json", MAP_SIZE)
    files.begin_run()
    files.note_hit("k1", 5.0)
    files.close()
    assert last_hits(cache_dir) == {"k1": LastHit(1, 5.0)}


def test_close_closes_both_environments(cache_dir: Path) -> None:
    files = CacheFiles(cache_dir, cache_dir / "stats.json", MAP_SIZE)
    files.store.put(b"k", b"v")
    files.close()
    for env in (files.store.env, files.usage.store.env):
        with pytest.raises(lmdb.Error):
            env.stat()
    again = CacheFiles(cache_dir, cache_dir / "stats.json", MAP_SIZE)  # and it can be reopened
    try:
        assert again.store.get(b"k") == b"v"
    finally:
        again.close()


def test_write_stats_writes_the_snapshot_to_the_stats_file(cache_dir: Path, tmp_path: Path) -> None:
    stats_file = tmp_path / "reports" / "run.json"
    files = CacheFiles(cache_dir, stats_file, MAP_SIZE)
    try:
        files.write_stats({"schema": 1, "hits": 3})
        assert json.loads(stats_file.read_text()) == {"schema": 1, "hits": 3}
    finally:
        files.close()


def test_a_corrupt_usage_log_does_not_block_the_cache(tmp_path: Path):
    """The usage log is bookkeeping: a damaged one is set aside with a warning."""
    cache_dir = tmp_path / "cache"
    CacheFiles(cache_dir, cache_dir / "stats.json", 1 << 20).close()
    usage_data = cache_dir / "usage" / "data.mdb"
    usage_data.write_bytes(b"\0" * 100)  # neither an LMDB file nor of its recorded size
    files = CacheFiles(cache_dir, cache_dir / "stats.json", 1 << 20)
    try:
        assert files.usage is None
        assert files.begin_run() == 0
        files.note_hit("k", 1.0)
        files.flush_usage()  # nothing to write to: no error
        files.store.put(b"k", b"v")
        assert files.store.get(b"k") == b"v"
    finally:
        files.close()


# -- issue 12: overlapping proxies are one run; a run counts only when it ended cleanly --------

#: A second proxy process on the same cache directory: joins, says its run, waits, closes.
MEMBER = """\
import sys
from pathlib import Path
from provider_cache.storage.cachefiles import CacheFiles
cache_dir = Path(sys.argv[1])
files = CacheFiles(cache_dir, cache_dir / "stats.json", 1 << 20)
print(files.begin_run(), flush=True)
sys.stdin.readline()
files.close(lookups=int(sys.argv[2]))
"""


def runs_of(cache_dir: Path) -> dict:
    usage = Usage(cache_dir, readonly=True)
    try:
        return usage.runs()
    finally:
        usage.close()


def test_proxies_alive_at_the_same_time_share_one_run(cache_dir: Path) -> None:
    CacheFiles(cache_dir, cache_dir / "stats.json", MAP_SIZE).close()
    other = subprocess.Popen(
        [sys.executable, "-c", MEMBER, str(cache_dir), "4"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert other.stdout is not None and other.stdout.readline() == "1\n"
        files = CacheFiles(cache_dir, cache_dir / "stats.json", MAP_SIZE)
        assert files.begin_run() == 1  # joined the other's run
        other.communicate("\n", timeout=30)
    finally:
        if other.poll() is None:
            other.kill()
            other.communicate()
    assert files.usage is not None
    assert not files.usage.runs()[1].counts  # this member has not ended yet
    files.close(lookups=0)
    assert runs_of(cache_dir)[1].counts and runs_of(cache_dir)[1].lookups == 4
    again = CacheFiles(cache_dir, cache_dir / "stats.json", MAP_SIZE)
    assert again.begin_run() == 2  # no one alive: a new run
    again.close()


def test_closing_without_lookups_given_is_not_a_clean_end(cache_dir: Path) -> None:
    files = CacheFiles(cache_dir, cache_dir / "stats.json", MAP_SIZE)
    files.begin_run()
    files.close()  # e.g. moving to another cache directory mid-run
    assert runs_of(cache_dir)[1].interrupted and not runs_of(cache_dir)[1].counts


def test_a_clean_end_with_lookups_counts(cache_dir: Path) -> None:
    files = CacheFiles(cache_dir, cache_dir / "stats.json", MAP_SIZE)
    files.begin_run()
    files.note_hit("k", 1.0)
    files.close(lookups=1)
    assert runs_of(cache_dir)[1].counts
    assert last_hits(cache_dir) == {"k": LastHit(1, 1.0)}


# --- unused entries (SPEC §5) ----------------------------------------------------------------


def test_unused_are_the_entries_no_request_of_the_run_used(files: CacheFiles) -> None:
    for key in ("a-used-flushed", "b-used-unflushed", "c-unused", "d-unused"):
        files.store.put(key.encode(), b"entry")
    files.begin_run()
    files.note_hit("a-used-flushed", 1.0)
    files.flush_usage()
    files.note_hit("b-used-unflushed", 2.0)
    assert files.unused(limit=1) == {"count": 2, "keys": ["c-unused"]}


def test_an_entry_that_arrived_during_the_run_is_not_unused(files: CacheFiles) -> None:
    files.store.put(b"old", b"entry")
    files.begin_run()
    files.store.put(b"merged-in", b"entry")
    assert files.usage is not None
    files.usage.note_arrivals([b"merged-in"])
    assert files.unused(limit=10) == {"count": 1, "keys": ["old"]}
