"""The benchmark's plot (docs/bench.png): matplotlib from the `bench` extra."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

from benchmark.report import HIT_VARIANTS, RECORD_VARIANTS, Report, machine, spread

ROOT = Path(__file__).resolve().parents[2]
#: The stock variants, plus the cache with the settings recommended for CI (JSON cells only).
PLOTTED = (*HIT_VARIANTS, "cache, CI settings")


def plot(report: Report, path: Path) -> None:
    """Six panels: hit-path req/s and CPU, start-up and RSS against entries, SSE first byte,
    and the in-process cost of one hit."""
    plt = _matplotlib()
    fig, axes = plt.subplots(2, 3, figsize=(16, 8.5))
    cells = report.cells("hit path")
    labels = [f"{p} c={c}" for p, c in cells]
    for ax, metric, title in (
        (axes[0][0], "rps", "hit path: requests/s (higher is better)"),
        (axes[0][1], "cpu_ms", "hit path: proxy CPU ms per request (lower is better)"),
    ):
        width = 0.8 / len(PLOTTED)
        top = 0.0
        for i, variant in enumerate(PLOTTED):
            stats = [spread(report.values("hit path", variant, metric, *c)) for c in cells]
            xs = [j + (i - (len(PLOTTED) - 1) / 2) * width for j in range(len(cells))]
            meds = [s[0] for s in stats]
            err = [[s[0] - s[1] for s in stats], [s[2] - s[0] for s in stats]]
            ax.bar(xs, meds, width, yerr=err, capsize=2, label=variant)
            top = max([top, *(s[2] for s in stats if s[2] == s[2])])
        ax.set_ylim(0, top * 1.45)
        ax.set_xticks(range(len(cells)), labels)
        ax.set_title(title)
        ax.legend(fontsize=7, ncol=2, loc="upper left")
    sizes = sorted({s["entries"] for s in report.rows("startup")})
    for ax, metric, title in (
        (axes[0][2], "startup_s", "start-up: launch → first hit (s)"),
        (axes[1][0], "rss_mb", "RSS after the first hit (MB)"),
    ):
        for variant in ("cache", "server-replay"):
            meds = [
                spread(r[metric] for r in report.rows("startup", variant=variant, entries=n))[0]
                for n in sizes
            ]
            ax.plot([max(n, 1) for n in sizes], meds, marker="o", label=variant)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("recorded entries (0 plotted at 1)")
        ax.set_title(title)
        ax.legend(fontsize=8)
    ax = axes[1][1]
    sse = [c for c in report.cells("record path") if c[0] == "sse"]
    for i, variant in enumerate(RECORD_VARIANTS):
        meds = [spread(report.values("record path", variant, "ttfb_p50_ms", *c))[0] for c in sse]
        ax.bar([j + (i - 1) * 0.27 for j in range(len(sse))], meds, 0.27, label=variant)
    ax.set_xticks(range(len(sse)), [f"SSE c={c}" for _, c in sse])
    ax.set_title("record path: SSE time to first byte, p50 (ms)")
    ax.legend(fontsize=8)
    ax = axes[1][2]
    if report.rows("inproc"):
        r = report.rows("inproc")[-1]
        names = ["key", "lookup", "decode", "response\n(ceiling too)"]
        vals = [r["key_us"], r["lookup_us"], r["decode_us"], r["response_us"]]
        ax.bar(names, vals, color=["C1", "C1", "C1", "C7"])
        budget = 0.05 * 1000 * report.ceiling_cpu_ms()
        ax.axhline(budget, color="C3", linestyle="--", label="5% of ceiling CPU/request")
        ax.set_title("in-process cost of one hit (µs)")
        ax.legend(fontsize=8)
    fig.suptitle(
        f"provider-cache benchmark — {machine()['cpus']} cores, mitmproxy "
        f"{machine()['mitmproxy']}, Python {platform.python_version()}"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)


def _matplotlib():
    """matplotlib from the `bench` extra, installed into this environment on first use."""
    try:
        import matplotlib
    except ImportError:
        print("bench: installing the bench extra (matplotlib) for the plot", file=sys.stderr)
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "-e", f"{ROOT}[bench]"], check=True
        )
        import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
