#!/usr/bin/env python3
"""Benchmark provider-cache against mitmproxy's ceiling and its server replay (issue 6).

    ./dev run python scripts/bench.py            # full run, ~10 minutes on 2 cores
    ./dev run python scripts/bench.py --smoke    # seconds: every section once, tiny

Everything runs on 127.0.0.1 in a temporary directory: a fake HTTPS provider
(scripts/benchmark/net.py), real mitmdump processes (scripts/benchmark/proxy.py) and an asyncio
keep-alive HTTPS client through them. All variants of a section run at once and are
measured in turn, in an order rotated every repetition; each result is a ratio between
two variants of the same repetition, and the report gives the median of those ratios
with their range. Proxy CPU comes from /proc/<pid>/stat (utime + stime), which a busy
shared machine disturbs far less than wall-clock throughput.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmark import data as bench_data
from benchmark import load as bench_load
from benchmark import net as bench_net
from benchmark import proxy as bench_proxy
from benchmark import report as bench_report
from benchmark.net import Target, Window

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Config:
    reps: int
    duration: float
    startup_reps: int
    sizes: tuple[int, ...]
    concurrency: tuple[int, ...] = (1, 16)
    sse_delay: float = 0.002
    every_setting: bool = True  # the smoke run keeps only the combined CI settings and HTTP/2


FULL = Config(reps=5, duration=1.5, startup_reps=2, sizes=(0, 10_000, 100_000))
SMOKE = Config(
    reps=1, duration=0.25, startup_reps=1, sizes=(0, 200), concurrency=(1, 4), every_setting=False
)
PAYLOADS = ("json", "sse")
SMOKE_SETTINGS = ("cache, CI settings", "cache, HTTP/2 client")


class Bench:
    def __init__(self, config: Config, work: Path):
        self.config = config
        self.work = work
        self.confdir = work / "conf"
        self.logs = work / "logs"
        self.logs.mkdir(parents=True)
        self.samples: list[dict] = []
        self.running: list[bench_proxy.Proxy] = []
        self.upstream: subprocess.Popen[str] | None = None
        self.counter = itertools.count(1)

    @property
    def ca(self) -> Path:
        return self.confdir / "mitmproxy-ca-cert.pem"

    def proxy_kw(self) -> dict:
        return {"confdir": self.confdir, "log_dir": self.logs}

    def say(self, text: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)

    # -- processes ------------------------------------------------------------------------------

    def start(self, proxies: list[bench_proxy.Proxy], probe: Target, body: bytes) -> None:
        """Launch proxies (the first alone, as it creates the shared CA) and wait for answers."""
        for i, proxy in enumerate(proxies):
            proxy.launch()
            self.running.append(proxy)
            if i == 0 or not self.ca.exists():
                self.ready(proxy, probe, body)
        for proxy in proxies[1:]:
            self.ready(proxy, probe, body)

    def ready(self, proxy: bench_proxy.Proxy, probe: Target, body: bytes) -> float:
        deadline = time.monotonic() + 60
        while not self.ca.exists() and time.monotonic() < deadline and proxy.alive():
            time.sleep(0.02)
        target = Target(proxy.port, probe.host, probe.port, self.ca)
        try:
            result = bench_net.run(bench_net.first_answer(target, body, 120, proxy.alive))
        except TimeoutError:
            raise SystemExit(f"bench: {proxy.name} did not answer:\n{proxy.log_tail()}") from None
        if result.status != 200:
            raise SystemExit(f"bench: {proxy.name} answered {result.status}:\n{proxy.log_tail()}")
        return time.perf_counter() - proxy.launched_at

    def stop_all(self) -> None:
        for proxy in self.running:
            proxy.stop()
        self.running = []

    def start_upstream(self) -> int:
        script = ROOT / "scripts" / "benchmark" / "upstream.py"
        args = [sys.executable, str(script), str(self.work), str(self.config.sse_delay)]
        upstream = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        self.upstream = upstream
        assert upstream.stdout is not None  # stdout=PIPE
        return int(upstream.stdout.readline())

    def close(self) -> None:
        self.stop_all()
        if self.upstream is not None:
            self.upstream.terminate()
            self.upstream.wait(10)

    # -- measuring ------------------------------------------------------------------------------

    def window(
        self, proxy: bench_proxy.Proxy, probe: Target, body: Callable[[], bytes], conc: int
    ) -> Window:
        target = Target(proxy.port, probe.host, probe.port, self.ca)
        http2 = proxy.extra.get("http2", False)
        run = bench_load.run_window(
            target, body, conc, self.config.duration, proxy.cpu, http2=http2
        )
        return bench_net.run(run)

    def rounds(
        self,
        section: str,
        proxies: list[bench_proxy.Proxy],
        probe: Target,
        bodies: dict[str, Callable[[], bytes]],
        check: Callable[[bench_proxy.Proxy, str, Window], None],
        payloads: tuple[str, ...] = PAYLOADS,
    ) -> None:
        """Every cell (payload x concurrency) of every repetition, variants in rotated order."""
        cells = [(p, c) for p in payloads for c in self.config.concurrency]
        for rep in range(self.config.reps):
            self.say(f"{section}: repetition {rep + 1}/{self.config.reps}")
            for i, (payload, conc) in enumerate(cells):
                shift = (rep + i) % len(proxies)
                for proxy in proxies[shift:] + proxies[:shift]:
                    if payload not in proxy.extra.get("payloads", PAYLOADS):
                        continue
                    body = proxy.extra.get("bodies", bodies)[payload]
                    w = self.window(proxy, probe, body, conc)
                    check(proxy, payload, w)
                    self.samples.append(
                        bench_report.sample(section, rep, payload, conc, proxy.name, w)
                    )

    # -- sections -------------------------------------------------------------------------------

    def hit_path(self) -> None:
        """Replay hits against the ceiling, server replay and the settings worth a look."""
        entries = bench_data.hit_entries(bench_net.HOST, 443)
        bench_data.write_store(self.work / "hits", entries)
        bench_data.write_flow_file(self.work / "hits.mitm", entries)
        if self.config.every_setting:
            bench_data.write_store(self.work / "hits", bench_data.distinct_entries(bench_net.HOST))
        kw = self.proxy_kw()
        proxies = [
            bench_proxy.reference("ceiling", "ceiling", **kw),
            bench_proxy.cache("cache", self.work / "hits", "replay", **kw),
            bench_proxy.server_replay("server-replay", self.work / "hits.mitm", False, **kw),
            bench_proxy.server_replay("server-replay-refresh", self.work / "hits.mitm", True, **kw),
            *self.settings_variants(),
        ]
        probe = Target(0, bench_net.HOST, 443, self.ca)
        bodies = {p: const(bench_net.request_body(p == "sse")) for p in PAYLOADS}
        self.start(proxies, probe, bodies["json"]())

        def check(proxy: bench_proxy.Proxy, payload: str, w: Window) -> None:
            expected = {"json": len(bench_net.json_response()), "sse": SSE_SIZE}[payload]
            assert_ok(proxy, w, expected, "hit" if proxy.name.startswith("cache") else "")

        self.rounds("hit path", proxies, probe, bodies, check)
        self.stop_all()
        self.samples.append({"section": "inproc", **bench_data.hit_cost(self.work / "hits")})

    def settings_variants(self) -> list[bench_proxy.Proxy]:
        """Settings that cache_run.py could apply, each alone and together (JSON cells only)."""
        kw = self.proxy_kw() | {"extra": {"payloads": ("json",)}}
        hits = self.work / "hits"
        optimize = {"PYTHONOPTIMIZE": "1"}
        json_h2 = {"payloads": ("json",), "http2": True}
        variants = [
            bench_proxy.cache("cache flow_detail=0", hits, "replay", "flow_detail=0", **kw),
            bench_proxy.cache("cache python -O", hits, "replay", env=optimize, **kw),
            bench_proxy.cache(
                "cache without companions", hits, "replay", script=bench_proxy.BARE_CACHE, **kw
            ),
            bench_proxy.cache(
                "cache, CI settings", hits, "replay", "flow_detail=0", env=optimize, **kw
            ),
            bench_proxy.reference(
                "ceiling, CI settings", "ceiling", "flow_detail=0", env=optimize, **kw
            ),
            bench_proxy.cache("cache, HTTP/2 client", hits, "replay", **kw | {"extra": json_h2}),
            bench_proxy.cache(
                "cache, distinct requests",
                hits,
                "replay",
                **kw | {"extra": {"payloads": ("json",), "bodies": {"json": distinct_bodies()}}},
            ),
            bench_proxy.reference("ceiling, HTTP/2 client", "ceiling", **kw | {"extra": json_h2}),
        ]
        if not self.config.every_setting:
            variants = [v for v in variants if v.name in SMOKE_SETTINGS]
        return variants

    def record_path(self) -> None:
        """Misses recorded against plain passthrough, streaming and stock (which buffers SSE)."""
        port = self.start_upstream()
        kw = self.proxy_kw()
        hosts = "cache_hosts=127.0.0.1"
        proxies = [
            bench_proxy.cache("record", self.work / "recorded", "record", hosts, **kw),
            bench_proxy.reference("passthrough, streaming", "stream", **kw),
            bench_proxy.plain("passthrough, stock", **kw),
        ]
        probe = Target(0, "127.0.0.1", port, self.ca)

        def unique(stream: bool) -> Callable[[], bytes]:
            return lambda: bench_net.request_body(stream, next(self.counter))

        self.start(proxies, probe, unique(False)())
        bodies = {p: unique(p == "sse") for p in PAYLOADS}

        def check(proxy: bench_proxy.Proxy, payload: str, w: Window) -> None:
            expected = {"json": len(bench_net.json_response()), "sse": SSE_SIZE}[payload]
            assert_ok(proxy, w, expected, "miss" if proxy.name == "record" else "")

        self.rounds("record path", proxies, probe, bodies, check)
        self.stop_all()

    def startup(self) -> None:
        """Launch -> first answered hit, and RSS then, against the number of recordings."""
        entries = bench_data.hit_entries(bench_net.HOST, 443)
        sets = bench_data.startup_sets(self.work / "startup", entries, self.config.sizes, self.say)
        probe = Target(0, bench_net.HOST, 443, self.ca)
        body = bench_net.request_body(False)
        kw = self.proxy_kw()
        for rep in range(self.config.startup_reps):
            for size, (store, flows) in sets.items():
                self.say(f"start-up: {size} entries, repetition {rep + 1}")
                for proxy in (
                    bench_proxy.cache("cache", store, "replay", **kw),
                    bench_proxy.server_replay("server-replay", flows, False, **kw),
                ):
                    proxy.launch()
                    try:
                        seconds = self.ready(proxy, probe, body)
                        rss = proxy.rss()
                    finally:
                        proxy.stop()
                    self.samples.append(
                        {
                            "section": "startup",
                            "rep": rep,
                            "entries": size,
                            "variant": proxy.name,
                            "startup_s": seconds,
                            "rss_mb": rss / 2**20,
                        }
                    )


SSE_SIZE = len(b"".join(bench_net.sse_chunks()))


def const(body: bytes) -> Callable[[], bytes]:
    return lambda: body


def distinct_bodies():
    """Every request one the proxy has not seen for thousands of requests: no memo applies."""
    bodies = [bench_net.request_body(False, n) for n in bench_data.DISTINCT]
    counter = itertools.count()
    return lambda: bodies[next(counter) % len(bodies)]


def assert_ok(proxy: bench_proxy.Proxy, w: Window, size: int, cache: str) -> None:
    """A window counts only if every answer was the expected one (and a hit where one is due)."""
    problems = []
    if set(w.statuses) != {200}:
        problems.append(f"statuses {dict(w.statuses)}")
    if set(w.sizes) != {size}:
        problems.append(f"body sizes {dict(w.sizes)}, expected {size}")
    if set(w.cache) != {cache}:
        problems.append(f"x-provider-cache {dict(w.cache)}, expected {cache!r}")
    if not w.requests:
        problems.append("no request completed")
    if problems:
        raise SystemExit(f"bench: {proxy.name}: {'; '.join(problems)}\n{proxy.log_tail()}")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="a few seconds: is it still working?")
    parser.add_argument("--reps", type=int, help="repetitions of each throughput section")
    parser.add_argument("--duration", type=float, help="seconds per measurement window")
    parser.add_argument("--sizes", help="entries for the start-up runs, e.g. 0,10000,100000")
    parser.add_argument(
        "--sections", default="hit,record,startup", help="comma-separated: hit,record,startup"
    )
    parser.add_argument("--json", type=Path, help="write the raw samples and summary here")
    parser.add_argument("--plot", type=Path, help="write the plot here (needs the bench extra)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument(
        "--report", type=Path, metavar="JSON", help="measure nothing: report a saved --json run"
    )
    return parser.parse_args(argv)


def config_of(args: argparse.Namespace) -> Config:
    base = SMOKE if args.smoke else FULL
    return Config(
        reps=args.reps or base.reps,
        duration=args.duration or base.duration,
        startup_reps=base.startup_reps,
        sizes=tuple(int(s) for s in args.sizes.split(",")) if args.sizes else base.sizes,
        concurrency=base.concurrency,
        sse_delay=base.sse_delay,
        every_setting=base.every_setting,
    )


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.report:
        saved = json.loads(args.report.read_text())
        fields: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in saved["config"].items()
        }
        config = Config(**fields)
        report = bench_report.Report(saved["samples"], config, saved["argv"], saved["seconds"])
        return output(report, args)
    config = config_of(args)
    sections = set(args.sections.split(","))
    work = Path(tempfile.mkdtemp(prefix="provider-cache-bench-"))
    bench = Bench(config, work)
    started = time.perf_counter()
    try:
        if "hit" in sections:
            bench.hit_path()
        if "record" in sections:
            bench.record_path()
        if "startup" in sections:
            bench.startup()
    finally:
        bench.close()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    report = bench_report.Report(bench.samples, config, argv, time.perf_counter() - started)
    return output(report, args)


def output(report: bench_report.Report, args: argparse.Namespace) -> int:
    print(report.markdown())
    if args.json:
        args.json.write_text(json.dumps(report.as_json(), indent=1))
    if args.plot:
        from benchmark import plot as bench_plot

        bench_plot.plot(report, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
