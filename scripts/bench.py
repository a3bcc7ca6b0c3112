#!/usr/bin/env python3
"""Benchmark provider-cache against mitmproxy's ceiling and its server replay (issue 6).

    ./dev run python scripts/bench.py            # full run, ~16 minutes on 2 cores
    ./dev run python scripts/bench.py --smoke    # seconds: every section once, tiny
    ./dev run python scripts/bench.py --sections pull --pull-entries 10000

Everything runs on 127.0.0.1 in a temporary directory: a fake HTTPS provider
(scripts/benchmark/net.py), real mitmdump processes (scripts/benchmark/proxy.py) and an asyncio
keep-alive HTTPS client through them. All variants of a section run at once and are
measured in turn, in an order rotated every repetition; each result is a ratio between
two variants of the same repetition, and the report gives the median of those ratios
with their range. Proxy CPU comes from /proc/<pid>/stat (utime + stime), which a busy
shared machine disturbs far less than wall-clock throughput.

Sections: hit, record, startup (issue 6); remote-hit, remote-read, pull (the remote tier,
scripts/benchmark/remote.py, against moto's S3 server); stream-ttfb, stream-checks (every
streamed format, scripts/benchmark/streams.py, against the test suite's fake provider);
websocket (a replayed WebSocket session's round trips against passthrough,
scripts/benchmark/websocket.py, against the test suite's fake WebSocket provider).
"""

from __future__ import annotations

import argparse
import dataclasses
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
from benchmark import remote as bench_remote
from benchmark import report as bench_report
from benchmark import s3 as bench_s3
from benchmark import streams as bench_streams
from benchmark import websocket as bench_websocket
from benchmark.answers import assert_ok, const
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
    #: remote-read: requests per window (each a new one), and the concurrencies.
    remote_requests: int = 100
    remote_concurrency: tuple[int, ...] = (1, 4)
    #: pull: entries pushed, pulled and replayed; connections of the replay runs.
    pull_entries: int = 2000
    replay_concurrency: int = 1
    #: stream-ttfb: seconds between the events of a stream; streams per connection a window;
    #: the concurrencies (beyond a few, streams that start together queue for the first byte).
    chunk_delay: float = 0.01
    ttfb_streams: int = 10
    ttfb_concurrency: tuple[int, ...] = (1, 4)
    #: stream-checks: passes over the recorded streams per in-process timing.
    check_passes: int = 20
    #: websocket: sessions per window one after another, round trips per session, and the
    #: sizes of the text each client message carries (its answer echoes it).
    ws_sessions: int = 5
    ws_messages: int = 40
    ws_sizes: tuple[int, ...] = (200, 8000)


