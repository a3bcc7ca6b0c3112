"""The test runner's channel (SPEC §12, mitm/testchannel.py): its JSON lines on a real
loopback port, as the pytest plugin's session (plugin/session.py) sends them."""

from __future__ import annotations

import asyncio
import json

import pytest

from provider_cache.cli.proxyctl import free_port
from provider_cache.core.names import CONTROL_PORT_ENV, CONTROL_TOKEN_ENV
from provider_cache.mitm.hooks import ProviderCache
from provider_cache.mitm.testchannel import TestChannel

TOKEN = "a-token-only-the-plugin-knows"


async def exchange(port: int, *messages: dict) -> list[dict | None]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answers: list[dict | None] = []
    for message in messages:
        writer.write(json.dumps(message).encode() + b"\n")
        await writer.drain()
        line = await reader.readline()
        answers.append(json.loads(line) if line else None)
    writer.close()
    return answers


@pytest.fixture
def channel(monkeypatch: pytest.MonkeyPatch) -> tuple[TestChannel, int]:
    port = free_port()
    monkeypatch.setenv(CONTROL_TOKEN_ENV, TOKEN)
    monkeypatch.setenv(CONTROL_PORT_ENV, str(port))
    return TestChannel(ProviderCache()), port


def test_messages_with_the_token_name_the_test_and_answer_its_counters(channel) -> None:
    testchannel, port = channel

    async def run() -> list[dict | None]:
        await testchannel.running()
        try:
            testchannel.cache.stats.run_test("t::before")
            return await exchange(
                port,
                {"token": TOKEN, "test": "t::one", "live": True},
                {"token": TOKEN, "ask": True},
                {"token": TOKEN, "test": None},
            )
        finally:
            testchannel.done()

    told, asked, cleared = asyncio.run(run())
    assert told == {"test": "t::one", "live": True, "counters": asked["counters"]}
    assert asked["test"] == "t::one" and asked["counters"]["hits"] == 0
    assert cleared == {"test": None, "live": False, "counters": asked["counters"]}
    assert testchannel.cache.stats.test is None and testchannel.cache.live_test is False


def test_a_wrong_token_changes_nothing_and_ends_the_connection(channel) -> None:
    testchannel, port = channel

    async def run() -> list[dict | None]:
        await testchannel.running()
        try:
            return await exchange(
                port, {"token": "a guess", "test": "someone else"}, {"token": TOKEN, "ask": True}
            )
        finally:
            testchannel.done()

    refused, after = asyncio.run(run())
    assert refused == {"error": "only the test runner that started the proxy"}
    assert after is None  # the connection was closed
    assert testchannel.cache.stats.test is None


def test_without_a_token_no_port_is_opened(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CONTROL_TOKEN_ENV, raising=False)
    monkeypatch.setenv(CONTROL_PORT_ENV, str(free_port()))
    testchannel = TestChannel(ProviderCache())
    asyncio.run(testchannel.running())
    assert testchannel.server is None
