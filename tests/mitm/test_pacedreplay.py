"""The paced-replay server (mitm/pacedreplay.py) on a real loopback socket, spoken to as
mitmproxy speaks to an upstream: HTTP/1.1, keep-alive, bodies by length or chunked."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest
from mitmproxy import http
from mitmproxy.test import tflow

from provider_cache.core.records import Entry, StoredRequest, StoredResponse
from provider_cache.mitm import flows, pacedreplay
from provider_cache.mitm.pacedreplay import PacedReplay

CHUNKS = [b"data: 1\n\n", b"data: 2\n\n", b"data: [DONE]\n\n"]
BODY = b"".join(CHUNKS)


def replay(offsets: list[float] | None = None, chunks: list[bytes] = CHUNKS) -> flows.Replay:
    return flows.Replay.of(
        Entry(
            key="k" * 64,
            recorded_at=1.0,
            request=StoredRequest("POST", "https://api.openai.com/v1/chat/completions", [], b""),
            response=StoredResponse(
                200,
                "OK",
                [(b"content-type", b"text/event-stream")],
                chunks=chunks,
                offsets=offsets if offsets is not None else [0.0, 0.15, 0.3],
            ),
        )
    )


def provider_flow() -> http.HTTPFlow:
    request = tflow.treq(
        host="api.openai.com", port=443, scheme=b"https", method=b"POST", path=b"/v1/x?a=1"
    )
    return tflow.tflow(req=request)


def request_head(flow: http.HTTPFlow, extra: bytes = b"content-length: 0\r\n") -> bytes:
    data = flow.request.data
    return b"POST %s HTTP/1.1\r\nhost: api.openai.com\r\n%s\r\n" % (data.path, extra)


async def hang_up(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


async def read_answer(reader: asyncio.StreamReader) -> tuple[bytes, list[tuple[float, bytes]]]:
    """The head, then the body's HTTP chunks with their arrival (seconds after the head)."""
    head = await reader.readuntil(b"\r\n\r\n")
    started = time.monotonic()
    pieces: list[tuple[float, bytes]] = []
    while size := int(await asyncio.wait_for(reader.readuntil(b"\r\n"), 5), 16):
        piece = await reader.readexactly(size + 2)
        assert piece.endswith(b"\r\n")
        pieces.append((time.monotonic() - started, piece[:-2]))
    assert await reader.readexactly(2) == b"\r\n"
    return head, pieces


def test_the_answer_comes_at_once_and_its_chunks_when_due() -> None:
    async def scenario() -> None:
        paced = PacedReplay()
        flow = provider_flow()
        await paced.forward(flow, replay(), 1.0)  # type: ignore[misc]  # starts the server
        assert (flow.request.data.host, flow.request.data.port) == ("127.0.0.1", paced.port)
        reader, writer = await asyncio.open_connection("127.0.0.1", paced.port)
        writer.write(request_head(flow))
        head, pieces = await read_answer(reader)
        await hang_up(writer)
        paced.close()
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"content-type: text/event-stream\r\n" in head
        assert b"x-provider-cache: hit\r\n" in head
        assert b"transfer-encoding: chunked\r\n" in head  # as providers stream
        assert b"content-length" not in head
        assert b"".join(p for _, p in pieces) == BODY
        assert [p for _, p in pieces] == CHUNKS  # one write each, as they fell due
        arrivals = [at for at, _ in pieces]
        assert arrivals[0] < 0.1
        assert 0.12 < arrivals[1] < 0.6 and 0.27 < arrivals[2] < 0.9

    asyncio.run(scenario())


def test_a_factor_scales_the_pace() -> None:
    async def scenario() -> float:
        paced = PacedReplay()
        flow = provider_flow()
        await paced.forward(flow, replay([0.0, 0.2, 0.4]), 0.25)  # type: ignore[misc]
        reader, writer = await asyncio.open_connection("127.0.0.1", paced.port)
        writer.write(request_head(flow))
        _, pieces = await read_answer(reader)
        await hang_up(writer)
        paced.close()
        return pieces[-1][0]

    last = asyncio.run(scenario())
    assert 0.08 < last < 0.3  # 0.4 s recorded, a quarter of it


def test_requests_follow_each_other_on_one_connection_whatever_their_body() -> None:
    async def scenario() -> None:
        paced = PacedReplay()
        first, second, third = provider_flow(), provider_flow(), provider_flow()
        await paced.forward(first, replay([0, 0, 0]), 1.0)  # type: ignore[misc]
        assert paced.forward(second, replay([0, 0, 0]), 1.0) is None  # running: no await
        assert paced.forward(third, replay([0, 0, 0]), 1.0) is None
        reader, writer = await asyncio.open_connection("127.0.0.1", paced.port)
        writer.write(request_head(first, b"content-length: 11\r\n") + b'{"model":1}')
        assert (await read_answer(reader))[0].startswith(b"HTTP/1.1 200")
        chunked = b"transfer-encoding: chunked\r\n"
        writer.write(request_head(second, chunked) + b"4\r\nabcd\r\n3;x=1\r\nefg\r\n0\r\n\r\n")
        assert b"".join(p for _, p in (await read_answer(reader))[1]) == BODY
        writer.write(request_head(third))
        assert b"".join(p for _, p in (await read_answer(reader))[1]) == BODY
        await hang_up(writer)
        paced.close()

    asyncio.run(scenario())


