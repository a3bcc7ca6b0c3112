"""Fast unit tests of the hooks with mitmproxy's own test context (taddons/tflow), real LMDB."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Awaitable, Iterator
from pathlib import Path

import pytest
from mitmproxy import exceptions, http
from mitmproxy.test import taddons, tflow

from provider_cache.core import records, slots
from provider_cache.core.streaming import StreamRecorder
from provider_cache.mitm.hooks import KEY_OFF_LOOP_BYTES, ProviderCache

SSE = b'data: {"x": 1}\n\ndata: [DONE]\n\n'


@pytest.fixture
def tctx(cache: ProviderCache, tmp_path: Path) -> Iterator[taddons.context]:
    with taddons.context(cache) as ctx:
        ctx.configure(cache, cache_dir=str(tmp_path / "cache"))
        yield ctx


def provider_flow(
    content: bytes = b'{"model": "m"}', host: str = "api.openai.com"
) -> http.HTTPFlow:
    request = tflow.treq(
        host=host,
        port=443,
        scheme=b"https",
        method=b"POST",
        path=b"/v1/chat/completions",
        content=content,
    )
    request.headers["content-type"] = "application/json"
    request.headers["authorization"] = "Bearer sk-unit-test-secret-0001"
    return tflow.tflow(req=request)


def upstream_answer(flow: http.HTTPFlow, body: bytes = b'{"ok": true}', **headers: str) -> None:
    flow.response = http.Response.make(200, body, {"content-type": "application/json", **headers})


def finish(awaitable: Awaitable[None] | None) -> None:
    """Await what a hook handed back (the store write of a recording), as mitmproxy does."""
    if awaitable is not None:
        asyncio.run(awaitable)


def record(cache: ProviderCache, flow: http.HTTPFlow) -> None:
    cache.request(flow)
    upstream_answer(flow)
    cache.responseheaders(flow)
    finish(cache.response(flow))


@pytest.mark.parametrize(
    ("option", "value", "valid"),
    [
        ("cache_mode", "offline", "record, replay, refresh, read-old-write-new"),
        ("cache_max_body_size", "huge", "32m"),
        ("cache_window_size", 0, "at least 1"),
        ("cache_redact_headers", ["a b"], "header names"),
    ],
)
def test_bad_option_is_an_options_error_naming_valid_values(cache, tctx, option, value, valid):
    with pytest.raises(exceptions.OptionsError, match=valid):
        tctx.configure(cache, **{option: value})
    assert cache.settings.mode == "record"  # the previous settings stay in force


def test_miss_is_forwarded_then_recorded_then_hit(cache, tctx, tmp_path):
    first = provider_flow()
    record(cache, first)
    assert first.response.headers["x-provider-cache"] == "miss"

    second = provider_flow()
    cache.request(second)
    assert second.response is not None and second.is_replay == "response"
    assert second.response.headers["x-provider-cache"] == "hit"
    assert second.response.content == b'{"ok": true}'
    assert second.metadata["provider_cache"]["result"] == "hit"
    assert (cache.stats.hits, cache.stats.misses, cache.stats.recorded) == (1, 1, 1)


def test_replay_miss_answers_locally(cache, tctx):
    tctx.configure(cache, cache_mode="replay")
    flow = provider_flow()
    cache.request(flow)
    assert flow.response.status_code == 404
    error = json.loads(flow.response.content)["error"]
    assert error["type"] == "provider_cache_miss"
    assert "sk-unit-test-secret" not in flow.response.text
    assert cache.pending == {}


def test_non_provider_host_is_passthrough(cache, tctx):
    flow = provider_flow(host="example.com")
    cache.request(flow)
    upstream_answer(flow)
    cache.responseheaders(flow)
    finish(cache.response(flow))
    assert flow.response.headers.get("x-provider-cache") is None
    assert (cache.stats.passthrough, cache.stats.misses) == (1, 0)


def test_non_2xx_is_not_recorded(cache, tctx, tmp_path):
    flow = provider_flow()
    cache.request(flow)
    flow.response = http.Response.make(500, b"{}")
    cache.responseheaders(flow)
    finish(cache.response(flow))
    assert cache.stats.recorded == 0
    assert len(cache.store) == 0


def test_event_stream_is_teed_and_kept_only_when_complete(cache, tctx):
    flow = provider_flow()
    cache.request(flow)
    upstream_answer(flow, b"", **{"content-type": "text/event-stream"})
    cache.responseheaders(flow)
    tee = flow.response.stream
    assert isinstance(tee, StreamRecorder)
    assert tee(SSE[:10]) == SSE[:10] and tee(SSE[10:]) == SSE[10:]  # passed on unchanged
    flow.error = None
    finish(cache.error(flow))  # the client hung up after [DONE]: complete
    assert cache.stats.recorded == 1


def test_cut_event_stream_is_not_recorded(cache, tctx):
    flow = provider_flow()
    cache.request(flow)
    upstream_answer(flow, b"", **{"content-type": "text/event-stream"})
    cache.responseheaders(flow)
    flow.response.stream(b'data: {"x": 1}\n\n')
    finish(cache.error(flow))
    assert cache.stats.recorded == 0 and cache.stats.errors == 1


def test_corrupt_entry_is_a_miss_and_an_error(cache, tctx, tmp_path):
    flow = provider_flow()
    record(cache, flow)
    key = flow.metadata["provider_cache"]["key"]
    cache.store.put(key.encode(), b"\xc1 not msgpack")

    again = provider_flow()
    cache.request(again)
    assert again.response is None  # forwarded, as a miss
    assert cache.stats.errors == 1 and cache.stats.misses == 2


def test_stored_request_is_redacted(cache, tctx, tmp_path):
    record(cache, provider_flow())
    [(_, value)] = list(cache.store.items())
    entry = records.unpack(value)
    assert (b"authorization", b"<redacted>") in entry.request.headers
    assert b"sk-unit-test-secret" not in value


def test_done_closes_the_store_so_a_reload_can_reopen_it(cache, tctx, tmp_path):
    cache.done()
    again = ProviderCache()
    with taddons.context(again) as ctx:
        ctx.configure(again, cache_dir=str(tmp_path / "cache"))
        assert again.store is not None
    again.done()


def hit(cache: ProviderCache) -> http.HTTPFlow:
    flow = provider_flow()
    cache.request(flow)
    assert flow.is_replay == "response", "expected a hit"
    assert cache.response(flow) is None  # a hit leaves nothing for mitmproxy to await
    return flow


def test_repeated_hit_serves_what_the_store_holds_now(cache, tctx):
    """Keys and decoded entries are remembered, but every hit reads the store: an entry
    another process rewrote or deleted is never served from memory."""
    first = provider_flow()
    record(cache, first)
    key = first.metadata["provider_cache"]["key"]
    assert hit(cache).response.content == b'{"ok": true}'
    assert hit(cache).response.content == b'{"ok": true}'

    entry = records.unpack(cache.store.get(key.encode()))
    entry.response.body = b'{"ok": "rewritten"}'
    cache.store.put(key.encode(), records.pack(entry))
    assert hit(cache).response.content == b'{"ok": "rewritten"}'

    cache.store.delete(key.encode())
    gone = provider_flow()
    cache.request(gone)
    assert gone.response is None and cache.stats.misses == 2


def test_remembered_keys_are_dropped_when_the_rules_change(cache, tctx):
    def key_with_header(value: str) -> str:
        flow = provider_flow()
        flow.request.headers["x-team"] = value
        cache.request(flow)
        return flow.metadata["provider_cache"]["key"]

    assert key_with_header("a") != key_with_header("b")
    before = key_with_header("a")
    tctx.configure(cache, cache_ignore_headers=["x-team"])
    assert key_with_header("a") == key_with_header("b") != before


def test_recording_hands_mitmproxy_the_write_to_await(cache, tctx):
    flow = provider_flow()
    cache.request(flow)
    upstream_answer(flow)
    cache.responseheaders(flow)
    write = cache.response(flow)
    assert write is not None and cache.stats.recorded == 0  # not stored until awaited
    finish(write)
    assert cache.stats.recorded == 1 and len(cache.store) == 1
    assert "recorded_at" in flow.metadata["provider_cache"]


def test_endpoint_requests_are_not_counted_as_passthrough(cache, tctx):
    endpoint_flow = tflow.tflow(req=tflow.treq(host="provider-cache.internal", path=b"/stats"))
    cache.request(endpoint_flow)
    cache.request(provider_flow(host="example.com"))
    assert cache.stats.passthrough == 1


def test_replay_fails_closed_when_the_hook_itself_breaks(cache, tctx, monkeypatch):
    """Whatever raises on the lookup path, a replay flow leaves with a local answer (mitmproxy
    would forward a flow whose hook raised); the error still propagates to mitmproxy's log."""
    tctx.configure(cache, cache_mode="replay")

    def broken(request, storable):
        raise RuntimeError("a bug in the key")

    monkeypatch.setattr(cache.keyer, "key", broken)
    flow = provider_flow()
    with pytest.raises(RuntimeError, match="a bug in the key"):
        cache.request(flow)
    assert flow.response is not None and flow.response.status_code == 404
    assert json.loads(flow.response.content)["error"]["type"] == "provider_cache_error"
    assert (cache.stats.misses, cache.stats.errors) == (1, 1)  # the gate sees a miss


