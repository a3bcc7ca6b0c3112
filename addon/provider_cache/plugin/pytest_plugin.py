"""The pytest plugin (SPEC §12), loaded through the `pytest11` entry point; inactive unless a
mode is given (`--provider-cache=MODE`, or `provider_cache_mode` in the ini file).

One managed proxy serves the session (with pytest-xdist: one per worker, all on one cache
directory, so the proxies' stats parts are one run and the controller gates on their sum).
It starts in `pytest_configure`, before collection, so that clients created at import time
use it too; its client variables reach the tests and their child processes. Each test's
name reaches the proxy before the test runs (session.py), so the stats count hits and misses
per test and the missed requests name their test. At the end the gate's report is printed
in the terminal summary, and a short hit rate fails the session.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from provider_cache.cli import gate
from provider_cache.cli.args import Fail, hit_rate
from provider_cache.core import report
from provider_cache.core.names import MODES
from provider_cache.plugin.session import ProxySession, SessionError
from provider_cache.storage.cachedir import STATS_FILE

LIVE_MARKER = "provider_live"
DEFAULT_DIR = "recordings"
#: The name the session's plugin object is registered under.
PLUGIN_NAME = "provider-cache-session"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("provider-cache", "record and replay LLM provider traffic")
    group.addoption(
        "--provider-cache",
        dest="provider_cache_mode",
        choices=MODES,
        metavar="MODE",
        help=f"run the session behind provider-cache in MODE ({', '.join(MODES)})",
    )
    group.addoption(
        "--provider-cache-dir",
        dest="provider_cache_dir",
        metavar="DIR",
        help=f"the store (default: {DEFAULT_DIR}, relative to the rootdir)",
    )
    group.addoption(
        "--provider-cache-min-hit-rate",
        dest="provider_cache_min_hit_rate",
        metavar="F",
        help="fail the session when the hit rate is below F (0.95 or 95%%)",
    )
    group.addoption(
        "--provider-cache-set",
        dest="provider_cache_set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a proxy option (cache_*, or mitmproxy's), repeatable",
    )
    group.addoption(
        "--provider-cache-script",
        dest="provider_cache_scripts",
        action="append",
        default=[],
        metavar="PATH",
        help="an extra mitmproxy addon script for the proxy, repeatable",
    )
    parser.addini("provider_cache_mode", "provider-cache mode; empty: the plugin is inactive")
    parser.addini("provider_cache_dir", f"the store (default: {DEFAULT_DIR})")
    parser.addini("provider_cache_min_hit_rate", "the gate's threshold")
    parser.addini("provider_cache_set", "proxy options, NAME=VALUE a line", type="linelist")
    parser.addini("provider_cache_scripts", "extra mitmproxy addon scripts", type="paths")


@dataclass(frozen=True)
class Settings:
    mode: str
    cache_dir: Path
    min_hit_rate: float | None
    options: list[str]
    scripts: list[Path]

    @classmethod
    def of(cls, config: pytest.Config) -> Settings | None:
        """The command line over the ini file; None when no mode is asked for."""
        mode = config.getoption("provider_cache_mode") or config.getini("provider_cache_mode")
        if not mode:
            return None
        if mode not in MODES:
            raise pytest.UsageError(
                f"provider_cache_mode must be one of {', '.join(MODES)}; got {mode!r}"
            )
        directory = config.getoption("provider_cache_dir") or config.getini("provider_cache_dir")
        threshold = config.getoption("provider_cache_min_hit_rate") or config.getini(
            "provider_cache_min_hit_rate"
        )
        try:
            min_hit_rate = hit_rate(threshold) if threshold else None
        except argparse.ArgumentTypeError as e:
            raise pytest.UsageError(f"--provider-cache-min-hit-rate: {e}") from None
        options = [*config.getini("provider_cache_set"), *config.getoption("provider_cache_set")]
        for option in options:
            if "=" not in option:
                raise pytest.UsageError(f"--provider-cache-set wants NAME=VALUE; got {option!r}")
        cache_dir = Path(config.rootpath, directory or DEFAULT_DIR).resolve()
        scripts = [*config.getini("provider_cache_scripts")]
        scripts += [Path(p).resolve() for p in config.getoption("provider_cache_scripts")]
        return cls(mode, cache_dir, min_hit_rate, options, scripts)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{LIVE_MARKER}: this test talks to the providers past the cache, uncounted"
    )
    settings = Settings.of(config)
    if settings is not None:
        config.pluginmanager.register(CachePlugin(config, settings), PLUGIN_NAME)


def _xdist_controller(config: pytest.Config) -> bool:
    """Whether this process hands the tests to xdist workers (which run the proxies)."""
    if hasattr(config, "workerinput") or not config.pluginmanager.hasplugin("xdist"):
        return False
    workers = config.getoption("numprocesses", None)
    return bool(workers) and config.getoption("dist", "no") != "no"


class CachePlugin:
    def __init__(self, config: pytest.Config, settings: Settings) -> None:
        self.settings = settings
        self.started_at = time.time()
        self.worker = hasattr(config, "workerinput")
        self.session: ProxySession | None = None
        self.report: str | None = None
        if not _xdist_controller(config):
            self.session = ProxySession(
                settings.cache_dir, settings.mode, settings.options, settings.scripts
            )
            try:
                self.session.start()
            except SessionError as e:
                raise pytest.UsageError(f"provider-cache: {e}") from None

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_protocol(self, item: pytest.Item) -> None:
        if self.session is not None:
            live = item.get_closest_marker(LIVE_MARKER) is not None
            self.session.tell(item.nodeid, live)

    @pytest.fixture
    def provider_cache(self, request: pytest.FixtureRequest) -> TestCache:
        """The proxy's URL and this test's own counters."""
        if self.session is None:
            pytest.skip("provider-cache runs in the xdist workers")
        return TestCache(self.session, request.node.nodeid)

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.session is not None:
            with contextlib.suppress(SessionError):  # a proxy that is gone: its stop says why
                self.session.tell(None)
            self.session.stop()
            self.session = None
        if self.worker:
            return  # the controller gates on the sum of the workers' stats
        passed, self.report = self._judge()
        if not passed and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def _judge(self) -> tuple[bool, str]:
        path = self.settings.cache_dir / STATS_FILE
        for option in self.settings.options:
            name, _, value = option.partition("=")
            if name == "cache_stats_file":
                path = Path(value)
        try:
            doc = gate.load_file(path)
        except Fail as e:
            return False, f"provider-cache: no stats from this session: {e}"
        if doc.get("updated_at", 0) < self.started_at:
            return False, f"provider-cache: no stats from this session ({path} is older)"
        merged = report.merge([doc])
        code, text = gate.judge(merged, self.settings.min_hit_rate, "text")
        return code == 0, text

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if self.report is not None:
            terminalreporter.write_sep("=", "provider-cache")
            terminalreporter.write_line(self.report)


class TestCache:
    """What the `provider_cache` fixture gives a test."""

    __test__ = False  # not a test class, despite its name

    def __init__(self, session: ProxySession, nodeid: str) -> None:
        self.session, self.nodeid = session, nodeid

    @property
    def url(self) -> str:
        return self.session.url

    def counters(self) -> dict:
        """This test's hits, misses and recordings so far."""
        return self.session.ask().get("counters", {})
