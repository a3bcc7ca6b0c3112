"""The mitmweb addons with mitmproxy's own test context (taddons/tflow) and a real LMDB store.

Hooks run through the addon manager in the order addon/cache.py wires them, and
commands are called from strings, as mitmweb's command bar calls them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mitmproxy import exceptions, flowfilter, http
from mitmproxy.addons.view import View
from mitmproxy.log import ALERT
from mitmproxy.proxy.layers.http import (
    HttpErrorHook,
    HttpRequestHook,
    HttpResponseHeadersHook,
    HttpResponseHook,
)
from mitmproxy.test import taddons, tflow
from mitmproxy.tools.web.webaddons import WebAddon

from provider_cache.core import records
from provider_cache.mitm.flowfile import when
from provider_cache.mitm.hooks import ProviderCache
from provider_cache.mitm.webui import CacheCommands, FlowMarkers
from tests.support.sessions import KEY, session_entry, take

OPENAI = "api.openai.com"


@pytest.fixture
def tctx(cache: ProviderCache, tmp_path: Path) -> Iterator[taddons.context]:
    with taddons.context(View(), cache, FlowMarkers(cache), CacheCommands(cache)) as ctx:
        ctx.configure(cache, cache_dir=str(tmp_path / "cache"))
        yield ctx


def provider_flow(content: str = "hello", host: str = OPENAI) -> http.HTTPFlow:
    request = tflow.treq(
        host=host,
        port=443,
        scheme=b"https",
        method=b"POST",
        path=b"/v1/chat/completions",
        content=f'{{"model": "m", "prompt": "{content}"}}'.encode(),
    )
    request.headers["content-type"] = "application/json"
    request.timestamp_start = time.time()
    return tflow.tflow(req=request)


def send(tctx: taddons.context, flow: http.HTTPFlow, status: int = 200) -> http.HTTPFlow:
    """One exchange through every addon; upstream answers unless the cache already did."""
    tctx.master.addons.trigger(HttpRequestHook(flow))
    if flow.response is None:
        flow.response = http.Response.make(status, b'{"ok": true}', {"content-type": "json"})
        tctx.master.addons.trigger(HttpResponseHeadersHook(flow))
    # As the proxy does: asynchronously, awaiting what a hook hands back (a store write).
    asyncio.run(tctx.master.addons.trigger_event(HttpResponseHook(flow)))
    return flow


def key_of(flow: http.HTTPFlow) -> str:
    return flow.metadata["provider_cache"]["key"]


def shown(tctx: taddons.context, *flows: http.HTTPFlow) -> None:
    tctx.master.addons.get("view").add(flows)


def command(tctx: taddons.context, name: str, *args: str):
    return tctx.master.commands.call_strings(name, list(args))


# -- markers -------------------------------------------------------------------


def test_hit_is_marked_with_when_it_was_recorded_and_its_key(tctx, cache):
    send(tctx, provider_flow())
    hit = send(tctx, provider_flow())
    recorded_at = hit.metadata["provider_cache"]["recorded_at"]
    assert hit.marked == ":white_check_mark:"
    assert hit.comment == f"cache hit · recorded {when(recorded_at)} · key {key_of(hit)}"


def test_forwarded_miss_says_it_was_recorded(tctx, cache):
    miss = send(tctx, provider_flow())
    (_, value), *_ = cache.store.items()
    recorded_at = records.unpack(value).recorded_at
    assert miss.marked == ":x:"
    assert miss.comment == (
        f"cache miss · forwarded · recorded {when(recorded_at)} · key {key_of(miss)}"
    )


def test_recording_time_in_the_metadata_is_used_when_present(tctx, cache):
    flow = provider_flow()
    tctx.master.addons.trigger(HttpRequestHook(flow))
    flow.response = http.Response.make(500, b"{}")  # not recorded, so the store has nothing
    flow.metadata["provider_cache"]["recorded_at"] = flow.request.timestamp_start + 1
    tctx.master.addons.trigger(HttpResponseHook(flow))
    assert f"forwarded · recorded {when(flow.request.timestamp_start + 1)}" in flow.comment


def test_forwarded_miss_shows_forwarded_while_waiting(tctx):
    flow = provider_flow()
    tctx.master.addons.trigger(HttpRequestHook(flow))
    assert flow.comment == f"cache miss · forwarded · key {key_of(flow)}"


@pytest.mark.parametrize("mode", ["record", "refresh"])
def test_error_answer_is_a_miss_not_recorded_even_with_an_older_entry(tctx, cache, mode):
    older = send(tctx, provider_flow())
    tctx.configure(cache, cache_mode=mode)
    cache.rerecord_keys.add(key_of(older))  # in record mode, forward it anyway
    failed = send(tctx, provider_flow(), status=500)
    assert failed.comment == f"cache miss · forwarded · not recorded · key {key_of(failed)}"


def test_broken_exchange_is_a_miss_not_recorded(tctx):
    flow = provider_flow()
    tctx.master.addons.trigger(HttpRequestHook(flow))
    flow.error = tflow.terr()
    tctx.master.addons.trigger(HttpErrorHook(flow))
    assert flow.marked == ":x:"
    assert flow.comment.startswith("cache miss · forwarded · not recorded · key ")


def test_replay_miss_is_marked_as_answered_locally(tctx, cache):
    tctx.configure(cache, cache_mode="replay")
    miss = send(tctx, provider_flow())
    assert miss.response.status_code == 404
    assert miss.marked == ":x:"
    assert miss.comment == f"cache miss · no recording (replay mode) · key {key_of(miss)}"


def test_passthrough_flow_is_left_alone(tctx):
    flow = send(tctx, provider_flow(host="example.com"))
    assert (flow.marked, flow.comment) == ("", "")


def test_endpoint_flow_is_recognisable(tctx):
    flow = tflow.tflow(req=tflow.treq(host="provider-cache.internal", port=80, path=b"/stats"))
    tctx.master.addons.trigger(HttpRequestHook(flow))
    assert flow.marked == ":bar_chart:"
    assert flow.comment == "provider-cache endpoint · not counted"


def test_flow_read_from_a_file_keeps_its_own_comment(tctx):
    flow = provider_flow()
    flow.live = False
    flow.metadata["provider_cache"] = {"result": "stored", "key": "k"}
    flow.comment = "cache entry · recorded … · key k"
    tctx.master.addons.trigger(HttpRequestHook(flow))
    assert flow.comment == "cache entry · recorded … · key k"


def test_readme_filter_expressions(tctx, cache):
    """The expressions the README documents, in mitmproxy's own filter language."""
    miss = send(tctx, provider_flow("a"))
    hit = send(tctx, provider_flow("a"))
    other = send(tctx, provider_flow("b", host="api.anthropic.com"))
    passthrough = send(tctx, provider_flow(host="example.com"))
    flows = {"miss": miss, "hit": hit, "other": other, "passthrough": passthrough}
    expected = {
        '~comment "cache miss"': {"miss", "other"},
        '~comment "cache hit"': {"hit"},
        "~replays": {"hit"},
        "~d api.openai.com": {"miss", "hit"},
        '~d api.openai.com & ~comment "cache miss"': {"miss"},
        "~hs x-provider-cache": {"miss", "hit", "other"},
        f"~comment {key_of(hit)[:12]}": {"miss", "hit"},
    }
    for expression, names in expected.items():
        matches = flowfilter.parse(expression)
        assert {n for n, f in flows.items() if matches(f)} == names, expression


