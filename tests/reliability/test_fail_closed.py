"""Replay fails closed, always (SPEC §2, §9): whatever breaks on the lookup path, replay
answers locally, counts an error, and never lets a request reach the provider."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest

from tests.reliability.clients import CHAT, chat_body
from tests.support.proxy import ROOT_DIR

JSON = {"content-type": "application/json"}
PAGE = 4096


def stats(proxy) -> dict:
    with httpx.Client(proxy=proxy.url, trust_env=False, timeout=10) as http:
        return http.get("http://provider-cache.internal/stats").json()


def record_one(start_proxy, use_proxy, body: bytes) -> None:
    proxy = start_proxy("record")
    use_proxy(proxy)
    with httpx.Client(timeout=30) as http:
        assert http.post(CHAT, content=body, headers=JSON).status_code == 200
    proxy.stop()


def zero_pages_from(path, first_page: int) -> None:
    size = path.stat().st_size
    with path.open("r+b") as f:
        f.seek(first_page * PAGE)
        f.write(b"\0" * (size - first_page * PAGE))


def test_a_corrupt_page_is_a_local_miss_and_an_error_never_upstream(
    start_proxy, use_proxy, fake, cache_dir
):
    body = chat_body("recorded before the store was damaged")
    record_one(start_proxy, use_proxy, body)
    served = fake.served
    zero_pages_from(cache_dir / "data.mdb", 2)  # every page but the two meta pages
    proxy = start_proxy("replay")  # upstream reachable: it must still not be asked
    use_proxy(proxy)
    with httpx.Client(timeout=30) as http:
        answer = http.post(CHAT, content=body, headers=JSON)
    counts = stats(proxy)
    assert fake.served == served  # nothing reached the provider
    assert answer.status_code == 404 and answer.headers["x-provider-cache"] == "miss"
    assert answer.json()["error"]["type"] == "provider_cache_miss"
    assert (counts["hits"], counts["misses"], counts["errors"]) == (0, 1, 1)
    proxy.stop()
    assert "Traceback" not in proxy.log() and "Addon error" not in proxy.log()
    gate = subprocess.run(
        [sys.executable, str(ROOT_DIR / "scripts" / "cache_stats.py"),
         str(cache_dir / "stats.json"), "--min-hit-rate", "1.0"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert gate.returncode == 1, gate.stdout + gate.stderr


def test_a_truncated_store_is_refused_at_start_in_one_line(start_proxy, use_proxy, fake, cache_dir):
    proxy = start_proxy("record")
    use_proxy(proxy)
    with httpx.Client(timeout=30) as http:
        for n in range(40):
            http.post(CHAT, content=chat_body(f"entry {n} " + "x" * 2000), headers=JSON)
    proxy.stop()
    data = cache_dir / "data.mdb"
    assert data.stat().st_size > 8 * PAGE
    os.truncate(data, 2 * PAGE)
    with pytest.raises(RuntimeError) as failed:
        start_proxy("replay")
    first = str(failed.value).splitlines()[0]  # the start failure; then the whole proxy log
    assert "data.mdb is truncated: 8192 bytes where LMDB needs" in first
    verify = subprocess.run(
        [sys.executable, str(ROOT_DIR / "scripts" / "recordings.py"),
         "--cache-dir", str(cache_dir), "verify"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert verify.returncode == 2 and verify.stderr.count("\n") == 1, verify.stderr
    assert "data.mdb is truncated" in verify.stderr


def test_stream_large_bodies_is_refused_in_one_line(start_proxy):
    with pytest.raises(RuntimeError) as failed:
        start_proxy("replay", stream_large_bodies="10k")
    assert "stream_large_bodies" in str(failed.value)


@pytest.mark.parametrize("pattern", ["*", "*.internal"])
def test_a_host_glob_that_matches_the_endpoint_leaves_it_alone(
    start_proxy, use_proxy, fake, pattern
):
    proxy = start_proxy("record", cache_hosts=["builtin", pattern])
    counts = stats(proxy)  # answered by the endpoint, not recorded, not a miss
    again = stats(proxy)
    assert counts["misses"] == again["misses"] == 0
    assert again["recorded"] == 0
