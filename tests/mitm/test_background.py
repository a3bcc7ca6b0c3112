"""The work off the hit path: the store writer, the miss diagnoser, the stats flusher.

Real LMDB through CacheFiles in tmp_path; the flusher runs on a real event loop with a
short interval, every wait bounded.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from provider_cache.core import keys, records
from provider_cache.core.stats import MISSED_LIMIT, Stats
from provider_cache.mitm import background
from provider_cache.mitm.background import Diagnoser, StatsFlusher, Writer
from provider_cache.storage.cachefiles import CacheFiles
from provider_cache.storage.store import Store

RULES = keys.KeyRules()
HOST = "api.openai.com"
URL = f"https://{HOST}/v1/chat/completions"
RECORDED_KEY = "r" * 64
WAIT = 5.0  # seconds: the bound on every wait for a thread or a task


@pytest.fixture
def files(tmp_path: Path) -> Iterator[CacheFiles]:
    opened = CacheFiles(tmp_path / "cache", tmp_path / "cache" / "stats.json", 1 << 20)
    yield opened
    opened.close()


@pytest.fixture
def stats() -> Stats:
    return Stats(mode="replay", window_size=10)


# --- Writer ----------------------------------------------------------------------------------


def test_put_has_written_the_value_when_it_returns(files: CacheFiles) -> None:
    writer = Writer()
    try:
        asyncio.run(writer.put(files, "k1", b"packed entry"))
        assert files.store.get(b"k1") == b"packed entry"
    finally:
        writer.shutdown()


def test_put_is_durable(tmp_path: Path) -> None:
    """Written, committed, and there for the next process to open the store."""
    files = CacheFiles(tmp_path / "cache", tmp_path / "stats.json", 1 << 20)
    writer = Writer()
    try:
        asyncio.run(writer.put(files, "k1", b"v1"))
    finally:
        writer.shutdown()
        files.close()
    with Store(tmp_path / "cache", readonly=True) as store:
        assert store.get(b"k1") == b"v1"


def test_put_runs_off_the_event_loop(files: CacheFiles) -> None:
    seen: list[str] = []
    original = files.store.put

    def put(key: bytes, value: bytes) -> None:
        seen.append(threading.current_thread().name)
        original(key, value)

    files.store.put = put  # type: ignore[method-assign]
    writer = Writer()
    try:
        asyncio.run(writer.put(files, "k1", b"v"))
    finally:
        writer.shutdown()
    assert len(seen) == 1 and seen[0].startswith("provider-cache-write")


def test_drain_waits_for_every_write_queued_so_far(files: CacheFiles) -> None:
    writer = Writer()

    async def scenario() -> None:
        tasks = [asyncio.create_task(writer.put(files, f"k{i}", b"x" * 1000)) for i in range(50)]
        await asyncio.sleep(0)  # each put has handed its write to the writer thread
        writer.drain()
        assert all(files.store.get(f"k{i}".encode()) == b"x" * 1000 for i in range(50))
        await asyncio.gather(*tasks)

    try:
        asyncio.run(scenario())
    finally:
        writer.shutdown()


def test_shutdown_still_writes_what_was_queued(files: CacheFiles) -> None:
    writer = Writer()

    async def scenario() -> None:
        tasks = [asyncio.create_task(writer.put(files, f"k{i}", b"v")) for i in range(20)]
        await asyncio.sleep(0)
        writer.shutdown()
        assert len(files.store) == 20
        await asyncio.gather(*tasks)

    asyncio.run(scenario())


# --- Diagnoser -------------------------------------------------------------------------------


def recorded_request(temperature: str) -> records.StoredRequest:
    return records.StoredRequest(
        method="POST",
        url=URL,
        headers=[(b"content-type", b"application/json"), (b"authorization", b"<redacted>")],
        body=b'{"model":"m","temperature":%s}' % temperature.encode(),
    )


def record(files: CacheFiles, key: str, request: records.StoredRequest) -> None:
    entry = records.Entry(
        key=key,
        recorded_at=1_735_787_045.0,
        request=request,
        response=records.StoredResponse(200, "OK", [(b"content-type", b"application/json")], b"{}"),
    )
    files.store.put(key.encode(), records.pack(entry))


def missed_request(body: bytes, path: str = "/v1/chat/completions") -> tuple[str, dict]:
    """The key and normalised form of a live request that missed, as the hooks have them."""
    parts = keys.RequestParts(
        method="POST",
        scheme="https",
        host=HOST,
        port=443,
        path=path,
        query="",
        headers=(("content-type", "application/json"), ("authorization", "Bearer sk-x")),
        body=body,
    )
    key, normalized = keys.key_for(parts, RULES)
    return key, normalized


def miss(stats: Stats, body: bytes, path: str = "/v1/chat/completions") -> tuple[str, dict]:
    key, normalized = missed_request(body, path)
    assert stats.miss(HOST, "POST", f"https://{HOST}{path}", key, normalized)
    return key, normalized


def idle(diagnoser: Diagnoser) -> None:
    """Wait until every pass submitted so far has run (the pool has one thread)."""
    diagnoser.pool.submit(lambda: None).result(timeout=WAIT)


@pytest.fixture
def diagnoser() -> Iterator[Diagnoser]:
    made = Diagnoser()
    yield made
    made.shutdown()


def block(diagnoser: Diagnoser) -> threading.Event:
    """Keep the diagnoser's thread busy until the returned event is set."""
    release = threading.Event()
    diagnoser.pool.submit(release.wait, WAIT)
    return release