def test_comment_column_is_added_to_mitmweb_defaults(cache):
    markers = FlowMarkers(cache)
    with taddons.context(WebAddon(), markers) as ctx:
        markers.running()
        assert ctx.options.web_columns[-1] == "comment"


def test_chosen_mitmweb_columns_are_kept(cache):
    markers = FlowMarkers(cache)
    with taddons.context(WebAddon(), markers) as ctx:
        ctx.options.update(web_columns=["path", "status"])
        markers.running()
        assert ctx.options.web_columns == ["path", "status"]


def test_no_web_options_under_mitmdump(cache):
    markers = FlowMarkers(cache)
    with taddons.context(markers):
        markers.running()  # nothing to do, no error


# -- commands ------------------------------------------------------------------


def test_forget_deletes_the_entries_of_the_selected_flows(tctx, cache, caplog):
    caplog.set_level(logging.INFO)
    kept, forgotten = send(tctx, provider_flow("kept")), send(tctx, provider_flow("bad"))
    passthrough = send(tctx, provider_flow(host="example.com"))
    shown(tctx, kept, forgotten, passthrough)
    key = key_of(forgotten)

    message = command(tctx, "cache.forget", f"~comment {key[:16]}")

    assert message == "provider-cache: forgot 1 of 1 entries"
    assert cache.store.get(key.encode()) is None
    assert cache.store.get(key_of(kept).encode()) is not None
    assert forgotten.comment.endswith(" · forgotten") and "forgotten" not in kept.comment
    assert any(r.levelno == ALERT and r.message == message for r in caplog.records)
    again = send(tctx, provider_flow("bad"))
    assert again.metadata["provider_cache"]["result"] == "miss"


