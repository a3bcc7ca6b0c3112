"""provider-cache as a team adds it to a project: a wheel, a fresh virtual environment in
another directory, and every command run from there (SPEC §1).

Tests talk to 127.0.0.1 only, so the fresh environment gets the wheel from a build of a
clean copy of this checkout (pip, --no-deps) and its dependencies from the project's own
environment (a .pth line), with mitmproxy's console scripts written from mitmproxy's entry
points as pip writes them. What the wheel itself declares is read from its metadata.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import site
import subprocess
import sys
import time
import urllib.request
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

from provider_cache.cli.proxyctl import CA_FILE, free_port
from provider_cache.core.names import ENDPOINT_STATS_URL
from tests.support.proxy import ROOT_DIR

RUNTIME = {"mitmproxy", "lmdb", "msgpack", "prometheus-client", "brotli", "backports.zstd"}
TOOL_CHAIN = {"pytest", "openai", "anthropic", "playwright", "ruff", "mypy"}


def run(*argv: str | Path, cwd: Path, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=180, **kw
    )


def clean_copy(dest: Path) -> Path:
    """The files of a clean clone: tracked ones and new ones not ignored."""
    listed = run(
        "git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", cwd=ROOT_DIR
    )
    if listed.returncode != 0:
        pytest.fail(f"not a git checkout: {listed.stderr.strip()}")
    for name in filter(None, listed.stdout.split("\0")):
        source = ROOT_DIR / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


def fresh_venv(path: Path, cwd: Path) -> tuple[Path, Path]:
    """A new venv whose dependencies come from this environment; (python, purelib)."""
    assert run(sys.executable, "-m", "venv", path, cwd=cwd).returncode == 0
    python = path / "bin" / "python"
    purelib = Path(
        run(
            python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))", cwd=cwd
        ).stdout.strip()
    )
    # After the venv's own site-packages on sys.path; its .pth files (an editable install of
    # this checkout among them) are not processed from there.
    (purelib / "zz_provider_cache_test_deps.pth").write_text(site.getsitepackages()[0] + "\n")
    write_console_scripts("mitmproxy", python)
    return python, purelib


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("install")
    source = clean_copy(work / "src")
    dist = work / "dist"
    built = run(
        sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
        "--disable-pip-version-check", "-w", dist, source, cwd=work,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout + built.stderr
    [wheel] = dist.glob("provider_cache-*.whl")
    venv = work / "venv"
    python, purelib = fresh_venv(venv, work)
    pip = run(
        python, "-m", "pip", "install", "--no-deps", "--no-index",
        "--disable-pip-version-check", wheel, cwd=work,
    )  # fmt: skip
    assert pip.returncode == 0, pip.stdout + pip.stderr
    elsewhere = work / "elsewhere"
    elsewhere.mkdir()
    return {"wheel": wheel, "venv": venv, "purelib": purelib, "cwd": elsewhere, "work": work}


def write_console_scripts(distribution: str, python: Path) -> None:
    """A distribution's console scripts in the venv's bin/, as pip writes them on install."""
    for ep in metadata.distribution(distribution).entry_points.select(group="console_scripts"):
        module, _, function = ep.value.partition(":")
        script = python.parent / ep.name
        script.write_text(
            f"#!{python}\nimport sys\nfrom {module} import {function}\nsys.exit({function}())\n"
        )
        script.chmod(0o755)


def test_site_packages_holds_provider_cache_and_no_addon_or_scripts(installed):
    names = {p.name for p in installed["purelib"].iterdir()}
    assert "provider_cache" in names
    assert not names & {"addon", "scripts", "tests", "benchmark"}
    shipped = zipfile.ZipFile(installed["wheel"]).namelist()
    tops = {n.split("/")[0] for n in shipped}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"provider_cache"}
    assert not [n for n in shipped if "bench" in n]  # the benchmark stays in the checkout
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in shipped)


def test_the_wheel_requires_the_runtime_only(installed):
    with zipfile.ZipFile(installed["wheel"]) as wheel:
        [name] = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
        text = wheel.read(name).decode()
    declared = re.findall(r"^Requires-Dist: ([A-Za-z0-9_.-]+)(.*)$", text, re.M)
    runtime = {n.lower() for n, rest in declared if "extra ==" not in rest}
    test_extra = {n.lower() for n, rest in declared if 'extra == "test"' in rest}
    assert runtime == RUNTIME
    assert test_extra >= TOOL_CHAIN
    own = {p.name.lower() for p in installed["purelib"].iterdir()}
    assert not own & TOOL_CHAIN  # nothing of the tool chain came with the install


@pytest.mark.parametrize("command", [["provider-cache"], ["python", "-m", "provider_cache"]])
def test_the_command_works_from_another_directory(installed, command):
    program = installed["venv"] / "bin" / command[0]
    done = run(program, *command[1:], "--help", cwd=installed["cwd"])
    assert done.returncode == 0 and "addon-path" in done.stdout, done.stderr
    python = installed["venv"] / "bin" / "python"
    where = run(python, "-c", "import provider_cache as p; print(p.__file__)", cwd=installed["cwd"])
    assert where.stdout.startswith(str(installed["purelib"]))  # the wheel's, not the checkout's


def stats_through(port: int, proc: subprocess.Popen, timeout: float = 30) -> dict:
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({"http": f"http://127.0.0.1:{port}"})
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[0]
        try:
            with opener.open(ENDPOINT_STATS_URL, timeout=2) as answer:
                return json.loads(answer.read())
        except OSError:
            time.sleep(0.1)
    raise AssertionError("the proxy did not answer")


def start(installed, *argv: str | Path, cache: str) -> tuple[subprocess.Popen, int, Path]:
    port, confdir = free_port(), installed["work"] / "conf"
    proc = subprocess.Popen(
        [str(a) for a in argv]
        + [
            "--listen-port",
            str(port),
            "--set",
            f"confdir={confdir}",
            "--set",
            f"cache_dir={cache}",
        ],
        cwd=installed["cwd"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")},
    )
    return proc, port, confdir


def stop(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    return out


def test_provider_cache_proxy_serves_the_endpoint_and_env_points_at_it(installed):
    bin_ = installed["venv"] / "bin"
    proc, port, confdir = start(installed, bin_ / "provider-cache", "proxy", cache="recordings")
    try:
        stats = stats_through(port, proc)
        exports = run(
            bin_ / "provider-cache", "env", "--proxy", f"http://127.0.0.1:{port}",
            "--confdir", confdir, cwd=installed["cwd"],
        )  # fmt: skip
    finally:
        log = stop(proc)
    assert stats["mode"] == "record" and stats["hits"] == 0, log
    assert exports.returncode == 0 and exports.stderr == "", exports.stderr
    assert f"export HTTPS_PROXY=http://127.0.0.1:{port}\n" in exports.stdout
    assert f"export SSL_CERT_FILE={confdir / CA_FILE}\n" in exports.stdout
    assert (confdir / CA_FILE).is_file()
    # A relative cache_dir is the caller's, as with mitmdump itself.
    assert (installed["cwd"] / "recordings" / "stats.json").is_file()


def test_mitmdump_loads_the_installed_addon_path(installed):
    bin_ = installed["venv"] / "bin"
    path = run(bin_ / "provider-cache", "addon-path", cwd=installed["cwd"]).stdout.strip()
    assert path.startswith(str(installed["purelib"])), path
    cache = installed["work"] / "cache-via-mitmdump"
    proc, port, _ = start(
        installed, bin_ / "mitmdump", "--set", "cache_mode=replay", "-s", path, cache=str(cache)
    )
    try:
        stats = stats_through(port, proc)
    finally:
        log = stop(proc)
    assert stats["mode"] == "replay", log
    assert (cache / "data.mdb").is_file()


def test_the_checkout_entry_script_needs_no_install(installed):
    """`mitmdump -s addon/cache.py` from a clean copy, with a mitmdump whose environment has
    no provider-cache installed: the script's own directory provides the package."""
    python, _ = fresh_venv(installed["work"] / "bare-venv", installed["work"])
    checkout = installed["work"] / "src"
    cache = installed["work"] / "cache-via-checkout"
    proc, port, _ = start(
        installed, python.parent / "mitmdump", "-s", checkout / "addon" / "cache.py",
        cache=str(cache),
    )  # fmt: skip
    try:
        stats = stats_through(port, proc)
    finally:
        log = stop(proc)
    assert stats["mode"] == "record", log
    assert run(python, "-c", "import provider_cache", cwd=installed["cwd"]).returncode == 1
