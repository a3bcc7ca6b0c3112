"""The remote tier's sections (issue 14), against moto's S3 server on 127.0.0.1 (s3.py).

remote-hit:  a local hit with cache_remote configured against one without (the remote is
             never on the hit path: the same CPU per request).
remote-read: a remote hit (first use on a new machine: an empty local store, the entry
             only on the remote) next to a local hit and a forwarded miss, with the remote
             configured and without; every request a new one, so each is a first lookup.
pull:        `provider-cache recordings pull` of N entries, and a new machine's first
             replay run of those N requests: lazily read through the remote, or after a pull.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmark import data as bench_data
from benchmark import net as bench_net
from benchmark import proxy as bench_proxy
from benchmark import report as bench_report
from benchmark.answers import assert_ok, const
from benchmark.net import HOST, Target, json_response, request_body
from benchmark.s3 import S3

if TYPE_CHECKING:
    from bench import Bench

LOCAL_HIT = "remote: local hit"
TIERS = "remote: tiers"
PULL = "remote: pull"
WITHOUT, WITH = "cache", "cache, remote configured"
#: A second proxy without the remote: its ratio to the first is what noise alone gives.
AGAIN = "cache, again"
LOCAL, REMOTE, MISS_REMOTE, MISS = (
    "local hit",
    "remote hit",
    "miss, remote configured",
    "miss, no remote",
)
TIER_VARIANTS = (LOCAL, REMOTE, MISS_REMOTE, MISS)
#: Warm-up requests per connection of a window (load.run_window's default).
WARMUP = 3
#: The longest a counted window may take: a bound, not a measure.
WINDOW_CAP = 900.0


def remote_proxy(
    name: str, cache_dir: Path, mode: str, url: str, s3: S3, *settings: str, **kw: Any
) -> bench_proxy.Proxy:
    return bench_proxy.cache(
        name, cache_dir, mode, f"cache_remote={url}", *settings, env=s3.env(), **kw
    )


def assert_remote_usable(proxy: bench_proxy.Proxy) -> None:
    """A proxy whose remote is down serves on from its local store: measuring it would say
    nothing about the remote tier, so its start-up line must name a usable remote."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        log = proxy.log_path.read_text(errors="replace")
        if "(read-write)" in log or "(read-only" in log:
            return
        time.sleep(0.1)
    raise SystemExit(f"bench: {proxy.name}: the remote tier is not usable:\n{proxy.log_tail()}")


def tiers_of(cache_dir: Path) -> dict:
    """The stats file's hits by tier, once the proxy has stopped."""
    return json.loads((cache_dir / "stats.json").read_text())["tiers"]


# -- remote-hit -------------------------------------------------------------------------------


def local_hit(bench: Bench) -> None:
    """Hits from the local store, the remote configured or not: CPU per request and latency;
    and a second proxy without it, whose ratio to the first shows the noise (an A/A test)."""
    s3, kw = bench.s3(), bench.proxy_kw()
    entries = bench_data.hit_entries(HOST, 443)
    without, with_ = bench.work / "local-hit", bench.work / "local-hit-remote"
    again = bench.work / "local-hit-again"
    for directory in (without, with_, again):
        bench_data.write_store(directory, entries)
    proxies = [
        bench_proxy.cache(WITHOUT, without, "replay", **kw),
        remote_proxy(WITH, with_, "replay", s3.bucket(), s3, **kw),
        bench_proxy.cache(AGAIN, again, "replay", **kw),
    ]
    probe = Target(0, HOST, 443, bench.ca)
    bodies = {p: const(request_body(p == "sse")) for p in ("json", "sse")}
    bench.start(proxies, probe, bodies["json"]())
    assert_remote_usable(proxies[1])
    sizes = {"json": len(json_response()), "sse": bench.sse_size}

    def check(proxy: bench_proxy.Proxy, payload: str, w: bench_net.Window) -> None:
        assert_ok(proxy, w, sizes[payload], "hit")

    bench.rounds(LOCAL_HIT, proxies, probe, bodies, check)
    bench.stop_all()
    if tiers_of(with_)["remote"]:
        raise SystemExit("bench: a local hit reached the remote tier")


# -- remote-read ------------------------------------------------------------------------------


def _pools(bench: Bench) -> dict[tuple[int, int], range]:
    """For each (concurrency, repetition), request numbers no proxy has asked for before."""
    cfg, start, pools = bench.config, 1, {}
    for conc in cfg.remote_concurrency:
        for rep in range(cfg.reps):
            size = cfg.remote_requests + WARMUP * conc
            pools[(conc, rep)] = range(start, start + size)
            start += size
    return pools


def _numbered(numbers: range) -> Callable[[], bytes]:
    it: Iterator[int] = iter(numbers)
    return lambda: request_body(False, next(it))


