"""The remote tier's tables and targets (scripts/benchmark/remote.py's samples)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from benchmark.remote import AGAIN, LOCAL, LOCAL_HIT, PULL, TIER_VARIANTS, TIERS, WITH, WITHOUT
from benchmark.report import fmt, spread

if TYPE_CHECKING:
    from benchmark.report import Report

#: A local hit with the remote configured costs what one without costs (issue 14).
LOCAL_HIT_LIMIT = 1.02


def local_hit_table(report: Report) -> str:
    cells = report.cells(LOCAL_HIT)
    if not cells:
        return ""
    lines = [
        "| payload | c | CPU/req without, with remote (ms) | with / without CPU "
        "| with / without req/s | A/A: again / without CPU "
        "| p50 / p99 with remote (ms) | p50 / p99 without (ms) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for payload, conc in cells:

        def v(name: str, m: str, cell: tuple[str, int] = (payload, conc)) -> float:
            return spread(report.values(LOCAL_HIT, name, m, *cell))[0]

        def r(m: str, cell: tuple[str, int] = (payload, conc), num: str = WITH) -> str:
            return fmt(report.ratios(LOCAL_HIT, num, WITHOUT, m, *cell))

        lines.append(
            f"| {payload} | {conc} | {v(WITHOUT, 'cpu_ms'):.2f}, {v(WITH, 'cpu_ms'):.2f} "
            f"| {r('cpu_ms')} | {r('rps')} | {r('cpu_ms', num=AGAIN)} "
            f"| {v(WITH, 'p50_ms'):.1f} / {v(WITH, 'p99_ms'):.1f} "
            f"| {v(WITHOUT, 'p50_ms'):.1f} / {v(WITHOUT, 'p99_ms'):.1f} |"
        )
    return "Remote tier: a local hit, cache_remote configured or not (replay)\n\n" + "\n".join(
        lines
    )


def tiers_table(report: Report) -> str:
    cells = report.cells(TIERS)
    if not cells:
        return ""
    lines = [
        "| c | variant | latency p50 / p99 (ms) | CPU/req (ms) | latency / local hit "
        "| CPU / local hit |",
        "|---|---|---|---|---|---|",
    ]
    for payload, conc in cells:
        for variant in TIER_VARIANTS:

            def v(m: str, name: str = variant, cell: tuple[str, int] = (payload, conc)) -> float:
                return spread(report.values(TIERS, name, m, *cell))[0]

            lat = fmt(report.ratios(TIERS, variant, LOCAL, "p50_ms", payload, conc))
            cpu = fmt(report.ratios(TIERS, variant, LOCAL, "cpu_ms", payload, conc))
            lines.append(
                f"| {conc} | {variant} | {v('p50_ms'):.1f} / {v('p99_ms'):.1f} "
                f"| {v('cpu_ms'):.2f} | {lat} | {cpu} |"
            )
    pushed = report.rows(TIERS, variant="push")
    note = ""
    if pushed:
        p = pushed[-1]
        note = (
            f"\n\nEvery request a new one (a first lookup): {p['entries']} entries pushed "
            f"first, in {p['seconds']:.1f} s ({p['entries'] / p['seconds']:.0f} entries/s)."
        )
    return "Remote tier: a remote hit next to a local hit and a forwarded miss\n\n" + (
        "\n".join(lines) + note
    )


def pull_table(report: Report) -> str:
    pulls = report.rows(PULL, variant="pull")
    if not pulls:
        return ""
    n = pulls[0]["entries"]
    pushed = report.rows(PULL, variant="push")
    after = {r["rep"]: r for r in report.rows(PULL, variant="replay after pull")}
    lazy = {r["rep"]: r for r in report.rows(PULL, variant="lazy replay")}
    conc = next(iter(after.values()))["concurrency"] if after else 1
    lines = [
        "| rep | pull (s) | pull entries/s | replay after pull (s) | pull + replay (s) "
        "| lazy replay (s) | lazy / (pull + replay) | replay CPU after pull, lazy (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p in pulls:
        a, z = after.get(p["rep"]), lazy.get(p["rep"])
        if a is None or z is None:
            continue
        both = p["seconds"] + a["total_s"]
        lines.append(
            f"| {p['rep'] + 1} | {p['seconds']:.1f} | {n / p['seconds']:.0f} "
            f"| {a['total_s']:.1f} | {both:.1f} | {z['total_s']:.1f} | {z['total_s'] / both:.2f} "
            f"| {a['cpu_s']:.1f}, {z['cpu_s']:.1f} |"
        )
    head = (
        f"Remote tier: pull of {n} entries, and a new machine's first replay run of those "
        f"{n} requests (c={conc}; launch to last answer)"
    )
    note = ""
    if pushed:
        s = pushed[-1]["seconds"]
        note = f"\n\nPushed first (from an empty bucket): {s:.1f} s, {n / s:.0f} entries/s."
    return head + "\n\n" + "\n".join(lines) + note


def targets(report: Report) -> list[tuple[str, float, bool]]:
    checks = []
    for payload, conc in report.cells(LOCAL_HIT):
        x = spread(report.ratios(LOCAL_HIT, WITH, WITHOUT, "cpu_ms", payload, conc))[0]
        checks.append(
            (
                f"local hit CPU/req, remote configured <= {LOCAL_HIT_LIMIT}x without, "
                f"{payload} c={conc}",
                x,
                x <= LOCAL_HIT_LIMIT,
            )
        )
    return checks


def skipped(report: Report) -> str:
    rows = report.rows("skipped")
    return "\n".join(f"Skipped {r['name']}: {r['reason']}" for r in rows)
