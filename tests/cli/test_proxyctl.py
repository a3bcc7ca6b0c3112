"""The managed mitmdump's command line and its clients' environment (no process is started)."""

from __future__ import annotations

import os
import stat
import sys
from collections import Counter
from pathlib import Path

import pytest
from mitmproxy.tools import main as mitmproxy_main

from provider_cache.cli import proxyctl
from provider_cache.cli.proxyctl import (
    ADDON,
    CA_FILE,
    CA_VARS,
    PROXY_VARS,
    ManagedProxy,
    client_env,
    find_program,
)

URL = "http://127.0.0.1:8123"
#: NO_PROXY's loopback entries. Never `[::1]`: with it in NO_PROXY, httpx.Client() raises.
ALL_LOOPBACK = "localhost,127.0.0.1,::1"

# --- find_program ----------------------------------------------------------------------------


def test_the_console_script_beside_the_interpreter_is_used() -> None:
    beside = Path(sys.executable).parent / "mitmdump"
    if not (beside.is_file() and os.access(beside, os.X_OK)):
        pytest.skip("this interpreter has no mitmdump console script beside it")
    assert find_program("mitmdump") == [str(beside)]


def test_a_tool_not_beside_the_interpreter_runs_through_this_interpreter() -> None:
    """Never another environment's mitmproxy found on PATH."""
    command = find_program("no-such-mitm-tool")
    assert command[0] == sys.executable
    assert command[1] == "-c"
    assert command[3:] == ["no-such-mitm-tool"]


def test_the_launcher_looks_the_tool_up_in_mitmproxys_main_and_passes_on_the_rest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`python -c LAUNCHER TOOL ARGS` run in this process, with a tool name mitmproxy does
    not have, so nothing starts: the name is taken off argv and looked up in mitmproxy's
    own entry points, and the tool would see only its own arguments."""
    code = find_program("no-such-mitm-tool")[2]
    monkeypatch.setattr(sys, "argv", ["-c", "no_such_entry_point", "--version"])
    with pytest.raises(AttributeError, match=r"mitmproxy\.tools\.main.*no_such_entry_point"):
        exec(compile(code, "<launcher>", "exec"), {})
    assert sys.argv == ["-c", "--version"]


@pytest.mark.parametrize("tool", ["mitmdump", "mitmweb"])
def test_mitmproxys_main_has_an_entry_point_for_each_tool(tool: str) -> None:
    assert callable(getattr(mitmproxy_main, tool))


@pytest.fixture
def fake_interpreter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An interpreter path in tmp_path, so that what lies beside it can be chosen."""
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    monkeypatch.setattr(sys, "executable", str(bin_dir / "python"))
    return bin_dir


def test_an_executable_script_beside_the_interpreter_is_chosen(fake_interpreter: Path) -> None:
    script = fake_interpreter / "mitmweb"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    assert find_program("mitmweb") == [str(script)]


def test_a_file_beside_that_cannot_be_executed_is_passed_over(fake_interpreter: Path) -> None:
    script = fake_interpreter / "mitmweb"
    script.write_text("not a program\n")
    script.chmod(stat.S_IRUSR | stat.S_IWUSR)
    assert find_program("mitmweb") == [
        str(fake_interpreter / "python"),
        "-c",
        find_program("other")[2],
        "mitmweb",
    ]


def test_a_directory_beside_is_passed_over(fake_interpreter: Path) -> None:
    (fake_interpreter / "mitmdump").mkdir()
    assert find_program("mitmdump")[:2] == [str(fake_interpreter / "python"), "-c"]


# --- client_env ------------------------------------------------------------------------------


def test_client_env_points_every_client_at_the_proxy_and_its_ca(tmp_path: Path) -> None:
    ca = tmp_path / "confdir" / CA_FILE
    env = client_env(URL, ca)
    assert {name: env[name] for name in PROXY_VARS} == dict.fromkeys(
        ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"), URL
    )
    assert {name: env[name] for name in CA_VARS} == dict.fromkeys(
        ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "NODE_EXTRA_CA_CERTS"), str(ca)
    )
    assert env["NODE_USE_ENV_PROXY"] == "1"
    assert env["PROVIDER_CACHE_PROXY"] == URL
    assert env["NO_PROXY"] == env["no_proxy"] == ALL_LOOPBACK
    assert set(env) == {
        *PROXY_VARS,
        *CA_VARS,
        "NO_PROXY",
        "no_proxy",
        "NODE_USE_ENV_PROXY",
        "PROVIDER_CACHE_PROXY",
    }


