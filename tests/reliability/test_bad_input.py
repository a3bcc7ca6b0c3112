"""Hostile and odd input: the proxy answers sensibly, never crashes, never loses an entry (§9)."""

from __future__ import annotations

import json
import os
import ssl

import httpx

from provider_cache.core import records
from provider_cache.storage.store import Store
from tests.reliability.clients import CHAT, ECHO, raw_https

JSON = {"content-type": "application/json"}


def stats(proxy) -> dict:
    with httpx.Client(proxy=proxy.url, trust_env=False, timeout=10) as http:
        return http.get("http://provider-cache.internal/stats").json()


def twice(http: httpx.Client, method: str, url: str, **kwargs) -> list[httpx.Response]:
    return [http.request(method, url, **kwargs) for _ in range(2)]


def states(responses: list[httpx.Response]) -> list[str | None]:
    return [r.headers.get("x-provider-cache") for r in responses]


def test_invalid_and_deeply_nested_json_are_cached_by_their_bytes(start_proxy, use_proxy, fake):
    proxy = start_proxy("record")
    use_proxy(proxy)
    with httpx.Client(timeout=30) as http:
        invalid = twice(http, "POST", ECHO, content=b'{"model": "m", oops', headers=JSON)
        deep = twice(http, "POST", ECHO, content=b"[" * 100_000 + b"]" * 100_000, headers=JSON)
    assert states(invalid) == states(deep) == ["miss", "hit"]
    assert invalid[0].content == invalid[1].content
    assert stats(proxy)["errors"] == 0 and proxy.managed.proc.poll() is None


def test_binary_bodies_replay_byte_for_byte(start_proxy, use_proxy, fake):
    use_proxy(start_proxy("record"))
    blob = os.urandom(50_000)
    with httpx.Client(timeout=30) as http:
        answers = twice(
            http,
            "POST",
            "https://api.openai.com/v1/audio/transcriptions",
            content=blob,
            headers={"content-type": "application/octet-stream"},
        )
    assert [a.status_code for a in answers] == [404, 404]  # the fake has no such route
    assert states(answers) == ["miss", "miss"]  # a 404 is not cacheable: forwarded both times
    with httpx.Client(timeout=30) as http:
        echoed = twice(http, "POST", ECHO, content=blob, headers={"content-type": "image/png"})
    assert states(echoed) == ["miss", "hit"] and echoed[0].content == echoed[1].content


def test_bodies_over_the_size_limit_pass_through_uncached(start_proxy, use_proxy, fake):
    proxy = start_proxy("record", cache_max_body_size="50k")
    use_proxy(proxy)
    with httpx.Client(timeout=30) as http:
        big_request = twice(http, "POST", ECHO, content=b"a" * 80_000, headers=JSON)
        # Under the limit on the way in, over it on the way out: quotes double when echoed.
        big_response = twice(http, "POST", ECHO, content=b'"' * 30_000, headers=JSON)
    assert [r.status_code for r in big_request + big_response] == [200] * 4
    assert states(big_request) == states(big_response) == ["miss", "miss"]
    assert fake.served == 4 and stats(proxy)["recorded"] == 0
    log = proxy.log()
    assert "request body over cache_max_body_size" in log
    assert "response over cache_max_body_size" in log


def test_non_utf8_header_odd_method_and_long_url(start_proxy, fake):
    proxy = start_proxy("record")
    host = "api.openai.com"
    odd_header = (
        b"POST /v1/echo HTTP/1.1\r\nHost: api.openai.com\r\ncontent-type: application/json\r\n"
        b"x-trace: caf\xe9\xff\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}"
    )
    odd_method = b"PROPFIND /v1/echo HTTP/1.1\r\nHost: api.openai.com\r\nconnection: close\r\n\r\n"
    answers = [raw_https(proxy.port, proxy.ca_cert, host, r) for r in (odd_header, odd_header)]
    assert all(a.startswith(b"HTTP/1.1 200") for a in answers)
    assert b"x-provider-cache: miss" in answers[0] and b"x-provider-cache: hit" in answers[1]
    propfind = [raw_https(proxy.port, proxy.ca_cert, host, odd_method) for _ in "ab"]
    # The fake provider has no PROPFIND route: its 404 goes back as it is, and is not kept.
    assert all(p.startswith(b"HTTP/1.1 404") for p in propfind)
    assert all(b"x-provider-cache: miss" in p for p in propfind)

    long_url = f"{ECHO}?q={'x' * 16_000}"
    with httpx.Client(proxy=proxy.url, verify=_ctx(proxy), trust_env=False, timeout=30) as http:
        long_answers = twice(http, "GET", long_url)
    assert [r.status_code for r in long_answers] == [200, 200]
    assert states(long_answers) == ["miss", "hit"]
    assert proxy.managed.proc.poll() is None and stats(proxy)["errors"] == 0


def _ctx(proxy) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(proxy.ca_cert))


def test_corrupt_and_foreign_values_are_misses_and_errors(start_proxy, use_proxy, fake, cache_dir):
    proxy = start_proxy("record")
    use_proxy(proxy)
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "c"}]})
    with httpx.Client(timeout=30) as http:
        http.post(CHAT, content=body, headers=JSON)
    proxy.stop()
    with Store(cache_dir) as store:
        [(key, value)] = list(store.items())
        store.put(key, value[: len(value) // 2])  # a torn value, as a foreign tool might leave
        store.put(b"not-a-key-of-ours", b"\x00\x01\x02")  # a foreign key
    proxy = start_proxy("record")
    use_proxy(proxy)
    with httpx.Client(timeout=30) as http:
        again = [http.post(CHAT, content=body, headers=JSON) for _ in "ab"]
    assert states(again) == ["miss", "hit"]  # a miss, then re-recorded over the torn value
    s = stats(proxy)
    assert (s["misses"], s["errors"], s["recorded"]) == (1, 1, 1)
    assert "unreadable cache entry" in proxy.log()
    proxy.stop()
    with Store(cache_dir, readonly=True) as store:
        assert records.unpack(store.get(key)).response.status == 200
