"""The WebSocket addon's hooks with mitmproxy's test context, a real store and the real
loopback player (spoken to by the `websockets` client, as mitmproxy would)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Iterator
from pathlib import Path

import pytest
from mitmproxy import http
from mitmproxy.test import taddons, tflow
from mitmproxy.websocket import WebSocketData, WebSocketMessage
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from wsproto.frame_protocol import Opcode

from provider_cache.core import records, wsmatch, wsrecords
from provider_cache.mitm import wsplayer
from provider_cache.mitm.hooks import ProviderCache
from provider_cache.mitm.websockets import WebSocketCache
from provider_cache.mitm.webui import FlowMarkers

SECRET = "sk-unit-test-secret-0001"
CREATED = b'{"type": "session.created"}'
ASK = b'{"type": "response.create"}'
DONE = b'{"type": "response.done", "echo": "sk-unit-test-secret-0001"}'


@pytest.fixture
def tctx(cache: ProviderCache, tmp_path: Path) -> Iterator[taddons.context]:
    with taddons.context(cache) as ctx:
        ctx.configure(cache, cache_dir=str(tmp_path / "cache"))
        yield ctx


@pytest.fixture
def ws(cache: ProviderCache) -> Iterator[WebSocketCache]:
    addon = WebSocketCache(cache)
    yield addon
    addon.done()


def handshake(host: str = "api.openai.com", method: bytes = b"GET") -> http.HTTPFlow:
    request = tflow.treq(
        host=host, port=443, scheme=b"https", method=method, path=b"/v1/realtime?model=m"
    )
    request.headers["upgrade"] = "websocket"
    request.headers["connection"] = "Upgrade"
    request.headers["sec-websocket-version"] = "13"
    request.headers["sec-websocket-key"] = "dGhlIHNhbXBsZSBub25jZQ=="
    request.headers["authorization"] = f"Bearer {SECRET}"
    return tflow.tflow(req=request)


def upgraded(flow: http.HTTPFlow, code: int | None = 1000) -> None:
    """The upstream's 101 and a conversation, as mitmproxy leaves them on the flow."""
    flow.response = http.Response.make(
        101, b"", {"upgrade": "websocket", "sec-websocket-accept": "per-connection"}
    )
    start = flow.response.timestamp_start
    flow.websocket = WebSocketData(
        messages=[
            WebSocketMessage(Opcode.TEXT, False, CREATED, start + 0.01),
            WebSocketMessage(Opcode.TEXT, True, ASK, start + 0.1),
            WebSocketMessage(Opcode.TEXT, False, DONE, start + 0.2),
        ],
        close_code=code,
        closed_by_client=True,
    )


def finish(awaitable: Awaitable[None] | None) -> None:
    if awaitable is not None:
        asyncio.run(awaitable)


def record(ws: WebSocketCache, code: int | None = 1000) -> http.HTTPFlow:
    flow = handshake()
    assert ws.request(flow) is None and flow.response is None  # forwarded
    upgraded(flow, code)
    ws.responseheaders(flow)
    finish(ws.websocket_end(flow))
    return flow


def stored(cache: ProviderCache) -> list[records.Entry]:
    return list(records.unpack_valid(cache.store.scan(stop=lambda: False)))


def test_other_requests_are_left_alone(ws, cache, tctx) -> None:
    flows = [handshake(method=b"POST"), handshake(host="example.com"), tflow.tflow()]
    for flow in flows:
        assert ws.request(flow) is None
        assert flow.response is None and "provider_cache" not in flow.metadata
    assert not ws.claimed and cache.stats.misses == 0


def test_a_session_is_recorded_when_it_closes_normally(ws, cache, tctx) -> None:
    flow = record(ws)
    assert flow.response.headers["x-provider-cache"] == "miss"
    (entry,) = stored(cache)
    session = wsrecords.session_of(entry)
    assert [(m.from_client, m.content) for m in session.takes[0].messages] == [
        (False, CREATED),
        (True, ASK),
        (False, b'{"type": "response.done", "echo": "<redacted>"}'),
    ]
    assert session.takes[0].messages[1].offset == pytest.approx(0.1)
    assert entry.response.status == 101
    assert b"sec-websocket-accept" not in dict(entry.response.headers)
    assert SECRET.encode() not in cache.store.get(entry.key.encode())
    assert (cache.stats.misses, cache.stats.recorded) == (1, 1)
    assert not ws.claimed and not ws.sessions


@pytest.mark.parametrize(
    ("code", "reason"), [(1006, "cut_short"), (None, "cut_short"), (1011, "stream_error")]
)
def test_a_session_that_did_not_close_normally_is_not_stored(ws, cache, tctx, code, reason):
    record(ws, code)
    assert stored(cache) == []
    assert cache.stats.rejected[reason] == 1


def test_a_refused_handshake_is_an_error_status(ws, cache, tctx) -> None:
    flow = handshake()
    ws.request(flow)
    flow.response = http.Response.make(401, b"{}")
    ws.response(flow)
    assert cache.stats.rejected["error_status"] == 1
    assert stored(cache) == [] and not ws.sessions


