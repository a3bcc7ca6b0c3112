"""`recordings prune` against stores used by real mitmdump runs (SPEC §7, issue 12).

Only runs that made lookups and ended cleanly count; proxies that overlap in time are one
run; entries that arrived by merge, import or a --full rebuild are not "unused" in runs from
before they arrived; what prune removes is kept in a file that `import` restores.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from provider_cache.cli import rebuild
from provider_cache.cli.main import script_parser
from tests.conftest import PROVIDER_HOSTS
from tests.e2e.test_recordings_script import ask, keys_of, recordings
from tests.support import secrets
from tests.support.proxy import RESOLVE_ADDON, ROOT_DIR
from tests.support.suites import suite

RUN = ROOT_DIR / "scripts" / "cache_run.py"
#: Longer than the proxy's once-a-second flush of the hits it served.
FLUSHED = 1.5


def removed_lines(result: subprocess.CompletedProcess) -> list[str]:
    assert result.returncode == 0, result.stderr
    return [line for line in result.stdout.splitlines() if line.startswith("removing ")]


def key_of(cache_dir: Path, content: str) -> str:
    """The key of the recorded chat completion asking `content`."""
    for line in recordings(cache_dir, "ls", "--json").stdout.splitlines():
        summary = json.loads(line)
        shown = recordings(cache_dir, "show", summary["key"]).stdout
        if f'"content": "{content}"' in shown:
            return summary["key"]
    raise AssertionError(f"no entry asks {content!r}")


@pytest.fixture
def recorded(start_proxy, use_proxy, cache_dir) -> Path:
    """One counted run: a record run that asked three questions."""
    proxy = start_proxy("record")
    use_proxy(proxy)
    ask("alpha", "beta", "gamma")
    proxy.stop()
    return cache_dir


def replay_run(start_proxy, use_proxy, *contents: str) -> None:
    proxy = start_proxy("replay")
    use_proxy(proxy)
    assert ask(*contents) == ["hit"] * len(contents)
    proxy.stop()


def test_idle_proxy_starts_are_not_runs(recorded, start_proxy):
    for _ in range(5):
        start_proxy("replay").stop()  # no lookups: nothing is learnt about the entries
    for n in ("1", "3"):
        result = recordings(recorded, "prune", "--unused-runs", n)
        assert removed_lines(result) == [] and len(keys_of(recorded)) == 3, result.stdout
    assert "only 1 counted run" in result.stdout and "nothing removed" in result.stdout


def test_a_run_killed_after_its_lookups_does_not_count(recorded, start_proxy, use_proxy):
    proxy = start_proxy("replay")
    use_proxy(proxy)
    assert ask("alpha") == ["hit"]
    time.sleep(FLUSHED)  # its hit reached the usage log, but the run never ends cleanly
    proxy.stop(signal.SIGKILL)
    assert removed_lines(recordings(recorded, "prune", "--unused-runs", "1")) == []
    replay_run(start_proxy, use_proxy, "alpha")  # a clean run that uses one entry
    removed = removed_lines(recordings(recorded, "prune", "--unused-runs", "1"))
    assert len(removed) == 2 and len(keys_of(recorded)) == 1


def test_three_parallel_proxies_are_one_run(recorded, start_proxy, use_proxy):
    proxies = [start_proxy("replay") for _ in range(3)]  # all three alive at once
    for proxy, content in zip(proxies, ("alpha", "beta", "beta"), strict=True):
        use_proxy(proxy)
        assert ask(content) == ["hit"]
    for proxy in proxies:
        proxy.stop()
    gamma = key_of(recorded, "gamma")
    result = recordings(recorded, "prune", "--unused-runs", "1")
    assert [line.split()[1] for line in removed_lines(result)] == [gamma[:12]]
    assert "not hit in the last 1 counted run (run 2)" in result.stdout


def test_merged_entries_survive_a_prune_right_after_the_merge(start_proxy, use_proxy, tmp_path):
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    for shard, content in ((ours, "alpha"), (theirs, "delta")):
        proxy = start_proxy("record", cache_dir=str(shard))
        use_proxy(proxy)
        ask(content)
        proxy.stop()
    proxy = start_proxy("replay", cache_dir=str(ours))  # ours: run 2 hits alpha
    use_proxy(proxy)
    assert ask("alpha") == ["hit"]
    proxy.stop()
    assert recordings(ours, "merge", str(theirs)).returncode == 0
    assert removed_lines(recordings(ours, "prune", "--unused-runs", "1")) == []
    assert len(keys_of(ours)) == 2
    proxy = start_proxy("replay", cache_dir=str(ours))  # run 3: the merged entry is there
    use_proxy(proxy)
    assert ask("alpha") == ["hit"]
    proxy.stop()
    removed = removed_lines(recordings(ours, "prune", "--unused-runs", "1"))
    assert [line.split()[1] for line in removed] == [key_of(theirs, "delta")[:12]]


def test_older_than_prunes_by_recording_age(recorded, tmp_path):
    export = json.loads(recordings(recorded, "export").stdout)
    aged = export["entries"][0]
    aged["recorded_at"] -= 40 * 86400
    (tmp_path / "aged.json").write_text(json.dumps(export))
    copy = tmp_path / "copy"
    assert recordings(copy, "import", str(tmp_path / "aged.json")).returncode == 0
    assert removed_lines(recordings(copy, "prune", "--older-than", "41d")) == []
    result = recordings(copy, "prune", "--older-than", "30d")
    assert [line.split()[1] for line in removed_lines(result)] == [aged["key"][:12]]
    assert len(keys_of(copy)) == 2
    bad = recordings(copy, "prune", "--older-than", "30 days")
    assert bad.returncode == 2 and len(bad.stderr.splitlines()) == 1


def test_older_than_and_unused_runs_together_remove_only_entries_that_are_both(
    recorded, start_proxy, use_proxy
):
    replay_run(start_proxy, use_proxy, "alpha")
    both = recordings(recorded, "prune", "--unused-runs", "1", "--older-than", "1d")
    assert removed_lines(both) == []  # beta and gamma are unused, but all are young
    unused = recordings(recorded, "prune", "--unused-runs", "1", "--older-than", "0s")
    assert len(removed_lines(unused)) == 2 and len(keys_of(recorded)) == 1


def test_the_removed_entries_file_restores_them_byte_identically(
    recorded, start_proxy, use_proxy, tmp_path
):
    before = recordings(recorded, "export").stdout
    replay_run(start_proxy, use_proxy, "alpha")
    result = recordings(recorded, "prune", "--unused-runs", "1")
    assert len(removed_lines(result)) == 2
    hint = shlex.split(result.stdout.splitlines()[-1].partition("restore them with: ")[2])
    assert hint[:4] == ["recordings", "--cache-dir", str(recorded), "import"]
    kept = Path(hint[4])
    assert kept.parent == recorded and kept.name.startswith("pruned-") and kept.suffix == ".json"
    assert "pruned-*.json" in (recorded / ".gitignore").read_text()
    assert recordings(recorded, "export").stdout != before
    # The command as printed, from elsewhere: it names the store, not the default recordings/.
    imported = subprocess.run(
        [sys.executable, str(ROOT_DIR / "scripts" / "recordings.py"), *hint[1:]],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert imported.returncode == 0 and "2 added" in imported.stdout
    assert recordings(recorded, "export").stdout == before
    # Restored entries arrived now: the runs before cannot make them unused again.
    assert removed_lines(recordings(recorded, "prune", "--unused-runs", "1")) == []


def test_removed_to_names_the_file_and_a_failure_to_write_it_removes_nothing(recorded, tmp_path):
    target = tmp_path / "kept" / "pruned.json"
    result = recordings(recorded, "prune", "--older-than", "0s", "--removed-to", str(target))
    assert result.returncode == 2 and "cannot write" in result.stderr
    assert len(result.stderr.splitlines()) == 1 and len(keys_of(recorded)) == 3
    target.parent.mkdir()
    result = recordings(recorded, "prune", "--older-than", "0s", "--removed-to", str(target))
    assert len(removed_lines(result)) == 3 and keys_of(recorded) == []
    assert len(json.loads(target.read_text())["entries"]) == 3


def test_dry_run_writes_nothing(recorded, start_proxy, use_proxy, tmp_path):
    replay_run(start_proxy, use_proxy, "alpha")
    files = sorted(recorded.rglob("*"))
    # LMDB's lock files hold its reader table, which any reader updates; the rest must not change.
    digests = {
        p: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in files
        if p.is_file() and p.name != "lock.mdb"
    }
    target = tmp_path / "pruned.json"
    dry = recordings(
        recorded, "prune", "--unused-runs", "1", "--dry-run", "--removed-to", str(target)
    )
    assert dry.returncode == 0 and dry.stdout.count("would remove ") == 2
    assert "nothing removed (--dry-run)" in dry.stdout
    assert not target.exists() and sorted(recorded.rglob("*")) == files
    assert digests == {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in digests}


# --- a --full rebuild: its store arrives at the current run -----------------------------------


@pytest.fixture
def rebuild_args(tmp_path: Path, fake, cache_dir: Path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", secrets.OPENAI_KEY)

    def make(prompts: list[str], *options: str) -> list[str]:
        args = ["--cache-dir", str(cache_dir), "--confdir", str(tmp_path / "conf")]
        args += ["--script", str(RESOLVE_ADDON), "--force"]
        args += ["--set", f"ssl_verify_upstream_trusted_ca={fake.ca_path}"]
        for host in PROVIDER_HOSTS:
            args += ["--set", f"test_resolve={host}=127.0.0.1:{fake.port}"]
        return [*args, "--min-hit-rate", "1.0", *options, "--", *suite(tmp_path, prompts)]

    return make


def run_rebuild(argv: list[str]) -> int:
    return rebuild.main(script_parser("cache_rebuild").parse_args(argv), None, random.Random(0))


def test_a_full_rebuild_is_not_pruned_right_after_and_forgets_old_hits(rebuild_args, cache_dir):
    assert run_rebuild(rebuild_args(["stale", "kept"])) == 0  # record and verify: 2 runs
    assert run_rebuild(rebuild_args(["kept", "new"], "--full")) == 0
    assert removed_lines(recordings(cache_dir, "prune", "--unused-runs", "1")) == []
    listing = recordings(cache_dir, "ls").stdout.splitlines()
    assert listing[-1] == "2 entries"
    assert all("last hit never" in line for line in listing[:-1]), listing


# --- cache_run.py: an interrupted command's run does not count -------------------------------


@pytest.fixture
def cache_run_argv(tmp_path: Path, fake, cache_dir: Path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", secrets.OPENAI_KEY)

    def argv(mode: str, *command: str) -> list[str]:
        args = [sys.executable, str(RUN), "--mode", mode, "--cache-dir", str(cache_dir)]
        args += ["--confdir", str(tmp_path / "conf"), "--script", str(RESOLVE_ADDON)]
        args += ["--proxy-log", str(tmp_path / f"proxy-{mode}.log")]
        args += ["--set", f"ssl_verify_upstream_trusted_ca={fake.ca_path}"]
        for host in PROVIDER_HOSTS:
            args += ["--set", f"test_resolve={host}=127.0.0.1:{fake.port}"]
        return [*args, "--", *command]

    return argv


#: Asks "one" through the proxy, says so, then waits to be interrupted (or kills itself).
ASK_ONE = """\
import os, signal, sys, time
import openai
client = openai.OpenAI(max_retries=0)
client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "one"}])
print("asked", flush=True)
time.sleep(1.5)  # the proxy writes the hit to the usage log
if sys.argv[1] == "kill-self":
    os.kill(os.getpid(), signal.SIGKILL)
