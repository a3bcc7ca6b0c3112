"""kill -9 of mitmdump while it records: no partial entry, and every answer a client got is kept."""

from __future__ import annotations

import random
import signal
import threading
import time

import httpx

from tests.reliability.clients import CHAT, chat_body, verify_store

ROUNDS = 4
CLIENTS = 6


def traffic(stop: threading.Event, round_no: int, done: list[tuple[bytes, bytes]]) -> None:
    """Clients sending unique JSON and SSE requests until stopped; keeps the complete answers."""

    def client(n: int) -> None:
        with httpx.Client(timeout=10) as http:
            i = 0
            while not stop.is_set():
                i += 1
                body = chat_body(f"r{round_no} c{n} q{i}", stream=i % 3 == 0)
                try:
                    response = http.post(CHAT, content=body, headers=_json)
                    if response.status_code == 200:  # read to the end: a complete answer
                        done.append((body, response.content))
                except httpx.HTTPError:
                    return  # the proxy was killed under us

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    for t in threads:
        t.start()
    stop.wait()
    for t in threads:
        t.join(15)


_json = {"content-type": "application/json"}


def test_kill_9_at_random_points_loses_nothing_complete(start_proxy, use_proxy, fake, cache_dir):
    fake.chunk_delay = 0.002
    rng = random.Random(7)
    completed: list[tuple[bytes, bytes]] = []
    for round_no in range(ROUNDS):
        proxy = start_proxy("record")
        use_proxy(proxy)
        stop = threading.Event()
        done: list[tuple[bytes, bytes]] = []
        runner = threading.Thread(target=traffic, args=(stop, round_no, done))
        runner.start()
        time.sleep(rng.uniform(0.3, 1.2))
        proxy.managed.proc.send_signal(signal.SIGKILL)  # no done(), no flush, mid-write
        proxy.managed.proc.wait(10)
        stop.set()
        runner.join(30)
        completed += done

    verify = verify_store(cache_dir)
    assert verify.returncode == 0, verify.stdout
    assert len(completed) > 40  # the kills landed while traffic flowed
    print(f"{ROUNDS} kills; {verify.stdout.strip()}; {len(completed)} complete answers replayed")

    use_proxy(start_proxy("replay", offline=True))
    with httpx.Client(timeout=10) as http:
        for body, answer in completed:
            replay = http.post(CHAT, content=body, headers=_json)
            assert replay.headers["x-provider-cache"] == "hit", body
            assert replay.content == answer
