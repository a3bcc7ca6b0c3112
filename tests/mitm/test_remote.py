"""The remote tier in the proxy (mitm/remote.py, mitm/uploads.py; SPEC §11) with mitmproxy's own
test context (taddons/tflow), real LMDB and, for the tests marked slow, the real S3 server.

The options and the start-up line need no server; the read-through and the uploads talk to moto
over HTTP, as the proxy does.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from mitmproxy import exceptions, http
from mitmproxy.addons.proxyserver import Proxyserver
from mitmproxy.options import Options
from mitmproxy.test import taddons, tflow

from provider_cache.core import records, remoteobject
from provider_cache.core.remoteobject import RemoteLocation, parse_location
from provider_cache.core.stats import RemoteCounts
from provider_cache.mitm import options, remote, uploads
from provider_cache.mitm.hooks import ProviderCache
from provider_cache.storage.remote import MISSING_BOTO3, RemoteStore
from tests.support.s3server import Bucket

# --- options and the start-up line (no server) --------------------------------------------------


def parse(opts: Options, **values: object) -> options.Settings:
    opts.update(**values)
    return options.parse(opts)


def test_no_remote_by_default(opts: Options) -> None:
    settings = options.parse(opts)
    assert (settings.remote, settings.remote_write) == (None, "auto")


def test_a_remote_url_is_parsed_into_its_location(opts: Options) -> None:
    settings = parse(opts, cache_remote="s3://team-cache/ci/main", cache_remote_write="false")
    assert settings.remote == RemoteLocation("team-cache", "ci/main")
    assert settings.remote_write == "false"


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("https://team-cache/ci", "cache_remote: must be s3://BUCKET/PREFIX"),
        ("s3://AKIA:hunter2@team-cache/ci", "without credentials"),
        ("s3://Team_Cache/ci", "the bucket must be"),
        ("s3://team-cache/../ci", "the prefix may hold"),
    ],
)
def test_a_bad_remote_url_is_one_line_that_never_repeats_it(
    opts: Options, value: str, said: str
) -> None:
    with pytest.raises(ValueError, match=said) as info:
        parse(opts, cache_remote=value)
    assert "\n" not in str(info.value) and value not in str(info.value)
    assert "hunter2" not in str(info.value)


def test_a_bad_write_mode_names_the_valid_ones(opts: Options) -> None:
    with pytest.raises(ValueError, match="cache_remote_write must be one of auto, false, true"):
        parse(opts, cache_remote_write="yes")


def test_a_bad_remote_is_an_options_error_once_running(cache: ProviderCache, tmp_path) -> None:
    with taddons.context(cache) as tctx:
        tctx.configure(cache, cache_dir=str(tmp_path / "cache"))
        with pytest.raises(exceptions.OptionsError, match="cache_remote: must be"):
            tctx.configure(cache, cache_remote="ftp://x")
    assert cache.remote is None


def test_the_startup_line_names_the_remote_and_its_state(opts: Options) -> None:
    settings = parse(opts, cache_hosts=["llm.internal"])
    line = options.startup_line(settings, 2, False, "s3://b-1/p (read-write)")
    assert line == (
        "provider-cache: record mode, cache recordings/ (2 entries), hosts llm.internal, "
        "remote s3://b-1/p (read-write)"
    )
    assert options.startup_line(settings, 2, False).endswith("hosts llm.internal")


def test_a_missing_boto3_is_a_startup_stop_with_the_install_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)  # import boto3 → ImportError
    with pytest.raises(ValueError) as info:
        remote.open_tier(parse_location("s3://team-cache/ci"), "auto")
    assert str(info.value) == MISSING_BOTO3


def test_the_stats_carry_tiers_and_remote_only_with_a_remote(
    cache: ProviderCache, tmp_path: Path
) -> None:
    with taddons.context(cache) as tctx:
        tctx.configure(cache, cache_dir=str(tmp_path / "cache"))
        assert "tiers" not in cache.snapshot() and "remote" not in cache.snapshot()
        tctx.configure(cache, cache_remote="s3://team-cache/ci")
        doc = cache.snapshot()
    assert doc["tiers"] == {"local": 0, "remote": 0}
    assert doc["remote"]["location"] == "s3://team-cache/ci"
    assert doc["remote"]["uploaded"] == doc["remote"]["errors"] == 0


# --- read-through and uploads against the real S3 server ----------------------------------------


def provider_flow(content: str = "hello") -> http.HTTPFlow:
    request = tflow.treq(
        host="api.openai.com",
        port=443,
        scheme=b"https",
        method=b"POST",
        path=b"/v1/chat/completions",
        content=f'{{"model": "m", "messages": [{{"content": "{content}"}}]}}'.encode(),
    )
    request.headers["content-type"] = "application/json"
    return tflow.tflow(req=request)


async def settle(awaitable: Awaitable[None] | None) -> None:
    if awaitable is not None:
        await awaitable


async def record(cache: ProviderCache, content: str, body: bytes = b'{"ok": 1}') -> str:
    flow = provider_flow(content)
    await settle(cache.request(flow))
    assert flow.response is None, "expected a forwarded miss"
    flow.response = http.Response.make(200, body, {"content-type": "application/json"})
    cache.responseheaders(flow)
    await settle(cache.response(flow))
    return flow.metadata["provider_cache"]["key"]


async def lookup(cache: ProviderCache, content: str) -> tuple[http.HTTPFlow, bool]:
    """(the flow after its request hook, whether the hook handed back something to await)."""
    flow = provider_flow(content)
    awaitable = cache.request(flow)
    await settle(awaitable)
    return flow, awaitable is not None


Scenario = Callable[[ProviderCache], Awaitable[None]]


def run_proxy(cache_dir: Path, scenario: Scenario, **settings: str) -> ProviderCache:
    """One proxy's life: configure, running (the probe), the scenario, done (the flush)."""
    cache = ProviderCache()

    async def life() -> None:
        with taddons.context(Proxyserver(), cache) as tctx:  # connection_strategy
            try:
                tctx.configure(cache, cache_dir=str(cache_dir), **settings)
                await settle(cache.running())
                await scenario(cache)
                cache.done()
            finally:  # its log handler posts to this loop, which ends here
                tctx.master._legacy_log_events.uninstall()

    asyncio.run(life())
    return cache


