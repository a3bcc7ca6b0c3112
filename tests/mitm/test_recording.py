"""The recording path (mitm/recording.py) through the addon's hooks, with mitmproxy's test
context and real LMDB: what is stored, what is counted under which reason, and the errors
that cache_record_errors records on purpose."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from mitmproxy import exceptions, http
from mitmproxy.test import taddons

from provider_cache.core import records
from provider_cache.core.rejections import REASONS
from provider_cache.mitm.hooks import ProviderCache
from tests.mitm.test_hooks import SSE, finish, provider_flow, record, upstream_answer

HOST = "api.openai.com"
ERROR_SSE = [b'data: {"x": 1}\n\n', b'event: error\ndata: {"message": "overloaded"}\n\n']


@pytest.fixture
def tctx(cache: ProviderCache, tmp_path: Path) -> Iterator[taddons.context]:
    with taddons.context(cache) as ctx:
        ctx.configure(cache, cache_dir=str(tmp_path / "cache"))
        yield ctx


def rejected(cache: ProviderCache) -> dict[str, int]:
    """The reasons counted so far (only those > 0), in total and for the host: the same."""
    total = {reason: n for reason, n in cache.stats.rejected.items() if n}
    by_host = cache.stats.snapshot()["by_host"].get(HOST, {}).get("rejected", {})
    assert by_host == total
    return total


def answer(cache: ProviderCache, flow: http.HTTPFlow, response: http.Response) -> None:
    """The upstream answers `response` in one piece."""
    cache.request(flow)
    flow.response = response
    cache.responseheaders(flow)
    finish(cache.response(flow))


def stream(
    cache: ProviderCache,
    flow: http.HTTPFlow,
    chunks: list[bytes],
    *,
    status: int = 200,
    ended: bool = True,
    broke: bool = False,
) -> None:
    """The upstream answers an SSE stream of `chunks`; it ends, or the exchange breaks."""
    cache.request(flow)
    flow.response = http.Response.make(status, b"", {"content-type": "text/event-stream"})
    cache.responseheaders(flow)
    tee = flow.response.stream
    assert callable(tee)
    for chunk in chunks:
        tee(chunk)
    if ended:
        tee(b"")
    finish(cache.error(flow) if broke else cache.response(flow))


def stored(cache: ProviderCache) -> list[records.Entry]:
    return [records.unpack(value) for _, value in cache.store.items()]


# --- not stored, by reason ---------------------------------------------------------------------


def test_every_reason_is_counted_zero_before_any_answer(cache, tctx) -> None:
    assert cache.stats.snapshot()["rejected"] == dict.fromkeys(REASONS, 0)


def test_an_error_status_is_rejected_as_error_status(cache, tctx) -> None:
    answer(cache, provider_flow(), http.Response.make(500, b'{"error": {}}'))
    assert rejected(cache) == {"error_status": 1}
    assert (cache.stats.recorded, cache.stats.errors, len(cache.store)) == (0, 0, 0)


def test_a_cut_stream_is_cut_short_and_an_error(cache, tctx) -> None:
    stream(cache, provider_flow(), [SSE[:10]], ended=False, broke=True)
    assert rejected(cache) == {"cut_short": 1}
    assert cache.stats.errors == 1 and len(cache.store) == 0


def test_a_stream_without_its_terminal_event_is_incomplete(cache, tctx) -> None:
    stream(cache, provider_flow(), [b'data: {"x": 1}\n\n'])
    assert rejected(cache) == {"incomplete": 1}


def test_a_stream_that_reports_an_error_is_stream_error(cache, tctx) -> None:
    stream(cache, provider_flow(), ERROR_SSE)
    assert rejected(cache) == {"stream_error": 1} and len(cache.store) == 0


def test_an_unstreamed_answer_cut_short_is_cut_short(cache, tctx) -> None:
    flow = provider_flow()
    cache.request(flow)
    upstream_answer(flow, b'{"id": "partial", "choi')
    cache.responseheaders(flow)
    finish(cache.error(flow))  # the body broke off
    assert rejected(cache) == {"cut_short": 1} and cache.stats.errors == 1


def test_a_broken_exchange_without_an_answer_is_only_an_error(cache, tctx) -> None:
    flow = provider_flow()
    cache.request(flow)
    finish(cache.error(flow))  # no response at all: connection refused, reset, timeout
    assert rejected(cache) == {} and cache.stats.errors == 1


def test_too_large_raw_and_decoded(cache, tctx) -> None:
    tctx.configure(cache, cache_max_body_size="1k")
    answer(cache, provider_flow(), http.Response.make(200, b"x" * 2000))
    bomb = gzip.compress(b"{}" + b" " * 5000)
    headers = {"content-type": "application/json", "content-encoding": "gzip"}
    cache.request(flow := provider_flow(b'{"n": 3}'))
    flow.response = http.Response.make(200, b"", headers)
    flow.response.raw_content = bomb  # small on the wire, large decoded
    cache.responseheaders(flow)
    finish(cache.response(flow))
    assert len(bomb) < 1024
    assert rejected(cache) == {"too_large": 2}
    stream(cache, provider_flow(b'{"n": 4}'), [b"data: " + b"x" * 2000 + b"\n\n"])
    assert rejected(cache)["too_large"] == 3


def test_an_undecodable_body_is_undecodable_not_an_error(cache, tctx) -> None:
    flow = provider_flow()
    cache.request(flow)
    flow.response = http.Response.make(200, b"", {"content-encoding": "gzip"})
    flow.response.raw_content = b"this is not gzip"
    cache.responseheaders(flow)
    finish(cache.response(flow))
    assert rejected(cache) == {"undecodable": 1} and cache.stats.errors == 0


def test_the_answer_to_a_request_too_large_to_key_is_too_large(cache, tctx) -> None:
    tctx.configure(cache, cache_max_body_size="1k")
    record(cache, provider_flow(b'{"input": "' + b"x" * 2000 + b'"}'))
    assert rejected(cache) == {"too_large": 1} and len(cache.store) == 0


def test_a_complete_answer_counts_no_rejection(cache, tctx) -> None:
    record(cache, provider_flow())
    stream(cache, provider_flow(b'{"stream": true}'), [SSE])
    assert rejected(cache) == {} and cache.stats.recorded == 2


# --- errors on purpose: cache_record_errors ------------------------------------------------------


@pytest.mark.parametrize("value", ["200", "abc", "3xx", "429,,5xx", "600"])
def test_a_bad_cache_record_errors_is_an_options_error(cache, tctx, value) -> None:
    with pytest.raises(exceptions.OptionsError, match="cache_record_errors takes error statuses"):
        tctx.configure(cache, cache_record_errors=value)
    assert cache.settings.record_errors.statuses == frozenset()


def test_a_listed_error_status_is_recorded_marked_and_replayed_as_it_came(cache, tctx) -> None:
    tctx.configure(cache, cache_record_errors="429,5xx")
    body = b'{"error": {"type": "server_error", "message": "boom"}}'
    headers = {"content-type": "application/json", "x-request-id": "req_1"}
    answer(cache, provider_flow(), http.Response.make(503, body, headers))
    [entry] = stored(cache)
    assert entry.meta["error"] == "error_status"
    assert entry.response.status == 503
    assert rejected(cache) == {} and cache.stats.recorded == 1

    again = provider_flow()
    cache.request(again)
    assert again.is_replay == "response"
    assert (again.response.status_code, again.response.content) == (503, body)
    assert again.response.headers["x-request-id"] == "req_1"
    assert again.response.headers["x-provider-cache"] == "hit"


def test_an_error_status_not_listed_is_still_rejected(cache, tctx) -> None:
    tctx.configure(cache, cache_record_errors="429")
    answer(cache, provider_flow(), http.Response.make(500, b"{}"))
    assert rejected(cache) == {"error_status": 1} and len(cache.store) == 0


def test_a_listed_status_does_not_record_a_failed_2xx_stream(cache, tctx) -> None:
    tctx.configure(cache, cache_record_errors="4xx,5xx")
    stream(cache, provider_flow(), ERROR_SSE)
    assert rejected(cache) == {"stream_error": 1}


def test_stream_error_records_a_failed_stream_that_ended_properly(cache, tctx) -> None:
    tctx.configure(cache, cache_record_errors="stream_error")
    stream(cache, provider_flow(), ERROR_SSE)
    [entry] = stored(cache)
    assert entry.meta["error"] == "stream_error"
    assert entry.response.chunks == ERROR_SSE and entry.response.offsets is not None
    again = provider_flow()
    cache.request(again)
    assert again.response.content == b"".join(ERROR_SSE)


def test_stream_error_never_records_a_failed_stream_that_was_cut(cache, tctx) -> None:
    tctx.configure(cache, cache_record_errors="stream_error,5xx")
    stream(cache, provider_flow(), ERROR_SSE, ended=False, broke=True)
    stream(cache, provider_flow(b'{"n": 2}'), ERROR_SSE[:1], status=500, ended=False, broke=True)
    assert rejected(cache) == {"cut_short": 2} and len(cache.store) == 0


def test_a_listed_error_stream_is_recorded_whatever_its_framing(cache, tctx) -> None:
    """An error body need not follow the success stream's rules (no terminal event here)."""
    tctx.configure(cache, cache_record_errors="5xx")
    stream(cache, provider_flow(), [b'data: {"error": "overloaded"}\n\n'], status=529)
    [entry] = stored(cache)
    assert entry.meta["error"] == "error_status" and entry.response.status == 529


