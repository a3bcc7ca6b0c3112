"""`recordings merge` into a cache_dir while proxies record into it, from a tiny map upwards."""

from __future__ import annotations

import hashlib
import json
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from provider_cache.core import textform
from provider_cache.core.records import Entry, StoredRequest, StoredResponse
from tests.reliability.clients import ECHO
from tests.support.proxy import ROOT_DIR

PROXIES = 3
SHARD_ENTRIES = 300
PAD = "x" * 20_000  # ~40 KB per shard entry (request and answer): each shard is ~45 initial maps
MERGES = 3  # shards, merged one after another while the proxies write
DEADLINE = 120.0  # seconds for the whole contention phase
SCRIPT = ROOT_DIR / "scripts" / "recordings.py"


def recordings(cache_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--cache-dir", str(cache_dir), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def shard_export(path: Path, shard: int) -> set[str]:
    """An export of SHARD_ENTRIES distinct entries (keys the proxies never record)."""
    entries = []
    for i in range(SHARD_ENTRIES):
        key = hashlib.sha256(f"shard {shard} {i}".encode()).hexdigest()
        body = json.dumps({"shard": shard, "i": i, "pad": PAD}).encode()
        entries.append(
            Entry(
                key=key,
                recorded_at=1_700_000_000.0 + i,
                request=StoredRequest("POST", "https://api.openai.com/v1/echo", [], body),
                response=StoredResponse(200, "OK", [(b"content-type", b"application/json")], body),
            )
        )
    path.write_text(textform.dumps(entries))
    return {e.key for e in entries}


def stored_keys(cache_dir: Path) -> set[str]:
    listing = recordings(cache_dir, "ls", "--json")
    assert listing.returncode == 0, listing.stderr
    return {json.loads(line)["key"] for line in listing.stdout.splitlines()}


def record_until(proxy_url: str, ca: str, n: int, stop: threading.Event, sent: list) -> None:
    """Distinct requests, one after another, until told to stop (or the deadline)."""
    context = ssl.create_default_context(cafile=ca)
    deadline = time.monotonic() + DEADLINE
    with httpx.Client(proxy=proxy_url, verify=context, timeout=30, trust_env=False) as http:
        i = 0
        while not stop.is_set() and time.monotonic() < deadline:
            r = http.post(ECHO, json={"proxy": n, "i": i, "pad": PAD})
            sent.append((n, i, r.status_code, r.headers.get("x-provider-cache")))
            i += 1


def test_merge_is_complete_while_proxies_record_into_the_target(
    start_proxy, fake, cache_dir, tmp_path
):
    """Three shards merged while three proxies on a 256 KB map record: the merges commit while
    the proxies grow their maps and adopt each other's (MDB_MAP_RESIZED). Afterwards every
    shard entry and every recording is in the target, and no proxy counted an error."""
    shards, shard_keys = [], set()
    for n in range(MERGES):
        shard, export = tmp_path / f"shard{n}", tmp_path / f"shard{n}.json"
        shard_keys |= shard_export(export, n)
        assert recordings(shard, "import", str(export)).returncode == 0
        shards.append(shard)
    proxies = [
        start_proxy("record", cache_map_size="256k", cache_stats_file=str(tmp_path / f"s{n}.json"))
        for n in range(PROXIES)
    ]
    sent: list = []
    stop = threading.Event()
    threads = [
        threading.Thread(target=record_until, args=(p.url, str(p.ca_cert), n, stop, sent))
        for n, p in enumerate(proxies)
    ]
    for t in threads:
        t.start()
    try:
        merges = []
        for shard in shards:
            while len(sent) < 5 and all(t.is_alive() for t in threads):
                time.sleep(0.05)  # the proxies are writing when each merge starts
            merges.append(recordings(cache_dir, "merge", str(shard)))
            sent_before = len(sent)
            while len(sent) < sent_before + 5 and all(t.is_alive() for t in threads):
                time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    for proxy in proxies:
        assert proxy.stop() == 0

    assert [m.returncode for m in merges] == [0] * MERGES, [m.stderr for m in merges]
    assert {(status, state) for *_, status, state in sent} == {(200, "miss")}
    keys = stored_keys(cache_dir)
    assert len(shard_keys - keys) == 0, f"{len(shard_keys - keys)} shard entries missing"
    stats = [json.loads((tmp_path / f"s{n}.json").read_text()) for n in range(PROXIES)]
    assert sum(s["recorded"] for s in stats) == len(sent)
    assert sum(s["errors"] for s in stats) == 0
    # The proxies' requests are distinct and none is a shard's: each is one more entry.
    assert len(keys) == MERGES * SHARD_ENTRIES + len(sent)


SAME = 450  # requests recorded twice: into a shard, then into the target during the merge


def record_each(proxies: list, results: dict) -> list[threading.Thread]:
    """Request each of SAME requests once, spread over the proxies, two clients per proxy."""
    clients = [proxy for proxy in proxies for _ in range(2)]
    threads = [
        threading.Thread(
            target=record_some,
            args=(proxy.url, str(proxy.ca_cert), range(n, SAME, len(clients)), results),
        )
        for n, proxy in enumerate(clients)
    ]
    for t in threads:
        t.start()
    return threads


def record_some(proxy_url: str, ca: str, indices: range, results: dict) -> None:
    context = ssl.create_default_context(cafile=ca)
    with httpx.Client(proxy=proxy_url, verify=context, timeout=30, trust_env=False) as http:
        for i in indices:
            r = http.post(ECHO, json={"same": i, "pad": PAD})
            results[i] = (r.status_code, r.headers.get("x-provider-cache"))


def recorded_at(cache_dir: Path) -> dict[str, float]:
    listing = recordings(cache_dir, "ls", "--json")
    assert listing.returncode == 0, listing.stderr
    return {row["key"]: row["recorded_at"] for row in map(json.loads, listing.stdout.splitlines())}


def test_merge_never_replaces_what_a_proxy_records_meanwhile(start_proxy, fake, tmp_path):
    """A shard holds older recordings of the very requests the proxies record while it is
    merged. Newer wins: each request a proxy recorded (a miss) must be there as recorded then,
    not replaced by the shard's older entry because the merge looked before the proxy wrote."""
    shard, target = tmp_path / "shard", tmp_path / "target"
    shard_stats = {"cache_stats_file": str(tmp_path / "shard-stats.json")}
    recorders = [start_proxy("record", cache_dir=str(shard), **shard_stats) for _ in range(2)]
    for t in record_each(recorders, {}):
        t.join(DEADLINE)
    for proxy in recorders:
        assert proxy.stop() == 0
    older = recorded_at(shard)
    assert len(older) == SAME
    proxies = [
        start_proxy(
            "record",
            cache_dir=str(target),
            cache_map_size="256k",
            cache_stats_file=str(tmp_path / f"s{n}.json"),
        )
        for n in range(PROXIES)
    ]
    results: dict = {}
    threads = record_each(proxies, results)
    deadline = time.monotonic() + DEADLINE
    while len(results) < SAME // 4 and time.monotonic() < deadline:
        time.sleep(0.01)  # the merge starts while the proxies are recording
    merge = recordings(target, "merge", str(shard))
    for t in threads:
        t.join(DEADLINE)
    for proxy in proxies:
        assert proxy.stop() == 0

    assert merge.returncode == 0, merge.stderr
    assert {status for status, _ in results.values()} == {200} and len(results) == SAME
    stats = [json.loads((tmp_path / f"s{n}.json").read_text()) for n in range(PROXIES)]
    assert sum(s["errors"] for s in stats) == 0
    recorded = sum(state == "miss" for _, state in results.values())
    assert sum(s["recorded"] for s in stats) == recorded
    stored = recorded_at(target)
    assert stored.keys() == older.keys()
    replaced = recorded - sum(at > older[key] for key, at in stored.items())
    assert replaced == 0, f"{replaced} of {recorded} recordings replaced by older shard entries"