def test_client_env_keeps_the_callers_no_proxy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NO_PROXY", "corp.internal,.svc")
    env = client_env(URL, tmp_path / CA_FILE)
    assert env["NO_PROXY"] == env["no_proxy"] == f"corp.internal,.svc,{ALL_LOOPBACK}"


def test_client_env_with_an_empty_no_proxy_has_no_leading_comma(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NO_PROXY", "")
    assert client_env(URL, tmp_path / CA_FILE)["NO_PROXY"] == ALL_LOOPBACK


def test_client_env_keeps_a_lowercase_no_proxy_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """urllib (and requests) read `no_proxy` first: a caller may have set only that one."""
    monkeypatch.setenv("no_proxy", "corp.internal")
    monkeypatch.setenv("NO_PROXY", "corp.internal,.svc")
    assert client_env(URL, tmp_path / CA_FILE)["no_proxy"] == f"corp.internal,.svc,{ALL_LOOPBACK}"


@pytest.mark.parametrize(
    ("cache_hosts", "no_proxy"),
    [
        ([], ALL_LOOPBACK),
        (["builtin", "llm.internal.example"], ALL_LOOPBACK),
        (["builtin", "localhost"], "127.0.0.1,::1"),
        (["LocalHost."], "127.0.0.1,::1"),  # as the proxy compares hosts
        (["127.0.0.1"], "localhost,::1"),
        (["::1"], "localhost,127.0.0.1"),
        (["127.0.0.*"], "localhost,::1"),  # a glob that matches one
        (["*"], ""),  # every host is cached: none of them may bypass the proxy
    ],
)
def test_loopback_hosts_named_in_cache_hosts_stay_proxied(
    tmp_path: Path, cache_hosts: list[str], no_proxy: str
) -> None:
    """SPEC §7: a local model server or test fake named in cache_hosts is to be cached; in
    NO_PROXY its requests would bypass the cache silently."""
    options = ["cache_mode=replay", *(f"cache_hosts={host}" for host in cache_hosts)]
    env = ManagedProxy(cache_dir=tmp_path, options=options, port=8555).client_env()
    assert env["NO_PROXY"] == env["no_proxy"] == no_proxy


def test_the_callers_no_proxy_entries_that_cover_a_cached_loopback_host_are_left_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever form exempts the host in some client: a name (curl and Node also exempt
    `.name`), a `host:port` (requests, Node), an IP network (curl, requests)."""
    kept = "corp.internal,[::1]:11434,10.0.0.0/8"
    covering = "LOCALHOST,localhost:11434,.localhost,*.localhost,127.0.0.0/8,127.0.0.1:8000,*"
    monkeypatch.setenv("NO_PROXY", f"{kept},{covering}")
    options = ["cache_hosts=localhost", "cache_hosts=127.0.0.1"]
    env = ManagedProxy(cache_dir=tmp_path, options=options, port=8555).client_env()
    assert env["NO_PROXY"] == f"{kept},::1"


def test_a_bad_cache_hosts_value_leaves_the_loopback_exemptions_as_they_are(
    tmp_path: Path,
) -> None:
    """The proxy refuses it at start-up; the clients' variables are not where to fail."""
    proxy = ManagedProxy(cache_dir=tmp_path, options=["cache_hosts="], port=8555)
    assert proxy.client_env()["NO_PROXY"] == ALL_LOOPBACK


def test_client_env_does_not_change_this_processs_environment(tmp_path: Path) -> None:
    before = dict(os.environ)
    client_env(URL, tmp_path / CA_FILE)
    assert dict(os.environ) == before


def test_managed_proxy_env_uses_its_port_and_confdir(tmp_path: Path) -> None:
    proxy = ManagedProxy(cache_dir=tmp_path / "cache", confdir=tmp_path / "conf", port=8555)
    env = proxy.client_env()
    assert env["HTTPS_PROXY"] == "http://127.0.0.1:8555"
    assert env["SSL_CERT_FILE"] == str(tmp_path / "conf" / CA_FILE)


def test_ca_cert_defaults_to_mitmproxys_confdir_in_home(tmp_path: Path) -> None:
    proxy = ManagedProxy(cache_dir=tmp_path / "cache")
    assert proxy.ca_cert == tmp_path / "home" / ".mitmproxy" / CA_FILE  # HOME of the test


# --- ManagedProxy.command --------------------------------------------------------------------


def settings(command: list[str]) -> list[str]:
    return [command[i + 1] for i, arg in enumerate(command) if arg == "--set"]


def names(command: list[str]) -> Counter[str]:
    return Counter(s.partition("=")[0] for s in settings(command))


def scripts(command: list[str]) -> list[str]:
    return [command[i + 1] for i, arg in enumerate(command) if arg == "-s"]


def test_addon_is_the_packages_own_script() -> None:
    assert Path(proxyctl.__file__).resolve().parents[1] / "addon.py" == ADDON
    assert ADDON.is_file()
    assert "make_addons()" in ADDON.read_text()


def test_command_runs_mitmdump_with_the_addon_on_loopback(tmp_path: Path) -> None:
    proxy = ManagedProxy(cache_dir=tmp_path / "cache", port=8555)
    command = proxy.command()
    assert command[: len(find_program("mitmdump"))] == find_program("mitmdump")
    assert command[command.index("--listen-host") + 1] == "127.0.0.1"
    assert command[command.index("--listen-port") + 1] == "8555"
    assert scripts(command) == [str(ADDON)]
    assert settings(command) == [
        f"cache_dir={tmp_path / 'cache'}",
        "cache_mode=record",
        "flow_detail=0",
    ]


def test_command_of_mitmweb(tmp_path: Path) -> None:
    command = ManagedProxy(cache_dir=tmp_path, program="mitmweb").command()
    assert command[: len(find_program("mitmweb"))] == find_program("mitmweb")


def test_extra_scripts_load_after_the_addon(tmp_path: Path) -> None:
    extra = [tmp_path / "a.py", tmp_path / "b.py"]
    command = ManagedProxy(cache_dir=tmp_path, scripts=extra).command()
    assert scripts(command) == [str(ADDON), str(extra[0]), str(extra[1])]


def test_mode_confdir_and_quiet(tmp_path: Path) -> None:
    proxy = ManagedProxy(cache_dir=tmp_path, mode="replay", confdir=tmp_path / "conf", quiet=False)
    assert settings(proxy.command()) == [
        f"cache_dir={tmp_path}",
        "cache_mode=replay",
        f"confdir={tmp_path / 'conf'}",
    ]


@pytest.mark.parametrize(
    "options",
    [
        ["cache_mode=refresh"],
        ["cache_dir=/elsewhere"],
        ["flow_detail=3"],
        ["confdir=/etc/mitm"],
        ["cache_mode=replay", "cache_dir=/x", "flow_detail=1", "confdir=/c"],
        ["cache_hosts=builtin", "cache_window_size=10"],
        ["termlog_verbosity"],  # a bare name is a setting too
    ],
)
def test_options_given_replace_the_defaults_and_no_option_is_set_twice(
    tmp_path: Path, options: list[str]
) -> None:
    """mitmproxy refuses one option set twice: a default gives way to the caller's value."""
    proxy = ManagedProxy(cache_dir=tmp_path, confdir=tmp_path / "conf", options=options)
    command = proxy.command()
    assert max(names(command).values()) == 1
    assert set(options) <= set(settings(command))
    assert settings(command)[-len(options) :] == options  # in the order given, last
    assert {"cache_dir", "cache_mode", "confdir", "flow_detail"} <= set(names(command))


def test_command_does_not_change_the_proxys_options(tmp_path: Path) -> None:
    options = ["cache_mode=replay"]
    proxy = ManagedProxy(cache_dir=tmp_path, options=options)
    assert proxy.command() == proxy.command()
    assert proxy.options == ["cache_mode=replay"]
