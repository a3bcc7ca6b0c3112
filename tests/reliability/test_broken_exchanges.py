"""Broken exchanges: the client gets a sensible answer, nothing partial is stored, counts add up."""

from __future__ import annotations

import subprocess

import httpx
import pytest

from tests.reliability.clients import CHAT, chat_body

JSON = {"content-type": "application/json"}


def post(http: httpx.Client, content: bytes) -> httpx.Response:
    return http.post(CHAT, content=content, headers=JSON)


def stats(proxy) -> dict:
    with httpx.Client(proxy=proxy.url, trust_env=False, timeout=10) as http:
        return http.get("http://provider-cache.internal/stats").json()


def test_upstream_reset_mid_body_is_an_error_and_not_stored(start_proxy, use_proxy, fake):
    proxy = start_proxy("record")
    use_proxy(proxy)
    with httpx.Client(timeout=10) as http:
        for _ in range(2):
            with pytest.raises(httpx.HTTPError):  # 502 or a broken connection, never a 200
                response = post(http, chat_body("x", model="cut-json"))
                response.raise_for_status()
    s = stats(proxy)
    assert (s["misses"], s["recorded"], s["errors"]) == (2, 0, 2)
    assert fake.served == 2


def test_upstream_reset_mid_stream_is_not_stored(start_proxy, use_proxy, fake):
    proxy = start_proxy("record")
    use_proxy(proxy)
    with httpx.Client(timeout=10) as http:
        for _ in range(2):
            with (
                pytest.raises(httpx.HTTPError),
                http.stream(
                    "POST",
                    CHAT,
                    content=chat_body("x", stream=True, model="cut-stream"),
                    headers=JSON,
                ) as response,
            ):
                for _chunk in response.iter_raw():
                    pass
    s = stats(proxy)
    assert (s["misses"], s["recorded"], s["errors"]) == (2, 0, 2)


def test_upstream_that_never_answers_leaves_the_proxy_working(start_proxy, use_proxy, fake):
    proxy = start_proxy("record")
    use_proxy(proxy)
    with httpx.Client(timeout=1.5) as http:
        with pytest.raises(httpx.ReadTimeout):
            post(http, chat_body("x", model="hang"))
        assert post(http, chat_body("after")).headers["x-provider-cache"] == "miss"
        assert post(http, chat_body("after")).headers["x-provider-cache"] == "hit"
    s = stats(proxy)
    assert (s["hits"], s["misses"], s["recorded"]) == (1, 2, 1)


def test_client_that_hangs_up_mid_stream_leaves_nothing_stored(start_proxy, use_proxy, fake):
    fake.chunk_delay = 0.2
    proxy = start_proxy("record")
    use_proxy(proxy)
    body = chat_body("one two three four five six", stream=True)
    with httpx.Client(timeout=10) as http:
        with http.stream("POST", CHAT, content=body, headers=JSON) as response:
            next(response.iter_raw())  # the first event, then hang up
        fake.chunk_delay = 0.0
        again = post(http, body)
    assert again.headers["x-provider-cache"] == "miss"  # the cut stream was not kept
    assert again.text.rstrip().endswith("data: [DONE]")
    with httpx.Client(timeout=10) as http:
        assert post(http, body).headers["x-provider-cache"] == "hit"
    s = stats(proxy)
    assert (s["hits"], s["misses"], s["recorded"], s["errors"]) == (1, 2, 1, 1)


def curl(proxy, *args: str) -> str:
    """curl through the proxy (environment variables only); its header blocks and body."""
    env = {"PATH": "/usr/bin:/bin", **proxy.client_env()}
    return subprocess.run(
        ["curl", "-sS", "-D", "-", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout


def header(output: str, name: str) -> str:
    return next(line.split(": ", 1)[1] for line in output.splitlines() if line.startswith(name))


def test_http2_clients_record_and_replay_json_and_streams(start_proxy, fake):
    """curl negotiates HTTP/2 inside the tunnel (httpx offers http/1.1 first, so it gets 1.1)."""
    proxy = start_proxy("record")
    answers = [
        curl(
            proxy,
            "--http2",
            "-N",
            "-H",
            "content-type: application/json",
            "--data-binary",
            chat_body(c, stream=c == "s").decode(),
            CHAT,
        )
        for c in ("j", "j", "s", "s")
    ]
    assert all("\nHTTP/2 200" in a for a in answers)
    assert [header(a, "x-provider-cache") for a in answers] == ["miss", "hit", "miss", "hit"]
    bodies = [a.split("\n\n", 2)[2] for a in answers]  # after the CONNECT and response heads
    assert bodies[0] == bodies[1] and bodies[2] == bodies[3] and "data: [DONE]" in bodies[2]
    assert fake.served == 2


def test_chunked_request_body_keys_like_the_same_body_with_a_length(start_proxy, use_proxy, fake):
    use_proxy(start_proxy("record"))
    body = chat_body("chunked")
    with httpx.Client(timeout=10) as http:
        chunked = http.post(CHAT, content=iter([body[:10], body[10:]]), headers=JSON)
        sized = post(http, body)
    assert chunked.status_code == 200 and fake.requests[0]["body"] == body
    assert [chunked.headers["x-provider-cache"], sized.headers["x-provider-cache"]] == [
        "miss",
        "hit",
    ]


def test_expect_100_continue(start_proxy, fake):
    proxy = start_proxy("record")
    args = ["-H", "Expect: 100-continue", "-H", "content-type: application/json"]
    answers = [
        curl(proxy, *args, "--data-binary", chat_body("expect").decode(), CHAT) for _ in "ab"
    ]
    assert all(" 100" in a.split("\n\n")[1] and "x-fake-served: 1" in a for a in answers)
    assert [header(a, "x-provider-cache") for a in answers] == ["miss", "hit"]
