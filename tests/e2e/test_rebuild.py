"""cache_rebuild.py against a provider that fails the first attempts, with time injected.

The proxies, the client command and LMDB are real; only the clock is fake, so
the backoff schedule is exact and no test sleeps.
"""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from provider_cache.cli import rebuild
from provider_cache.cli.main import script_parser
from provider_cache.storage import cachedir
from provider_cache.storage.store import Store
from tests.conftest import PROVIDER_HOSTS
from tests.support import secrets
from tests.support.proxy import RESOLVE_ADDON, ROOT_DIR
from tests.support.suites import suite

SCRIPT = ROOT_DIR / "scripts" / "cache_rebuild.py"


class FakeClock:
    def __init__(self, start: float = 1_800_000_000.0):
        self.at = start
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.at

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.at += seconds


@pytest.fixture
def args_for(tmp_path: Path, fake, cache_dir: Path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", secrets.OPENAI_KEY)

    def make(prompts: list[str], *options: str) -> list[str]:
        args = ["--cache-dir", str(cache_dir), "--confdir", str(tmp_path / "conf")]
        args += ["--script", str(RESOLVE_ADDON)]
        args += ["--set", f"ssl_verify_upstream_trusted_ca={fake.ca_path}"]
        args += [
            a for h in PROVIDER_HOSTS for a in ("--set", f"test_resolve={h}=127.0.0.1:{fake.port}")
        ]
        return [*args, *options, "--", *suite(tmp_path, prompts)]

    return make


def run_rebuild(argv: list[str], clock: FakeClock, seed: int = 0) -> int:
    return rebuild.main(script_parser("cache_rebuild").parse_args(argv), clock, random.Random(seed))


def state(cache_dir: Path) -> dict:
    return json.loads((cache_dir / cachedir.REBUILD_STATE).read_text())


def keys_of(cache_dir: Path) -> set[str]:
    with Store(cache_dir, readonly=True) as store:
        return {k.decode() for k, _ in store.items()}


def test_backoff_schedule_respects_retry_after_and_verifies(args_for, fake, cache_dir, capsys):
    clock = FakeClock()
    assert run_rebuild(args_for(["a", "b"], "--min-hit-rate", "1.0"), clock) == 0
    assert fake.served == 2 and clock.sleeps == []

    # A third prompt: upstream answers it 429 (retry-after 7), then 500, then properly.
    fake.fail_next = [(429, {"retry-after": "7"}), (500, {})]
    argv = args_for(["a", "b", "c"], "--min-hit-rate", "1.0", "--base-delay", "4", "--factor", "2")
    assert run_rebuild(argv, clock) == 0

    first, second = clock.sleeps
    assert first == 7.0  # the provider's retry-after is a floor under the jittered delay
    assert 0 <= second <= 8.0  # full jitter within base·factor after the second failure
    assert fake.served == 2 + 3  # only "c" went upstream, once per attempt
    saved = state(cache_dir)
    assert saved["failures"] == 0 and saved["next_allowed_at"] is None
    assert saved["last_hit_rate"] == 1.0
    kinds = [h["kind"] for h in saved["history"]]
    assert kinds[-4:] == ["check", "attempt 1", "attempt 2", "attempt 3"]
    assert [round(h["hit_rate"], 3) for h in saved["history"][-4:]] == [0.667, 0.667, 0.667, 1.0]
    out = capsys.readouterr().out
    assert "providers rate-limited 1 requests (retry-after 7.0)" in out
    assert "rebuilt and verified on attempt 3: hit rate 100.0%" in out


def test_backoff_state_persists_across_invocations(args_for, fake, cache_dir, capsys):
    clock = FakeClock()
    assert run_rebuild(args_for(["a"], "--min-hit-rate", "1.0"), clock) == 0
    fake.fail_next = [(500, {})] * 2
    argv = args_for(
        ["a", "b"], "--min-hit-rate", "1.0", "--max-attempts", "1", "--base-delay", "100"
    )

    assert run_rebuild(argv, clock) == 1  # attempt fails; backoff saved
    saved = state(cache_dir)
    assert saved["failures"] == 1 and saved["next_allowed_at"] > clock.now()
    served = fake.served

    clock.at += 1  # a CI job a second later: inside the window
    assert run_rebuild(argv, clock) == 1
    assert fake.served == served  # nothing ran
    assert (
        "in backoff after 1 failed attempt(s); next rebuild allowed at" in capsys.readouterr().out
    )

    clock.at = saved["next_allowed_at"] + 1  # after the window: tries again, fails again
    assert run_rebuild(argv, clock) == 1
    again = state(cache_dir)
    assert again["failures"] == 2
    assert again["next_allowed_at"] - clock.now() <= 200  # the window grew: base·factor

    clock.at = again["next_allowed_at"] + 1  # the provider has recovered
    assert run_rebuild(argv, clock) == 0
    assert state(cache_dir)["failures"] == 0


def test_full_rebuild_swaps_in_a_verified_store_only(args_for, fake, cache_dir):
    clock = FakeClock()
    assert run_rebuild(args_for(["stale", "kept"], "--min-hit-rate", "1.0"), clock) == 0
    assert len(keys_of(cache_dir)) == 2

    assert run_rebuild(args_for(["kept"], "--min-hit-rate", "1.0", "--full"), clock) == 0
    assert len(keys_of(cache_dir)) == 1  # rebuilt from scratch: the stale entry is gone
    fresh = cache_dir.parent / f".{cache_dir.name}.rebuild"
    assert not fresh.exists()

    before = hashlib.sha256((cache_dir / "data.mdb").read_bytes()).hexdigest()
    fake.fail_next = [(500, {})] * 4
    argv = args_for(["kept", "new"], "--min-hit-rate", "1.0", "--full", "--max-attempts", "1")
    assert run_rebuild(argv, clock) == 1
    after = hashlib.sha256((cache_dir / "data.mdb").read_bytes()).hexdigest()
    assert after == before and not fresh.exists()  # the old store was never touched


def test_one_command_heals_then_a_second_run_does_nothing(args_for, fake, cache_dir, tmp_path):
    """The issue's acceptance scenario, through the real script."""

    def cli_run(prompts: list[str]) -> subprocess.CompletedProcess:
        argv = [sys.executable, str(SCRIPT), *args_for(prompts, "--min-hit-rate", "1.0")]
        return subprocess.run(argv, capture_output=True, text=True, timeout=120)

    assert cli_run(["a"]).returncode == 0
    healed = cli_run(["a", "b"])  # the suite changed: the gate would fail
    assert healed.returncode == 0, healed.stdout + healed.stderr
    assert "rebuilt and verified on attempt 1: hit rate 100.0%" in healed.stdout
    # The record run's own hit rate is the store's before it recorded (50%): not quoted.
    assert "attempt 1/3 record: command exited 0; recorded 1 of 1 misses (1 hits)" in healed.stdout
    assert "50.0%" not in healed.stdout.partition("attempt 1/3 record:")[2]
    served = fake.served
    second = cli_run(["a", "b"])
    assert second.returncode == 0
    assert "the cache meets the threshold: nothing to rebuild (last rebuild " in second.stdout
    assert fake.served == served


def test_bad_usage_exits_2(tmp_path):
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--", "true"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2 and "--min-hit-rate" in result.stderr
    assert "Traceback" not in result.stderr


def bare_args(tmp_path: Path, cache_dir: Path, *options: str) -> list[str]:
    """For commands that make no provider request: no upstream to resolve."""
    return ["--cache-dir", str(cache_dir), "--confdir", str(tmp_path / "conf"), *options]


def test_a_command_that_fails_before_any_lookup_does_not_pass(tmp_path, cache_dir, capsys):
    """Issue 12: `rebuild -- false` said "hit rate 100.0%" and exited 0."""
    argv = bare_args(tmp_path, cache_dir, "--min-hit-rate", "1.0", "--max-attempts", "1")
    clock = FakeClock()
    assert run_rebuild([*argv, "--", "false"], clock) == 1
    out = capsys.readouterr().out
    assert "check: command exited 1; no provider lookups" in out
    assert "attempt failed: the command exited 1 before any provider lookup" in out
    assert "100.0%" not in out and "nothing to rebuild" not in out
    assert state(cache_dir)["failures"] == 1

    # The same command succeeding, still without lookups, has nothing stale: it passes.
    assert run_rebuild([*argv, "--force", "--", "true"], clock) == 0
    out = capsys.readouterr().out
    assert "the cache meets the threshold: nothing to rebuild" in out
    assert out.endswith(": no provider lookups, and the command succeeded\n")


def test_min_lookups_fails_a_rebuild_whose_runs_made_none(tmp_path, cache_dir, capsys):
    """A command whose client bypassed the proxy (here `true`: no request at all) passed as
    "nothing to rebuild"; with lookups required, every run falls short and says why."""
    argv = bare_args(tmp_path, cache_dir, "--min-hit-rate", "1.0", "--max-attempts", "1")
    assert run_rebuild([*argv, "--min-lookups", "1", "--", "true"], FakeClock()) == 1
    out = capsys.readouterr().out
    assert "check: command exited 0; no provider lookups" in out
    assert (
        "attempt failed: 0 provider lookups, fewer than --min-lookups 1:"
        " did the client bypass the proxy? (1 consecutive failure(s))"
    ) in out
    assert "nothing to rebuild" not in out and "verified on" not in out


@pytest.mark.parametrize(
    ("option", "value", "minimum"),
    [
        ("--max-attempts", "0", 1),
        ("--base-delay", "-1", 0),
        ("--max-delay", "-5", 0),
        ("--factor", "0", 1),
    ],
)
def test_a_bad_backoff_option_is_one_line_and_exit_2_before_anything_runs(
    tmp_path, cache_dir, option, value, minimum
):
    """Issue 13: `--max-attempts 0` gave up at once ("after 0 attempt(s)"); a negative delay
    was taken as none."""
    argv = [sys.executable, str(SCRIPT), *bare_args(tmp_path, cache_dir, "--min-hit-rate", "1")]
    result = subprocess.run(
        [*argv, option, value, "--", "true"], capture_output=True, text=True, timeout=60
    )
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        f"cache_rebuild.py: argument {option}: must be {minimum} or more: {value!r} (see --help)\n"
    )
    assert not cache_dir.exists()  # nothing ran