def test_an_unknown_flow_is_not_found_and_the_connection_closed() -> None:
    async def scenario() -> bytes:
        paced = PacedReplay()
        await paced.forward(provider_flow(), replay(), 1.0)  # type: ignore[misc]
        reader, writer = await asyncio.open_connection("127.0.0.1", paced.port)
        writer.write(b"GET /provider-cache-pace/nope HTTP/1.1\r\nhost: x\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 5)  # to the end: closed
        await hang_up(writer)
        paced.close()
        return answer

    answer = asyncio.run(scenario())
    assert answer.startswith(b"HTTP/1.1 404 Not Found\r\n")


def test_a_client_gone_mid_answer_leaves_the_server_serving() -> None:
    async def scenario() -> bytes:
        paced = PacedReplay()
        gone, next_one = provider_flow(), provider_flow()
        await paced.forward(gone, replay([0, 0.2, 0.4]), 1.0)  # type: ignore[misc]
        paced.forward(next_one, replay([0, 0, 0]), 1.0)
        reader, writer = await asyncio.open_connection("127.0.0.1", paced.port)
        writer.write(request_head(gone))
        await reader.readuntil(b"\r\n\r\n")
        await hang_up(writer)  # before the chunks due later
        await asyncio.sleep(0.5)
        reader, writer = await asyncio.open_connection("127.0.0.1", paced.port)
        writer.write(request_head(next_one))
        _, pieces = await read_answer(reader)
        await hang_up(writer)
        paced.close()
        return b"".join(p for _, p in pieces)

    assert asyncio.run(scenario()) == BODY


def test_the_request_gets_its_own_target_back_when_the_headers_arrive() -> None:
    async def scenario() -> None:
        paced = PacedReplay()
        flow = provider_flow()
        host_header = flow.request.headers.get("host")
        await paced.forward(flow, replay(), 1.0)  # type: ignore[misc]
        data = flow.request.data
        assert (data.scheme, data.host, data.path) == (
            b"http",
            "127.0.0.1",
            f"/provider-cache-pace/{flow.id}".encode(),
        )
        assert flow.request.headers.get("host") == host_header  # the Host header untouched
        flow.response = http.Response.make(200, b"")
        paced.headers(flow)
        assert flow.request.url == "https://api.openai.com/v1/x?a=1"
        assert flow.response.stream is True
        assert flow.response.content == BODY  # for mitmweb; mitmproxy streams what is sent
        assert paced.flows == {}
        paced.close()

    asyncio.run(scenario())


def test_a_paced_flow_that_broke_is_forgotten_with_its_target_given_back() -> None:
    async def scenario() -> None:
        paced = PacedReplay()
        flow = provider_flow()
        await paced.forward(flow, replay(), 1.0)  # type: ignore[misc]
        assert paced.forget(flow) is True
        assert flow.request.url == "https://api.openai.com/v1/x?a=1"
        assert paced.forget(flow) is False and paced.flows == {}
        paced.close()

    asyncio.run(scenario())


def test_upstream_proxy_mode_is_served_unpaced() -> None:
    flow = provider_flow()
    flow.server_conn.via = ("http", ("proxy.example", 3128))  # type: ignore[assignment]
    assert PacedReplay().forward(flow, replay(), 1.0) is None
    assert flow.response is not None and flow.response.content == BODY
    assert flow.request.host == "api.openai.com"


def test_a_server_that_cannot_start_serves_unpaced(monkeypatch: pytest.MonkeyPatch) -> None:
    """Never a flow left to go on to the provider: it gets the stored answer at once."""
    monkeypatch.setattr(pacedreplay, "HOST", "192.0.2.1")  # TEST-NET-1: not this machine's

    async def scenario() -> http.HTTPFlow:
        paced = PacedReplay()
        flow = provider_flow()
        await paced.forward(flow, replay(), 1.0)  # type: ignore[misc]
        assert paced.server is None and paced.flows == {}
        return flow

    flow = asyncio.run(scenario())
    assert flow.response is not None and flow.response.content == BODY
    assert flow.request.host == "api.openai.com"


def test_a_body_without_a_length_gets_one_for_the_http1_server() -> None:
    """HTTP/2 requests may omit content-length; mitmproxy would send the body unframed."""

    async def scenario() -> tuple[http.HTTPFlow, http.HTTPFlow]:
        paced = PacedReplay()
        unframed, framed = provider_flow(), provider_flow()
        for flow in (unframed, framed):
            flow.request.http_version = "HTTP/2.0"
            flow.request.data.content = b'{"model": "m"}'
            flow.request.headers.pop("content-length", None)
        framed.request.headers["content-length"] = "14"
        await paced.forward(unframed, replay(), 1.0)  # type: ignore[misc]
        paced.forward(framed, replay(), 1.0)
        paced.close()
        return unframed, framed

    unframed, framed = asyncio.run(scenario())
    assert unframed.request.headers["content-length"] == "14"
    assert framed.request.headers.get_all("content-length") == ["14"]
