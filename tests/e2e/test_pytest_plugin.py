"""The pytest plugin (SPEC §12) in an application's own test session.

A sample application is written to a temporary directory with its own tests, which call
the real openai SDK; `pytest --provider-cache=record`, then `=replay` with a threshold, run
it in a child process of this environment (where provider-cache is installed, so the
plugin comes in through its entry point), against the fake provider. The proxy hears
which test runs, so the gate's report names the test that missed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PROVIDER_HOSTS
from tests.support import secrets
from tests.support.fake_provider import FakeProvider
from tests.support.proxy import RESOLVE_ADDON

PROMPTS = ["Translate good morning", "Translate hello", "Name three colours"]

APP_TESTS = """\
import openai
import pytest


def ask(prompt):
    client = openai.OpenAI(max_retries=0)
    answer = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{{"role": "user", "content": prompt}}]
    )
    return answer.choices[0].message.content


@pytest.mark.parametrize("prompt", {prompts!r})
def test_answers(prompt):
    assert ask(prompt) == "echo: " + prompt


def test_counts_its_own_lookups(provider_cache):
    ask("Counted by the fixture")
    counters = provider_cache.counters()
    assert counters["hits"] + counters["misses"] == 1, counters
    assert provider_cache.url.startswith("http://127.0.0.1:")


@pytest.mark.provider_live
def test_live():
    assert ask("Always asked live") == "echo: Always asked live"
"""


def write_app(root: Path, prompts: list[str]) -> None:
    (root / "tests").mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text('[project]\nname = "sample-app"\nversion = "0"\n')
    (root / "tests" / "test_app.py").write_text(APP_TESTS.format(prompts=prompts))


def run_pytest(root: Path, fake: FakeProvider, *args: str) -> subprocess.CompletedProcess[str]:
    # `--option=value`: pytest finds its rootdir before it knows plugin options, and takes
    # a path given as a separate argument for a test path.
    upstream = [f"--provider-cache-script={RESOLVE_ADDON}"]
    upstream += [f"--provider-cache-set=ssl_verify_upstream_trusted_ca={fake.ca_path}"]
    for host in PROVIDER_HOSTS:
        upstream += [f"--provider-cache-set=test_resolve={host}=127.0.0.1:{fake.port}"]
    env = os.environ | {"OPENAI_API_KEY": secrets.OPENAI_KEY}
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly"]
    return subprocess.run(
        [*argv, "--provider-cache-dir=rec", *upstream, *args, "tests/"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


def stats(root: Path) -> dict:
    return json.loads((root / "rec" / "stats.json").read_text())


@pytest.fixture
def recorded(tmp_path: Path, fake: FakeProvider) -> Path:
    root = tmp_path / "app"
    write_app(root, PROMPTS)
    done = run_pytest(root, fake, "--provider-cache=record")
    assert done.returncode == 0, done.stdout + done.stderr
    assert fake.served == len(PROMPTS) + 2  # the prompts, the fixture's, the live test's
    return root


def test_replay_passes_the_gate_and_the_live_test_is_not_counted(
    recorded: Path, fake: FakeProvider
) -> None:
    served = fake.served
    done = run_pytest(
        recorded, fake, "--provider-cache=replay", "--provider-cache-min-hit-rate=1.0"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "provider-cache" in done.stdout and "hit rate 100.0%" in done.stdout, done.stdout
    assert fake.served == served + 1  # only the live test reached the provider
    counted = stats(recorded)
    assert counted["hits"] == len(PROMPTS) + 1 and counted["misses"] == 0
    by_test = counted["by_test"]
    assert by_test["tests/test_app.py::test_answers[Translate hello]"]["hits"] == 1
    assert "tests/test_app.py::test_live" not in by_test


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["one-process", "xdist"])
def test_a_changed_prompt_fails_the_session_naming_its_test(
    recorded: Path, fake: FakeProvider, workers: list[str]
) -> None:
    write_app(recorded, ["Translate goodbye" if p == "Translate hello" else p for p in PROMPTS])
    done = run_pytest(
        recorded, fake, "--provider-cache=replay", "--provider-cache-min-hit-rate=1.0", *workers
    )
    assert done.returncode == 1, done.stdout + done.stderr
    summary = done.stdout[done.stdout.index("= provider-cache =") :]
    assert "below the threshold" in summary
    assert "test_answers[Translate goodbye]" in summary, summary
    assert "test_answers[Translate good morning]" not in summary
    counted = stats(recorded)
    if workers:
        assert counted["shards"] == 2  # one proxy per worker, gated on the sum
    # The recording of the old prompt is the one entry no request of the run used.
    assert counted["unused"]["count"] == 1, counted["unused"]
    (unused,) = counted["unused"]["keys"]
    stats_file = str(recorded / "rec" / "stats.json")
    flags = ["--fail-unused", "--max-age", "1d"]
    gate = subprocess.run(
        [sys.executable, "-m", "provider_cache", "stats", stats_file, *flags],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert gate.returncode == 1, gate.stdout + gate.stderr
    assert "1 unused entry (--fail-unused)" in gate.stdout and unused[:16] in gate.stdout
    assert "--max-age" not in gate.stdout.splitlines()[0]  # all recorded just now
    for path in recorded.rglob("*"):
        if path.is_file():
            assert secrets.OPENAI_KEY.encode() not in path.read_bytes(), path


def test_the_control_channel_refuses_anyone_without_the_token(
    recorded: Path, fake: FakeProvider
) -> None:
    """A test (or any client of the proxy) cannot pose as another test."""
    probe = recorded / "tests" / "test_probe.py"
    probe.write_text(
        "import json, os, urllib.request, urllib.error\n"
        "def test_probe():\n"
        "    proxy = os.environ['HTTPS_PROXY']\n"
        "    assert not any('CONTROL' in name for name in os.environ)\n"
        "    opener = urllib.request.build_opener(urllib.request.ProxyHandler({'http': proxy}))\n"
        "    request = urllib.request.Request('http://provider-cache.internal/test',\n"
        "        data=json.dumps({'test': 'someone else'}).encode())\n"
        "    request.add_header('x-provider-cache-control', 'a guess')\n"
        "    try:\n"
        "        opener.open(request, timeout=5)\n"
        "    except urllib.error.HTTPError as e:\n"
        "        assert e.code == 403\n"
        "    else:\n"
        "        raise AssertionError('the proxy took a message without the token')\n"
    )
    done = run_pytest(recorded, fake, "--provider-cache=replay", "-k", "probe")
    assert done.returncode == 0, done.stdout + done.stderr