def test_record_mode_lets_mitmproxy_handle_a_broken_hook(cache, tctx, monkeypatch):
    monkeypatch.setattr(cache.keyer, "key", lambda request, storable: 1 / 0)
    flow = provider_flow()
    with pytest.raises(ZeroDivisionError):
        cache.request(flow)
    assert flow.response is None


def test_answers_arriving_after_shutdown_are_let_go_quietly(cache, tctx):
    """Under load, flows still finish after done() closed the store: no error, no write."""
    flow = provider_flow()
    cache.request(flow)
    upstream_answer(flow)
    cache.responseheaders(flow)
    broken = provider_flow(b'{"model": "other"}')
    cache.request(broken)
    cache.done()
    assert cache.response(flow) is None
    assert cache.error(broken) is None
    assert cache.pending == {}


def test_a_large_body_is_keyed_off_the_event_loop(cache, tctx):
    """Keying 20 MB of JSON on the loop stalled every other client for seconds: over
    KEY_OFF_LOOP_BYTES the hook hands mitmproxy a coroutine that keys on a worker thread."""
    big = json.dumps({"model": "m", "input": "x" * (KEY_OFF_LOOP_BYTES + 10)}).encode()
    threads: list[str] = []
    compute = cache.keyer.compute

    def watched(request):
        threads.append(threading.current_thread().name)
        return compute(request)

    cache.keyer.compute = watched
    first = provider_flow(big)
    pending = cache.request(first)
    assert pending is not None and first.response is None  # nothing decided yet
    asyncio.run(pending)
    upstream_answer(first)
    cache.responseheaders(first)
    finish(cache.response(first))
    again = provider_flow(big)
    finish(cache.request(again))
    assert again.response is not None and again.response.headers["x-provider-cache"] == "hit"
    assert threads and threading.main_thread().name not in threads
    assert cache.request(provider_flow(b'{"small": 1}')) is None  # small bodies stay inline


