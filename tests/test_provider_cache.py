"""Fast unit tests of the hooks with mitmproxy's own test context (taddons/tflow), real LMDB."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Iterator
from pathlib import Path

import pytest
from mitmproxy import exceptions, http
from mitmproxy.test import taddons, tflow

from provider_cache.core import records
from provider_cache.core.streaming import StreamRecorder
from provider_cache.mitm.hooks import ProviderCache

SSE = b'data: {"x": 1}\n\ndata: [DONE]\n\n'


@pytest.fixture
def addon() -> Iterator[ProviderCache]:
    cache = ProviderCache()
    yield cache
    cache.done()


@pytest.fixture
def tctx(addon: ProviderCache, tmp_path: Path) -> Iterator[taddons.context]:
    with taddons.context(addon) as ctx:
        ctx.configure(addon, cache_dir=str(tmp_path / "cache"))
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


def record(addon: ProviderCache, flow: http.HTTPFlow) -> None:
    addon.request(flow)
    upstream_answer(flow)
    addon.responseheaders(flow)
    finish(addon.response(flow))


@pytest.mark.parametrize(
    ("option", "value", "valid"),
    [
        ("cache_mode", "offline", "record, replay, refresh, read-old-write-new"),
        ("cache_max_body_size", "huge", "32m"),
        ("cache_window_size", 0, "at least 1"),
        ("cache_redact_headers", ["a b"], "header names"),
    ],
)
def test_bad_option_is_an_options_error_naming_valid_values(addon, tctx, option, value, valid):
    with pytest.raises(exceptions.OptionsError, match=valid):
        tctx.configure(addon, **{option: value})
    assert addon.settings.mode == "record"  # the previous settings stay in force


def test_miss_is_forwarded_then_recorded_then_hit(addon, tctx, tmp_path):
    first = provider_flow()
    record(addon, first)
    assert first.response.headers["x-provider-cache"] == "miss"

    second = provider_flow()
    addon.request(second)
    assert second.response is not None and second.is_replay == "response"
    assert second.response.headers["x-provider-cache"] == "hit"
    assert second.response.content == b'{"ok": true}'
    assert second.metadata["provider_cache"]["result"] == "hit"
    assert (addon.stats.hits, addon.stats.misses, addon.stats.recorded) == (1, 1, 1)


def test_replay_miss_answers_locally(addon, tctx):
    tctx.configure(addon, cache_mode="replay")
    flow = provider_flow()
    addon.request(flow)
    assert flow.response.status_code == 404
    error = json.loads(flow.response.content)["error"]
    assert error["type"] == "provider_cache_miss"
    assert "sk-unit-test-secret" not in flow.response.text
    assert addon.pending == {}


def test_non_provider_host_is_passthrough(addon, tctx):
    flow = provider_flow(host="example.com")
    addon.request(flow)
    upstream_answer(flow)
    addon.responseheaders(flow)
    finish(addon.response(flow))
    assert flow.response.headers.get("x-provider-cache") is None
    assert (addon.stats.passthrough, addon.stats.misses) == (1, 0)


def test_non_2xx_is_not_recorded(addon, tctx, tmp_path):
    flow = provider_flow()
    addon.request(flow)
    flow.response = http.Response.make(500, b"{}")
    addon.responseheaders(flow)
    finish(addon.response(flow))
    assert addon.stats.recorded == 0
    assert len(addon.store) == 0


def test_event_stream_is_teed_and_kept_only_when_complete(addon, tctx):
    flow = provider_flow()
    addon.request(flow)
    upstream_answer(flow, b"", **{"content-type": "text/event-stream"})
    addon.responseheaders(flow)
    tee = flow.response.stream
    assert isinstance(tee, StreamRecorder)
    assert tee(SSE[:10]) == SSE[:10] and tee(SSE[10:]) == SSE[10:]  # passed on unchanged
    flow.error = None
    finish(addon.error(flow))  # the client hung up after [DONE]: complete
    assert addon.stats.recorded == 1


def test_cut_event_stream_is_not_recorded(addon, tctx):
    flow = provider_flow()
    addon.request(flow)
    upstream_answer(flow, b"", **{"content-type": "text/event-stream"})
    addon.responseheaders(flow)
    flow.response.stream(b'data: {"x": 1}\n\n')
    finish(addon.error(flow))
    assert addon.stats.recorded == 0 and addon.stats.errors == 1


def test_corrupt_entry_is_a_miss_and_an_error(addon, tctx, tmp_path):
    flow = provider_flow()
    record(addon, flow)
    key = flow.metadata["provider_cache"]["key"]
    addon.store.put(key.encode(), b"\xc1 not msgpack")

    again = provider_flow()
    addon.request(again)
    assert again.response is None  # forwarded, as a miss
    assert addon.stats.errors == 1 and addon.stats.misses == 2


def test_stored_request_is_redacted(addon, tctx, tmp_path):
    record(addon, provider_flow())
    [(_, value)] = list(addon.store.items())
    entry = records.unpack(value)
    assert (b"authorization", b"<redacted>") in entry.request.headers
    assert b"sk-unit-test-secret" not in value


def test_done_closes_the_store_so_a_reload_can_reopen_it(addon, tctx, tmp_path):
    addon.done()
    again = ProviderCache()
    with taddons.context(again) as ctx:
        ctx.configure(again, cache_dir=str(tmp_path / "cache"))
        assert again.store is not None
    again.done()


def hit(addon: ProviderCache) -> http.HTTPFlow:
    flow = provider_flow()
    addon.request(flow)
    assert flow.is_replay == "response", "expected a hit"
    assert addon.response(flow) is None  # a hit leaves nothing for mitmproxy to await
    return flow


def test_repeated_hit_serves_what_the_store_holds_now(addon, tctx):
    """Keys and decoded entries are remembered, but every hit reads the store: an entry
    another process rewrote or deleted is never served from memory."""
    first = provider_flow()
    record(addon, first)
    key = first.metadata["provider_cache"]["key"]
    assert hit(addon).response.content == b'{"ok": true}'
    assert hit(addon).response.content == b'{"ok": true}'

    entry = records.unpack(addon.store.get(key.encode()))
    entry.response.body = b'{"ok": "rewritten"}'
    addon.store.put(key.encode(), records.pack(entry))
    assert hit(addon).response.content == b'{"ok": "rewritten"}'

    addon.store.delete(key.encode())
    gone = provider_flow()
    addon.request(gone)
    assert gone.response is None and addon.stats.misses == 2


def test_remembered_keys_are_dropped_when_the_rules_change(addon, tctx):
    def key_with_header(value: str) -> str:
        flow = provider_flow()
        flow.request.headers["x-team"] = value
        addon.request(flow)
        return flow.metadata["provider_cache"]["key"]

    assert key_with_header("a") != key_with_header("b")
    before = key_with_header("a")
    tctx.configure(addon, cache_ignore_headers=["x-team"])
    assert key_with_header("a") == key_with_header("b") != before


def test_recording_hands_mitmproxy_the_write_to_await(addon, tctx):
    flow = provider_flow()
    addon.request(flow)
    upstream_answer(flow)
    addon.responseheaders(flow)
    write = addon.response(flow)
    assert write is not None and addon.stats.recorded == 0  # not stored until awaited
    finish(write)
    assert addon.stats.recorded == 1 and len(addon.store) == 1
    assert "recorded_at" in flow.metadata["provider_cache"]


def test_endpoint_requests_are_not_counted_as_passthrough(addon, tctx):
    endpoint_flow = tflow.tflow(req=tflow.treq(host="provider-cache.internal", path=b"/stats"))
    addon.request(endpoint_flow)
    addon.request(provider_flow(host="example.com"))
    assert addon.stats.passthrough == 1
