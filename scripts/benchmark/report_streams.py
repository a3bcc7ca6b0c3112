"""The stream sections' tables and targets (scripts/benchmark/streams.py's samples)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from benchmark.formats import CONVERSE, FORMATS
from benchmark.report import fmt, spread
from benchmark.streams import CHECKS, RECORD_CPU, TTFB, TTFB_VARIANTS
from benchmark.tee import PREVIOUS

if TYPE_CHECKING:
    from benchmark.report import Report

#: Record-mode first byte against a streaming passthrough (issue 15).
TTFB_LIMIT = 1.2
#: The completeness checks' CPU against the proxy's CPU per recorded stream (issue 15).
CHECKS_LIMIT = 0.05


def first_byte_table(report: Report) -> str:
    cells = report.cells(TTFB)
    if not cells:
        return ""
    delay = report.config.chunk_delay
    lines = [
        "| c | first byte p50 (ms): record, streaming, stock | record / streaming first byte "
        "| CPU/stream (ms): record, streaming | record / streaming CPU |",
        "|---|---|---|---|---|",
    ]
    record, streaming, _ = TTFB_VARIANTS
    for payload, conc in cells:
        tt = [
            spread(report.values(TTFB, n, "ttfb_p50_ms", payload, conc))[0] for n in TTFB_VARIANTS
        ]
        cpu = [spread(report.values(TTFB, n, "cpu_ms", payload, conc))[0] for n in TTFB_VARIANTS]
        lines.append(
            f"| {conc} | {', '.join(f'{x:.1f}' for x in tt)} "
            f"| {fmt(report.ratios(TTFB, record, streaming, 'ttfb_p50_ms', payload, conc))} "
            f"| {cpu[0]:.2f}, {cpu[1]:.2f} "
            f"| {fmt(report.ratios(TTFB, record, streaming, 'cpu_ms', payload, conc))} |"
        )
    return (
        f"Stream formats: record-mode first byte of a Bedrock event stream ({CONVERSE.name}, "
        f"events {1000 * delay:g} ms apart)\n\n" + "\n".join(lines)
    )


def record_cpu_ms(report: Report, name: str) -> float:
    """The record proxy's median CPU per recorded stream of one format (ms)."""
    rows = report.rows(RECORD_CPU, payload=name)
    return spread(r["cpu_ms"] for r in rows)[0]


def checks_table(report: Report) -> str:
    rows = {r["payload"]: r for r in report.rows(CHECKS)}
    if not rows:
        return ""
    lines = [
        "| format | chunks/stream | proxy CPU per recorded stream (ms) | tee with its checker "
        "(µs) | tee, no checker (µs) | checks (µs) | checks / proxy CPU |",
        "|---|---|---|---|---|---|---|",
    ]
    for f in FORMATS:
        r = rows.get(f.name)
        if r is None:
            continue
        proxy_us = 1000 * record_cpu_ms(report, f.name)
        extra = r["checked_us"] - r["unchecked_us"]
        lines.append(
            f"| {f.name} | {r['chunks']:.0f} | {proxy_us / 1000:.2f} | {r['checked_us']:.1f} "
            f"| {r['unchecked_us']:.1f} | {extra:.1f} | {100 * extra / proxy_us:.2f}% |"
        )
    text = "Stream formats: the completeness checks' CPU per recorded stream\n\n" + "\n".join(lines)
    sse = rows.get(FORMATS[0].name)
    if sse and "previous_us" in sse:
        proxy_us = 1000 * record_cpu_ms(report, FORMATS[0].name)
        extra = sse["checked_us"] - sse["previous_us"]
        text += (
            f"\n\nThe SSE tee now against the SSE tee before the checks ({PREVIOUS}), same "
            f"{FORMATS[0].name} streams: {sse['checked_us']:.1f} µs vs {sse['previous_us']:.1f} "
            f"µs per stream ({sse['checked_us'] / sse['previous_us']:.2f}x), a difference of "
            f"{100 * extra / proxy_us:.2f}% of the proxy's CPU per recorded stream."
        )
    return text


def targets(report: Report) -> list[tuple[str, float, bool]]:
    checks = []
    record, streaming, _ = TTFB_VARIANTS
    for payload, conc in report.cells(TTFB):
        x = spread(report.ratios(TTFB, record, streaming, "ttfb_p50_ms", payload, conc))[0]
        checks.append(
            (
                f"record event stream first byte <= {TTFB_LIMIT}x streaming, c={conc}",
                x,
                x <= TTFB_LIMIT,
            )
        )
    rows = report.rows(CHECKS)
    if rows:
        shares = [
            (r["checked_us"] - r["unchecked_us"]) / (1000 * record_cpu_ms(report, r["payload"]))
            for r in rows
        ]
        worst = max(shares)
        checks.append(
            (
                f"completeness checks <= {CHECKS_LIMIT:.0%} of record CPU/stream, worst format",
                worst,
                worst <= CHECKS_LIMIT,
            )
        )
        sse = next(
            (r for r in rows if r["payload"] == FORMATS[0].name and "previous_us" in r), None
        )
        if sse:
            x = (sse["checked_us"] - sse["previous_us"]) / (
                1000 * record_cpu_ms(report, sse["payload"])
            )
            checks.append(
                (
                    f"SSE tee vs {PREVIOUS}'s <= {CHECKS_LIMIT:.0%} of record CPU/stream",
                    x,
                    x <= CHECKS_LIMIT,
                )
            )
    return checks