def test_forget_a_flow_the_user_marked_in_mitmweb(tctx, cache):
    """The README's recipe: Mark▾ 🔴 on the bad flow, then `cache.forget "~marker red"`."""
    good, bad = send(tctx, provider_flow("good")), send(tctx, provider_flow("bad"))
    shown(tctx, good, bad)
    bad.marked = ":red_circle:"  # what mitmweb's Mark menu sets
    assert command(tctx, "cache.forget", "~marker red") == "provider-cache: forgot 1 of 1 entries"
    assert cache.store.get(key_of(bad).encode()) is None
    assert cache.store.get(key_of(good).encode()) is not None


def test_forget_counts_entries_already_gone(tctx):
    flow = send(tctx, provider_flow())
    shown(tctx, flow, send(tctx, provider_flow()))  # a miss and a hit of one key
    command(tctx, "cache.forget", "@all")
    assert command(tctx, "cache.forget", "@all") == "provider-cache: forgot 0 of 1 entries"
    assert flow.comment.count("forgotten") == 1


def test_forget_without_cached_flows_says_so(tctx):
    shown(tctx, send(tctx, provider_flow(host="example.com")))
    message = command(tctx, "cache.forget", "@all")
    assert "none of the selected flows is a cached provider flow" in message
    assert "0 of 0" in command(tctx, "cache.forget", "@focus")


def test_rerecord_forwards_the_next_request_and_records_it_again(tctx, cache):
    first = send(tctx, provider_flow())
    shown(tctx, first)
    message = command(tctx, "cache.rerecord", "@all")
    assert message == "provider-cache: 1 entries will be re-recorded on their next request"
    assert cache.rerecord_keys == {key_of(first)}
    assert first.comment.endswith(" · re-record on next request")

    again = send(tctx, provider_flow())
    assert again.metadata["provider_cache"]["result"] == "miss"
    assert "forwarded · recorded" in again.comment
    assert cache.rerecord_keys == set()
    assert send(tctx, provider_flow()).metadata["provider_cache"]["result"] == "hit"


def test_rerecord_in_replay_mode_warns_that_nothing_is_forwarded(tctx, cache):
    shown(tctx, send(tctx, provider_flow()))
    tctx.configure(cache, cache_mode="replay")
    assert "cache_mode=replay never forwards" in command(tctx, "cache.rerecord", "@all")


def test_stats_shows_this_runs_counters(tctx, caplog):
    caplog.set_level(logging.INFO)
    send(tctx, provider_flow())
    send(tctx, provider_flow())
    line = command(tctx, "cache.stats")
    assert line == "mode record: 1 hits, 1 misses (50.0%), 1 recorded, 0 passthrough, 0 errors"
    alert = next(r.message for r in caplog.records if r.levelno == ALERT)
    assert alert.startswith("provider-cache: hit rate 50.0% (2 lookups)")
    assert "missed requests (1):" in alert


