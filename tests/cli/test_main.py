"""The `provider-cache` command, in process: help, version, one-line failures, env, addon-path."""

from __future__ import annotations

import json
import re
import runpy
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import provider_cache
from provider_cache.cli import main as cli
from provider_cache.cli.proxyctl import CA_FILE, CA_VARS, PROXY_VARS
from provider_cache.core.stats import Stats

NORMALIZED = {"headers": [], "query": [], "body_kind": "json", "body": b"{}"}


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = cli.main(list(argv))
    except SystemExit as e:  # --help and --version exit through argparse
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_version_is_the_package_version(capsys):
    assert run(capsys, "--version") == (0, f"provider-cache {provider_cache.__version__}\n", "")


def test_help_lists_every_subcommand(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0
    for name in ("proxy", "web", "run", "stats", "rebuild", "recordings", "env", "addon-path"):
        assert re.search(rf"^    {name}\b", out, re.M)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "the following arguments are required: COMMAND"),
        (["serve"], "invalid choice: 'serve'"),
        (["stats", "--min-hit-rate", "2"], "must be between 0 and 1"),
        (["run", "--mode", "offline", "--", "true"], "invalid choice: 'offline'"),
    ],
)
def test_bad_usage_is_one_line_and_exit_2(capsys, argv, message):
    code, out, err = run(capsys, *argv)
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and message in err and err.startswith("provider-cache")


def test_addon_path_is_a_mitmproxy_script_defining_the_addons(capsys):
    code, out, _ = run(capsys, "addon-path")
    path = Path(out.strip())
    assert code == 0 and path.is_absolute() and path.is_file()
    assert path.parent == Path(provider_cache.__file__).parent  # shipped inside the package
    assert "addons" in runpy.run_path(str(path))


def test_env_without_a_ca_says_so_in_one_line(capsys, tmp_path):
    code, out, err = run(capsys, "env", "--confdir", str(tmp_path / "nowhere"))
    assert (code, out) == (2, "")
    assert (
        err == f"no mitmproxy CA at {tmp_path / 'nowhere' / CA_FILE}: start the proxy once "
        "(provider-cache proxy) or give its --confdir\n"
    )


def test_env_prints_exports_a_shell_can_evaluate(capsys, tmp_path):
    confdir = tmp_path / "conf with space"
    confdir.mkdir()
    (confdir / CA_FILE).write_text("not checked here")
    code, out, err = run(capsys, "env", "--confdir", str(confdir), "--proxy", "http://127.0.0.1:9")
    assert code == 0
    assert "no provider-cache proxy answers at http://127.0.0.1:9" in err  # nothing listens
    shell = f"{out}\nenv"
    seen = subprocess.run(["sh", "-c", shell], capture_output=True, text=True, check=True).stdout
    values = dict(line.split("=", 1) for line in seen.splitlines() if "=" in line)
    assert {values[name] for name in PROXY_VARS} == {"http://127.0.0.1:9"}
    assert {values[name] for name in CA_VARS} == {str(confdir / CA_FILE)}
    assert all(line.startswith("export ") for line in out.splitlines())
    assert shlex.quote(str(confdir / CA_FILE)) in out


def test_python_dash_m_is_the_same_command():
    done = subprocess.run(
        [sys.executable, "-m", "provider_cache", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode, done.stdout) == (0, f"provider-cache {provider_cache.__version__}\n")


def test_each_companion_script_is_a_subcommand():
    scripts = {c.script for c in cli.COMMANDS.values() if c.script}
    shims = {p.stem for p in (Path(__file__).parents[2] / "scripts").glob("*.py")} - {"bench"}
    assert scripts == shims == {"cache_run", "cache_stats", "cache_rebuild", "recordings"}


def test_the_gate_script_needs_only_the_standard_library(tmp_path):
    """A CI step may run scripts/cache_stats.py with any python3: no site-packages at all
    (-S), so neither msgpack nor LMDB nor mitmproxy can be imported."""
    stats = Stats(mode="replay", window_size=10)
    stats.hit("api.openai.com")
    stats.miss("api.openai.com", "POST", "https://api.openai.com/v1/x", "k" * 64, NORMALIZED)
    path = tmp_path / "stats.json"
    path.write_text(json.dumps(stats.snapshot()))
    script = Path(__file__).parents[2] / "scripts" / "cache_stats.py"
    done = subprocess.run(
        [sys.executable, "-S", str(script), str(path), "--min-hit-rate", "0.9"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr  # 50% is below 90%: judged, not crashed
    assert "hit rate 50.0% is below the threshold 90.0%" in done.stdout