def count_scans(files: CacheFiles) -> list[int]:
    """Count the passes over the store (each pass scans it once)."""
    scans: list[int] = []
    scan = files.store.scan

    def counting(stop: Callable[[], bool], batch: int = 256) -> Iterator[tuple[bytes, bytes]]:
        scans.append(1)
        return scan(stop, batch)

    files.store.scan = counting  # type: ignore[method-assign]
    return scans


def test_a_listed_miss_gets_its_closest_recording(
    files: CacheFiles, stats: Stats, diagnoser: Diagnoser
) -> None:
    record(files, RECORDED_KEY, recorded_request("0"))
    key, normalized = miss(stats, b'{"model":"m","temperature":0.7}')
    diagnoser.later(key, normalized, files, stats, RULES)
    idle(diagnoser)
    assert stats.missed[key].closest == {
        "key": RECORDED_KEY,
        "differences": ["body $.temperature: 0 → 0.7"],
        "more": 0,
    }


def test_misses_queued_meanwhile_are_served_by_one_pass(
    files: CacheFiles, stats: Stats, diagnoser: Diagnoser
) -> None:
    record(files, RECORDED_KEY, recorded_request("0"))
    record(files, "s" * 64, recorded_request("1"))
    scans = count_scans(files)
    release = block(diagnoser)
    first = miss(stats, b'{"model":"m","temperature":0.0}')
    second = miss(stats, b'{"model":"m","temperature":1.5}')
    for key, normalized in (first, second):
        diagnoser.later(key, normalized, files, stats, RULES)
    assert set(diagnoser.waiting) == {first[0], second[0]}
    release.set()
    idle(diagnoser)
    assert scans == [1]
    assert diagnoser.waiting == {}
    assert stats.missed[first[0]].closest == {
        "key": RECORDED_KEY,
        "differences": ["body $.temperature: 0 → 0.0"],
        "more": 0,
    }
    assert stats.missed[second[0]].closest == {
        "key": "s" * 64,
        "differences": ["body $.temperature: 1 → 1.5"],
        "more": 0,
    }


def test_a_miss_after_a_pass_gets_a_pass_of_its_own(
    files: CacheFiles, stats: Stats, diagnoser: Diagnoser
) -> None:
    record(files, RECORDED_KEY, recorded_request("0"))
    scans = count_scans(files)
    first = miss(stats, b'{"model":"m","temperature":0.1}')
    diagnoser.later(*first, files, stats, RULES)
    idle(diagnoser)
    second = miss(stats, b'{"model":"m","temperature":0.2}')
    diagnoser.later(*second, files, stats, RULES)
    idle(diagnoser)
    assert scans == [1, 1]
    assert stats.missed[second[0]].closest is not None


def test_a_miss_with_no_recording_on_its_route_stays_without_closest(
    files: CacheFiles, stats: Stats, diagnoser: Diagnoser
) -> None:
    record(files, RECORDED_KEY, recorded_request("0"))
    key, normalized = miss(stats, b'{"model":"m"}', path="/v1/embeddings")
    diagnoser.later(key, normalized, files, stats, RULES)
    idle(diagnoser)
    assert stats.missed[key].closest is None


def test_unreadable_entries_are_skipped(
    files: CacheFiles, stats: Stats, diagnoser: Diagnoser
) -> None:
    files.store.put(b"0" * 64, b"not an entry")
    record(files, RECORDED_KEY, recorded_request("0"))
    key, normalized = miss(stats, b'{"model":"m","temperature":0.5}')
    diagnoser.later(key, normalized, files, stats, RULES)
    idle(diagnoser)
    closest = stats.missed[key].closest
    assert closest is not None and closest["key"] == RECORDED_KEY


def test_a_miss_not_listed_in_the_stats_is_not_diagnosed_into_them(
    files: CacheFiles, stats: Stats, diagnoser: Diagnoser
) -> None:
    record(files, RECORDED_KEY, recorded_request("0"))
    for i in range(MISSED_LIMIT):
        stats.miss(HOST, "GET", URL, f"k{i}", missed_request(b"{}")[1])
    key, normalized = missed_request(b'{"model":"m","temperature":0.5}')
    assert stats.miss(HOST, "POST", URL, key, normalized) is False  # over the cap
    diagnoser.later(key, normalized, files, stats, RULES)
    idle(diagnoser)
    assert key not in stats.missed
    assert all(m.closest is None for m in stats.missed.values())