def test_load_shows_every_entry_once(tctx, cache):
    send(tctx, provider_flow("a"))
    send(tctx, provider_flow("b"))
    cache.store.put(b"corrupt", b"\xc1 not msgpack")
    view = tctx.master.addons.get("view")
    message = command(tctx, "cache.load")
    assert message.startswith("provider-cache: loaded 2 entries from ")
    assert message.endswith("; 1 unreadable entries skipped")
    assert len(view) == 2
    assert {f.marked for f in view} == {":floppy_disk:"}
    assert all(f.comment.startswith("cache entry · recorded ") for f in view)
    assert "(2 already shown)" in command(tctx, "cache.load")
    assert len(view) == 2


def test_loaded_entries_can_be_forgotten(tctx, cache):
    send(tctx, provider_flow())
    command(tctx, "cache.load")
    assert command(tctx, "cache.forget", "@all") == "provider-cache: forgot 1 of 1 entries"
    assert len(cache.store) == 0


def test_load_needs_a_view(cache, tmp_path):
    with taddons.context(cache, CacheCommands(cache)) as ctx:
        ctx.configure(cache, cache_dir=str(tmp_path / "cache"))
        with pytest.raises(exceptions.CommandError, match="needs a flow view"):
            ctx.master.commands.call("cache.load")


def test_commands_without_a_store_say_so(cache):
    with (
        taddons.context(View(), cache, CacheCommands(cache)) as ctx,
        pytest.raises(exceptions.CommandError, match="no store open"),
    ):
        ctx.master.commands.call_strings("cache.forget", ["@all"])


# -- errors on purpose (SPEC §4) -------------------------------------------------------------


def test_an_error_recorded_on_purpose_and_its_hits_are_marked_as_errors(tctx, cache):
    tctx.configure(cache, cache_record_errors="5xx")
    miss = send(tctx, provider_flow(), status=503)
    (_, value), *_ = cache.store.items()
    stored = records.unpack(value)
    assert stored.meta.get("error") == "error_status"
    assert miss.marked == ":warning:"
    assert miss.comment == (
        f"cache miss · forwarded · recorded {when(stored.recorded_at)} · error: error_status"
        f" · key {key_of(miss)}"
    )
    hit = send(tctx, provider_flow())
    assert hit.response.status_code == 503 and hit.marked == ":warning:"
    assert hit.comment == (
        f"cache hit · recorded {when(stored.recorded_at)} · error: error_status · key {key_of(hit)}"
    )
    assert flowfilter.match('~comment "cache hit"', hit)  # still found as a hit


def test_the_cache_note_marks_a_successful_status_as_an_error(tctx, cache):
    """A 200 stream that reported a failure: only the cache's note says it is an error."""
    flow = provider_flow()
    flow.response = http.Response.make(200, b"event: error\ndata: {}\n\n")
    flow.metadata["provider_cache"] = {
        "result": "hit",
        "key": "k" * 64,
        "recorded_at": 0.0,
        "error": "stream_error",
    }
    tctx.master.addons.get("flowmarkers").decided(flow)
    assert flow.marked == ":warning:"
    assert (
        flow.comment == f"cache hit · recorded {when(0.0)} · error: stream_error · key {'k' * 64}"
    )


def test_a_paced_hit_without_its_answer_yet_is_marked_by_the_note_alone(tctx):
    flow = provider_flow()
    assert flow.response is None
    flow.metadata["provider_cache"] = {"result": "hit", "key": "k" * 64, "recorded_at": 0.0}
    tctx.master.addons.get("flowmarkers").decided(flow)
    assert flow.marked == ":white_check_mark:"
    flow.metadata["provider_cache"]["error"] = "stream_error"
    tctx.master.addons.get("flowmarkers").decided(flow)
    assert flow.marked == ":warning:" and "error: stream_error" in flow.comment


def test_a_forwarded_error_not_recorded_is_no_error_mark(tctx):
    """Not stored, so nothing replays it: an ordinary miss."""
    failed = send(tctx, provider_flow(), status=500)
    assert failed.marked == ":x:" and "error:" not in failed.comment