# --- replay timing: a hit on a stream with offsets, paced (mitm/pacedreplay.py) ---------------


def record_stream(cache: ProviderCache, flow: http.HTTPFlow) -> None:
    cache.request(flow)
    upstream_answer(flow, b"", **{"content-type": "text/event-stream"})
    cache.responseheaders(flow)
    flow.response.stream(SSE)
    flow.response.stream(b"")
    finish(cache.response(flow))


@pytest.mark.parametrize("value", ["fast", "0", "-1", ""])
def test_a_bad_cache_replay_timing_is_an_options_error(cache, tctx, value):
    with pytest.raises(exceptions.OptionsError, match="cache_replay_timing takes none, recorded"):
        tctx.configure(cache, cache_replay_timing=value)
    assert cache.settings.replay_timing is None


def test_a_paced_hit_goes_to_the_loopback_server_never_upstream(cache, tctx):
    record_stream(cache, provider_flow())
    tctx.configure(cache, cache_mode="replay", cache_replay_timing="recorded")

    async def scenario() -> http.HTTPFlow:
        flow = provider_flow()
        starting = cache.request(flow)
        assert starting is not None  # the pacing server starts on the first paced hit
        await starting
        assert flow.response is None and flow.is_replay == "response"
        assert (flow.request.host, flow.request.port) == ("127.0.0.1", cache.paced.port)
        second = provider_flow()
        assert cache.request(second) is None  # running now: nothing to await
        flow.response = http.Response.make(200, b"")  # what the loopback server answers
        cache.responseheaders(flow)
        assert flow.request.pretty_url == "https://api.openai.com/v1/chat/completions"
        assert flow.response.stream is True
        assert cache.response(flow) is None  # a hit: nothing recorded
        cache.paced.close()
        return flow

    flow = asyncio.run(scenario())
    assert flow.metadata["provider_cache"]["result"] == "hit"
    assert (cache.stats.hits, cache.stats.misses) == (2, 0)  # counted as the replay run's hits


