"""The stream sections (issue 15), against the test suite's fake provider (fake_upstream.py).

stream-ttfb:   record-mode time to first byte of a Bedrock event stream (ConverseStream,
               its events `chunk_delay` apart) through the cache, against mitmdump passing
               the same stream through streaming (the fair reference) and stock (which
               holds the whole stream: what recording did before every format was teed).
stream-checks: the record proxy's CPU per recorded stream of each format, then, in process
               on the very streams it stored, what the completeness checks cost (tee.py),
               as a share of that CPU.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from benchmark import formats, tee
from benchmark import proxy as bench_proxy
from benchmark import report as bench_report
from benchmark.answers import assert_ok
from benchmark.formats import CONVERSE, FORMATS

if TYPE_CHECKING:
    from bench import Bench

TTFB = "stream: first byte"
RECORD_CPU = "stream: record CPU"
CHECKS = "stream: checks"
TTFB_VARIANTS = ("record", "passthrough, streaming", "passthrough, stock")
HOSTS = "cache_hosts=127.0.0.1"
#: The pace of the streams whose recording CPU is measured: each event its own read, as
#: a provider's tokens arrive (with no pause, events would share reads and cost less).
CHECK_DELAY = 0.002
CHECK_CONCURRENCY = 8
#: Recorded streams per format fed to the tees in process.
STREAMS_PER_FORMAT = 40
#: The longest a counted window may take: a bound, not a measure.
WINDOW_CAP = 300.0


def first_byte(bench: Bench) -> None:
    cfg, kw = bench.config, bench.proxy_kw()
    port = bench.fake_upstream(cfg.chunk_delay)
    proxies = [
        bench_proxy.cache("record", bench.work / "stream-ttfb", "record", HOSTS, **kw),
        bench_proxy.reference("passthrough, streaming", "stream", **kw),
        bench_proxy.plain("passthrough, stock", **kw),
    ]
    target = formats.target(CONVERSE, port, bench.ca)
    body = formats.bodies(CONVERSE, lambda: next(bench.counter))
    bench.start(proxies, target, body())
    for rep in range(cfg.reps):
        bench.say(f"stream first byte: repetition {rep + 1}/{cfg.reps}")
        for i, conc in enumerate(cfg.ttfb_concurrency):
            shift = (rep + i) % len(proxies)
            for proxy in proxies[shift:] + proxies[:shift]:
                total = cfg.ttfb_streams * conc
                w = bench.window(proxy, target, body, conc, total=total, cap=WINDOW_CAP)
                assert_ok(proxy, w, None, "miss" if proxy.name == "record" else "")
                bench.samples.append(
                    bench_report.sample(TTFB, rep, CONVERSE.name, conc, proxy.name, w)
                )
    bench.stop_all()
    assert_all_recorded(bench.work / "stream-ttfb")


def checks(bench: Bench) -> None:
    cfg, kw = bench.config, bench.proxy_kw()
    port = bench.fake_upstream(CHECK_DELAY)
    cache_dir = bench.work / "stream-checks"
    proxy = bench_proxy.cache("record", cache_dir, "record", HOSTS, **kw)
    counter = itertools.count(10**8)
    bench.start(
        [proxy],
        formats.target(FORMATS[0], port, bench.ca),
        formats.bodies(FORMATS[0], lambda: next(counter))(),
    )
    for rep in range(cfg.reps):
        bench.say(f"stream checks: recording, repetition {rep + 1}/{cfg.reps}")
        shift = rep % len(FORMATS)
        for fmt in FORMATS[shift:] + FORMATS[:shift]:
            target = formats.target(fmt, port, bench.ca)
            w = bench.window(
                proxy, target, formats.bodies(fmt, lambda: next(counter)), CHECK_CONCURRENCY
            )
            assert_ok(proxy, w, None, "miss")
            bench.samples.append(
                bench_report.sample(RECORD_CPU, rep, fmt.name, CHECK_CONCURRENCY, "record", w)
            )
    bench.stop_all()
    assert_all_recorded(cache_dir)
    bench.say("stream checks: the tees in process")
    previous = tee.previous_tee()
    for fmt in FORMATS:
        streams = tee.recorded_streams(cache_dir, fmt.path, STREAMS_PER_FORMAT)
        if not streams:
            raise SystemExit(f"bench: no {fmt.name} stream was recorded")
        tees: dict[str, Callable[[tee.Stream], None]] = {
            "checked_us": tee.checked,
            "unchecked_us": tee.unchecked,
        }
        if previous is not None and fmt is FORMATS[0]:
            tees["previous_us"] = previous
        costs = tee.costs(tees, streams, cfg.check_passes)
        chunks = sum(len(s.chunks) for s in streams) / len(streams)
        bench.samples.append({"section": CHECKS, "payload": fmt.name, "chunks": chunks, **costs})


def assert_all_recorded(cache_dir: Path) -> None:
    """The record proxy stored streams and turned none away (a rejected stream would mean
    the checks measured are not the ones that pass a complete stream)."""
    stats = json.loads((cache_dir / "stats.json").read_text())
    rejected = {reason: n for reason, n in stats["rejected"].items() if n}
    if rejected or not stats["recorded"]:
        raise SystemExit(f"bench: recorded {stats['recorded']}, rejected {rejected}: {cache_dir}")