def test_a_pass_scans_nothing_once_the_files_are_closing(
    files: CacheFiles, stats: Stats, diagnoser: Diagnoser
) -> None:
    record(files, RECORDED_KEY, recorded_request("0"))
    release = block(diagnoser)
    key, normalized = miss(stats, b'{"model":"m","temperature":0.5}')
    diagnoser.later(key, normalized, files, stats, RULES)
    files.closing = True
    release.set()
    idle(diagnoser)
    assert stats.missed[key].closest is None


# --- StatsFlusher ----------------------------------------------------------------------------


@pytest.fixture
def fast_flusher(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 10 ms interval instead of one second, so a run takes a fraction of a second."""
    monkeypatch.setattr(background, "STATS_INTERVAL", 0.01)


async def until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


def read(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


@pytest.mark.usefixtures("fast_flusher")
def test_flusher_writes_the_stats_file_and_rewrites_it_when_counters_change(
    files: CacheFiles, stats: Stats
) -> None:
    async def scenario() -> None:
        flusher = StatsFlusher(lambda: files, lambda: stats)
        flusher.start()
        try:
            await until(lambda: files.stats_file.exists())
            assert read(files.stats_file)["hits"] == 0
            assert read(files.stats_file)["mode"] == "replay"
            stats.hit(HOST)
            await until(lambda: read(files.stats_file).get("hits") == 1)
            miss(stats, b"{}")
            await until(lambda: read(files.stats_file).get("misses") == 1)
        finally:
            flusher.stop()

    asyncio.run(scenario())


@pytest.mark.usefixtures("fast_flusher")
def test_flusher_does_not_rewrite_the_file_while_nothing_changes(
    files: CacheFiles, stats: Stats
) -> None:
    async def scenario() -> None:
        flusher = StatsFlusher(lambda: files, lambda: stats)
        flusher.start()
        try:
            await until(lambda: files.stats_file.exists())
            written = files.stats_file.read_text()
            inode = files.stats_file.stat().st_ino
            await asyncio.sleep(0.2)  # some twenty intervals
            assert files.stats_file.read_text() == written  # updated_at did not move
            assert files.stats_file.stat().st_ino == inode
        finally:
            flusher.stop()

    asyncio.run(scenario())


@pytest.mark.usefixtures("fast_flusher")
def test_flusher_writes_the_hits_to_the_usage_log(files: CacheFiles, stats: Stats) -> None:
    files.begin_run()
    files.note_hit("k1", 12.5)

    async def scenario() -> None:
        flusher = StatsFlusher(lambda: files, lambda: stats)
        flusher.start()
        try:
            await until(lambda: files.usage.last_hit("k1") is not None)
        finally:
            flusher.stop()

    asyncio.run(scenario())
    hit = files.usage.last_hit("k1")
    assert hit is not None and (hit.run, hit.at) == (1, 12.5)
    assert files.unwritten_hits == {}


@pytest.mark.usefixtures("fast_flusher")
def test_flusher_without_files_waits_quietly(stats: Stats) -> None:
    """Before the options are parsed (or after a failed open) there is nothing to write."""

    async def scenario() -> None:
        flusher = StatsFlusher(lambda: None, lambda: stats)
        flusher.start()
        try:
            stats.hit(HOST)
            await asyncio.sleep(0.05)
            assert flusher.task is not None and not flusher.task.done()
        finally:
            flusher.stop()

    asyncio.run(scenario())


@pytest.mark.usefixtures("fast_flusher")
def test_flusher_starts_once_and_stops_writing_when_stopped(
    files: CacheFiles, stats: Stats
) -> None:
    async def scenario() -> None:
        flusher = StatsFlusher(lambda: files, lambda: stats)
        flusher.start()
        task = flusher.task
        flusher.start()
        assert flusher.task is task
        await until(lambda: files.stats_file.exists())
        flusher.stop()
        assert flusher.task is None
        await asyncio.sleep(0)  # let the cancellation land
        assert task is not None and task.cancelled()
        stats.hit(HOST)
        await asyncio.sleep(0.1)
        assert read(files.stats_file)["hits"] == 0
        flusher.stop()  # stopping twice is harmless

    asyncio.run(scenario())


@pytest.mark.usefixtures("fast_flusher")
def test_a_failed_stats_write_is_logged_and_tried_again(
    tmp_path: Path, stats: Stats, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "reports"
    blocker.write_text("a file where the stats directory should be")
    files = CacheFiles(tmp_path / "cache", blocker / "stats.json", 1 << 20)

    async def scenario() -> None:
        flusher = StatsFlusher(lambda: files, lambda: stats)
        flusher.start()
        try:
            await until(lambda: "cannot write stats file" in caplog.text)
            assert flusher.task is not None and not flusher.task.done()
            blocker.unlink()
            await until(lambda: files.stats_file.exists())
        finally:
            flusher.stop()

    try:
        with caplog.at_level(logging.WARNING, logger=background.__name__):
            asyncio.run(scenario())
    finally:
        files.close()
    assert read(files.stats_file)["hits"] == 0
