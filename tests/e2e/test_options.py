"""Options that do what they say, on a real mitmdump (SPEC §2, issue 13).

A bad value or an unknown `cache_*` option stops mitmdump with one line before it listens;
a good start says one line of what it will do; TLS to hosts that are not cached is
tunnelled untouched, so the client sees the real server's certificate.
"""

from __future__ import annotations

import re
import socket
import ssl
import time
from pathlib import Path

import httpx
import pytest

from provider_cache.mitm.options import NAMES
from tests.support.fake_provider import FakeProvider
from tests.support.proxy import Mitmdump

OPENAI = "https://api.openai.com/v1/chat/completions"
NOISE = re.compile(r"Loading script|\] client (dis)?connect$")


def refused(tmp_path: Path, fake: FakeProvider, **options: str | list[str]) -> list[str]:
    """Start mitmdump expecting it to refuse: its exit status must be 1, and all it says
    is returned, but for mitmproxy's "Loading script" line and the connections of the
    test's poller (accepted while mitmproxy unwinds: it binds its ports as scripts load,
    says "listening" once they are up)."""
    proxy = Mitmdump(workdir=tmp_path, cache_dir=tmp_path / "cache", options=options)
    with pytest.raises(RuntimeError):
        proxy.start()
    assert proxy.managed is not None and proxy.managed.proc is not None
    assert proxy.managed.proc.returncode == 1
    assert fake.requests == []  # nothing went upstream
    return [line for line in proxy.log().splitlines() if line.strip() and not NOISE.search(line)]


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        (
            "cache_mode",
            "bogus",
            "cache_mode must be one of record, replay, refresh, read-old-write-new; got 'bogus'",
        ),
        ("cache_max_body_size", "abc", "cache_max_body_size must be a positive size such as 32m"),
        ("cache_map_size", "0", "cache_map_size must be a positive size such as 1g"),
        ("cache_hosts", "", "cache_hosts: empty host pattern; got ['']"),
        ("cache_window_size", "0", "cache_window_size must be at least 1; got 0"),
        ("cache_window_size", "abc", "cache_window_size takes a whole number; got 'abc'"),
        ("cache_keep_account_headers", "maybe", "cache_keep_account_headers takes true or false"),
        ("cache_ignore_headers", "x foo", "cache_ignore_headers takes header names"),
        ("cache_redact_headers", "a:b", "cache_redact_headers takes header names"),
    ],
)
def test_a_bad_value_is_one_line_and_no_listening(tmp_path, fake, option, value, message) -> None:
    """Today's three lines were the error, "HTTP(S) proxy listening at …" (it never served)
    and "Error logged during startup, exiting..."; a wrong type dropped the addon silently."""
    (line,) = refused(tmp_path, fake, **{option: value})
    assert line.startswith(f"provider-cache: {message}")


def test_an_unknown_cache_option_stops_mitmdump(tmp_path, fake) -> None:
    """`--set cache_mod=replay` used to run in record mode and contact providers."""
    assert refused(tmp_path, fake, cache_mod="replay") == [
        "provider-cache: unknown option cache_mod (did you mean cache_mode?); "
        f"the cache options are: {', '.join(NAMES)}"
    ]


def test_an_unusable_cache_dir_is_one_line(tmp_path, fake) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    (line,) = refused(tmp_path, fake, cache_dir=str(blocker / "cache"))
    assert line.startswith(f"provider-cache: cannot open cache store {blocker / 'cache'}")


# --- the start-up line ------------------------------------------------------------------------


def said(proxy: Mitmdump, text: str, timeout: float = 10) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = [line for line in proxy.log().splitlines() if text in line]
        if lines:
            return lines
        time.sleep(0.05)
    return []


def chat(client: httpx.Client, content: str) -> httpx.Response:
    return client.post(
        OPENAI, json={"model": "m", "messages": [{"role": "user", "content": content}]}
    )


