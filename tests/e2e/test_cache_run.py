"""scripts/cache_run.py with real client commands, and the simulated pull request of issue 3."""

from __future__ import annotations

import fcntl
import json
import os
import select
import signal
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from provider_cache.cli.job import Job
from tests.conftest import PROVIDER_HOSTS
from tests.support import secrets
from tests.support.fake_provider import FakeProvider
from tests.support.proxy import RESOLVE_ADDON, ROOT_DIR
from tests.support.secrets import files_containing_secrets
from tests.support.suites import suite

RUN = ROOT_DIR / "scripts" / "cache_run.py"
#: Loopback names the fake provider's certificate is valid for.
LOOPBACK_HOSTS = ("localhost", "127.0.0.1")
STATS = ROOT_DIR / "scripts" / "cache_stats.py"


@pytest.fixture
def cache_run(tmp_path: Path, fake: FakeProvider, cache_dir: Path, monkeypatch):
    """cache_run.py as a user runs it, plus the test-only upstream resolution."""
    monkeypatch.setenv("OPENAI_API_KEY", secrets.OPENAI_KEY)

    def run(
        mode: str,
        *command: str,
        gate: str | None = None,
        offline: bool = False,
        options: tuple[str, ...] = (),
    ):
        port = 9 if offline else fake.port
        args = [sys.executable, str(RUN), "--mode", mode, "--cache-dir", str(cache_dir), *options]
        args += ["--confdir", str(tmp_path / "conf"), "--script", str(RESOLVE_ADDON)]
        args += ["--proxy-log", str(tmp_path / f"proxy-{mode}.log")]
        args += ["--set", f"ssl_verify_upstream_trusted_ca={fake.ca_path}"]
        for host in PROVIDER_HOSTS:
            args += ["--set", f"test_resolve={host}=127.0.0.1:{port}"]
        if gate:
            args += ["--min-hit-rate", gate]
        return subprocess.run(
            [*args, "--", *command], capture_output=True, text=True, timeout=120, cwd=tmp_path
        )

    return run


def test_runs_a_python_client_and_exits_with_its_status(cache_run, tmp_path, fake, cache_dir):
    recorded = cache_run("record", *suite(tmp_path, ["one", "two"]))
    assert recorded.returncode == 0, recorded.stderr
    assert recorded.stdout.splitlines() == ["echo: one", "echo: two"]
    stats = json.loads((cache_dir / "stats.json").read_text())  # flushed on stop
    assert (stats["misses"], stats["recorded"]) == (2, 2)

    failing = cache_run("replay", sys.executable, "-c", "import sys; sys.exit(7)", offline=True)
    assert failing.returncode == 7
    assert fake.served == 2


def test_curl_and_node_variables_are_set(cache_run, tmp_path, fake):
    script = (
        'curl -sS -o /dev/null -w "%{http_code}" https://api.openai.com/v1/models;'
        ' echo " $NODE_EXTRA_CA_CERTS $HTTPS_PROXY"'
    )
    result = cache_run("record", "sh", "-c", script)
    code, ca, proxy = result.stdout.split()
    assert result.returncode == 0 and code == "200"
    assert ca == str(tmp_path / "conf" / "mitmproxy-ca-cert.pem") and Path(ca).is_file()
    assert proxy.startswith("http://127.0.0.1:")


#: Prints the x-provider-cache header of each URL, fetched with httpx configured by the
#: environment alone ("bypassed": the proxy never saw the request).
HTTPX_CLIENT = """\
import sys, httpx
for url in sys.argv[1:]:
    print(httpx.get(url, timeout=30).headers.get("x-provider-cache", "bypassed"))
"""


