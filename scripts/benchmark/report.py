"""The benchmark's report: per-repetition ratios, their medians and range, targets, a plot."""

from __future__ import annotations

import os
import platform
import statistics
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from benchmark.net import Window

if TYPE_CHECKING:
    from bench import Config

#: Shown with the targets of a `--smoke` run, whose NO is noise, not a finding.
SMOKE_NOTE = (
    "Smoke run: too short for the targets to mean anything; a NO here is not a regression "
    "(the figures are the full run's, docs/performance.md)."
)

HIT_VARIANTS = ("ceiling", "cache", "server-replay", "server-replay-refresh")
RECORD_VARIANTS = ("record", "passthrough, streaming", "passthrough, stock")
SETTINGS = (  # (variant, its reference), measured on the JSON cells
    ("cache flow_detail=0", "cache"),
    ("cache python -O", "cache"),
    ("cache without companions", "cache"),
    ("cache, CI settings", "cache"),
    ("cache, CI settings", "ceiling"),
    ("cache, CI settings", "ceiling, CI settings"),
    ("ceiling, CI settings", "ceiling"),
    ("cache, HTTP/2 client", "cache"),
    ("cache, HTTP/2 client", "ceiling, HTTP/2 client"),
    ("cache, distinct requests", "cache"),
    ("cache, distinct requests", "ceiling"),
)


def spread(values: Iterable[float]) -> tuple[float, float, float]:
    values = sorted(values)
    if not values:
        return (float("nan"),) * 3
    return statistics.median(values), values[0], values[-1]


def fmt(values: Iterable[float], digits: int = 2) -> str:
    med, lo, hi = spread(values)
    return f"{med:.{digits}f} ({lo:.{digits}f}-{hi:.{digits}f})"


