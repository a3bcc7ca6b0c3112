"""scripts/cache_stats.py: exit codes 0/1/2, shards, formats, --url (SPEC §7)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from provider_cache.core.stats import Stats
from tests.support.proxy import ROOT_DIR

SCRIPT = ROOT_DIR / "scripts" / "cache_stats.py"


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60, cwd=cwd
    )


def stats_file(path: Path, hits: int, misses: int, missed_url: str = "") -> Path:
    stats = Stats(mode="replay", window_size=100)
    for _ in range(hits):
        stats.hit("api.openai.com")
    for i in range(misses):
        normalized = {"headers": [], "query": [], "body_kind": "json", "body": b'{"q": %d}' % i}
        url = missed_url or f"https://api.openai.com/v1/chat/completions?i={i}"
        stats.miss("api.openai.com", "POST", url, f"{i:064x}", normalized)
    path.write_text(json.dumps(stats.snapshot()))
    return path


@pytest.mark.parametrize(
    ("hits", "misses", "threshold", "code"),
    [(19, 1, "0.9", 0), (9, 1, "0.9", 0), (8, 2, "0.9", 1), (0, 3, "50%", 1), (3, 0, "100%", 0)],
)
def test_exit_code_above_at_and_below_threshold(tmp_path, hits, misses, threshold, code):
    result = run(str(stats_file(tmp_path / "s.json", hits, misses)), "--min-hit-rate", threshold)
    assert result.returncode == code, result.stderr
    assert ("meets" if code == 0 else "is below") in result.stdout.splitlines()[0]


def test_text_output_lists_the_missed_requests(tmp_path):
    result = run(str(stats_file(tmp_path / "s.json", 1, 2)), "--min-hit-rate", "0.9")
    assert result.returncode == 1
    assert "POST https://api.openai.com/v1/chat/completions?i=0" in result.stdout
    assert "POST https://api.openai.com/v1/chat/completions?i=1" in result.stdout
    assert '{"q": 1}' in result.stdout


def test_several_files_are_summed_as_shards(tmp_path):
    a = stats_file(tmp_path / "a.json", 9, 1)
    b = stats_file(tmp_path / "b.json", 5, 5)
    result = run(str(a), str(b), "--format", "json", "--min-hit-rate", "0.8")
    doc = json.loads(result.stdout)
    assert (doc["hits"], doc["misses"], doc["shards"]) == (14, 6, 2)
    assert doc["hit_rate"] == 0.7 and doc["gate"]["passed"] is False
    assert result.returncode == 1
    assert [m["count"] for m in doc["missed"]][:1] == [2]  # same key in both shards: counted twice


def test_markdown_is_a_job_summary(tmp_path):
    result = run(str(stats_file(tmp_path / "s.json", 1, 1)), "--format", "markdown")
    assert result.returncode == 0  # no threshold: informational
    assert result.stdout.startswith("### ")
    assert "| mode | hits | misses | hit rate |" in result.stdout
    assert "`POST https://api.openai.com/v1/chat/completions?i=0`" in result.stdout


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (None, "stats file not found"),
        ('{"hits": 3, "misses"', "not valid JSON"),
        ("", "not valid JSON"),
        ("[1, 2]", "not a provider-cache stats file"),
        ('{"schema": 99, "hits": 1, "misses": 0}', "unknown stats schema 99"),
        (b"\xff\xfe\x00garbage", "cannot read stats file"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, content, reason):
    path = tmp_path / "stats.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    result = run(str(path), "--min-hit-rate", "0.9")
    assert result.returncode == 2
    assert result.stdout == "" and len(result.stderr.strip().splitlines()) == 1
    assert reason in result.stderr and "Traceback" not in result.stderr


def test_bad_option_and_unreachable_url_exit_2(tmp_path):
    for args in (["--min-hit-rate", "1.5"], ["--format", "yaml"], ["--url", "http://127.0.0.1:9"]):
        result = run(*args, cwd=tmp_path)
        assert result.returncode == 2, args
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_default_file_is_recordings_stats_json(tmp_path):
    (tmp_path / "recordings").mkdir()
    stats_file(tmp_path / "recordings" / "stats.json", 4, 0)
    result = run("--min-hit-rate", "1", cwd=tmp_path)
    assert result.returncode == 0 and "100.0%" in result.stdout


def test_url_reads_a_running_proxy(start_proxy, use_proxy, fake):
    proxy = start_proxy("record")
    use_proxy(proxy)
    with httpx.Client(timeout=30) as client:
        for content in "aab":
            client.post(
                "https://api.openai.com/v1/chat/completions",
                json={"model": "m", "messages": [{"role": "user", "content": content}]},
            )
    result = run("--url", proxy.url, "--min-hit-rate", "0.5", "--format", "json")
    assert result.returncode == 1  # 1 hit of 3
    assert json.loads(result.stdout)["hits"] == 1
    direct = run("--url", f"{proxy.url}/stats")  # not an endpoint URL: the proxy answers 4xx
    assert direct.returncode == 2


#: Issue 12: wrong types under the optional fields gave a traceback and exit 1 ("below").
WRONG_TYPES = {
    "by_host": [1],
    "missed": [{"key": 1}],
    "window": {"hits": "a"},
    "rate_limited": "x",
    "retry_after": "x",
    "mode": [],
    "missed_dropped": "x",
}


@pytest.mark.parametrize(("field", "value"), WRONG_TYPES.items(), ids=WRONG_TYPES.keys())
@pytest.mark.parametrize("fmt", ["text", "markdown"])
def test_a_wrong_type_exits_2_naming_the_file_and_the_field(tmp_path, field, value, fmt):
    path = stats_file(tmp_path / "s.json", 3, 1)
    path.write_text(json.dumps({**json.loads(path.read_text()), field: value}))
    result = run(str(path), "--min-hit-rate", "0.5", "--format", fmt)
    assert (result.returncode, result.stdout) == (2, ""), result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"{path}: field '{field}") and "is not" in result.stderr


def test_json_nested_too_deep_to_parse_exits_2(tmp_path):
    path = tmp_path / "s.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    result = run(str(path))
    assert (result.returncode, result.stdout) == (2, ""), result.stderr
    assert result.stderr == f"{path}: not valid JSON (nested too deeply)\n"


def test_min_lookups_fails_a_run_that_made_none(tmp_path):
    """SPEC §7: a client that bypassed the proxy leaves a stats file with no lookups, which
    passes as "nothing stale" unless a minimum is set."""
    empty = str(stats_file(tmp_path / "s.json", 0, 0))
    assert run(empty, "--min-hit-rate", "1.0").returncode == 0  # the default: no minimum
    result = run(empty, "--min-hit-rate", "1.0", "--min-lookups", "1")
    assert (result.returncode, result.stderr) == (1, "")
    assert result.stdout.splitlines()[0] == (
        "provider-cache: 0 provider lookups, fewer than the minimum 1:"
        " did the client bypass the proxy?"
    )
    markdown = run(empty, "--min-lookups", "1", "--format", "markdown")
    assert markdown.returncode == 1 and markdown.stdout.startswith("### ❌ provider-cache: 0 ")
    enough = run(str(stats_file(tmp_path / "t.json", 3, 0)), "--min-lookups", "3")
    assert enough.returncode == 0, enough.stdout


@pytest.mark.parametrize("value", ["-1", "1.5", "many"])
def test_a_bad_min_lookups_is_one_line_and_exit_2(tmp_path, value):
    result = run(str(stats_file(tmp_path / "s.json", 1, 0)), "--min-lookups", value)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.startswith("cache_stats.py: argument --min-lookups: ")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
