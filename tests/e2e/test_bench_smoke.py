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
#: Section names in the samples (scripts/benchmark/remote.py, streams.py and websocket.py name
#: the new ones).
SECTIONS = {
    "hit path",
    "record path",
    "startup",
    "inproc",
    "remote: local hit",
    "remote: tiers",
    "remote: pull",
    "stream: first byte",
    "stream: record CPU",
    "stream: checks",
    "websocket",
}
#: The websocket section's variants (scripts/benchmark/websocket.py).
WEBSOCKET = {
    "replay",
    "passthrough",
    "record",
    "replay, flow_detail=0",
    "passthrough, flow_detail=0",
    "record, flow_detail=0",
}
#: The stream formats measured (scripts/benchmark/formats.py).
FORMATS = {
    "OpenAI chat (SSE)",
    "OpenAI Responses (SSE)",
    "Anthropic (SSE)",
    "Gemini (SSE)",
    "Gemini (JSON array)",
    "Bedrock ConverseStream",
    "Bedrock InvokeModelWithResponseStream",
    "Ollama (NDJSON)",
}


def test_smoke_run_measures_every_section(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, str(BENCH), "--smoke", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=400,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    samples = json.loads(out.read_text())["samples"]
    # The suite's environment has boto3 and moto: no remote section may be skipped.
    assert {s["section"] for s in samples} == SECTIONS
    variants = {s["variant"] for s in samples if s["section"] == "hit path"}
    assert {"cache", "ceiling", "server-replay", "server-replay-refresh"} <= variants
    assert all(s["requests"] > 0 for s in samples if "requests" in s)
    startup = {(s["variant"], s["entries"]) for s in samples if s["section"] == "startup"}
    assert {("cache", 0), ("server-replay", 0)} <= startup
    for heading in ("Hit path", "Record path", "Start-up", "In-process", "Targets"):
        assert heading in result.stdout
    assert_remote_and_stream_sections(samples, result.stdout)
    assert_websocket_section(samples, result.stdout)
    # A smoke run's NO targets are noise; the report says so where they are shown.
    targets = result.stdout.split("\nTargets\n", 1)[1]
    assert "Smoke run: too short for the targets to mean anything" in targets.splitlines()[1]


#: The commit whose SSE tee the bench compares with (scripts/benchmark/tee.py).
PREVIOUS = "060e9e7"


def has_commit(commit: str) -> bool:
    """Whether this checkout holds `commit` (a shallow clone may not)."""
    found = subprocess.run(
        ["git", "cat-file", "-e", f"{commit}^{{commit}}"], cwd=ROOT_DIR, capture_output=True
    )
    return found.returncode == 0


def variants(samples: list[dict], section: str) -> set[str]:
    return {s["variant"] for s in samples if s["section"] == section and "variant" in s}


def assert_remote_and_stream_sections(samples: list[dict], stdout: str) -> None:
    """Issue 14's and 15's sections each measured every variant once, and reported it."""
    assert variants(samples, "remote: local hit") == {
        "cache",
        "cache, remote configured",
        "cache, again",
    }
    assert variants(samples, "remote: tiers") == {
        "push",
        "local hit",
        "remote hit",
        "miss, remote configured",
        "miss, no remote",
    }
    pull = {s["variant"]: s for s in samples if s["section"] == "remote: pull"}
    assert set(pull) == {"push", "pull", "replay after pull", "lazy replay"}
    assert all(s["entries"] == pull["push"]["entries"] > 0 for s in pull.values())
    assert variants(samples, "stream: first byte") == {
        "record",
        "passthrough, streaming",
        "passthrough, stock",
    }
    recorded = {s["payload"] for s in samples if s["section"] == "stream: record CPU"}
    assert recorded == FORMATS
    checks = {s["payload"]: s for s in samples if s["section"] == "stream: checks"}
    assert set(checks) == FORMATS
    assert all(s["checked_us"] > 0 and s["unchecked_us"] > 0 for s in checks.values())
    # The tee before the checks is read from git: measured wherever its commit is at hand.
    assert ("previous_us" in checks["OpenAI chat (SSE)"]) == has_commit(PREVIOUS)
    for heading in (
        "Remote tier: a local hit",
        "Remote tier: a remote hit next to a local hit and a forwarded miss",
        "Remote tier: pull of",
        "Stream formats: record-mode first byte of a Bedrock event stream",
        "Stream formats: the completeness checks' CPU per recorded stream",
    ):
        assert heading in stdout


def assert_websocket_section(samples: list[dict], stdout: str) -> None:
    """Issue 17's section timed every variant's round trips once, and reported the ratios."""
    rows = [s for s in samples if s["section"] == "websocket"]
    assert {s["variant"] for s in rows} == WEBSOCKET
    assert all(s["messages"] > 0 and s["p90_ms"] >= s["p50_ms"] > 0 for s in rows)
    assert "WebSocket: per-message round trip of an OpenAI Realtime session" in stdout
    table = stdout.split("WebSocket: per-message round trip", 1)[1].split("\n\n", 2)[1]
    assert "| text 200 B | defaults |" in table
    assert "| text 200 B | flow_detail=0 |" in table
