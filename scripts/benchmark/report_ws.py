"""The websocket section's table (scripts/benchmark/websocket.py's samples).

Issue 17 asks for the ratio, not a bound: the section has no row in the targets table.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from benchmark.report import fmt, spread
from benchmark.websocket import PASSTHROUGH, QUIET, RECORD, REPLAY, SECTION

if TYPE_CHECKING:
    from benchmark.report import Report

#: Each row's settings: mitmdump's defaults, then the CI settings (one line per message
#: printed, or none).
SETTINGS = ("", QUIET)


def table(report: Report) -> str:
    cells = report.cells(SECTION)
    if not cells:
        return ""
    lines = [
        "| payload | settings | round trip p50 (ms): replay, passthrough, record "
        "| p90 (ms): replay, passthrough, record | replay / passthrough p50 "
        "| replay / passthrough p90 | record / passthrough p50 "
        "| handshake p50 (ms): replay, passthrough | CPU/round trip (ms): replay, passthrough, "
        "record |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for payload, conc in cells:
        for setting in SETTINGS:
            names = [f"{v}, {setting}" if setting else v for v in (REPLAY, PASSTHROUGH, RECORD)]
            replay, passthrough, record = names

            def v(name: str, metric: str, cell: tuple[str, int] = (payload, conc)) -> float:
                return spread(report.values(SECTION, name, metric, *cell))[0]

            def r(
                num: str,
                metric: str,
                cell: tuple[str, int] = (payload, conc),
                den: str = passthrough,
            ) -> str:
                return fmt(report.ratios(SECTION, num, den, metric, *cell))

            if not report.values(SECTION, replay, "p50_ms", payload, conc):
                continue
            p50, p90, cpu = (
                ", ".join(f"{v(n, m):.2f}" for n in names) for m in ("p50_ms", "p90_ms", "cpu_ms")
            )
            lines.append(
                f"| {payload} | {setting or 'defaults'} | {p50} | {p90} "
                f"| {r(replay, 'p50_ms')} | {r(replay, 'p90_ms')} | {r(record, 'p50_ms')} "
                f"| {v(replay, 'handshake_ms'):.1f}, {v(passthrough, 'handshake_ms'):.1f} "
                f"| {cpu} |"
            )
    c = report.config
    return (
        f"WebSocket: per-message round trip of an OpenAI Realtime session ({c.ws_sessions} "
        f"sessions x {c.ws_messages} round trips per window), replayed and recorded against "
        "passed through\n\n" + "\n".join(lines)
    )