def test_a_success_carries_no_error_mark(cache, tctx) -> None:
    tctx.configure(cache, cache_record_errors="4xx,5xx,stream_error")
    record(cache, provider_flow())
    [entry] = stored(cache)
    assert "error" not in entry.meta


# --- chunk offsets -----------------------------------------------------------------------------


def test_a_recorded_stream_keeps_its_chunk_offsets(cache, tctx) -> None:
    stream(cache, provider_flow(), [SSE[:10], SSE[10:]])
    [entry] = stored(cache)
    offsets = entry.response.offsets
    assert offsets is not None and len(offsets) == 2 and 0 <= offsets[0] <= offsets[1]
    [(_, value)] = list(cache.store.items())
    assert records.unpack(value).response.offsets == offsets  # stored in schema 2


def test_a_gzipped_stream_is_one_chunk_due_when_it_had_all_arrived(cache, tctx) -> None:
    flow = provider_flow()
    cache.request(flow)
    headers = {"content-type": "text/event-stream", "content-encoding": "gzip"}
    flow.response = http.Response.make(200, b"", headers)
    cache.responseheaders(flow)
    packed = gzip.compress(SSE)
    flow.response.stream(packed[:20])
    flow.response.stream(packed[20:])
    flow.response.stream(b"")
    finish(cache.response(flow))
    [entry] = stored(cache)
    assert entry.response.chunks == [SSE]
    assert entry.response.offsets is not None and len(entry.response.offsets) == 1


def test_an_unstreamed_answer_has_no_offsets(cache, tctx) -> None:
    record(cache, provider_flow())
    [entry] = stored(cache)
    assert entry.response.chunks is None and entry.response.offsets is None


# --- a write under way as the proxy stops -------------------------------------------------------


def test_a_write_under_way_at_shutdown_is_counted_in_the_final_stats(cache, tctx, tmp_path):
    """mitmproxy calls done() and ends its event loop: the write's coroutine never resumes
    after the writer thread stored the entry, so done() counts it before the last stats."""
    flow = provider_flow()
    cache.request(flow)
    upstream_answer(flow)
    cache.responseheaders(flow)

    async def scenario() -> None:
        task = asyncio.ensure_future(cache.response(flow))
        await asyncio.sleep(0)  # the entry is handed to the writer thread
        cache.done()  # as mitmproxy stops
        task.cancel()

    asyncio.run(scenario())
    final = json.loads((tmp_path / "cache" / "stats.json").read_text())
    assert final["recorded"] == 1 and final["errors"] == 0
    assert "recorded_at" in flow.metadata["provider_cache"]
