"""httpx and curl through the proxy: streaming, encodings, multipart, pass-through."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from mitmproxy.net import encoding

from provider_cache.core import records
from provider_cache.storage.store import Store
from tests.support.fake_provider import FakeProvider
from tests.support.proxy import ROOT_DIR, Mitmdump

OPENAI = "https://api.openai.com/v1"


def curl(proxy: Mitmdump, *args: str) -> tuple[dict[str, str], bytes]:
    """curl configured only by the environment variables of the README; headers and raw body."""
    env = {"PATH": "/usr/bin:/bin", **proxy.client_env()}
    out = subprocess.run(
        ["curl", "-sS", "-D", "-", *args], env=env, capture_output=True, check=True, timeout=30
    ).stdout
    if out.startswith(b"HTTP/1.1 200 Connection established"):
        out = out.partition(b"\r\n\r\n")[2]
    head, _, body = out.partition(b"\r\n\r\n")
    headers = dict(
        line.decode().lower().split(": ", 1) for line in head.split(b"\r\n")[1:] if b": " in line
    )
    return headers, body


def stored_entries(cache_dir) -> list[records.Entry]:
    with Store(cache_dir, readonly=True) as store:
        return [records.unpack(v) for _, v in store.items()]


def test_httpx_stream_reaches_client_while_upstream_still_sends(
    start_proxy, use_proxy, fake: FakeProvider
) -> None:
    """Tokens arrive spread out in time: the proxy does not buffer the stream."""
    use_proxy(start_proxy("record"))
    body = {"model": "slow", "stream": True, "messages": [{"role": "user", "content": "a b c"}]}
    arrivals = []
    with (
        httpx.Client(timeout=30) as client,
        client.stream("POST", f"{OPENAI}/chat/completions", json=body) as response,
    ):
        for chunk in response.iter_raw():
            arrivals.append((time.monotonic(), chunk))
    assert response.headers["x-provider-cache"] == "miss"
    data_events = [c for _, c in arrivals if b"data:" in c]
    assert len(data_events) >= 4
    # Upstream waits 0.5 s between events; a buffering proxy would deliver them all at once.
    assert arrivals[-1][0] - arrivals[0][0] >= 1.5
    with httpx.Client(timeout=30) as client:
        replay = client.post(f"{OPENAI}/chat/completions", json=body)
    assert replay.headers["x-provider-cache"] == "hit"
    assert replay.content == b"".join(c for _, c in arrivals)
    assert fake.served == 1


def test_curl_multipart_uploads_hit_despite_random_boundaries(
    start_proxy, fake: FakeProvider, tmp_path
) -> None:
    proxy = start_proxy("record")
    upload = tmp_path / "batch.jsonl"
    upload.write_text('{"custom_id": "1"}\n')
    args = ["-F", "purpose=batch", "-F", f"file=@{upload}", f"{OPENAI}/files"]
    (h1, b1), (h2, b2) = curl(proxy, *args), curl(proxy, *args)
    boundaries = {r["body"].split(b"\r\n", 1)[0] for r in fake.requests}
    assert (h1["x-provider-cache"], h2["x-provider-cache"]) == ("miss", "hit")
    assert b2 == b1 and json.loads(b1)["bytes"] == upload.stat().st_size
    assert fake.served == 1 and len(boundaries) == 1  # only the first reached upstream


def test_compressed_responses_are_stored_decoded_and_replayed(
    start_proxy, fake: FakeProvider, cache_dir
) -> None:
    proxy = start_proxy("record")
    for enc in ("gzip", "deflate", "br", "zstd"):
        url = f"{OPENAI}/models?encoding={enc}"
        h1, raw = curl(proxy, url)
        h2, replayed = curl(proxy, url)
        assert h1["content-encoding"] == enc and h1["x-provider-cache"] == "miss"
        assert "content-encoding" not in h2 and h2["x-provider-cache"] == "hit"
        assert replayed == encoding.decode(raw, enc)
        assert int(h2["content-length"]) == len(replayed)
        assert json.loads(replayed)["object"] == "list"
    proxy.stop()
    entries = stored_entries(cache_dir)
    assert len(entries) == 4 and fake.served == 4
    for entry in entries:
        assert json.loads(entry.response.body)["object"] == "list"
        assert all(k != b"content-encoding" for k, _ in entry.response.headers)


def test_non_provider_traffic_passes_through_untouched(
    start_proxy, use_proxy, fake: FakeProvider, cache_dir
) -> None:
    use_proxy(start_proxy("replay"))  # even replay mode forwards non-provider hosts
    # Tunnelled: the client sees the server's own certificate, not mitmproxy's.
    with httpx.Client(timeout=30, verify=fake.client_ssl_context()) as client:
        r1 = client.get(f"{fake.base_url}/v1/echo")
        r2 = client.get(f"{fake.base_url}/v1/echo")
    assert r1.status_code == r2.status_code == 200
    assert "x-provider-cache" not in r1.headers and "x-provider-cache" not in r2.headers
    assert (r1.headers["x-fake-served"], r2.headers["x-fake-served"]) == ("1", "2")
    assert stored_entries(cache_dir) == []


def test_cache_hosts_option_adds_a_host_to_the_builtin_list(
    start_proxy, use_proxy, fake: FakeProvider
) -> None:
    use_proxy(start_proxy("record", cache_hosts=["builtin", "localhost"]))
    with httpx.Client(timeout=30) as client:
        states = [
            client.get(f"{fake.base_url}/v1/models").headers["x-provider-cache"] for _ in "ab"
        ]
        openai_state = client.get(f"{OPENAI}/models").headers["x-provider-cache"]
    assert states == ["miss", "hit"] and openai_state == "miss"
    assert fake.served == 2


def node_client() -> Path:
    """The Node client, or a skip that says what is missing (./dev test installs both)."""
    client = ROOT_DIR / "tests" / "node" / "client.mjs"
    if shutil.which("node") is None:
        pytest.skip("Node.js is not installed: install Node.js 20+ to run the Node client test")
    if not (client.parent / "node_modules").is_dir():
        pytest.skip("the Node client's dependencies are missing: run ./dev test (npm ci)")
    return client


def test_node_fetch_goes_through_the_proxy_and_trusts_its_ca(start_proxy, fake, monkeypatch):
    proxy = start_proxy("record")
    env = {
        "PATH": os.environ["PATH"],
        "OPENAI_API_KEY": "sk-node",
        **proxy.client_env(),
    }
    client = node_client()
    runs = [
        subprocess.run(
            ["node", str(client), "hello from node"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.split(maxsplit=2)
        for _ in range(2)
    ]
    assert runs == [
        ["miss", "chatcmpl-1", "echo: hello from node\n"],
        ["hit", "chatcmpl-1", "echo: hello from node\n"],
    ]
    assert fake.served == 1
