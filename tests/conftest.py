"""Shared fixtures: a clean environment, the fake provider, and real mitmdump processes."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.fake_provider import STAND_IN_FOR, FakeProvider
from tests.support.proxy import Mitmdump, free_port
from tests.support.secrets import files_containing_secrets

pytest_plugins = ["tests.support.s3fixtures"]

#: Upstream host names the fake provider answers for, as real SDKs send them.
PROVIDER_HOSTS = STAND_IN_FOR

_CLIENT_VARS = (
    "HTTPS_PROXY",
    "HTTP_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_BASE_URL",
    "AZURE_OPENAI_API_KEY",
    "AZURE_OPENAI_AD_TOKEN",
    "AZURE_OPENAI_ENDPOINT",
    "OPENAI_API_VERSION",
    "GOOGLE_API_KEY",
    "GEMINI_API_KEY",
    "GOOGLE_GENAI_USE_VERTEXAI",
    "GOOGLE_CLOUD_PROJECT",
    "GOOGLE_APPLICATION_CREDENTIALS",
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No test sees the developer's proxy, CA, API keys or AWS configuration, or writes to
    ~/.mitmproxy.

    Temporary files (proxy logs, rebuild work directories) go under the test's own
    directory; after the test, every byte written there — stores, stats files,
    exports, logs — is scanned for the planted API keys.
    """
    for name in _CLIENT_VARS:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    for name in [n for n in os.environ if n.upper().startswith("AWS_")]:  # botocore's config
        monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    yield
    leaks = files_containing_secrets(tmp_path)
    assert leaks == [], f"planted API keys written to disk: {leaks}"


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeProvider]:
    with FakeProvider(tmp_path / "fake") as provider:
        yield provider
    assert not provider.errors, provider.errors


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


ProxyFactory = Callable[..., Mitmdump]


@pytest.fixture
def start_proxy(tmp_path: Path, fake: FakeProvider, cache_dir: Path) -> Iterator[ProxyFactory]:
    """Start mitmdump with the addon; provider hosts resolve to the fake provider.

    `offline=True` resolves them to a closed port instead: any upstream connection fails.
    `wrapper` is a command that execs mitmdump (tests/support/proxy.py, WrappedProxy).
    """
    started: list[Mitmdump] = []

    def start(
        mode: str = "record",
        *,
        offline: bool = False,
        wrapper: list[str] | None = None,
        **options: str | list[str],
    ) -> Mitmdump:
        port = free_port() if offline else fake.port
        proxy = Mitmdump(
            workdir=tmp_path,
            cache_dir=cache_dir,
            options={"cache_mode": mode, **options},
            resolve=dict.fromkeys(PROVIDER_HOSTS, port),
            upstream_ca=fake.ca_path,
            wrapper=wrapper or [],
        )
        started.append(proxy)
        return proxy.start()

    yield start
    for proxy in started:
        proxy.stop()


@pytest.fixture
def use_proxy(monkeypatch: pytest.MonkeyPatch) -> Callable[[Mitmdump], None]:
    """Point this process's clients at a proxy exactly as the README tells users to."""

    def use(proxy: Mitmdump) -> None:
        for name, value in proxy.client_env().items():
            monkeypatch.setenv(name, value)

    return use


#: Test directories whose tests start real processes (mitmdump, SDK clients, browsers).
SLOW_DIRS = ("e2e", "reliability")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The fast lane (`./dev test -m "not slow"`) is every test that starts no process."""
    root = Path(__file__).parent
    for item in items:
        if item.path.relative_to(root).parts[0] in SLOW_DIRS:
            item.add_marker(pytest.mark.slow)


def pytest_report_header() -> str:
    return f"provider-cache tests; python {os.sys.version.split()[0]}"