def test_timing_none_and_unstreamed_entries_are_served_at_once(cache, tctx):
    record_stream(cache, provider_flow())
    record(cache, provider_flow(b'{"model": "json"}'))
    for timing, content in [("none", b'{"model": "m"}'), ("0.5", b'{"model": "json"}')]:
        tctx.configure(cache, cache_replay_timing=timing)
        flow = provider_flow(content)
        assert cache.request(flow) is None
        assert flow.response is not None and flow.request.host == "api.openai.com"
    assert cache.paced.server is None  # never started


def test_an_entry_recorded_before_offsets_replays_at_once(cache, tctx):
    record_stream(cache, provider_flow())
    [(key, value)] = list(cache.store.items())
    old = records.unpack(value)
    old.response.offsets = None  # as the version before offsets packed it: schema 1
    cache.store.put(key, records.pack(old))
    assert records.pack(old)[:20].find(b"schema\x01") >= 0
    tctx.configure(cache, cache_mode="replay", cache_replay_timing="recorded")
    flow = provider_flow()
    assert cache.request(flow) is None
    assert flow.response is not None and flow.response.content == SSE


def test_a_paced_flow_that_breaks_before_its_headers_is_an_error(cache, tctx):
    record_stream(cache, provider_flow())
    tctx.configure(cache, cache_replay_timing="recorded")

    async def scenario() -> http.HTTPFlow:
        flow = provider_flow()
        await cache.request(flow)
        cache.error(flow)
        cache.paced.close()
        return flow

    flow = asyncio.run(scenario())
    assert flow.request.host == "api.openai.com" and cache.stats.errors == 1


# -- sequence slots (cache_sequence, SPEC §3) ------------------------------------------------


def answer_n(cache: ProviderCache, n: int) -> http.HTTPFlow:
    """One request; forwarded, it is answered `{"n": n}` and recorded."""
    flow = provider_flow()
    cache.request(flow)
    if flow.response is None:
        upstream_answer(flow, json.dumps({"n": n}).encode())
        cache.responseheaders(flow)
        finish(cache.response(flow))
    return flow


def served(flow: http.HTTPFlow) -> tuple[str, int]:
    return flow.response.headers["x-provider-cache"], json.loads(flow.response.content)["n"]


def test_sequence_records_each_answer_and_replays_them_in_order(cache, tctx):
    tctx.configure(cache, cache_sequence=True)
    recorded = [answer_n(cache, n) for n in (1, 2, 3)]
    assert [served(f) for f in recorded] == [("miss", 1), ("miss", 2), ("miss", 3)]
    assert (cache.stats.recorded, len(cache.store)) == (3, 3)
    key = recorded[0].metadata["provider_cache"]["key"]
    third = records.unpack(cache.store.get(slots.slot_key(key, 3).encode()))
    assert third.meta["slot"] == 3 and third.meta["slot_of"] == key
    assert "slot" not in records.unpack(cache.store.get(key.encode())).meta  # slot 1: as ever

    tctx.configure(cache, cache_mode="replay")
    replayed = [answer_n(cache, 0) for _ in range(4)]
    assert [served(f) for f in replayed] == [("hit", 1), ("hit", 2), ("hit", 3), ("hit", 3)]
    marks = [f.metadata["provider_cache"] for f in replayed]
    assert [(m["slot"], m.get("again")) for m in marks] == [(1, None), (2, None), (3, None), (3, 4)]
    assert all(m["slot_of"] == key for m in marks)


