"""The test runner's channel (SPEC §12): `POST http://provider-cache.internal/test`.

The pytest plugin that started this proxy gave it a random token in its environment
(core/names.py CONTROL_TOKEN_ENV); a message carrying it names the test that runs now (or
none), and whether it is live (its requests pass the cache by, uncounted). GET answers the
running test's counters. Without the token — no plugin started this proxy, or a client
guessing — the answer is 403 and nothing changes, so no test can pose as another.

The same messages, as JSON lines carrying the token, are taken on a loopback port the
plugin names (CONTROL_PORT_ENV): one per test, so each costs a fraction of a millisecond
rather than a request through mitmproxy's HTTP machinery.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os

from mitmproxy import http

from provider_cache.core.names import (
    CONTROL_HEADER,
    CONTROL_PORT_ENV,
    CONTROL_TOKEN_ENV,
    ENDPOINT_TEST_URL,
)
from provider_cache.mitm import endpoint
from provider_cache.mitm.hooks import ProviderCache

logger = logging.getLogger(__name__)

PATH = ENDPOINT_TEST_URL.removeprefix(f"http://{endpoint.HOST}")
#: A test name longer than this is refused (pytest node ids are far shorter).
MAX_NAME = 4096


class TestChannel:
    __test__ = False  # not a test class, despite its name

    def __init__(self, cache: ProviderCache) -> None:
        self.cache = cache
        self.token = os.environ.get(CONTROL_TOKEN_ENV) or None
        port = os.environ.get(CONTROL_PORT_ENV, "")
        self.port = int(port) if port.isdigit() else None
        self.server: asyncio.Server | None = None

    async def running(self) -> None:
        if self.token is None or self.port is None or self.server is not None:
            return
        try:
            self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        except OSError as e:
            logger.warning("provider-cache: test runner port %s: %s", self.port, e.strerror or e)

    def done(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """JSON lines: each a message with the token, each answered with the state."""
        try:
            while line := await reader.readline():
                answer, trusted = self._line(line)
                writer.write(json.dumps(answer).encode() + b"\n")
                await writer.drain()
                if not trusted:
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def _line(self, line: bytes) -> tuple[dict, bool]:
        try:
            message = json.loads(line)
        except ValueError:
            return {"error": "not JSON"}, False
        given = str(message.get("token", "")) if isinstance(message, dict) else ""
        assert self.token is not None  # the port is served only with a token
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            return {"error": "only the test runner that started the proxy"}, False
        if message.get("ask"):  # only the state: the fixture's counters
            return self._state(), True
        problem = self._apply(message)
        if problem:
            return {"error": problem}, True
        return self._state(), True

    def _state(self) -> dict:
        stats = self.cache.stats
        return {"test": stats.test, "live": self.cache.live_test, "counters": stats.test_counts()}

    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None or not endpoint.is_endpoint(flow.request):
            return
        if flow.request.path.partition("?")[0] != PATH:
            return
        given = flow.request.headers.get(CONTROL_HEADER, "")
        if self.token is None or not hmac.compare_digest(given.encode(), self.token.encode()):
            return _answer(flow, 403, {"error": "only the test runner that started the proxy"})
        if flow.request.method == "POST":
            problem = self._take(flow.request.content or b"")
            if problem:
                return _answer(flow, 400, {"error": problem})
        elif flow.request.method != "GET":
            return _answer(flow, 405, {"error": "GET or POST"})
        _answer(flow, 200, self._state())

    def _take(self, body: bytes) -> str | None:
        try:
            message = json.loads(body)
        except ValueError:
            return "not JSON"
        return self._apply(message)

    def _apply(self, message: object) -> str | None:
        """Apply a message; what is wrong with it, if anything."""
        if not isinstance(message, dict):
            return 'want {"test": NAME or null, "live": true or false}'
        test, live = message.get("test"), message.get("live", False)
        if test is not None and (not isinstance(test, str) or len(test) > MAX_NAME):
            return "test: a name (a string) or null"
        if not isinstance(live, bool):
            return "live: true or false"
        self.cache.stats.run_test(test)
        self.cache.live_test = live and test is not None
        return None


def _answer(flow: http.HTTPFlow, status: int, body: dict) -> None:
    flow.response = http.Response.make(
        status, json.dumps(body).encode(), {"content-type": "application/json"}
    )