def test_loopback_hosts_named_in_cache_hosts_are_cached_for_httpx_and_curl(
    cache_run, tmp_path, fake, cache_dir
):
    """SPEC §7: a local model server or a test fake named in cache_hosts goes through the
    cache; in NO_PROXY, its requests bypassed the cache silently (and here failed: a client
    that trusts only the proxy's CA met the fake's own certificate)."""
    client = tmp_path / "client.py"
    client.write_text(HTTPX_CLIENT)
    by_name, by_address = (f"https://{host}:{fake.port}/v1/models" for host in LOOPBACK_HOSTS)
    curl = "curl -sS -o /dev/null -w '%header{x-provider-cache}\\n'"
    script = f'{sys.executable} {client} "$1" "$2" && {curl} "$1" && {curl} "$2"'
    options = ["--set", "cache_hosts=builtin"]
    for host in LOOPBACK_HOSTS:
        options += ["--set", f"cache_hosts={host}"]
    command = ["sh", "-c", script, "-", by_name, by_address]
    result = cache_run("record", *command, options=tuple(options))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.split() == ["miss", "miss", "hit", "hit"]  # httpx, then curl
    assert fake.served == 2
    stats = json.loads((cache_dir / "stats.json").read_text())
    assert (stats["hits"], stats["misses"], stats["recorded"]) == (2, 2, 2)