def test_load_marks_stored_errors_and_leaves_the_others(tctx, cache):
    send(tctx, provider_flow("ok"))
    imported = records.Entry(
        key="e" * 64,
        recorded_at=0.0,
        request=records.StoredRequest("POST", f"https://{OPENAI}/v1/chat/completions", [], b"{}"),
        response=records.StoredResponse(502, "Bad Gateway", [], b"{}"),
    )
    on_purpose = records.Entry(
        key="d" * 64,
        recorded_at=0.0,
        request=records.StoredRequest("POST", f"https://{OPENAI}/v1/responses", [], b"{}"),
        response=records.StoredResponse(
            200, "OK", [], b"", [b"event: response.failed\ndata: {}\n\n"]
        ),
        meta={"error": "stream_error"},
    )
    for e in (imported, on_purpose):
        cache.store.put(e.key.encode(), records.pack(e))
    command(tctx, "cache.load")
    by_key = {f.metadata["provider_cache"]["key"]: f for f in tctx.master.addons.get("view")}
    assert by_key["e" * 64].marked == by_key["d" * 64].marked == ":warning:"
    assert by_key["d" * 64].comment == (
        f"cache entry · recorded {when(0.0)} · error: stream_error · key {'d' * 64}"
    )
    assert "error: error_status" in by_key["e" * 64].comment
    [ok] = [f for key, f in by_key.items() if key not in ("d" * 64, "e" * 64)]
    assert ok.marked == ":floppy_disk:" and "error" not in ok.comment


# -- sequence slots (cache_sequence) --------------------------------------------------------


def test_slots_are_named_in_the_comments_and_a_sequence_is_filterable(tctx, cache):
    tctx.configure(cache, cache_sequence=True)
    recorded = [send(tctx, provider_flow()) for _ in range(2)]
    key = key_of(recorded[0])
    assert recorded[0].comment.startswith("cache miss · forwarded · recorded ")
    assert f"· slot 1 of {key[:12]} · key {key}" in recorded[0].comment
    assert f"· slot 2 of {key[:12]} · key {key_of(recorded[1])}" in recorded[1].comment

    tctx.configure(cache, cache_mode="replay")
    hits = [send(tctx, provider_flow()) for _ in range(3)]
    assert [h.marked for h in hits] == [":white_check_mark:"] * 3
    assert f"· slot 2 of {key[:12]} ·" in hits[1].comment
    assert f"· slot 2 again (request 3) of {key[:12]} ·" in hits[2].comment
    sequence = flowfilter.parse(f"~comment {key[:12]}")
    assert all(sequence(f) for f in recorded + hits)


def test_load_names_the_slot_of_a_slot_entry(tctx, cache):
    tctx.configure(cache, cache_sequence=True)
    first = send(tctx, provider_flow())
    send(tctx, provider_flow())
    command(tctx, "cache.load")
    comments = sorted(f.comment for f in tctx.master.addons.get("view"))
    key = key_of(first)
    assert [f"slot 2 of {key[:12]}" in c for c in comments].count(True) == 1
    assert [c.endswith(f"· key {key}") for c in comments].count(True) == 1


def test_load_shows_a_websocket_session_as_a_flow_per_take(tctx, cache):
    first, second = take(b'{"n": 1}'), take(b'{"n": 2}')
    cache.store.put(KEY.encode(), records.pack(session_entry(first, second)))
    send(tctx, provider_flow("a"))
    view = tctx.master.addons.get("view")
    assert command(tctx, "cache.load").startswith("provider-cache: loaded 2 entries from ")
    sessions = [f for f in view if f.websocket is not None]
    assert [len(f.websocket.messages) for f in sessions] == [4, 4]
    assert [f.websocket.messages[-1].content for f in sessions] == [b'{"n": 1}', b'{"n": 2}']
    assert [f.websocket.messages[1].from_client for f in sessions] == [True, True]
    assert all(f.marked == ":floppy_disk:" for f in sessions)
    assert "websocket take 2 of 2, 4 messages" in sessions[1].comment
    assert "(2 already shown)" in command(tctx, "cache.load")