class Report:
    def __init__(self, samples: list[dict], config: Config, argv: list[str], seconds: float):
        self.samples = samples
        self.config = config
        self.argv = argv
        self.seconds = seconds

    # -- selections ----------------------------------------------------------------------------

    def rows(self, section: str, **match: object) -> list[dict]:
        return [
            s
            for s in self.samples
            if s["section"] == section and all(s.get(k) == v for k, v in match.items())
        ]

    def cells(self, section: str) -> list[tuple[str, int]]:
        rows = self.rows(section)
        return sorted({(s["payload"], s["concurrency"]) for s in rows if "concurrency" in s})

    def values(
        self, section: str, variant: str, metric: str, payload: str, conc: int
    ) -> list[float]:
        return [
            s[metric]
            for s in self.rows(section, variant=variant, payload=payload, concurrency=conc)
        ]

    def ratios(
        self, section: str, num: str, den: str, metric: str, payload: str, conc: int
    ) -> list[float]:
        """num/den per repetition: both measured in the same round, minutes apart at most."""
        a = {
            s["rep"]: s[metric]
            for s in self.rows(section, variant=num, payload=payload, concurrency=conc)
        }
        b = {
            s["rep"]: s[metric]
            for s in self.rows(section, variant=den, payload=payload, concurrency=conc)
        }
        return [a[r] / b[r] for r in sorted(a) if b.get(r)]

    def startup_ratios(self, variant: str, size: int, metric: str) -> list[float]:
        base = {s["rep"]: s[metric] for s in self.rows("startup", variant=variant, entries=0)}
        return [
            s[metric] / base[s["rep"]]
            for s in self.rows("startup", variant=variant, entries=size)
            if s["rep"] in base
        ]

    def ceiling_cpu_ms(self) -> float:
        """The ceiling's lowest median CPU per request over the JSON cells (the strict one)."""
        cells = [c for c in self.cells("hit path") if c[0] == "json"]
        meds = [spread(self.values("hit path", "ceiling", "cpu_ms", *c))[0] for c in cells]
        return min(meds) if meds else float("nan")

    # -- text ------------------------------------------------------------------------------------

    def markdown(self) -> str:
        # Imported here: they import this module's helpers (and the sections' names).
        from benchmark import report_remote, report_streams, report_ws

        out = [self.header()]
        for part in (
            self.hit_table,
            self.settings_table,
            self.record_table,
            self.startup_table,
            self.inproc_table,
            lambda: report_remote.local_hit_table(self),
            lambda: report_remote.tiers_table(self),
            lambda: report_remote.pull_table(self),
            lambda: report_streams.first_byte_table(self),
            lambda: report_streams.checks_table(self),
            lambda: report_ws.table(self),
            lambda: report_remote.skipped(self),
            self.targets,
        ):
            text = part()
            if text:
                out += ["", text]
        return "\n".join(out)

    def header(self) -> str:
        c = self.config
        return (
            f"provider-cache benchmark: {c.reps} repetitions x {c.duration:g} s windows, "
            f"start-up {c.startup_reps}x, took {self.seconds:.0f} s; "
            "ratios are medians of per-repetition ratios (range in brackets)."
        )

    def hit_table(self) -> str:
        cells = self.cells("hit path")
        if not cells:
            return ""
        lines = [
            "| payload | c | req/s cache | req/s ceiling | CPU/req cache, ceiling (ms) "
            "| cache/ceiling req/s | cache/ceiling CPU | cache/server replay req/s "
            "| cache/server replay (refresh) req/s | p50 / p99 cache (ms) |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for payload, conc in cells:

            def v(name: str, m: str, cell: tuple[str, int] = (payload, conc)) -> float:
                return spread(self.values("hit path", name, m, *cell))[0]

            def r(a: str, b: str, m: str, cell: tuple[str, int] = (payload, conc)) -> str:
                return fmt(self.ratios("hit path", a, b, m, *cell))

            lines.append(
                f"| {payload} | {conc} | {v('cache', 'rps'):.0f} | {v('ceiling', 'rps'):.0f} "
                f"| {v('cache', 'cpu_ms'):.2f}, {v('ceiling', 'cpu_ms'):.2f} "
                f"| {r('cache', 'ceiling', 'rps')} | {r('cache', 'ceiling', 'cpu_ms')} "
                f"| {r('cache', 'server-replay', 'rps')} "
                f"| {r('cache', 'server-replay-refresh', 'rps')} "
                f"| {v('cache', 'p50_ms'):.1f} / {v('cache', 'p99_ms'):.1f} |"
            )
        return "Hit path (replay mode)\n\n" + "\n".join(lines)

    def settings_table(self) -> str:
        cells = [c for c in self.cells("hit path") if c[0] == "json"]
        rows = []
        for variant, ref in SETTINGS:
            for payload, conc in cells:
                cpu = self.ratios("hit path", variant, ref, "cpu_ms", payload, conc)
                rps = self.ratios("hit path", variant, ref, "rps", payload, conc)
                if cpu:
                    rows.append(f"| {variant} | {ref} | {conc} | {fmt(cpu)} | {fmt(rps)} |")
        if not rows:
            return ""
        head = "| variant | against | c | CPU/req ratio | req/s ratio |\n|---|---|---|---|---|"
        return "Settings on the hit path (JSON)\n\n" + head + "\n" + "\n".join(rows)

    def record_table(self) -> str:
        cells = self.cells("record path")
        if not cells:
            return ""
        lines = [
            "| payload | c | req/s record, streaming, stock "
            "| first byte p50 (ms) record, streaming, stock "
            "| record/streaming req/s | record/streaming first byte |",
            "|---|---|---|---|---|---|",
        ]
        for payload, conc in cells:
            rps = [
                spread(self.values("record path", n, "rps", payload, conc))[0]
                for n in RECORD_VARIANTS
            ]
            tt = [
                spread(self.values("record path", n, "ttfb_p50_ms", payload, conc))[0]
                for n in RECORD_VARIANTS
            ]
            ref = RECORD_VARIANTS[1]
            lines.append(
                f"| {payload} | {conc} | {', '.join(f'{x:.0f}' for x in rps)} "
                f"| {', '.join(f'{x:.1f}' for x in tt)} "
                f"| {fmt(self.ratios('record path', 'record', ref, 'rps', payload, conc))} "
                f"| {fmt(self.ratios('record path', 'record', ref, 'ttfb_p50_ms', payload, conc))}"
                " |"
            )
        return "Record path against passthrough\n\n" + "\n".join(lines)

    def startup_table(self) -> str:
        sizes = sorted({s["entries"] for s in self.rows("startup")})
        if not sizes:
            return ""
        lines = [
            "| entries | cache start-up (s) | cache RSS (MB) | server replay start-up (s) "
            "| server replay RSS (MB) | cache vs 0: start-up, RSS "
            "| server replay vs 0: start-up, RSS |",
            "|---|---|---|---|---|---|---|",
        ]
        for size in sizes:
            cells = []
            for variant in ("cache", "server-replay"):
                rows = self.rows("startup", variant=variant, entries=size)
                cells.append(f"{spread(r['startup_s'] for r in rows)[0]:.2f}")
                cells.append(f"{spread(r['rss_mb'] for r in rows)[0]:.0f}")
            growth = [
                f"{fmt(self.startup_ratios(v, size, 'startup_s'))}, "
                f"{fmt(self.startup_ratios(v, size, 'rss_mb'))}"
                for v in ("cache", "server-replay")
            ]
            lines.append(f"| {size} | {' | '.join(cells)} | {' | '.join(growth)} |")
        return "Start-up (launch to first answered hit) and memory\n\n" + "\n".join(lines)

    def inproc_table(self) -> str:
        rows = self.rows("inproc")
        if not rows:
            return ""
        r = rows[-1]
        share = r["hit_us"] / (1000 * self.ceiling_cpu_ms())
        return (
            "In-process cost of one hit (4 KB JSON request, 16 KB response; best of 7 timeit "
            f"runs): key {r['key_us']:.1f} µs, lookup {r['lookup_us']:.1f} µs, decode "
            f"{r['decode_us']:.1f} µs; all three {r['hit_us']:.1f} µs = {100 * share:.1f}% of "
            f"the ceiling's {self.ceiling_cpu_ms():.2f} ms CPU per request. (Building the "
            f"response object, which the ceiling does too: {r['response_us']:.1f} µs.)"
            + (
                f" A request seen before (its key remembered, its entry decoded before, the "
                f"store read again): {r['repeat_us']:.1f} µs."
                if "repeat_us" in r
                else ""
            )
        )

    def targets(self) -> str:
        checks = []
        for payload, conc in self.cells("hit path"):
            cpu = spread(self.ratios("hit path", "cache", "ceiling", "cpu_ms", payload, conc))[0]
            rps = spread(self.ratios("hit path", "cache", "ceiling", "rps", payload, conc))[0]
            checks.append((f"CPU/req <= 1.05x ceiling, {payload} c={conc}", cpu, cpu <= 1.05))
            checks.append((f"req/s >= 0.95x ceiling, {payload} c={conc}", rps, rps >= 0.95))
            for sr in ("server-replay", "server-replay-refresh"):
                x = spread(self.ratios("hit path", "cache", sr, "rps", payload, conc))[0]
                checks.append((f"req/s >= 1.0x {sr}, {payload} c={conc}", x, x >= 1.0))
        sizes = sorted({s["entries"] for s in self.rows("startup")})
        if sizes:
            for metric in ("startup_s", "rss_mb"):
                x = spread(self.startup_ratios("cache", sizes[-1], metric))[0]
                checks.append((f"{metric} at {sizes[-1]} <= 1.1x at 0", x, x <= 1.1))
        for payload, conc in self.cells("record path"):
            if payload == "sse":
                x = spread(
                    self.ratios(
                        "record path", "record", RECORD_VARIANTS[1], "ttfb_p50_ms", payload, conc
                    )
                )[0]
                checks.append((f"record SSE first byte <= 1.2x streaming, c={conc}", x, x <= 1.2))
        if self.rows("inproc"):
            share = self.rows("inproc")[-1]["hit_us"] / (1000 * self.ceiling_cpu_ms())
            checks.append(("in-process hit <= 5% of ceiling CPU/req", share, share <= 0.05))
        from benchmark import report_remote, report_streams

        checks += report_remote.targets(self) + report_streams.targets(self)
        if not checks:
            return ""
        lines = ["| target | measured (median) | met |", "|---|---|---|"]
        lines += [
            f"| {name} | {value:.3f} | {'yes' if ok else 'NO'} |" for name, value, ok in checks
        ]
        note = f"{SMOKE_NOTE}\n\n" if "--smoke" in self.argv else ""
        return "Targets\n\n" + note + "\n".join(lines)

    def as_json(self) -> dict:
        return {
            "config": asdict(self.config),
            "argv": self.argv,
            "seconds": self.seconds,
            "machine": machine(),
            "samples": self.samples,
        }


def machine() -> dict:
    from importlib.metadata import version

    cpu = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    import ssl

    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "openssl": ssl.OPENSSL_VERSION,
        **{name: version(name) for name in ("mitmproxy", "lmdb", "msgpack")},
    }


def sample(section: str, rep: int, payload: str, conc: int, variant: str, w: Window) -> dict:
    lat, ttfb = sorted(w.latencies), sorted(w.ttfbs)
    return {
        "section": section,
        "rep": rep,
        "payload": payload,
        "concurrency": conc,
        "variant": variant,
        "requests": w.requests,
        "rps": w.requests / w.elapsed,
        "p50_ms": 1000 * percentile(lat, 0.50),
        "p99_ms": 1000 * percentile(lat, 0.99),
        "ttfb_p50_ms": 1000 * percentile(ttfb, 0.50),
        "cpu_ms": 1000 * w.proxy_cpu / w.requests,
        "client_cpu_ms": 1000 * w.client_cpu / w.requests,
    }


def percentile(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")