def test_bad_usage_and_missing_command_exit_with_one_line(cache_run, tmp_path):
    no_command = subprocess.run(
        [sys.executable, str(RUN), "--cache-dir", str(tmp_path / "c")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert no_command.returncode == 2 and "no command given" in no_command.stderr
    missing = cache_run("record", "definitely-not-a-command-xyz")
    assert missing.returncode == 127 and "command not found" in missing.stderr
    assert "Traceback" not in missing.stderr + no_command.stderr


def test_proxy_that_cannot_start_is_exit_2(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            str(RUN),
            "--cache-dir",
            str(tmp_path / "c"),
            "--confdir",
            str(tmp_path),
            "--set",
            "cache_mode=sometimes",
            "--",
            "true",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "cache_mode must be one of" in result.stderr and "Traceback" not in result.stderr


def test_proxy_log_in_a_missing_directory_is_one_line_and_exit_2(tmp_path):
    log = tmp_path / "logs" / "missing" / "proxy.log"
    argv = [sys.executable, str(RUN), "--cache-dir", str(tmp_path / "c")]
    argv += ["--confdir", str(tmp_path / "conf"), "--proxy-log", str(log), "--", "true"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout) == (2, ""), result.stderr
    assert result.stderr == f"cannot write the proxy log {log}: No such file or directory\n"
    assert "Traceback" not in result.stderr and not (tmp_path / "logs").exists()
    assert not (tmp_path / "c").exists()  # nothing started, nothing created


def test_simulated_pull_request_fails_the_gate_then_passes_after_re_recording(
    cache_run, tmp_path, fake, cache_dir
):
    prompts = ["summarise the report", "translate hello", "name three colours"]
    assert cache_run("record", *suite(tmp_path, prompts)).returncode == 0

    # The pull request changes one prompt; CI runs in replay mode behind the gate.
    changed = [prompts[0], "translate goodbye", prompts[2]]
    ci = cache_run("replay", *suite(tmp_path, changed), gate="1.0", offline=True)
    assert ci.returncode != 0
    report = subprocess.run(
        [sys.executable, str(STATS), str(cache_dir / "stats.json"), "--min-hit-rate", "1.0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert report.returncode == 1
    missed_lines = [line for line in report.stdout.splitlines() if "x POST " in line]
    assert len(missed_lines) == 1 and "api.openai.com/v1/chat/completions" in missed_lines[0]
    # Which request, and what differs from the closest recording: only that prompt.
    assert 'body $.messages[0].content: "translate hello" → "translate goodbye"' in report.stdout
    assert "summarise" not in report.stdout and "colours" not in report.stdout

    # The developer re-records; the same CI run now passes the gate.
    assert cache_run("record", *suite(tmp_path, changed)).returncode == 0
    ci_again = cache_run("replay", *suite(tmp_path, changed), gate="1.0", offline=True)
    assert ci_again.returncode == 0, ci_again.stdout + ci_again.stderr
    assert "100.0% meets the threshold 100.0%" in ci_again.stdout
    assert files_containing_secrets(cache_dir, *tmp_path.glob("proxy-*.log")) == []
    assert os.environ["OPENAI_API_KEY"] == secrets.OPENAI_KEY  # the key really was sent


def test_min_lookups_fails_a_command_that_bypassed_the_proxy(cache_run, tmp_path, fake):
    """The suite's client sent its requests elsewhere (here: none at all): with lookups
    required, the gate fails naming them, where "nothing is stale" passed."""
    passed = cache_run("replay", "true", gate="1.0", offline=True)
    assert passed.returncode == 0
    assert "no provider lookups were made: nothing is stale" in passed.stdout
    bypassed = cache_run("replay", "true", gate="1.0", offline=True, options=("--min-lookups", "1"))
    assert bypassed.returncode == 1, bypassed.stdout + bypassed.stderr
    assert bypassed.stdout.splitlines()[0] == (
        "provider-cache: 0 provider lookups, fewer than the minimum 1:"
        " did the client bypass the proxy?"
    )


def processes_mentioning(text: str, *, first: bool = False) -> list[int]:
    """Live processes whose command line contains `text` (or starts with it); not zombies."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if (cmdline.startswith(text) if first else text in cmdline) and state != "Z":
            found.append(int(proc.name))
    return found


def test_sigterm_stops_the_command_and_the_proxy_and_flushes_stats(tmp_path, cache_dir):
    sleep = f"sleep 31.{os.getpid()}"  # a command line no other process has
    run = subprocess.Popen(
        [
            sys.executable,
            str(RUN),
            "--cache-dir",
            str(cache_dir),
            "--confdir",
            str(tmp_path / "c"),
            "--",
            "sh",
            "-c",
            f"exec {sleep}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not processes_mentioning(sleep, first=True) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert processes_mentioning(sleep, first=True)  # the command runs
        assert len(processes_mentioning(str(cache_dir))) == 2  # cache_run and its mitmdump
        run.send_signal(signal.SIGTERM)  # a cancelled CI job
        _, err = run.communicate(timeout=60)
    finally:
        run.kill()
    assert run.returncode == 143 and "terminated" in err and "Traceback" not in err
    assert processes_mentioning(str(cache_dir)) == []
    assert processes_mentioning(sleep, first=True) == []
    assert json.loads((cache_dir / "stats.json").read_text())["schema"] == 1


def alive(pid: int) -> bool:
    """The process exists and is not a zombie (an orphan's is reaped by init)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_for_file(path: Path, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return path.read_text().strip()


@pytest.mark.parametrize(
    ("signum", "message"),
    [
        (signal.SIGTERM, "terminated"),  # a cancelled CI job
        (signal.SIGINT, "interrupted"),  # `kill -INT`: not from a terminal, so passed on
        (signal.SIGHUP, "terminated by SIGHUP"),  # the terminal of a background job closed
    ],
)
def test_a_signal_stops_the_commands_grandchildren_too(tmp_path, cache_dir, signum, message):
    """A test runner's workers are the command's children: SIGTERM to the command alone (a
    shell here, that dies of it) left them running."""
    pid_file, err_file = tmp_path / "grandchild.pid", tmp_path / "stderr"
    argv = [sys.executable, str(RUN), "--cache-dir", str(cache_dir)]
    argv += ["--confdir", str(tmp_path / "c"), "--"]
    argv += ["sh", "-c", f"sleep 60 > /dev/null 2>&1 & echo $! > {pid_file}; wait"]
    with err_file.open("w") as err:
        run = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err)
    grandchild = 0
    try:
        grandchild = int(wait_for_file(pid_file))
        assert alive(grandchild)
        run.send_signal(signum)
        assert run.wait(60) == 128 + signum
        deadline = time.monotonic() + 5  # killed: a moment for init to reap it
        while alive(grandchild) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(grandchild)
    finally:
        run.kill()
        if grandchild and alive(grandchild):
            os.kill(grandchild, signal.SIGKILL)
    assert err_file.read_text().endswith(f"\n{message}\n")
    assert processes_mentioning(str(cache_dir)) == []
    assert json.loads((cache_dir / "stats.json").read_text())["schema"] == 1  # flushed


def test_a_group_that_ignores_sigterm_is_killed_after_the_grace(tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    script = f"trap '' TERM; sleep 60 & echo $! > {pid_file}; wait; wait"
    job = Job(["sh", "-c", script], dict(os.environ), own_group=True, grace=0.5)
    grandchild = int(wait_for_file(pid_file))
    started = time.monotonic()
    job.stop(signal.SIGTERM)
    took = time.monotonic() - started
    deadline = time.monotonic() + 5
    while alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(grandchild) and job.proc.returncode == -signal.SIGKILL
    assert 0.5 <= took < 3


def test_a_job_at_the_terminal_stays_in_its_foreground_group():
    """There Ctrl-C reaches all of the command's processes from the terminal itself, and the
    command can read the terminal (a background group reading it would be stopped)."""
    shared = Job(["sleep", "30"], dict(os.environ), own_group=False)
    own = Job(["sleep", "30"], dict(os.environ), own_group=True)
    try:
        assert os.getpgid(shared.proc.pid) == os.getpgrp()
        assert os.getpgid(own.proc.pid) == own.proc.pid
    finally:
        shared.stop(signal.SIGTERM)
        own.stop(signal.SIGTERM)
    assert shared.wait() == own.wait() == 128 + signal.SIGTERM  # as a shell reports it


def test_ctrl_c_at_a_terminal_stops_the_command_its_children_and_the_proxy(tmp_path, cache_dir):
    """cache_run as a user runs it at a prompt: session leader of a terminal, in its
    foreground. The command sees the terminal as its own; Ctrl-C ends all of it."""
    pid_file = tmp_path / "grandchild.pid"
    command = (
        "import os, subprocess, sys, time\n"
        "print('foreground' if os.tcgetpgrp(0) == os.getpgrp() else 'background', flush=True)\n"
        f"open({str(pid_file)!r}, 'w').write(str(subprocess.Popen(['sleep', '60']).pid))\n"
        "try:\n"
        "    time.sleep(60)\n"
        "except KeyboardInterrupt:\n"
        "    sys.exit('the command got Ctrl-C')\n"
    )
    argv = [
        sys.executable,
        str(RUN),
        "--cache-dir",
        str(cache_dir),
        "--confdir",
        str(tmp_path / "c"),
    ]
    argv += ["--", sys.executable, "-c", command]
    leader, terminal = os.openpty()
    run = subprocess.Popen(
        argv,
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        start_new_session=True,
        preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
    )
    os.close(terminal)
    grandchild = 0
    try:
        grandchild = int(wait_for_file(pid_file))
        os.write(leader, b"\x03")  # Ctrl-C
        assert run.wait(60) == 130
        output = read_all(leader)
        deadline = time.monotonic() + 5
        while alive(grandchild) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(grandchild)
    finally:
        run.kill()
        os.close(leader)
        if grandchild and alive(grandchild):
            os.kill(grandchild, signal.SIGKILL)
    assert output.splitlines()[1:] == ["foreground", "^Cthe command got Ctrl-C", "interrupted"]
    assert processes_mentioning(str(cache_dir)) == []
    assert json.loads((cache_dir / "stats.json").read_text())["schema"] == 1


def read_all(fd: int) -> str:
    """What a terminal's other end has to read, without blocking."""
    chunks = []
    while select.select([fd], [], [], 0.5)[0]:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: no process has the terminal open any more
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def test_kill_9_of_the_command_leaves_no_proxy_behind(tmp_path, cache_dir):
    """`kill -9` gives cache_run no chance to clean up; its mitmdump must still go (it gets
    SIGTERM when its parent dies, and flushes its stats)."""
    sleep = f"sleep 32.{os.getpid()}"
    run = subprocess.Popen(
        [sys.executable, str(RUN), "--cache-dir", str(cache_dir), "--confdir", str(tmp_path / "c"),
         "--", "sh", "-c", f"exec {sleep}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not processes_mentioning(sleep, first=True) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(processes_mentioning(str(cache_dir))) == 2  # cache_run and its mitmdump
        run.send_signal(signal.SIGKILL)
        run.wait(10)
        deadline = time.monotonic() + 30
        while processes_mentioning(str(cache_dir)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert processes_mentioning(str(cache_dir)) == []
        assert json.loads((cache_dir / "stats.json").read_text())["schema"] == 1
    finally:
        for pid in processes_mentioning(sleep, first=True):  # the orphaned command: ours
            os.kill(pid, signal.SIGKILL)
