"""The loopback server that paced replay and the WebSocket player share (mitm/loopback.py),
on a real socket of this machine."""

from __future__ import annotations

import asyncio

import pytest
from mitmproxy.test import tflow

from provider_cache.mitm.loopback import HOST, Loopback

UNREACHABLE = "192.0.2.1"  # TEST-NET-1: no address of this machine, so no bind


class Counted(Loopback):
    """A loopback that counts its binds, and answers each connection with a line."""

    def __init__(self, host: str = HOST) -> None:
        super().__init__(self.answer, "/loopback-test/", host=host)
        self.binds = 0

    async def _bind(self) -> None:
        self.binds += 1
        await super()._bind()

    async def answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hello\n")
        await writer.drain()
        await reader.read()  # until the client, or close(), ends the connection


async def binds_once_started(loopback: Counted) -> int:
    """Its binds in all once the next caller's start is done (then it is closed)."""
    await loopback.start()
    assert loopback.server is not None and loopback.port > 0
    loopback.close()
    return loopback.binds


def test_callers_at_the_same_time_start_one_server() -> None:
    async def scenario() -> None:
        loopback = Counted()
        await asyncio.gather(*(loopback.start() for _ in range(5)))
        await loopback.start()  # started: nothing more to do
        assert loopback.binds == 1 and loopback.server is not None and loopback.port > 0
        reader, writer = await asyncio.open_connection(HOST, loopback.port)
        assert await reader.readline() == b"hello\n"
        writer.close()
        loopback.close()

    asyncio.run(scenario())


def test_a_caller_cancelled_mid_start_leaves_the_start_to_the_next() -> None:
    """The next caller awaits the same bind: a second one would leave a server unclosed."""

    async def scenario() -> None:
        loopback = Counted()
        first = asyncio.ensure_future(loopback.start())
        await asyncio.sleep(0)  # it waits on the bind now
        first.cancel()
        await asyncio.sleep(0)  # its cancellation is in, the bind still under way
        assert first.cancelled() and loopback.server is None
        assert await binds_once_started(loopback) == 1

    asyncio.run(scenario())


def test_a_start_that_failed_is_tried_again_by_the_next_caller() -> None:
    async def scenario() -> None:
        loopback = Counted(UNREACHABLE)
        with pytest.raises(OSError):
            await loopback.start()
        assert loopback.server is None
        loopback.host = HOST
        assert await binds_once_started(loopback) == 2

    asyncio.run(scenario())


def test_a_flow_pointed_at_it_keeps_its_host_header_and_gets_its_target_back() -> None:
    async def scenario() -> None:
        loopback = Counted()
        await loopback.start()
        request = tflow.treq(host="api.openai.com", port=443, scheme=b"https", path=b"/v1/x?a=1")
        request.headers["host"] = "api.openai.com"
        target = loopback.point("flow-1", request.data)
        assert (request.data.scheme, request.data.host, request.data.port) == (
            b"http",
            HOST,
            loopback.port,
        )
        assert request.data.path == b"/loopback-test/flow-1"
        assert request.headers["host"] == "api.openai.com"  # the properties would rewrite it
        loopback.restore(request.data, target)
        assert request.url == "https://api.openai.com/v1/x?a=1"
        loopback.close()

    asyncio.run(scenario())


def test_close_ends_its_connections_and_a_later_start_binds_again() -> None:
    async def scenario() -> None:
        loopback = Counted()
        await loopback.start()
        reader, writer = await asyncio.open_connection(HOST, loopback.port)
        assert await reader.readline() == b"hello\n"
        loopback.close()
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed from the server side
        assert loopback.server is None
        writer.close()
        assert await binds_once_started(loopback) == 2

    asyncio.run(scenario())
