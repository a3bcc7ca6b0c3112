"""scripts/bench.py --smoke: the benchmark still runs end to end (its timings are not judged).

The full benchmark is not part of the suite; timings on a shared machine are noise. This
runs every section once with tiny windows, so a change to the addon, mitmproxy or the
bench itself that breaks a measurement (a hit that is no longer a hit, a stream that no
longer records, a flow file server replay cannot load) fails here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support.proxy import ROOT_DIR

BENCH = ROOT_DIR / "scripts" / "bench.py"


def test_smoke_run_measures_every_section(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, str(BENCH), "--smoke", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=170,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    samples = json.loads(out.read_text())["samples"]
    assert {s["section"] for s in samples} == {"hit path", "record path", "startup", "inproc"}
    variants = {s["variant"] for s in samples if s["section"] == "hit path"}
    assert {"cache", "ceiling", "server-replay", "server-replay-refresh"} <= variants
    assert all(s["requests"] > 0 for s in samples if "requests" in s)
    startup = {(s["variant"], s["entries"]) for s in samples if s["section"] == "startup"}
    assert {("cache", 0), ("server-replay", 0)} <= startup
    for heading in ("Hit path", "Record path", "Start-up", "In-process", "Targets"):
        assert heading in result.stdout
    # A smoke run's NO targets are noise; the report says so where they are shown.
    targets = result.stdout.split("\nTargets\n", 1)[1]
    assert "Smoke run: too short for the targets to mean anything" in targets.splitlines()[1]