time.sleep(60)
"""


def test_a_command_killed_by_a_signal_or_a_terminated_run_does_not_count(
    cache_run_argv, tmp_path, cache_dir
):
    record = subprocess.run(
        cache_run_argv("record", *suite(tmp_path, ["one", "two"])), capture_output=True, timeout=120
    )
    assert record.returncode == 0, record.stderr
    script = tmp_path / "ask_one.py"
    script.write_text(ASK_ONE)
    killed = subprocess.run(
        cache_run_argv("replay", sys.executable, str(script), "kill-self"),
        capture_output=True,
        timeout=120,
    )
    assert killed.returncode != 0, killed.stderr
    assert removed_lines(recordings(cache_dir, "prune", "--unused-runs", "1")) == []

    run = subprocess.Popen(
        cache_run_argv("replay", sys.executable, str(script), "wait"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert run.stdout is not None and run.stdout.readline() == "asked\n"
        time.sleep(FLUSHED)
        os.kill(run.pid, signal.SIGTERM)  # a cancelled CI job
        _, err = run.communicate(timeout=60)
        assert run.returncode == 143, err
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
    result = recordings(cache_dir, "prune", "--unused-runs", "1")
    assert removed_lines(result) == [] and len(keys_of(cache_dir)) == 2
    assert "not hit in the last 1 counted run (run 1)" in result.stdout  # not runs 2, 3
