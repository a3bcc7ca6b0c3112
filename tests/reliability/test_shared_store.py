"""Several mitmdump processes and a reader on one cache_dir, from a tiny map upwards."""

from __future__ import annotations

import json
import ssl
import threading

import httpx

from tests.reliability.clients import ECHO, verify_store

PROXIES = 3
PER_PROXY = 25
BODY = "x" * 20_000  # echoed back: ~20 KB per entry, far beyond the initial map


def record_share(proxy_url: str, n: int, ca: str, results: list) -> None:
    with httpx.Client(proxy=proxy_url, verify=_ssl(ca), timeout=30, trust_env=False) as http:
        for i in range(PER_PROXY):
            r = http.post(ECHO, json={"proxy": n, "i": i, "pad": BODY})
            results.append((r.status_code, r.headers.get("x-provider-cache")))


def _ssl(ca: str) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca)


def test_processes_share_one_store_and_grow_its_map(start_proxy, fake, cache_dir, tmp_path):
    proxies = [
        start_proxy("record", cache_map_size="256k", cache_stats_file=str(tmp_path / f"s{n}.json"))
        for n in range(PROXIES)
    ]
    results: list = []
    reader_errors: list = []
    stop = threading.Event()

    def reader() -> None:  # recordings.py reading while the writers grow the map
        while not stop.is_set():
            ls = verify_store(cache_dir)
            if ls.returncode != 0:
                reader_errors.append(ls.stdout + ls.stderr)

    threads = [
        threading.Thread(target=record_share, args=(p.url, n, str(p.ca_cert), results))
        for n, p in enumerate(proxies)
    ]
    watcher = threading.Thread(target=reader)
    watcher.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    stop.set()
    watcher.join(60)

    assert results == [(200, "miss")] * (PROXIES * PER_PROXY)
    assert reader_errors == []
    # Every proxy now serves what every other proxy recorded.
    for n, proxy in enumerate(proxies):
        other = (n + 1) % PROXIES
        with httpx.Client(
            proxy=proxy.url, verify=_ssl(str(proxy.ca_cert)), trust_env=False
        ) as http:
            states = {
                http.post(ECHO, json={"proxy": other, "i": i, "pad": BODY}).headers[
                    "x-provider-cache"
                ]
                for i in range(PER_PROXY)
            }
        assert states == {"hit"}
    for proxy in proxies:
        assert proxy.stop() == 0
    stats = [json.loads((tmp_path / f"s{n}.json").read_text()) for n in range(PROXIES)]
    assert [(s["misses"], s["recorded"], s["hits"], s["errors"]) for s in stats] == [
        (PER_PROXY, PER_PROXY, PER_PROXY, 0)
    ] * PROXIES
    log = "".join(p.log() for p in proxies)
    assert "growing its map" in log
    assert fake.served == PROXIES * PER_PROXY
