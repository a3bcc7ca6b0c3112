"""16 concurrent clients, a few thousand mixed hits, misses and streams: no error, exact counts."""

from __future__ import annotations

import random
import threading
from collections import Counter

import httpx

from tests.reliability.clients import CHAT, chat_body

CLIENTS = 16
PER_CLIENT = 150  # 2,400 requests
RECORDED = 40

JSON = {"content-type": "application/json"}


def test_concurrent_mixed_load_counts_exactly(start_proxy, use_proxy, fake):
    proxy = start_proxy("record")
    use_proxy(proxy)
    known = [chat_body(f"known {i}", stream=i % 4 == 0) for i in range(RECORDED)]
    with httpx.Client(timeout=30) as http:
        for body in known:
            http.post(CHAT, content=body, headers=JSON).raise_for_status()

    seen: Counter = Counter()
    failures: list[str] = []
    lock = threading.Lock()

    def client(n: int) -> None:
        rng = random.Random(n)
        local: Counter = Counter()
        with httpx.Client(timeout=30) as http:
            for i in range(PER_CLIENT):
                roll = rng.random()
                if roll < 0.6:
                    body = rng.choice(known)  # a hit
                else:  # a new request, JSON or streamed: a miss
                    body = chat_body(f"new {n}-{i}", stream=roll > 0.9)
                try:
                    r = http.post(CHAT, content=body, headers=JSON)
                except httpx.HTTPError as e:
                    failures.append(f"{n}-{i}: {e!r}")
                    continue
                if r.status_code != 200 or not r.content:
                    failures.append(f"{n}-{i}: {r.status_code}")
                local[r.headers["x-provider-cache"]] += 1
        with lock:
            seen.update(local)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)

    with httpx.Client(proxy=proxy.url, trust_env=False, timeout=10) as http:
        stats = http.get("http://provider-cache.internal/stats").json()
    total = CLIENTS * PER_CLIENT
    assert failures == []
    assert seen["hit"] + seen["miss"] == total
    assert stats["hits"] == seen["hit"]
    assert stats["misses"] == seen["miss"] + RECORDED
    assert stats["recorded"] == stats["misses"] and stats["errors"] == 0
    assert stats["hits"] + stats["misses"] == total + RECORDED
    assert fake.served == stats["misses"]
    print(f"{total} requests from {CLIENTS} clients: {seen['hit']} hits, {seen['miss']} misses")