FULL = Config(reps=5, duration=1.5, startup_reps=2, sizes=(0, 10_000, 100_000))
SMOKE = Config(
    reps=1,
    duration=0.25,
    startup_reps=1,
    sizes=(0, 200),
    concurrency=(1, 4),
    every_setting=False,
    remote_requests=8,
    remote_concurrency=(1,),
    pull_entries=30,
    chunk_delay=0.002,
    ttfb_streams=2,
    check_passes=1,
    ws_sessions=1,
    ws_messages=5,
    ws_sizes=(200,),
)
SECTIONS = (
    "hit",
    "record",
    "startup",
    "remote-hit",
    "remote-read",
    "pull",
    "stream-ttfb",
    "stream-checks",
    "websocket",
)
#: The sections that need boto3 and moto's server (the test extra).
REMOTE_SECTIONS = ("remote-hit", "remote-read", "pull")
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
        self.upstream_at = 0
        #: The fake provider by its delay between events (streams.py), with its port.
        self.fakes: dict[float, tuple[subprocess.Popen[str], int]] = {}
        self.ws_fake: tuple[subprocess.Popen[str], int] | None = None
        self.s3_server: bench_s3.S3 | None = None
        self.counter = itertools.count(1)
        self.sse_size = SSE_SIZE

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
        target = dataclasses.replace(probe, proxy_port=proxy.port, ca=self.ca)
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

    def upstream_port(self) -> int:
        """The bench's fake HTTPS provider (upstream.py), started on first use."""
        if self.upstream is None:
            script = ROOT / "scripts" / "benchmark" / "upstream.py"
            args = [sys.executable, str(script), str(self.work), str(self.config.sse_delay)]
            self.upstream, self.upstream_at = _serving(args)
        return self.upstream_at

    def fake_upstream(self, delay: float) -> int:
        """The test suite's fake provider pacing its streams by `delay` (fake_upstream.py)."""
        if delay not in self.fakes:
            directory = self.work / f"fake-{len(self.fakes)}"
            directory.mkdir()
            script = ROOT / "scripts" / "benchmark" / "fake_upstream.py"
            self.fakes[delay] = _serving([sys.executable, str(script), str(directory), str(delay)])
        return self.fakes[delay][1]

    def ws_upstream(self) -> int:
        """The test suite's fake WebSocket provider (ws_upstream.py), started on first use."""
        if self.ws_fake is None:
            directory = self.work / "fake-ws"
            directory.mkdir()
            script = ROOT / "scripts" / "benchmark" / "ws_upstream.py"
            self.ws_fake = _serving([sys.executable, str(script), str(directory)])
        return self.ws_fake[1]

    def s3(self) -> bench_s3.S3:
        """moto's S3 server (s3.py), started on first use."""
        if self.s3_server is None:
            self.say("starting the S3 server (moto)")
            self.s3_server = bench_s3.S3(self.work).start()
        return self.s3_server

    def close(self) -> None:
        self.stop_all()
        fakes = [*self.fakes.values(), *([self.ws_fake] if self.ws_fake else [])]
        for proc in [self.upstream, *(p for p, _ in fakes)]:
            if proc is not None:
                proc.terminate()
                proc.wait(10)
        if self.s3_server is not None:
            self.s3_server.stop()

    # -- measuring ------------------------------------------------------------------------------

    def window(
        self,
        proxy: bench_proxy.Proxy,
        probe: Target,
        body: Callable[[], bytes],
        conc: int,
        *,
        total: int | None = None,
        warmup: int = 3,
        cap: float | None = None,
    ) -> Window:
        """One window through `proxy`: config.duration seconds, or `total` requests (the
        window then ends at `cap` seconds at the latest)."""
        target = dataclasses.replace(probe, proxy_port=proxy.port, ca=self.ca)
        http2 = proxy.extra.get("http2", False)
        duration = cap if total is not None and cap is not None else self.config.duration
        run = bench_load.run_window(
            target, body, conc, duration, proxy.cpu, warmup=warmup, http2=http2, total=total
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
        port = self.upstream_port()
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


def _serving(args: list[str]) -> tuple[subprocess.Popen[str], int]:
    """A fake provider process and the port it prints once it listens."""
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None  # stdout=PIPE
    line = proc.stdout.readline()
    if not line.strip().isdigit():
        proc.kill()
        proc.wait(10)
        raise SystemExit(f"bench: {Path(args[1]).name} did not start")
    return proc, int(line)


def distinct_bodies():
    """Every request one the proxy has not seen for thousands of requests: no memo applies."""
    bodies = [bench_net.request_body(False, n) for n in bench_data.DISTINCT]
    counter = itertools.count()
    return lambda: bodies[next(counter) % len(bodies)]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="a few seconds: is it still working?")
    parser.add_argument("--reps", type=int, help="repetitions of each throughput section")
    parser.add_argument("--duration", type=float, help="seconds per measurement window")
    parser.add_argument("--sizes", help="entries for the start-up runs, e.g. 0,10000,100000")
    parser.add_argument(
        "--sections", default=",".join(SECTIONS), help=f"comma-separated: {','.join(SECTIONS)}"
    )
    parser.add_argument(
        "--pull-entries",
        type=int,
        help=f"entries of the pull section (default {FULL.pull_entries})",
    )
    parser.add_argument(
        "--remote-requests", type=int, help="requests per remote-read window (each a new one)"
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
    config = dataclasses.replace(
        base,
        reps=args.reps or base.reps,
        duration=args.duration or base.duration,
        sizes=tuple(int(s) for s in args.sizes.split(",")) if args.sizes else base.sizes,
        pull_entries=args.pull_entries or base.pull_entries,
        remote_requests=args.remote_requests or base.remote_requests,
    )
    if config.pull_entries < 2:
        raise SystemExit("bench: --pull-entries must be at least 2")
    return config


def sections_of(args: argparse.Namespace) -> list[str]:
    chosen = [s for s in args.sections.split(",") if s]
    unknown = sorted(set(chosen) - set(SECTIONS))
    if unknown:
        raise SystemExit(
            f"bench: unknown sections {', '.join(unknown)}; known: {', '.join(SECTIONS)}"
        )
    return [s for s in SECTIONS if s in chosen]


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
    sections = sections_of(args)
    work = Path(tempfile.mkdtemp(prefix="provider-cache-bench-"))
    bench = Bench(config, work)
    started = time.perf_counter()
    run: dict[str, Callable[[], None]] = {
        "hit": bench.hit_path,
        "record": bench.record_path,
        "startup": bench.startup,
        "remote-hit": lambda: bench_remote.local_hit(bench),
        "remote-read": lambda: bench_remote.tiers(bench),
        "pull": lambda: bench_remote.pull(bench),
        "stream-ttfb": lambda: bench_streams.first_byte(bench),
        "stream-checks": lambda: bench_streams.checks(bench),
        "websocket": lambda: bench_websocket.run(bench),
    }
    missing = bench_s3.missing()
    try:
        for section in sections:
            if section in REMOTE_SECTIONS and missing:
                bench.say(f"skipping {section}: {missing}")
                bench.samples.append({"section": "skipped", "name": section, "reason": missing})
                continue
            run[section]()
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