def tiers(bench: Bench) -> None:
    """Every request a new one: a local hit, a remote hit and a forwarded miss (the remote
    asked first and the recording uploaded, or no remote), at the same concurrency."""
    s3, kw, cfg = bench.s3(), bench.proxy_kw(), bench.config
    pools = _pools(bench)
    numbers = [0, *(n for pool in pools.values() for n in pool)]  # 0: the start-up probe
    local = bench.work / "tiers-local"
    bench_data.write_store(
        local, [bench_data.entry(request_body(False, n), False, HOST, 443) for n in numbers]
    )
    url = s3.bucket()
    bench.say(f"remote tiers: pushing {len(numbers)} entries to the S3 server")
    seconds = s3.command(
        "recordings", "--cache-dir", str(local), "push", "--remote", url, cwd=bench.work
    )
    bench.samples.append(
        {"section": TIERS, "variant": "push", "entries": len(numbers), "seconds": seconds}
    )
    port = bench.upstream_port()
    hosts = "cache_hosts=127.0.0.1"
    empty = bench.work / "tiers-empty"
    hits = [
        remote_proxy(LOCAL, local, "replay", url, s3, **kw),
        remote_proxy(REMOTE, empty, "replay", url, s3, **kw),
    ]
    misses = [
        remote_proxy(MISS_REMOTE, bench.work / "tiers-miss-remote", "record", url, s3, hosts, **kw),
        bench_proxy.cache(MISS, bench.work / "tiers-miss", "record", hosts, **kw),
    ]
    hit_target = Target(0, HOST, 443, bench.ca)
    miss_target = Target(0, "127.0.0.1", port, bench.ca)

    def unique() -> bytes:
        return request_body(False, next(bench.counter))

    bench.start(hits, hit_target, request_body(False, 0))
    bench.start(misses, miss_target, unique())
    for proxy in (*hits, misses[0]):
        assert_remote_usable(proxy)
    proxies, sent = [*hits, *misses], 1
    for rep in range(cfg.reps):
        bench.say(f"remote tiers: repetition {rep + 1}/{cfg.reps}")
        for i, conc in enumerate(cfg.remote_concurrency):
            shift = (rep + i) % len(proxies)
            for proxy in proxies[shift:] + proxies[:shift]:
                is_hit = proxy in hits
                target, body = (
                    (hit_target, _numbered(pools[(conc, rep)])) if is_hit else (miss_target, unique)
                )
                w = bench.window(
                    proxy, target, body, conc, total=cfg.remote_requests, cap=WINDOW_CAP
                )
                assert_ok(proxy, w, len(json_response()), "hit" if is_hit else "miss")
                bench.samples.append(bench_report.sample(TIERS, rep, "json", conc, proxy.name, w))
            sent += cfg.remote_requests + WARMUP * conc
    bench.stop_all()
    counted = tiers_of(empty)
    if counted != {"local": 0, "remote": sent}:
        raise SystemExit(
            f"bench: the remote-hit proxy's hits by tier are {counted}, not {sent} remote"
        )


# -- pull -------------------------------------------------------------------------------------


def pull(bench: Bench) -> None:
    """Push N entries, then per repetition: pull them into an empty store (entries/s), and
    replay the N requests on a new machine, lazily from the remote and after that pull."""
    s3, kw, cfg = bench.s3(), bench.proxy_kw(), bench.config
    n = cfg.pull_entries
    bench.say(f"pull: generating {n} entries")
    origin = bench.work / "pull-origin"
    bench_data.write_store(origin, [bench_data.bulk_entry(i) for i in range(n)])
    url = s3.bucket()
    bench.say(f"pull: pushing {n} entries")
    seconds = s3.command(
        "recordings", "--cache-dir", str(origin), "push", "--remote", url, cwd=bench.work
    )
    bench.samples.append(
        {"section": PULL, "variant": "push", "rep": 0, "entries": n, "seconds": seconds}
    )
    for rep in range(cfg.startup_reps):
        pulled, empty = bench.work / f"pulled-{rep}", bench.work / f"lazy-{rep}"
        bench.say(f"pull: pulling {n} entries, repetition {rep + 1}")
        seconds = s3.command(
            "recordings", "--cache-dir", str(pulled), "pull", "--remote", url, cwd=bench.work
        )
        bench.samples.append(
            {"section": PULL, "variant": "pull", "rep": rep, "entries": n, "seconds": seconds}
        )
        runs = [("replay after pull", pulled), ("lazy replay", empty)]
        for name, cache_dir in runs if rep % 2 == 0 else runs[::-1]:
            bench.say(f"pull: {name} of {n} requests, repetition {rep + 1}")
            row = _replay_run(bench, remote_proxy(name, cache_dir, "replay", url, s3, **kw), n)
            expected = (
                {"local": n, "remote": 0}
                if name == "replay after pull"
                else {"local": 0, "remote": n}
            )
            if tiers_of(cache_dir) != expected:
                raise SystemExit(
                    f"bench: {name}: hits by tier {tiers_of(cache_dir)}, not {expected}"
                )
            bench.samples.append(
                {"section": PULL, "variant": name, "rep": rep, "entries": n, **row}
            )


def _replay_run(bench: Bench, proxy: bench_proxy.Proxy, n: int) -> dict:
    """Launch → first answer (request 0) → the other n-1 requests answered: wall times."""
    conc = bench.config.replay_concurrency
    target = Target(0, HOST, 443, bench.ca)
    proxy.launch()
    bench.running.append(proxy)
    try:
        first = bench.ready(proxy, target, bench_data.bulk_body(0))
        w = bench.window(
            proxy, target, _numbered_bulk(range(1, n)), conc, total=n - 1, warmup=0, cap=WINDOW_CAP
        )
        total = time.perf_counter() - proxy.launched_at
        assert_ok(proxy, w, bench_data.BULK_RESPONSE_SIZE, "hit")
        cpu = proxy.cpu()
    finally:
        proxy.stop()
        bench.running.remove(proxy)
    return {
        "startup_s": first,
        "requests_s": w.elapsed,
        "total_s": total,
        "cpu_s": cpu,
        "concurrency": conc,
    }


def _numbered_bulk(numbers: range) -> Callable[[], bytes]:
    it: Iterator[int] = iter(numbers)
    return lambda: bench_data.bulk_body(next(it))
