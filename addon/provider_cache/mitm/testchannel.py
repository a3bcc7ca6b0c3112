"""The test runner's channel (SPEC §12): `POST http://provider-cache.internal/test`.

The pytest plugin that started this proxy gave it a random token in its environment
(core/names.py CONTROL_TOKEN_ENV); a message carrying it names the test that runs now (or
none), and whether it is live (its requests pass the cache by, uncounted). GET answers the
running test's counters. Without the token — no plugin started this proxy, or a client
guessing — the answer is 403 and nothing changes, so no test can pose as another.
"""

from __future__ import annotations

import hmac
import json
import os

from mitmproxy import http

from provider_cache.core.names import CONTROL_HEADER, CONTROL_TOKEN_ENV, ENDPOINT_TEST_URL
from provider_cache.mitm import endpoint
from provider_cache.mitm.hooks import ProviderCache

PATH = ENDPOINT_TEST_URL.removeprefix(f"http://{endpoint.HOST}")
#: A test name longer than this is refused (pytest node ids are far shorter).
MAX_NAME = 4096


class TestChannel:
    __test__ = False  # not a test class, despite its name

    def __init__(self, cache: ProviderCache) -> None:
        self.cache = cache
        self.token = os.environ.get(CONTROL_TOKEN_ENV) or None

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
        stats = self.cache.stats
        state = {"test": stats.test, "live": self.cache.live_test}
        _answer(flow, 200, state | {"counters": stats.test_counts()})

    def _take(self, body: bytes) -> str | None:
        """Apply a message; what is wrong with it, if anything."""
        try:
            message = json.loads(body)
        except ValueError:
            return "not JSON"
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
