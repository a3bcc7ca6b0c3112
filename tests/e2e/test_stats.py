"""Counters, the stats file and the live endpoint against real mitmdump (SPEC §5, §6)."""

from __future__ import annotations

import json
import signal
import threading
import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support.fake_provider import FakeProvider

OPENAI = "https://api.openai.com/v1/chat/completions"
ANTHROPIC = "https://api.anthropic.com/v1/messages"


def chat(client: httpx.Client, content: str, model: str = "m") -> httpx.Response:
    return client.post(
        OPENAI, json={"model": model, "messages": [{"role": "user", "content": content}]}
    )


def endpoint(proxy, path: str, method: str = "GET") -> httpx.Response:
    with httpx.Client(proxy=proxy.url, trust_env=False, timeout=10) as client:
        return client.request(method, f"http://provider-cache.internal{path}")


def test_exact_counts_after_a_known_mix(start_proxy, use_proxy, fake: FakeProvider, cache_dir):
    proxy = start_proxy("record")
    use_proxy(proxy)
    with httpx.Client(timeout=30) as client:
        assert [chat(client, c).headers["x-provider-cache"] for c in "aab"] == [
            "miss",
            "hit",
            "miss",
        ]
        assert chat(client, "x", model="fail-500").status_code == 500  # miss, error not stored
        msg = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
        assert [client.post(ANTHROPIC, json=msg).headers["x-provider-cache"] for _ in "ab"] == [
            "miss",
            "hit",
        ]
    for _ in range(2):  # not a provider: two tunnels (its own certificate), each a passthrough
        with httpx.Client(verify=fake.client_ssl_context(), timeout=30) as other:
            assert other.get(f"{fake.base_url}/v1/echo").status_code == 200
    for _ in range(3):  # the endpoint itself is never counted
        assert endpoint(proxy, "/stats").status_code == 200

    live = endpoint(proxy, "/stats").json()
    assert proxy.stop() == 0
    final = json.loads((cache_dir / "stats.json").read_text())

    for doc in (live, final):
        assert (doc["hits"], doc["misses"], doc["recorded"], doc["passthrough"]) == (2, 4, 3, 2)
        assert doc["hit_rate"] == 2 / 6 and doc["schema"] == 1 and doc["mode"] == "record"
        assert doc["window"] == {"size": 100, "hits": 2, "misses": 4, "hit_rate": 2 / 6}
        assert doc["by_host"]["api.openai.com"]["hits"] == 1
        assert doc["by_host"]["api.openai.com"]["misses"] == 3
        assert doc["by_host"]["api.anthropic.com"]["recorded"] == 1
        assert "localhost" not in doc["by_host"] and "provider-cache.internal" not in doc["by_host"]
        urls = sorted(m["url"] for m in doc["missed"])
        assert urls == [ANTHROPIC, OPENAI, OPENAI, OPENAI]
        assert all(len(m["key"]) == 64 and m["count"] == 1 for m in doc["missed"])
        assert any('"content":"b"' in m["request"]["body"] for m in doc["missed"])
    assert final["updated_at"] >= live["updated_at"] >= final["started_at"]


def test_window_covers_only_the_most_recent_lookups(start_proxy, use_proxy, fake):
    proxy = start_proxy("record", cache_window_size="3")
    use_proxy(proxy)
    with httpx.Client(timeout=30) as client:
        for content in ["a", "b", "c", "a", "b"]:  # miss miss miss hit hit
            chat(client, content)
    stats = endpoint(proxy, "/stats").json()
    assert stats["window"] == {"size": 3, "hits": 2, "misses": 1, "hit_rate": 2 / 3}
    assert (stats["hits"], stats["misses"]) == (2, 3)


def test_stats_file_is_valid_json_throughout_a_burst(start_proxy, use_proxy, fake, cache_dir):
    proxy = start_proxy("record")
    use_proxy(proxy)
    stats_file = cache_dir / "stats.json"
    done = threading.Event()
    reads: list[int] = []

    def poll() -> None:
        while not done.is_set():
            if stats_file.exists():
                reads.append(json.loads(stats_file.read_text())["hits"])  # raises if torn
            time.sleep(0.002)

    reader = threading.Thread(target=poll)
    reader.start()
    try:
        with httpx.Client(timeout=30) as client:
            deadline = time.monotonic() + 3.5  # several refresh periods of traffic
            count = 0
            while time.monotonic() < deadline and count < 2000:
                chat(client, str(count % 5))
                count += 1
    finally:
        done.set()
        reader.join(10)
    assert len(reads) > 50
    assert reads == sorted(reads) and reads[-1] > 0  # refreshed while traffic flowed
    proxy.stop()
    assert json.loads(stats_file.read_text())["hits"] == count - 5


def test_sigterm_flushes_the_stats_file(start_proxy, use_proxy, fake, cache_dir):
    proxy = start_proxy("record")
    use_proxy(proxy)
    with httpx.Client(timeout=30) as client:
        chat(client, "a")
        chat(client, "a")
    proxy.stop(signal.SIGTERM)
    stats = json.loads((cache_dir / "stats.json").read_text())
    assert (stats["hits"], stats["misses"], stats["recorded"]) == (1, 1, 1)


def test_metrics_endpoint_speaks_prometheus_and_is_read_only(start_proxy, use_proxy, fake):
    proxy = start_proxy("record")
    use_proxy(proxy)
    with httpx.Client(timeout=30) as client:
        chat(client, "a")
        chat(client, "a")
    response = endpoint(proxy, "/metrics")
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = {
        (s.name, s.labels.get("host")): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }
    assert samples[("provider_cache_hits_total", None)] == 1
    assert samples[("provider_cache_misses_total", None)] == 1
    assert samples[("provider_cache_hit_rate", None)] == 0.5
    assert samples[("provider_cache_host_hits_total", "api.openai.com")] == 1
    for method in ("POST", "PUT", "DELETE"):
        assert endpoint(proxy, "/stats", method).status_code == 405
    assert endpoint(proxy, "/nope").status_code == 404
    assert endpoint(proxy, "/stats").json()["hits"] == 1  # none of the above was counted