def test_a_wrong_typed_backoff_state_is_ignored_with_one_warning(tmp_path, cache_dir, capsys):
    cache_dir.mkdir()
    for content in ('{"schema": 1, "failures": "x"}', "[1, 2]", '{"schema": 1, "history": [1]}'):
        (cache_dir / cachedir.REBUILD_STATE).write_text(content)
        argv = bare_args(tmp_path, cache_dir, "--min-hit-rate", "1.0", "--", "true")
        assert run_rebuild(argv, FakeClock()) == 0
        out = capsys.readouterr().out
        assert out.count("ignoring unreadable backoff state") == 1
        assert state(cache_dir)["failures"] == 0  # replaced by a good one


def test_two_full_rebuilds_of_one_store_do_not_run_at_once(tmp_path, cache_dir):
    """Issue 12: the second one removed the first one's fresh store under it (a traceback)."""
    started, release = tmp_path / "started", tmp_path / "release"
    waiting = (
        "import pathlib, sys, time\n"
        f"pathlib.Path({str(started)!r}).touch()\n"
        "deadline = time.monotonic() + 60\n"
        f"while not pathlib.Path({str(release)!r}).exists() and time.monotonic() < deadline:\n"
        "    time.sleep(0.05)\n"
    )
    options = ("--min-hit-rate", "1.0", "--full", "--max-attempts", "1")
    rebuild_argv = [sys.executable, str(SCRIPT), *bare_args(tmp_path, cache_dir, *options)]
    first = subprocess.Popen(
        [*rebuild_argv, "--", sys.executable, "-c", waiting],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not started.exists() and time.monotonic() < deadline and first.poll() is None:
            time.sleep(0.05)
        assert started.exists(), first.communicate(timeout=60)
        second = subprocess.run(
            [*rebuild_argv, "--", "true"], capture_output=True, text=True, timeout=120
        )
        release.touch()
        out, err = first.communicate(timeout=120)
    finally:
        release.touch()
        if first.poll() is None:
            first.kill()
            first.wait()
    assert (second.returncode, second.stdout) == (1, ""), second.stdout + second.stderr
    assert second.stderr == (
        f"another rebuild of {cache_dir} is running (pid {first.pid}): not starting a second"
        " one; run it again when that one has finished\n"
    )
    assert first.returncode == 0, out + err
    assert "swapped the verified fresh store into" in out and "Traceback" not in err
    assert sorted(p.name for p in cache_dir.parent.iterdir() if p.name.startswith(".")) == []