def test_past_the_end_is_a_miss_when_the_option_says_so(cache, tctx):
    tctx.configure(cache, cache_sequence=True, cache_sequence_past_end="miss")
    answer_n(cache, 1)
    answer_n(cache, 2)
    tctx.configure(cache, cache_mode="replay")
    assert [served(answer_n(cache, 0)) for _ in range(2)] == [("hit", 1), ("hit", 2)]
    past = answer_n(cache, 0)
    assert past.response.status_code == 404
    assert "answer 3 of key" in json.loads(past.response.content)["error"]["message"]


def test_record_mode_past_the_end_records_the_next_answer_under_miss(cache, tctx):
    tctx.configure(cache, cache_sequence=True, cache_sequence_past_end="miss")
    answer_n(cache, 1)
    tctx.configure(cache, cache_mode="replay")
    tctx.configure(cache, cache_mode="record")  # a new run, in record mode
    flows_ = [answer_n(cache, n) for n in (0, 2)]
    assert [served(f) for f in flows_] == [("hit", 1), ("miss", 2)]
    assert len(cache.store) == 2


def test_record_mode_past_the_end_serves_the_last_by_default(cache, tctx):
    tctx.configure(cache, cache_sequence=True)
    answer_n(cache, 1)
    tctx.configure(cache, cache_mode="replay")
    tctx.configure(cache, cache_mode="record")  # a new run, in record mode
    assert [served(answer_n(cache, 9)) for _ in range(2)] == [("hit", 1), ("hit", 1)]
    assert cache.pending == {} and len(cache.store) == 1


def test_sequences_count_per_test_when_tests_are_known(cache, tctx):
    tctx.configure(cache, cache_sequence=True)
    cache.stats.run_test("tests/test_a.py::test_one")
    assert [served(answer_n(cache, n)) for n in (1, 2)] == [("miss", 1), ("miss", 2)]
    cache.stats.run_test("tests/test_a.py::test_two")
    assert served(answer_n(cache, 3)) == ("hit", 1)  # its own first request: slot 1
    cache.stats.run_test("tests/test_a.py::test_one")
    assert served(answer_n(cache, 3)) == ("miss", 3)  # test_one's third request


def test_without_sequence_identical_requests_share_one_answer(cache, tctx):
    flows_ = [answer_n(cache, n) for n in (1, 2, 3)]
    assert [served(f) for f in flows_] == [("miss", 1), ("hit", 1), ("hit", 1)]
    assert len(cache.store) == 1 and "slot" not in flows_[1].metadata["provider_cache"]


def test_a_store_recorded_without_sequence_replays_with_it(cache, tctx):
    answer_n(cache, 1)
    tctx.configure(cache, cache_sequence=True, cache_mode="replay")
    assert [served(answer_n(cache, 0)) for _ in range(3)] == [("hit", 1)] * 3


def test_refresh_with_sequence_overwrites_each_slot(cache, tctx):
    tctx.configure(cache, cache_sequence=True)
    answer_n(cache, 1)
    answer_n(cache, 2)
    tctx.configure(cache, cache_mode="refresh")
    assert [served(answer_n(cache, n)) for n in (11, 12)] == [("miss", 11), ("miss", 12)]
    tctx.configure(cache, cache_mode="replay")
    assert [served(answer_n(cache, 0)) for _ in range(2)] == [("hit", 11), ("hit", 12)]


def test_bad_past_end_value_names_the_valid_ones(cache, tctx):
    with pytest.raises(exceptions.OptionsError, match="last, miss"):
        tctx.configure(cache, cache_sequence_past_end="again")