@pytest.fixture
def two_machines(s3: Bucket, tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    yield tmp_path / "a", tmp_path / "b"


@pytest.mark.slow
def test_a_remote_hit_is_checked_stored_and_served_as_a_local_hit(
    s3: Bucket, two_machines: tuple[Path, Path]
) -> None:
    a, b = two_machines
    keys: list[str] = []

    async def record_one(cache: ProviderCache) -> None:
        keys.append(await record(cache, "hello", b'{"answer": 42}'))

    recorder = run_proxy(a, record_one, cache_remote=s3.url)
    assert recorder.stats.remote is not None and recorder.stats.remote.uploaded == 1
    seen: dict[str, object] = {}

    async def replay_twice(cache: ProviderCache) -> None:
        first, awaited = await lookup(cache, "hello")
        seen["first"] = (
            awaited,
            first.response.content,
            first.response.headers["x-provider-cache"],
        )
        seen["tier"] = first.metadata["provider_cache"].get("tier")
        second, awaited = await lookup(cache, "hello")
        seen["second"] = (awaited, second.response.content)
        seen["local"] = cache.store.get(keys[0].encode()) is not None

    replayer = run_proxy(b, replay_twice, cache_mode="replay", cache_remote=s3.url)
    assert seen["first"] == (True, b'{"answer": 42}', "hit")
    assert seen["tier"] == "remote"
    assert seen["second"] == (False, b'{"answer": 42}')  # a local hit: nothing to await
    assert seen["local"] is True
    doc = replayer.stats.snapshot()
    assert doc["tiers"] == {"local": 1, "remote": 1}
    assert (doc["hits"], doc["misses"]) == (2, 0)


@pytest.mark.slow
def test_the_read_through_is_what_serves_a_new_machine(
    s3: Bucket, two_machines: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the remote never asked, the second machine misses: the test exercises the path."""
    a, b = two_machines
    run_proxy(a, lambda cache: record(cache, "hello"), cache_remote=s3.url)

    async def nothing_found(self: remote.RemoteTier, key: str) -> None:
        return None

    monkeypatch.setattr(remote.RemoteTier, "fetch", nothing_found)
    results: list[int] = []

    async def replay(cache: ProviderCache) -> None:
        flow, _ = await lookup(cache, "hello")
        results.append(flow.response.status_code)

    run_proxy(b, replay, cache_mode="replay", cache_remote=s3.url)
    assert results == [404]


@pytest.mark.slow
def test_a_key_the_remote_lacks_is_asked_once_per_run(s3: Bucket, tmp_path: Path) -> None:
    async def twice(cache: ProviderCache) -> None:
        for _ in range(2):
            flow, _ = await lookup(cache, "never recorded")
            assert flow.response.status_code == 404

    cache = run_proxy(tmp_path / "b", twice, cache_mode="replay", cache_remote=s3.url)
    counts = cache.stats.remote
    assert counts is not None and (counts.misses, counts.errors) == (1, 0)
    assert cache.stats.misses == 2


@pytest.mark.slow
def test_refresh_never_asks_the_remote(s3: Bucket, two_machines: tuple[Path, Path]) -> None:
    a, b = two_machines
    run_proxy(a, lambda cache: record(cache, "hello"), cache_remote=s3.url)
    forwarded: list[bool] = []

    async def refresh(cache: ProviderCache) -> None:
        flow, awaited = await lookup(cache, "hello")
        forwarded.append(flow.response is None and not awaited)

    cache = run_proxy(b, refresh, cache_mode="refresh", cache_remote=s3.url)
    assert forwarded == [True]
    counts = cache.stats.remote
    assert counts is not None and (counts.misses, counts.skipped, counts.errors) == (0, 0, 0)


@pytest.mark.slow
def test_read_old_write_new_serves_remote_entries_only_from_before_it_started(
    s3: Bucket, two_machines: tuple[Path, Path]
) -> None:
    a, b = two_machines
    run_proxy(a, lambda cache: record(cache, "old"), cache_remote=s3.url)
    answers: list[bool] = []

    async def late_shard_then_ask(cache: ProviderCache) -> None:
        # Another shard uploads "new" after this proxy started; "old" is from before.
        run_in_thread(lambda: run_proxy(a, lambda c: record(c, "new"), cache_remote=s3.url))
        for content in ("old", "new"):
            flow, _ = await lookup(cache, content)
            answers.append(flow.response is not None)  # served; else forwarded

    run_proxy(b, late_shard_then_ask, cache_mode="read-old-write-new", cache_remote=s3.url)
    assert answers == [True, False]


def run_in_thread(call: Callable[[], object]) -> None:
    """A second proxy's life on its own thread (its own event loop), to its end."""
    thread = threading.Thread(target=call)
    thread.start()
    thread.join()


@pytest.mark.slow
def test_a_read_only_tier_uploads_nothing_and_says_so(s3: Bucket, tmp_path: Path) -> None:
    cache = run_proxy(
        tmp_path / "a",
        lambda c: record(c, "hello"),
        cache_remote=s3.url,
        cache_remote_write="false",
    )
    counts = cache.stats.remote
    assert counts is not None and (counts.uploaded, counts.pending, counts.failed) == (0, 0, 0)
    assert s3.server.client().list_objects_v2(Bucket=s3.name).get("KeyCount", 0) == 0


# --- the uploader -------------------------------------------------------------------------------


def entry_bytes(key: str, body: bytes, recorded_at: float = 1.0) -> bytes:
    return records.pack(
        records.Entry(
            key=key,
            recorded_at=recorded_at,
            request=records.StoredRequest("POST", "https://api.openai.com/v1/x", [], b"{}"),
            response=records.StoredResponse(200, "OK", [], body),
        )
    )


def uploader_of(s3: Bucket) -> tuple[uploads.Uploader, RemoteCounts]:
    counts = RemoteCounts(s3.url)
    store = RemoteStore(parse_location(s3.url), timeout=remote.CALL_TIMEOUT)
    return uploads.Uploader(store, counts, threading.Lock()), counts


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.mark.slow
def test_an_object_already_there_is_done_when_it_holds_the_same_answer(s3: Bucket) -> None:
    uploader, counts = uploader_of(s3)
    uploader.start()
    key, other = "1" * 64, "2" * 64
    uploader.put(key, entry_bytes(key, b"same"))
    uploader.put(other, entry_bytes(other, b"first"))
    wait_for(lambda: counts.uploaded == 2)
    uploader.put(key, entry_bytes(key, b"same", recorded_at=2.0))  # recorded again, same answer
    uploader.put(other, entry_bytes(other, b"second"))  # refreshed: another answer
    uploader.flush()
    assert (counts.uploaded, counts.conflicts, counts.conflict_keys) == (3, 1, [other])
    stored = RemoteStore(parse_location(s3.url)).get(other)
    assert stored is not None
    assert records.unpack(remoteobject.unwrap(stored, other)).response.body == b"first"


@pytest.mark.slow
def test_entries_waiting_for_a_probe_that_never_answered_count_as_failed(s3: Bucket) -> None:
    uploader, counts = uploader_of(s3)
    key = "3" * 64
    uploader.put(key, entry_bytes(key, b"x"))
    assert counts.pending == 1
    uploader.flush(timeout=0.1)
    assert (counts.pending, counts.failed, counts.failed_keys) == (0, 1, [key])


@pytest.mark.slow
def test_a_discarded_uploader_drops_what_waited_and_ignores_more(s3: Bucket) -> None:
    uploader, counts = uploader_of(s3)
    uploader.put("4" * 64, entry_bytes("4" * 64, b"x"))
    uploader.discard()
    uploader.put("5" * 64, entry_bytes("5" * 64, b"x"))
    uploader.flush()
    assert (counts.pending, counts.failed, counts.uploaded) == (0, 0, 0)