def test_the_start_up_line_says_mode_cache_entries_and_hosts(
    start_proxy, use_proxy, cache_dir
) -> None:
    recording = start_proxy("record")
    use_proxy(recording)
    with httpx.Client(timeout=30) as client:
        assert [chat(client, c).headers["x-provider-cache"] for c in "ab"] == ["miss", "miss"]
    recording.stop()
    hosts = "api.openai.com, *.openai.azure.com, *.services.ai.azure.com, … (+20 more)"
    (line,) = said(recording, "provider-cache: record mode")
    assert line.endswith(
        f"] provider-cache: record mode, cache {cache_dir}/ (0 entries), hosts {hosts}"
    )

    replaying = start_proxy("replay", cache_hosts=["api.openai.com", "llm.internal"])
    (line,) = said(replaying, "provider-cache: replay mode")
    assert line.endswith(
        f"] provider-cache: replay mode, cache {cache_dir}/ (2 entries), "
        "hosts api.openai.com, llm.internal"
    )
    log = replaying.log()
    assert log.index("proxy listening at") < log.index("provider-cache: replay mode")


# --- tunnels: TLS to other hosts goes through untouched ---------------------------------------


@pytest.fixture
def other(tmp_path: Path):
    """A second HTTPS server, not a provider, with its own CA (not mitmproxy's, not the
    fake provider's): a pinned or mTLS client's server."""
    with FakeProvider(tmp_path / "other") as server:
        yield server
    assert not server.errors, server.errors


def certificate_through(proxy: Mitmdump, host: str, port: int, trust: ssl.SSLContext) -> bytes:
    """The server certificate a client sees through the proxy's CONNECT tunnel."""
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as raw:
        raw.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
        assert raw.recv(4096).startswith(b"HTTP/1.1 200")
        with trust.wrap_socket(raw, server_hostname=host) as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def leaf_of(server: FakeProvider) -> bytes:
    assert server.pki is not None
    pem = server.pki.cert_path.read_text()
    return ssl.PEM_cert_to_DER_cert(pem[: pem.index("-----END CERTIFICATE-----") + 25])


def test_other_https_hosts_are_tunnelled_with_their_own_certificate(
    start_proxy, use_proxy, other, fake, cache_dir
) -> None:
    proxy = start_proxy("record")
    trust_other = other.client_ssl_context()  # trusts only the other server's CA
    assert certificate_through(proxy, "localhost", other.port, trust_other) == leaf_of(other)
    with httpx.Client(proxy=proxy.url, trust_env=False, verify=trust_other, timeout=30) as c:
        answer = c.get(f"https://localhost:{other.port}/v1/echo")
    assert answer.status_code == 200 and "x-provider-cache" not in answer.headers
    assert other.served == 1

    use_proxy(proxy)  # and a provider is still cached, through mitmproxy's CA
    with httpx.Client(timeout=30) as client:
        assert [chat(client, "hi").headers["x-provider-cache"] for _ in "ab"] == ["miss", "hit"]
        stats = client.get("https://provider-cache.internal/stats")  # the endpoint, over TLS
    assert stats.status_code == 200
    assert (stats.json()["passthrough"], stats.json()["hits"]) == (2, 1)  # two tunnels
    assert fake.served == 1


def test_the_endpoint_is_answered_over_plain_http_and_https(start_proxy) -> None:
    proxy = start_proxy("record")
    mitm_ca = ssl.create_default_context(cafile=str(proxy.ca_cert))
    with httpx.Client(proxy=proxy.url, trust_env=False, verify=mitm_ca) as client:
        for scheme in ("http", "https"):
            answer = client.get(f"{scheme}://provider-cache.internal/stats")
            assert answer.status_code == 200 and answer.json()["mode"] == "record"


def test_a_users_allow_hosts_are_intercepted_too(start_proxy, use_proxy, other) -> None:
    """Allowed by the user (to see it in mitmweb, say): mitmproxy's certificate, counted
    per request; the providers stay cached."""
    proxy = start_proxy("record", allow_hosts=r"^localhost:")
    mitm_ca = ssl.create_default_context(cafile=str(proxy.ca_cert))
    assert certificate_through(proxy, "localhost", other.port, mitm_ca) != leaf_of(other)
    use_proxy(proxy)
    with httpx.Client(timeout=30) as client:
        assert [chat(client, "hi").headers["x-provider-cache"] for _ in "ab"] == ["miss", "hit"]
