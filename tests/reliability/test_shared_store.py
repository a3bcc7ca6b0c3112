"""Several mitmdump processes and a reader on one cache_dir, from a tiny map upwards."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import threading

import httpx

from tests.reliability.clients import ECHO, verify_store
from tests.support.proxy import ROOT_DIR

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


def _post_all(proxy, bodies: list[dict]) -> list[str | None]:
    with httpx.Client(proxy=proxy.url, verify=_ssl(str(proxy.ca_cert)), trust_env=False) as http:
        return [http.post(ECHO, json=body).headers.get("x-provider-cache") for body in bodies]


def _gate(stats_file, threshold: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            str(ROOT_DIR / "scripts" / "cache_stats.py"),
            str(stats_file),
            "--min-hit-rate",
            threshold,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_proxies_sharing_a_cache_dir_write_one_stats_file_with_both_runs_counts(
    start_proxy, cache_dir
):
    """Before: each proxy replaced stats.json with its own counters, so a run whose second
    proxy missed every request passed the gate on the first proxy's hits."""
    recorded = [{"i": i} for i in range(5)]
    recorder = start_proxy("record")
    assert _post_all(recorder, recorded) == ["miss"] * 5
    assert recorder.stop() == 0
    hitting, missing = start_proxy("replay"), start_proxy("replay")
    assert _post_all(hitting, recorded) == ["hit"] * 5
    assert _post_all(missing, [{"new": i} for i in range(5)]) == ["miss"] * 5
    assert missing.stop() == 0  # the one that missed stops first: the other writes last
    assert hitting.stop() == 0
    stats = json.loads((cache_dir / "stats.json").read_text())
    assert (stats["hits"], stats["misses"], stats["hit_rate"]) == (5, 5, 0.5)
    assert _gate(cache_dir / "stats.json", "1.0").returncode == 1

    # The next run, alone, is counted alone: the last run's parts are not summed into it.
    alone = start_proxy("replay")
    assert _post_all(alone, recorded[:2]) == ["hit"] * 2
    assert alone.stop() == 0
    stats = json.loads((cache_dir / "stats.json").read_text())
    assert (stats["hits"], stats["misses"]) == (2, 0)
    assert _gate(cache_dir / "stats.json", "1.0").returncode == 0