def test_a_miss_in_replay_mode_is_answered_locally(ws, cache, tctx) -> None:
    tctx.configure(cache, cache_mode="replay")
    flow = handshake()
    ws.request(flow)
    body = json.loads(flow.response.content)
    assert flow.response.status_code == 404
    assert body["error"]["type"] == "provider_cache_miss"
    assert SECRET not in flow.response.text
    assert cache.stats.misses == 1 and cache.stats.missed


async def replayed(
    ws: WebSocketCache, flow: http.HTTPFlow, send: bytes, answers: int = 5
) -> tuple[list, object]:
    """The handshake through the hook, then the player spoken to over a real socket: the
    opening message, `send`, up to `answers` more; then the client closes if the player did
    not (the close the player sent, or None)."""
    pointed = ws.request(flow)
    if pointed is not None:
        await pointed
    data = flow.request.data
    assert (data.host, data.port) == (wsplayer.HOST, ws.player.port)
    got: list = []
    close = None
    url = f"ws://{data.host}:{data.port}{data.path.decode()}"
    async with connect(url, proxy=None) as client:
        got.append(await asyncio.wait_for(client.recv(), 5))
        await client.send(send.decode())
        try:
            for _ in range(answers):
                got.append(await asyncio.wait_for(client.recv(), 5))
        except ConnectionClosed as e:
            close = e.rcvd
    flow.response = http.Response.make(101, b"", {"upgrade": "websocket"})
    ws.responseheaders(flow)
    finish(ws.websocket_end(flow))
    return got, close


def test_a_recorded_session_is_replayed_by_the_player_and_counted_a_hit(ws, cache, tctx) -> None:
    record(ws)
    tctx.configure(cache, cache_mode="replay")
    flow = handshake()
    flow.websocket = WebSocketData()
    got, close = asyncio.run(replayed(ws, flow, ASK, answers=1))
    assert got == [CREATED.decode(), '{"type": "response.done", "echo": "<redacted>"}']
    assert close is None  # the recorded client closed: so does this one, the player does not
    assert flow.request.host == "api.openai.com" and flow.is_replay == "response"
    assert (cache.stats.hits, cache.stats.misses) == (1, 0)  # replay mode's own counts
    assert not ws.player.plans and not ws.claimed


def test_a_client_message_that_differs_closes_the_session_naming_its_index(ws, cache, tctx):
    record(ws)
    tctx.configure(cache, cache_mode="replay")
    flow = handshake()
    flow.websocket = WebSocketData()
    got, close = asyncio.run(replayed(ws, flow, b'{"type": "response.cancel"}'))
    assert got == [CREATED.decode()]  # nothing released for the wrong question
    assert close.code == wsmatch.DIVERGED_CODE
    assert "client message 0" in close.reason
    assert (cache.stats.hits, cache.stats.misses) == (0, 1)  # a miss, not a hit as well
    (missed,) = cache.stats.missed.values()
    assert missed.closest["differences"] == [
        'client message 0: $.type: "response.create" → "response.cancel"'
    ]
    assert flow.metadata["provider_cache"]["diverged_at"] == 0


def test_in_record_mode_a_diverged_session_is_recorded_as_a_new_take_next_time(ws, cache, tctx):
    record(ws)
    flow = handshake()
    flow.websocket = WebSocketData()
    asyncio.run(replayed(ws, flow, b'{"type": "response.cancel"}'))
    again = record(ws)
    assert again.response.headers["x-provider-cache"] == "miss"
    (entry,) = stored(cache)
    assert len(wsrecords.session_of(entry).takes) == 2


def test_with_cache_replay_timing_a_released_message_keeps_its_recorded_pace(ws, cache, tctx):
    """DONE was recorded 0.1 s after ASK: replayed at the recorded pace, so it comes then."""
    record(ws)
    tctx.configure(cache, cache_mode="replay", cache_replay_timing="recorded")
    flow = handshake()
    flow.websocket = WebSocketData()

    async def scenario() -> float:
        pointed = ws.request(flow)
        if pointed is not None:
            await pointed
        data = flow.request.data
        url = f"ws://{data.host}:{data.port}{data.path.decode()}"
        async with connect(url, proxy=None) as client:
            await asyncio.wait_for(client.recv(), 5)
            sent = time.monotonic()
            await client.send(ASK.decode())
            await asyncio.wait_for(client.recv(), 5)
            return time.monotonic() - sent

    assert 0.08 <= asyncio.run(scenario()) < 1.0


def test_a_diverged_session_is_marked_in_mitmweb_with_its_index(ws, cache, tctx) -> None:
    FlowMarkers(cache)  # one of the cache's watchers, as addon/cache.py wires it
    record(ws)
    tctx.configure(cache, cache_mode="replay")
    matched, diverged = handshake(), handshake()
    matched.websocket, diverged.websocket = WebSocketData(), WebSocketData()

    async def both() -> None:  # one event loop: the player's
        await replayed(ws, matched, ASK, answers=1)
        await replayed(ws, diverged, b'{"type": "response.cancel"}')

    asyncio.run(both())
    assert matched.marked == ":white_check_mark:" and "cache hit · recorded" in matched.comment
    flow = diverged
    assert flow.marked == ":x:"
    assert "cache miss · diverged at client message 0 · key " in flow.comment
